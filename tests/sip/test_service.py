"""The box as a service: systemd notify and watchdog, graceful SIGTERM, capacity, the calls CLI."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import time

import pytest

from appliance.boxproc import REPO
from tests.helpers import wait_for_call_end

pytestmark = pytest.mark.sip


def test_notifies_systemd_ready_and_pings_watchdog(make_box, tmp_path):
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(1.0)
    box = make_box(start=False)
    box.env.update({"NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "1000000"})
    box.start()
    got: list[str] = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and got.count("WATCHDOG=1") < 3:
        try:
            got.append(sock.recv(256).decode())
        except TimeoutError:
            pass
    assert "READY=1" in got
    assert got.count("WATCHDOG=1") >= 3  # every 0.5 s for a 1 s watchdog
    box.stop()
    rest: list[str] = []
    try:
        while True:
            rest.append(sock.recv(256).decode())
    except TimeoutError:
        pass
    assert "STOPPING=1" in rest


def test_sigterm_drains_calls_in_progress_and_refuses_new_ones(box, phone, loop_thread):
    async def first_call() -> str:
        call = await phone.call(box.sip_uri)
        await phone.answered(call)
        return call

    call = loop_thread.run(first_call())
    box.proc.send_signal(signal.SIGTERM)
    time.sleep(1.0)

    async def second_call() -> int:
        late = await phone.call(box.sip_uri)
        ended = await phone.ended(late, timeout=10)
        return ended.status_code

    assert loop_thread.run(second_call()) == 503  # no new calls while draining
    assert box.proc.poll() is None  # the call in progress keeps the box up
    loop_thread.run(phone.hangup(call))
    assert box.proc.wait(15) == 0
    [record] = wait_for_call_end(box.db_path)
    assert record["outcome"] == "caller_hangup"
    assert box.log().count("stopped") == 1


def test_capacity_is_reported(box):
    metrics = box.scrape()
    capacity = metrics["registratura_sip_call_capacity"]
    assert capacity >= 4
    assert "SIP stack: pjsua2" in box.log()
    out = subprocess.run([sys.executable, "-m", "appliance", "--config", str(box.config), "check"],
                         capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 0, out.stderr
    assert f"{int(capacity)} concurrent calls" in out.stdout


def test_calls_cli_json(box, phone, loop_thread):
    async def scenario() -> None:
        call = await phone.call(box.sip_uri)
        await phone.answered(call)
        await asyncio.sleep(1.0)
        await phone.hangup(call)
        await phone.ended(call)

    loop_thread.run(scenario())
    wait_for_call_end(box.db_path)
    out = subprocess.run([sys.executable, "-m", "appliance", "--config", str(box.config), "calls", "--json"],
                         capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 0, out.stderr
    [call] = json.loads(out.stdout)
    for key in ("id", "caller", "outcome", "started_at", "answered_at", "ended_at", "digits", "recording"):
        assert key in call
    assert call["caller"] == "+79161234567"
    text = subprocess.run([sys.executable, "-m", "appliance", "--config", str(box.config), "calls"],
                          capture_output=True, text=True, cwd=REPO, timeout=60).stdout
    assert "+79161234567" not in text and "+7*******67" in text  # masked unless --full-numbers
