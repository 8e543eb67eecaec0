"""Caller screening over real SIP: blocked numbers, the repeat-call rule and withheld callers."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from appliance.boxproc import REPO
from tests.helpers import WebhookServer, calls_in, heard_match, read_wav, wait_for_call_end

pytestmark = pytest.mark.sip


def _call_until_box_hangs_up(phone, loop_thread, box, heard=None, caller_id=None) -> float:
    async def scenario() -> float:
        t0 = time.monotonic()
        call = await (phone.call(box.sip_uri) if caller_id is None else phone.call(box.sip_uri, caller_id=caller_id))
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
    # A window from inside the notice: the caller's own recorder may start a few frames after the box speaks.
    corr, _ = heard_match(audio, notice[rate // 2: rate // 2 + int(0.6 * rate)])
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


def _cli(box, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "appliance", "--config", str(box.config), *args],
                          capture_output=True, text=True, cwd=REPO, timeout=60)


def test_receptionist_feature_codes_mark_threats_and_block_abusive_callers(make_box, phone, loop_thread, tmp_path):
    from appliance.store import Store
    from tests.helpers import write_tone
    from tests.sip.test_queue_sip import _flows

    voice = write_tone(tmp_path / "voice.wav", hz=300.0, seconds=3.0)
    hook = WebhookServer(delay=4.0)  # answers within the box's 5 s, long after the conversation has ended
    box = make_box(flows_dir=_flows(tmp_path), main="queue_only", security={"threat_webhook": hook.url},
                   queues={"reception": {"agents": [phone.uri("101")], "max_wait": 0, "wrapup": 0}})

    async def connected_call(code: str) -> float:
        call = await phone.call(box.sip_uri)
        await phone.answered(call)
        desk = await phone.ringing(timeout=20)
        await phone.answer(desk.call_id)
        await phone.answered(desk.call_id)
        await phone.say(desk.call_id, voice)  # a real desk phone always sends audio (its microphone)
        await asyncio.sleep(1.0)
        await phone.press(desk.call_id, code)  # the receptionist's keys during the conversation
        await asyncio.sleep(1.5)
        t0 = time.monotonic()
        await phone.hangup(call)
        await phone.ended(call)
        await phone.ended(desk.call_id, timeout=10)
        return time.monotonic() - t0

    try:
        took = loop_thread.run(connected_call("*0"), timeout=60)
        [threat] = wait_for_call_end(box.db_path)
        assert took < 2.0  # the BYE ends both legs at once while the webhook is still busy
        assert any(e["kind"] == "threat" for e in threat["events"])
        assert box.scrape()["registratura_threats_total"] == 1.0
        # The recording is on legal hold, and the date, time and number are kept with it.
        listed = _cli(box, "recordings", "list", "--json", "--full-numbers")
        assert listed.returncode == 0, listed.stderr
        [row] = [r for r in json.loads(listed.stdout) if r["call_id"] == threat["id"]]
        assert row["held"] and row["exists"] and row["caller"] == "+79161234567"
        answered = datetime.fromisoformat(threat["answered_at"].replace("Z", "+00:00"))
        assert abs(datetime.fromisoformat(row["time"]) - answered).total_seconds() < 1 and row["duration"] > 1
        assert "HOLD" in _cli(box, "recordings", "list").stdout
        store = Store(box.db_path, migrate=False)
        try:
            [hold] = store.holds(threat["id"])
            [mark_at] = store.mark_times("+79161234567", "threat", 0)
            wav = store.get_call(threat["id"])["recording"]
        finally:
            store.close()
        assert hold["reason"] == "threat marked by receptionist" and hold["at"] == mark_at
        assert any(e["kind"] == "recording" and e["detail"] == "legal hold: threat marked by receptionist"
                   for e in threat["events"])
        assert Path(wav).exists() and hold["released_at"] is None
        # The webhook got the full number and the call id, after the store, and the timeline says so.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(
                e["detail"].startswith("webhook") for e in calls_in(box.db_path)[0]["events"]):
            time.sleep(0.2)
        [payload] = [r["body"] for r in hook.received]
        assert (payload["event"], payload["call_id"], payload["number"], payload["recording_held"]) == (
            "threat", threat["id"], "+79161234567", True)
        assert payload["at"] == mark_at
        events = calls_in(box.db_path)[0]["events"]
        assert ("threat", "webhook delivered (HTTP 200)") in [(e["kind"], e["detail"]) for e in events]

        loop_thread.run(connected_call("*9"), timeout=60)
        wait_for_call_end(box.db_path, count=2)
        loop_thread.run(connected_call("*9"), timeout=60)  # the second abusive mark within 30 days blocks
        wait_for_call_end(box.db_path, count=3)
    finally:
        hook.close()
    _call_until_box_hangs_up(phone, loop_thread, box)
    calls = wait_for_call_end(box.db_path, count=4)
    assert calls[0]["outcome"] == "blocked"
    assert box.scrape()["registratura_abuse_marks_total"] == 2.0
    listed = _cli(box, "block", "list").stdout
    assert "+79161234567" in listed and "abuse" in listed
    assert len(hook.received) == 1  # abusive marks are no threats


def test_withheld_caller_is_refused_under_the_block_policy(make_box, phone, loop_thread, tmp_path):
    from tests.sip.test_call_path import _prompt_file

    box = make_box(security={"withheld": "block"})
    heard = tmp_path / "heard.wav"
    took = _call_until_box_hangs_up(phone, loop_thread, box, heard, caller_id="anonymous")
    [call] = wait_for_call_end(box.db_path)
    assert call["outcome"] == "blocked" and call["caller_raw"] == "anonymous"
    assert any(e["kind"] == "blocked" and e["detail"].startswith("withheld:") for e in call["events"])
    assert not any(e["kind"] == "node" for e in call["events"])  # never reached a flow
    plays = [e["detail"] for e in call["events"] if e["kind"] == "play"]
    assert plays and all("withheld_blocked" in p for p in plays)
    assert took < 20
    rate, audio = read_wav(heard)
    _, notice = read_wav(_prompt_file(box, "withheld_blocked"))
    corr, _ = heard_match(audio, notice[rate // 2: rate // 2 + int(0.6 * rate)])  # the neutral notice
    assert corr > 0.9
    metrics = box.scrape()
    assert metrics['registratura_screened_calls_total{reason="withheld"}'] == 1.0
    assert metrics['registratura_calls_total{outcome="blocked"}'] == 1.0


def test_withheld_caller_reaches_the_flow_under_the_allow_policy(make_box, phone, loop_thread):
    from tests.sip.test_flows_sip import _until

    box = make_box()  # security.withheld: allow is the default

    async def scenario() -> None:
        call = await phone.call(box.sip_uri, caller_id="anonymous")
        await phone.answered(call)
        await _until(box, lambda c: any(e["kind"] == "node" for e in c["events"]), timeout=20, what="the flow")
        await phone.hangup(call)
        await phone.ended(call)

    loop_thread.run(scenario(), timeout=60)
    [call] = wait_for_call_end(box.db_path)
    assert call["outcome"] == "caller_hangup" and call["caller"] == "anonymous"
    assert not any(e["kind"] == "blocked" for e in call["events"])
    assert 'registratura_screened_calls_total{reason="withheld"}' not in box.scrape()


CALLBACK_FLOW = """\
language: ru
start: greeting
no_input_timeout: 2
retries: 1
nodes:
  greeting: {type: say, prompts: [greeting], next: callback}
  callback: {type: request_callback, reason: asked, prompts: [callback_recorded], next: bye}
  bye: {type: hangup, goodbye: [goodbye]}
"""


def _withheld_box(make_box, tmp_path):
    flows = tmp_path / "flows"
    flows.mkdir(exist_ok=True)
    (flows / "cb.yaml").write_text(CALLBACK_FLOW, encoding="utf-8")
    return make_box(flows_dir=flows, main="cb", security={"withheld": "ask"},
                    queues={"reception": {"agents": [], "max_wait": 0}})


def test_withheld_caller_types_a_number_that_the_callback_uses(make_box, phone, loop_thread, tmp_path):
    from appliance.store import Store
    from tests.sip.test_flows_sip import _played, _until

    box = _withheld_box(make_box, tmp_path)

    async def scenario() -> None:
        call = await phone.call(box.sip_uri, caller_id="anonymous")
        await phone.answered(call)
        await _until(box, _played("withheld_ask"), timeout=20, what="the request for a number")
        await phone.press(call, "89161112233#")
        await _until(box, _played("confirm_number"), timeout=20, what="the read-back")
        await phone.press(call, "1")
        await phone.ended(call, timeout=40)  # then the clinic's flow: greeting, callback stored, goodbye

    loop_thread.run(scenario(), timeout=90)
    [call] = wait_for_call_end(box.db_path)
    assert call["outcome"] == "completed"
    assert (call["caller"], call["caller_raw"]) == ("+79161112233", "anonymous")
    kinds = [e["kind"] for e in call["events"]]
    assert kinds.index("caller") < kinds.index("callback")  # stored before the flow used it
    store = Store(box.db_path, migrate=False)
    try:
        [cb] = store.callbacks()
    finally:
        store.close()
    assert (cb.number, cb.reason) == ("+79161112233", "asked")


def test_withheld_caller_who_types_nothing_is_refused_politely(make_box, phone, loop_thread, tmp_path):
    box = _withheld_box(make_box, tmp_path)

    async def scenario() -> None:
        call = await phone.call(box.sip_uri, caller_id="anonymous")
        await phone.answered(call)
        await phone.ended(call, timeout=60)

    loop_thread.run(scenario(), timeout=90)
    [call] = wait_for_call_end(box.db_path)
    assert call["outcome"] == "withheld"
    plays = [e["detail"] for e in call["events"] if e["kind"] == "play"]
    assert plays[-1] == "withheld_goodbye" and not any("greeting" in p for p in plays)  # never reached the flow
    assert box.scrape()['registratura_calls_total{outcome="withheld"}'] == 1.0
