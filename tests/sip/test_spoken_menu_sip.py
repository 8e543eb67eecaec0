"""Spoken answers over real SIP with the bundled recogniser (models/ru-commands): a pjsua2 caller says a menu
choice of clinic_ru and lands in its branch; a caller who hides the number says a phone number for the
callback, confirms it with "да", and the stored callback holds the digits.

The caller's words are espeak-ng Russian at 8 kHz, sent as RTP like any caller's; the box cuts them with the
Silero VAD and decodes them with ru-commands through sherpa-onnx, exactly as on a clinic line.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import warnings
from pathlib import Path

import pytest

from appliance.boxproc import REPO
from appliance.flow.keywords import yes_no
from appliance.speech.engines import packaged_silero
from appliance.store import Store
from tests.helpers import wait_for_call_end
from tests.sip.test_flows_sip import _kinds, _played, _until

MODEL = REPO / "models" / "ru-commands" / "model.int8.onnx"

pytestmark = [
    pytest.mark.sip,
    pytest.mark.skipif(not MODEL.is_file(), reason="models/ru-commands is not built (tools/asr_train)"),
    pytest.mark.skipif(packaged_silero() is None, reason="the Silero VAD cuts utterances: pip install silero-vad"),
    pytest.mark.skipif(not (shutil.which("espeak-ng") and shutil.which("sox")), reason="espeak-ng and sox needed"),
]


def _words(where: Path, text: str) -> Path:
    raw, out = where / "raw.wav", where / f"{abs(hash(text))}.wav"
    subprocess.run(["espeak-ng", "-v", "ru", "-s", "150", "-w", str(raw), text], check=True, capture_output=True)
    # espeak-ng speaks from 10 ms in; a caller starts after a breath. (The pause does not stop ru-commands
    # from sometimes hearing "да, верно" as "аверно": the box then reads the number back again, see below.)
    subprocess.run(["sox", str(raw), "-r", "8000", "-c", "1", "-b", "16", str(out), "pad", "0.3", "0.2"],
                   check=True, capture_output=True)
    return out


def _played_twice(prompt: str):  # noqa: ANN202 - a predicate on a call record, as tests.sip.test_flows_sip._played
    return lambda call: sum(prompt in d.split() for d in _kinds(call, "play")) >= 2


def _choices(call: dict) -> list[str]:
    return _kinds(call, "choice")


def test_a_spoken_choice_lands_in_the_appointment_branch(make_box, phone, loop_thread, tmp_path):
    box = make_box()
    words = _words(tmp_path, "запись к врачу")

    async def scenario() -> None:
        call = await phone.call(box.sip_uri)
        await phone.answered(call)
        await _until(box, _played("main_menu"), timeout=25, what="main menu")
        await asyncio.sleep(1.0)
        await phone.say(call, words)  # over the menu: the VAD stops it, the recogniser decides
        await _until(box, lambda c: any(ch.startswith("main_menu:") for ch in _choices(c)), timeout=15,
                     what="a choice by speech")
        await phone.hangup(call)
        await phone.ended(call)

    loop_thread.run(scenario(), timeout=90)
    [call] = wait_for_call_end(box.db_path)
    assert "ASR: ru-commands" in box.log()
    choice = next(ch for ch in _choices(call) if ch.startswith("main_menu:"))
    assert choice.startswith("main_menu: 1 (speech: ") and choice.endswith("-> appointment"), choice
    heard = [d for d in _kinds(call, "speech") if d.startswith("main_menu: heard")]
    assert heard, _kinds(call, "speech")  # the transcript is kept with the call


def test_a_spoken_phone_number_is_stored_for_the_callback(make_box, phone, loop_thread, tmp_path):
    # Wednesday 21:00: closed; "обратный звонок" asks for a callback; the number is hidden, so the box asks for one.
    box = make_box(flow_time="2026-11-25T21:00:00", queues={"reception": {"agents": [], "max_wait": 0}})
    callback = _words(tmp_path, "обратный звонок")
    number = _words(tmp_path, "восемь девятьсот шестнадцать сто двадцать три сорок пять шестьдесят семь")
    yes = _words(tmp_path, "да, верно")  # a bare "да" (~0.25 s) is at the VAD's 0.2 s start

    async def scenario() -> None:
        call = await phone.call(box.sip_uri, caller_id="anonymous")
        await phone.answered(call)
        await _until(box, _played("closed_menu"), timeout=40, what="closed menu")
        await asyncio.sleep(1.0)
        await phone.say(call, callback)
        await _until(box, _played("callback_enter_number"), timeout=15, what="the request for a number")
        await asyncio.sleep(1.0)
        await phone.say(call, number, playback_id=2)
        await _until(box, _played("confirm_number"), timeout=20, what="the read-back")
        await asyncio.sleep(1.0)
        await phone.say(call, yes, playback_id=3)
        # "your request is recorded", goodbye, the box hangs up. A box that did not catch the "да" reads the
        # number back again: the caller says it once more, as a caller would (still by voice, never a key).
        asked_again = _played_twice("confirm_number")
        seen = await _until(box, lambda c: c.get("outcome") or asked_again(c), timeout=40, what="the end or a re-ask")
        if not seen.get("outcome"):
            warnings.warn(f"the first 'да, верно' was not taken: {_kinds(seen, 'speech')}", stacklevel=1)
            await asyncio.sleep(1.0)
            await phone.say(call, yes, playback_id=4)
        await phone.ended(call, timeout=40)

    loop_thread.run(scenario(), timeout=150)
    [call] = wait_for_call_end(box.db_path)
    assert any(ch.startswith("closed_menu: 2 (speech: ") for ch in _choices(call)), _choices(call)
    speech = _kinds(call, "speech")
    assert "callback_number: 11 digits spoken" in " ".join(speech)
    assert not [d for d in speech if "девятьсот" in d], speech  # the number's words are personal data: not kept
    # The read-back's answer is kept with the call and was a yes as the box judges it: by its words ("да, верно"
    # may come out as "аверно"), or, when they are neither yes nor no ("адверно"), by the model's scores.
    answers = [d.split("'")[1] for d in speech if d.startswith("callback_number: heard '")]
    assert answers and (yes_no(answers[-1]) is True or speech[-1].startswith("callback_number: taken as yes")), speech
    store = Store(box.db_path, migrate=False)
    try:
        callbacks = store.callbacks()
    finally:
        store.close()
    assert len(callbacks) == 1, "\n".join(f"{e['at']} {e['kind']}: {e['detail']}" for e in call["events"])
    [cb] = callbacks
    assert (cb.number, cb.reason) == ("+79161234567", "after_hours")


REASON_FLOW = """\
language: ru
start: reason
nodes:
  reason: {type: ask, input: speech, prompts: [home_visit], var: reason, next: bye}
  bye: {type: hangup, goodbye: [goodbye]}
"""


def test_free_words_are_kept_with_their_place_in_the_recording(make_box, phone, loop_thread, tmp_path):
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "reason.yaml").write_text(REASON_FLOW, encoding="utf-8")
    box = make_box(flows_dir=flows, main="reason")
    words = _words(tmp_path, "высокая температура и кашель")

    async def scenario() -> None:
        call = await phone.call(box.sip_uri)
        await phone.answered(call)
        await _until(box, _played("home_visit"), timeout=20, what="the question")
        await asyncio.sleep(1.0)
        await phone.say(call, words)
        await phone.ended(call, timeout=30)  # the words taken, goodbye, the box hangs up

    loop_thread.run(scenario(), timeout=90)
    [call] = wait_for_call_end(box.db_path)
    assert call["outcome"] == "completed"
    collected = _kinds(call, "collected")
    assert len(collected) == 1 and collected[0].startswith("reason: ") and collected[0].endswith("words (speech)")
    assert not collected[0].startswith("reason: 0 ")
    [heard] = [d for d in _kinds(call, "speech") if d.startswith("reason: heard '")]
    assert "in the recording at " in heard and call["recording"]
