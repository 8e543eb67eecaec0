"""Caller screening over real SIP: blocked numbers, the repeat-call rule and withheld callers."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import pytest

from appliance.boxproc import REPO
from tests.helpers import best_match, read_wav, wait_for_call_end

pytestmark = pytest.mark.sip


def _call_until_box_hangs_up(phone, loop_thread, box, heard=None) -> float:
    async def scenario() -> float:
        t0 = time.monotonic()
        call = await phone.call(box.sip_uri)
        await phone.answered(call)
        if heard is not None:
            await phone.record(call, heard)
        await phone.ended(call, timeout=30)
        return time.monotonic() - t0

    return loop_thread.run(scenario())


def test_blocked_number_hears_notice_and_is_hung_up(make_box, phone, loop_thread, tmp_path):
    box = make_box()
    out = subprocess.run([sys.executable, "-m", "appliance", "--config", str(box.config), "block", "add",
                          "8 916 123-45-67", "--reason", "abusive"], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    heard = tmp_path / "heard.wav"
    took = _call_until_box_hangs_up(phone, loop_thread, box, heard)
    [call] = wait_for_call_end(box.db_path)
    assert call["outcome"] == "blocked"
    assert any(e["kind"] == "blocked" and "abusive" in e["detail"] for e in call["events"])
    assert not any(e["kind"] == "node" for e in call["events"])  # never reached a flow
    assert took < 15
    from tests.sip.test_call_path import _prompt_file

    rate, audio = read_wav(heard)
    _, notice = read_wav(_prompt_file(box, "blocked_notice"))
    corr, _ = best_match(audio, notice[: rate * 2])
    assert corr > 0.9
    assert box.scrape()['registratura_screened_calls_total{reason="blocked"}'] == 1.0


def test_repeat_calls_earn_an_automatic_block(make_box, phone, loop_thread):
    box = make_box(security={"auto_block": {"calls": 3, "minutes": 10, "block_minutes": 60}})

    async def short_call() -> None:
        call = await phone.call(box.sip_uri)
        await phone.answered(call)
        await asyncio.sleep(0.5)
        await phone.hangup(call)
        await phone.ended(call)

    for _ in range(2):
        loop_thread.run(short_call())
    wait_for_call_end(box.db_path, count=2)
    _call_until_box_hangs_up(phone, loop_thread, box)  # the third call within 10 minutes
    calls = wait_for_call_end(box.db_path, count=3)
    assert [c["outcome"] for c in calls] == ["blocked", "caller_hangup", "caller_hangup"]
    listed = subprocess.run([sys.executable, "-m", "appliance", "--config", str(box.config), "block", "list"],
                            capture_output=True, text=True, cwd=REPO).stdout
    assert "+79161234567" in listed and "auto_rate" in listed
