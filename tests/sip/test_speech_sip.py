"""Barge-in over real SIP on 127.0.0.1: a pjsua2 caller speaks (espeak-ng Russian) over a prompt.

The box's VAD (Silero when installed, else the energy detector) hears the caller on its audio tap; the flow
engine stops an interruptible prompt and waits for the answer; non-interruptible prompts play on. The
caller's recording also carries the caller's own voice (the softphone mixes its player into it), so the
menu prompt is looked for at its own place in the recording, window by window, by normalised correlation.
"""

from __future__ import annotations

import asyncio
import importlib.util
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from appliance.speech.engines import packaged_silero
from tests.helpers import heard_match, read_wav, wait_for_call_end
from tests.sip.test_flows_sip import RATE, _at, _first_match, _kinds, _library, _played, _until

pytestmark = [
    pytest.mark.sip,
    pytest.mark.skipif(not (shutil.which("espeak-ng") and shutil.which("sox")), reason="espeak-ng and sox needed"),
]

PHRASE = "я хочу записаться к врачу"


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The caller's words: espeak-ng Russian, resampled by sox to 8 kHz mono 16-bit."""
    where = tmp_path_factory.mktemp("speech")
    raw, out = where / "raw.wav", where / "speech.wav"
    subprocess.run(["espeak-ng", "-v", "ru", "-w", str(raw), PHRASE], check=True, capture_output=True)
    subprocess.run(["sox", str(raw), "-r", "8000", "-c", "1", "-b", "16", str(out)], check=True,
                   capture_output=True)
    rate, samples = read_wav(out)
    assert rate == RATE and 1.0 < len(samples) / RATE < 4.0
    return out


def _silero_expected() -> bool:
    return packaged_silero() is not None and importlib.util.find_spec("onnxruntime") is not None


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    den = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / den) if den > 1e-9 else 0.0


def _aligned(heard: np.ndarray, ref: np.ndarray, at: int, seconds: float, window: float = 0.25) -> list[float]:
    """Correlation of each ``window`` of the prompt with the recording at the prompt's own place (``at``)."""
    w = int(window * RATE)
    out = []
    for k in range(0, min(len(ref), int(seconds * RATE)) - w + 1, w):
        seg = heard[at + k: at + k + w]
        out.append(_ncc(seg, ref[k: k + w]) if len(seg) == w else 0.0)
    return out


@pytest.mark.parametrize("vad", ["auto", "energy"])
def test_speaking_over_the_main_menu_stops_it_and_the_call_goes_on(make_box, phone, loop_thread, tmp_path, speech,
                                                                   vad):
    box = make_box(silence={"vad": vad, "asr": "off"})  # barge-in alone: nothing is understood
    heard = tmp_path / "heard.wav"
    marks: dict[str, float] = {}

    async def scenario() -> None:
        call = await phone.call(box.sip_uri)
        await phone.answered(call)
        await phone.record(call, heard)
        marks["record"] = time.monotonic()
        await _until(box, _played("main_menu"), timeout=20, what="main menu")  # the greeting is not interruptible
        await asyncio.sleep(2.0)
        marks["say"] = time.monotonic()
        await phone.say(call, speech)
        await _until(box, lambda c: _kinds(c, "speech"), timeout=5, what="barge-in")
        marks["barge_in"] = time.monotonic()
        # Nothing understood (ASR off): the usual no-input reprompt follows, the call is not dropped.
        await _until(box, lambda c: "no_input_reprompt main_menu" in _kinds(c, "play"), timeout=12,
                     what="no-input reprompt")
        await asyncio.sleep(1.0)
        await phone.hangup(call)
        await phone.ended(call)

    loop_thread.run(scenario(), timeout=90)
    [call] = wait_for_call_end(box.db_path)

    log = box.log()
    assert ("VAD: Silero" if _silero_expected() and vad == "auto" else "VAD: energy detector") in log
    assert "ASR: off (" in log
    assert call["outcome"] == "caller_hangup"
    assert _kinds(call, "speech") == ["barge-in: main_menu"]
    assert _kinds(call, "play") == ["greeting recording_notice", "main_menu", "no_input_reprompt main_menu"]
    assert _kinds(call, "no_input") == ["main_menu 1/3"]
    assert _kinds(call, "choice") == []
    said_after = marks["barge_in"] - marks["say"]
    assert said_after < 3.0, said_after

    # The box's own clock: the barge-in came within a second and a half of the caller starting to speak.
    lib = _library(box)
    _, menu = read_wav(lib.path("ru", "main_menu"))
    menu_s = len(menu) / RATE
    events = {e["kind"] + ":" + e["detail"]: _at(e) for e in call["events"]}
    menu_at_box = events["play:main_menu"]
    barge_at_box = events["speech:barge-in: main_menu"]

    # The caller's ears: the menu started, played until the caller spoke, then stopped well before its end.
    rate, audio = read_wav(heard)
    assert rate == RATE
    corr, menu_at = heard_match(audio, menu[: int(1.2 * RATE)], first=_first_match)
    assert corr > 0.9, f"main menu not heard (corr {corr:.2f})"
    say_in_menu = marks["say"] - marks["record"] - menu_at / RATE  # when the caller began, menu time
    assert 1.0 < say_in_menu < 4.0, say_in_menu
    assert barge_at_box - menu_at_box < say_in_menu + 1.5
    windows = _aligned(audio, menu, menu_at, menu_s)
    per = 0.25
    before = windows[: int((say_in_menu - 0.1) / per)]
    assert before and min(before) > 0.9, f"the menu did not play cleanly before the caller spoke: {before}"
    cut = int((say_in_menu + 1.5) / per)  # from here on the prompt must be gone (until the reprompt, 6 s later)
    after = windows[cut: cut + int(4.0 / per)]
    assert after and max(after) < 0.3, f"the menu kept playing after the barge-in: {after}"
    played = (cut * per)
    assert played < menu_s - 15, (played, menu_s)  # stopped well before its full 25 s


def test_speech_during_the_greeting_does_not_cut_it(make_box, phone, loop_thread, tmp_path, speech):
    box = make_box(silence={"asr": "off"})  # the VAD alone decides here
    heard = tmp_path / "heard.wav"

    async def scenario() -> None:
        call = await phone.call(box.sip_uri)
        await phone.answered(call)
        await phone.record(call, heard)
        await _until(box, _played("greeting"), timeout=10, what="greeting")
        await asyncio.sleep(0.8)
        await phone.say(call, speech)  # over the greeting (non-interruptible: the recording notice)
        await _until(box, _played("main_menu"), timeout=20, what="main menu")
        await asyncio.sleep(1.5)
        await phone.say(call, speech, playback_id=2)  # the same words over the menu do cut it
        await _until(box, lambda c: _kinds(c, "speech"), timeout=5, what="barge-in on the menu")
        await phone.hangup(call)
        await phone.ended(call)

    loop_thread.run(scenario(), timeout=90)
    [call] = wait_for_call_end(box.db_path)

    assert call["outcome"] == "caller_hangup"
    assert _kinds(call, "speech") == ["barge-in: main_menu"]  # none for the greeting
    lib = _library(box)
    greeting_s, notice_s = (len(read_wav(lib.path("ru", p))[1]) / RATE for p in ("greeting", "recording_notice"))
    plays = {e["detail"]: _at(e) for e in call["events"] if e["kind"] == "play"}
    # The menu came only after the greeting and the notice had played in full.
    assert plays["main_menu"] - plays["greeting recording_notice"] > greeting_s + notice_s - 0.1

    # The notice (after the caller's words) is heard whole, right after the greeting.
    rate, audio = read_wav(heard)
    _, greeting = read_wav(lib.path("ru", "greeting"))
    _, notice = read_wav(lib.path("ru", "recording_notice"))
    corr, g_at = heard_match(audio, greeting[: int(0.6 * RATE)], first=_first_match)
    assert corr > 0.9, corr
    corr, n_at = heard_match(audio, notice, first=_first_match)
    assert corr > 0.9, f"the recording notice was not heard in full (corr {corr:.2f})"
    assert abs((n_at - g_at) / RATE - greeting_s) < 0.05
