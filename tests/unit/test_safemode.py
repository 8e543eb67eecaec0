"""Safe mode: `registratura run --safe-mode` with unusable settings answers /healthz 503 with the file:line errors,
takes no calls, and exits 75 (systemd starts it again, normally) once the file is fixed. Real processes, real HTTP
on 127.0.0.1, no SIP call."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from appliance.boxproc import REPO, demo_settings, free_port
from appliance.safemode import RESTART_EXIT, safe_endpoint
from appliance.settings import load_settings
from appliance.web import build_app


def _write(path: Path, settings: dict[str, Any], **replace_text: str) -> Path:
    text = yaml.safe_dump(settings, allow_unicode=True, sort_keys=False)
    for old, new in replace_text.items():
        assert old in text
        text = text.replace(old, new)
    path.write_text(text, encoding="utf-8")
    return path


def _line(path: Path, needle: str) -> int:
    return next(n for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if needle in line)


def _start(config: Path, log: Path, *extra: str, env_extra: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "REGISTRATURA_CONFIG")}
    env.update({"PYTHONUNBUFFERED": "1", **(env_extra or {})})
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "appliance", "--config", str(config), "run", "--safe-mode",
                                 *extra], stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=env)


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _health(proc: subprocess.Popen[bytes], port: int, log: Path, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"exited with {proc.returncode}:\n{log.read_text()}"
        try:
            status, body = _get(f"http://127.0.0.1:{port}/healthz")
        except OSError:
            time.sleep(0.2)
            continue
        assert status == 503, body
        return json.loads(body)
    raise TimeoutError(f"no /healthz on {port}:\n{log.read_text()}")


def _wait_exit(proc: subprocess.Popen[bytes], log: Path, timeout: float = 30.0) -> int:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
        raise AssertionError(f"still running after {timeout} s:\n{log.read_text()}") from None


@pytest.fixture
def procs():
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def _udp_port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_bad_settings_answer_healthz_then_sighup_after_the_fix_restarts(tmp_path, procs):
    sip_port, port = free_port(), free_port(socket.SOCK_STREAM)
    good = demo_settings(tmp_path, sip_port=sip_port, metrics_port=port, rtp_base=47200)
    config = _write(tmp_path / "registratura.yaml", {**good, "sip": {**good["sip"], "max_calls": 0}})
    line = _line(config, "max_calls")
    log = tmp_path / "box.log"
    procs.append(proc := _start(config, log))

    state = _health(proc, port, log)
    assert state["ok"] is False and state["ready"] is False and state["safe_mode"] is True
    assert state["error"].startswith(f"E104: {config}:{line}: sip.max_calls: 0 is out of range"), state
    assert "firstboot" in state and state["active_calls"] == 0
    assert _get(f"http://127.0.0.1:{port}/metrics")[0] == 503  # only /healthz in safe mode
    assert _udp_port_free(sip_port)  # nothing listens for SIP
    assert not (tmp_path / "data").exists()  # no database opened
    text = log.read_text()
    assert "SAFE MODE: the box takes no calls" in text and f"{config}:{line}: sip.max_calls" in text

    _write(config, good)
    proc.send_signal(signal.SIGHUP)
    assert _wait_exit(proc, log) == RESTART_EXIT
    assert "the settings and flows are valid now; restarting into normal mode" in log.read_text()


def test_a_changed_file_is_checked_again_without_a_signal(tmp_path, procs):
    port = free_port(socket.SOCK_STREAM)
    good = demo_settings(tmp_path, metrics_port=port, rtp_base=47200)
    config = _write(tmp_path / "registratura.yaml", {**good, "flows": {**good["flows"], "main": "nope"}})
    log = tmp_path / "box.log"
    procs.append(proc := _start(config, log))
    state = _health(proc, port, log)  # valid settings, bad flows: on the settings' own metrics.listen
    assert "main flow 'nope' not found (settings flows.main)" in state["error"], state

    _write(config, {**good, "clinic": {**good["clinic"], "language": "xx"}})  # still bad, another problem
    deadline = time.monotonic() + 20
    while "clinic.language" not in state["error"] and time.monotonic() < deadline:
        time.sleep(0.3)
        state = _health(proc, port, log)
    assert f"{config}:{_line(config, 'language')}: clinic.language" in state["error"], state

    _write(config, good)
    assert _wait_exit(proc, log) == RESTART_EXIT


@pytest.mark.parametrize("case", ["missing", "broken yaml"])
def test_no_usable_file_answers_on_the_safe_listen_address(tmp_path, procs, case):
    port = free_port(socket.SOCK_STREAM)
    config = tmp_path / "registratura.yaml"
    if case == "broken yaml":
        config.write_text("clinic:\n  name: [unclosed\nmetrics: {listen: \"127.0.0.1:1\"}\n", encoding="utf-8")
    log = tmp_path / "box.log"
    procs.append(proc := _start(config, log, "--safe-listen", f"127.0.0.1:{port}"))
    state = _health(proc, port, log)
    if case == "missing":
        assert state["error"] == (f"E101: {config}: settings file not found; pass --config or create it "
                                  "(see image/registratura.example.yaml)")
    else:
        assert state["error"].startswith(f"E102: {config}:3: invalid YAML"), state
    assert state["error"] in log.read_text()
    proc.send_signal(signal.SIGTERM)
    assert _wait_exit(proc, log) == 0


def test_without_safe_mode_run_and_check_still_refuse_with_exit_1(tmp_path):
    config = _write(tmp_path / "registratura.yaml", {**demo_settings(tmp_path), "sip": {"max_calls": 0}})
    for command in ("check", "run"):
        out = subprocess.run([sys.executable, "-m", "appliance", "--config", str(config), command],
                             capture_output=True, text=True, cwd=REPO, timeout=120)
        assert out.returncode == 1, (command, out.stderr)
        assert f"{config}:" in out.stderr and "sip.max_calls: 0 is out of range" in out.stderr, out.stderr


def test_where_safe_mode_answers(tmp_path):
    config = tmp_path / "registratura.yaml"
    # A bad file whose metrics section is fine: safe mode is no more exposed than the box would be.
    config.write_text('sip: {max_calls: 0}\nmetrics: {listen: "127.0.0.1:9400", allow_from: [10.1.0.0/16]}\n')
    ep = safe_endpoint(config, None)
    assert (ep.listen, ep.allow_from) == ("127.0.0.1:9400", ("10.1.0.0/16",))
    config.write_text('sip: {max_calls: 0}\n')  # no metrics section: the default, as the box would listen
    assert safe_endpoint(config, None).listen == "127.0.0.1:9310"
    for text in ('metrics: {listen: "nowhere"}\n', "a: [\n"):  # unreadable: the safe default, LAN only
        config.write_text(text)
        ep = safe_endpoint(config, None, "0.0.0.0:9310")
        assert ep.listen == "0.0.0.0:9310" and ep.basic_auth is None
        assert ep.allows("127.0.0.1") and ep.allows("192.168.1.20") and ep.allows("10.0.2.2")
        assert ep.allows("fe80::1") and not ep.allows("8.8.8.8") and not ep.allows("2001:db8::1")
    assert safe_endpoint(tmp_path / "missing.yaml", None).listen == "0.0.0.0:9310"
    example = load_settings(REPO / "image" / "registratura.example.yaml")
    assert safe_endpoint(tmp_path / "x.yaml", example) is example.metrics


def test_healthz_only_app_refuses_strangers_and_other_paths():
    ep = safe_endpoint(Path("/nonexistent/registratura.yaml"), None)
    app = build_app(ep, lambda: {"ok": False, "error": "E101: x"}, only_health=True)
    seen: list[str] = []

    def call(path: str, addr: str) -> tuple[str, bytes]:
        body = b"".join(app({"PATH_INFO": path, "REMOTE_ADDR": addr}, lambda status, headers: seen.append(status)))
        return seen[-1], body

    assert call("/healthz", "192.168.1.5") == ("503 Service Unavailable", b'{"ok": false, "error": "E101: x"}')
    assert call("/metrics", "192.168.1.5")[0] == "503 Service Unavailable"
    assert call("/healthz", "203.0.113.7") == ("403 Forbidden", b"forbidden\n")


def test_a_box_without_pjsua2_is_in_safe_mode_too(tmp_path, monkeypatch):
    # An arm64 image built without the box's own wheel: valid settings, but no SIP stack to take calls with.
    from appliance.safemode import diagnose

    config = _write(tmp_path / "registratura.yaml", demo_settings(tmp_path))
    monkeypatch.setitem(sys.modules, "pjsua2", None)
    monkeypatch.delitem(sys.modules, "appliance.telephony.pjsua", raising=False)
    settings, problems = diagnose(config)
    assert settings is not None and len(problems) == 1
    assert problems[0].startswith("E302: the SIP stack pjsua2 is not installed"), problems


def test_systemd_sees_ready_with_the_error_and_watchdog_pings(tmp_path, procs):
    # Type=notify + WatchdogSec: READY with STATUS= (what `systemctl status` shows), pings, no restart by systemd.
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(0.5)
    good = demo_settings(tmp_path, rtp_base=47200)
    config = _write(tmp_path / "registratura.yaml", {**good, "sip": {**good["sip"], "max_calls": 0}})
    log = tmp_path / "box.log"
    procs.append(proc := _start(config, log, env_extra={"NOTIFY_SOCKET": str(sock_path),
                                                        "WATCHDOG_USEC": "400000"}))
    got: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and got.count("WATCHDOG=1") < 3:
        try:
            got.append(sock.recv(4096).decode())
        except TimeoutError:
            assert proc.poll() is None, log.read_text()
    ready = [m for m in got if m.startswith("READY=1")]
    assert ready and f"STATUS=SAFE MODE, no calls: E104: {config}:{_line(config, 'max_calls')}: sip.max_calls" \
        in ready[0], got
    assert got.count("WATCHDOG=1") >= 3, got
    _write(config, good)
    proc.send_signal(signal.SIGHUP)
    assert _wait_exit(proc, log) == RESTART_EXIT
    rest: list[str] = []
    try:
        while True:
            rest.append(sock.recv(4096).decode())
    except TimeoutError:
        pass
    assert any(m.startswith("STATUS=settings valid now (SIGHUP)") for m in rest), rest
    sock.close()


def test_a_password_never_shows_in_the_errors(tmp_path):
    # /healthz is open to the LAN without auth in safe mode: a numeric password must not be echoed back.
    from appliance.safemode import diagnose

    good = demo_settings(tmp_path)
    config = _write(tmp_path / "registratura.yaml", {
        **good, "sip": {**good["sip"], "registration": {"registrar": "sip:192.168.1.1", "user": "u",
                                                         "password": 907153}},
        "metrics": {**good["metrics"], "basic_auth": {"user": "prom", "password": 48211}}})
    settings, problems = diagnose(config)
    assert settings is None and len(problems) == 2, problems
    assert all("the value (not shown) is an integer, not text" in p for p in problems), problems
    assert "907153" not in "".join(problems) and "48211" not in "".join(problems)
