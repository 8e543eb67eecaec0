"""Flow transfers over real SIP: the box rings a configured target with music for the caller, bridges on
answer, and follows the flow's no_answer path when the target declines, does not answer or is not configured.

The session softphone plays the caller and the department's phone (sip:102@<softphone>), as in the queue tests.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from appliance.boxproc import REPO
from tests.helpers import heard_match, read_wav, rms, wait_for_call_end, write_tone

pytestmark = pytest.mark.sip

TRANSFER_FLOW = """\
language: ru
start: greeting
nodes:
  greeting: {type: say, prompts: [transfer_to_reception], next: paid}
  paid: {type: transfer, target: paid_desk, timeout: 4, no_answer: sorry}
  sorry: {type: hangup, goodbye: [callback_recorded], outcome: department_busy}
"""


def _transfer_box(make_box, tmp_path: Path, flow: str = TRANSFER_FLOW, **targets: str):
    d = tmp_path / "flows"
    d.mkdir(exist_ok=True)
    (d / "transfer.yaml").write_text(flow, encoding="utf-8")
    return make_box(flows_dir=d, main="transfer", transfers=targets)


def _transfer_notes(call: dict) -> list[str]:
    return [e["detail"] for e in call["events"] if e["kind"] == "transfer"]


def test_transfer_rings_the_department_with_music_and_bridges(make_box, phone, loop_thread, tmp_path):
    box = _transfer_box(make_box, tmp_path, paid_desk=phone.uri("102"))
    heard = tmp_path / "caller-heard.wav"
    desk_heard = tmp_path / "desk-heard.wav"
    voice = write_tone(tmp_path / "voice.wav", hz=440.0, seconds=3.0)
    desk_voice = write_tone(tmp_path / "desk.wav", hz=300.0, seconds=3.0)

    async def scenario() -> None:
        call = await phone.call(box.sip_uri)
        await phone.answered(call)
        await phone.record(call, heard)
        offer = await phone.ringing(timeout=20)  # the box dials the configured target, nothing else
        assert offer.called == "102"
        assert offer.caller.endswith("79161234567")  # the department sees who is calling
        await asyncio.sleep(3.0)  # the caller hears music meanwhile
        await phone.answer(offer.call_id)
        await phone.answered(offer.call_id)
        await phone.record(offer.call_id, desk_heard)
        await phone.say(offer.call_id, desk_voice)  # a desk phone always sends its microphone
        await asyncio.sleep(0.5)
        await phone.say(call, voice)
        await asyncio.sleep(1.5)
        await phone.press(offer.call_id, "*0")  # the department marks a threat, as a receptionist can
        await asyncio.sleep(1.5)
        await phone.hangup(offer.call_id)  # the department ends the conversation: the box hangs up the caller
        await phone.ended(call, timeout=10)

    loop_thread.run(scenario(), timeout=90)
    call = wait_for_call_end(box.db_path)[0]
    assert call["outcome"] == "transferred"
    assert _transfer_notes(call)[-2:] == ["paid_desk: connected", "paid_desk hung up"]
    assert any(e["kind"] == "threat" for e in call["events"])

    rate, caller_audio = read_wav(heard)
    _, moh = read_wav(REPO / "voices" / "moh" / "calm.wav")
    corr, _ = heard_match(caller_audio, moh[rate: 2 * rate])  # one jitter-buffer slip forgiven
    assert corr > 0.9, f"the caller heard no music while the department rang (corr {corr:.2f})"
    _, desk_audio = read_wav(desk_heard)
    assert rms(desk_audio) > 500, "the department did not hear the caller"
    metrics = box.scrape()
    assert metrics['registratura_transfers_total{result="connected",target="paid_desk"}'] == 1.0
    assert metrics["registratura_threats_total"] == 1.0


def test_declined_or_unanswered_transfer_follows_no_answer(make_box, phone, loop_thread, tmp_path):
    box = _transfer_box(make_box, tmp_path, paid_desk=phone.uri("102"))

    async def scenario(decline: bool) -> None:
        call = await phone.call(box.sip_uri)
        await phone.answered(call)
        offer = await phone.ringing(timeout=20)
        if decline:
            await phone.hangup(offer.call_id)  # the department's phone declines (busy)
        await phone.ended(offer.call_id, timeout=15)  # unanswered: the box gives up after the node's 4 s
        await phone.ended(call, timeout=30)  # the flow's no_answer node says its goodbye and hangs up

    loop_thread.run(scenario(decline=True), timeout=60)
    loop_thread.run(scenario(decline=False), timeout=60)
    calls = wait_for_call_end(box.db_path, count=2)
    assert [c["outcome"] for c in calls] == ["department_busy", "department_busy"]
    assert "paid_desk: no_answer -> sorry" in _transfer_notes(calls[0])  # newest first
    assert "paid_desk: busy -> sorry" in _transfer_notes(calls[1])
    metrics = box.scrape()
    assert metrics['registratura_transfers_total{result="busy",target="paid_desk"}'] == 1.0
    assert metrics['registratura_transfers_total{result="no_answer",target="paid_desk"}'] == 1.0


def test_unconfigured_target_says_sorry_and_dials_nothing(make_box, phone, loop_thread, tmp_path):
    flow = TRANSFER_FLOW.replace(", no_answer: sorry", "").replace(
        "  sorry: {type: hangup, goodbye: [callback_recorded], outcome: department_busy}\n", "")
    box = _transfer_box(make_box, tmp_path, flow=flow)  # no transfers in the settings

    async def scenario() -> None:
        call = await phone.call(box.sip_uri)
        await phone.answered(call)
        await phone.ended(call, timeout=30)
        assert phone.offers.empty()

    loop_thread.run(scenario(), timeout=60)
    call = wait_for_call_end(box.db_path)[0]
    assert call["outcome"] == "transfer_failed"
    assert "paid_desk: not_configured" in _transfer_notes(call)
    assert any(e["kind"] == "play" and e["detail"] == "transfer_failed" for e in call["events"])
