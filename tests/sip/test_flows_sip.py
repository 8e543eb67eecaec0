"""IVR flows over real SIP on 127.0.0.1: DTMF navigation, silent callers, hot reload, dead lines; the flows CLI.

The box's call timeline (store events, kind "play") says which prompts it played; the caller's own recording
proves they were heard, in that order: each prompt's rendered WAV is found in it by normalised
cross-correlation at increasing offsets.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from appliance.boxproc import REPO
from appliance.flow import load_prompt_catalog
from appliance.speech.prompts import EspeakRenderer, PromptLibrary
from tests.helpers import calls_in, heard_match, read_wav, wait_for_call_end

RATE = 8000
sip = pytest.mark.sip


# ------------------------------------------------------------------------------------------------ helpers


def _library(box: Any) -> PromptLibrary:
    return PromptLibrary(load_prompt_catalog(REPO / "voices"), REPO / "voices",
                         Path(box.settings["voices"]["cache"]),
                         variables={"clinic_name": box.settings["clinic"]["name"]})


def _kinds(call: dict[str, Any], kind: str) -> list[str]:
    return [e["detail"] for e in call["events"] if e["kind"] == kind]


def _at(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["at"]).timestamp()


async def _until(box: Any, test: Any, timeout: float = 30.0, what: str = "") -> dict[str, Any]:
    """Poll the box's store (from the test loop, off its thread) until ``test(newest call)`` holds."""
    deadline = time.monotonic() + timeout
    call: dict[str, Any] = {}
    while time.monotonic() < deadline:
        calls = await asyncio.to_thread(calls_in, box.db_path) if box.db_path.exists() else []
        if calls:
            call = calls[0]
            if test(call):
                return call
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what or test}: {call.get('events')}")


def _played(prompt: str) -> Any:
    return lambda call: any(prompt in d.split() for d in _kinds(call, "play"))


def _first_match(haystack: np.ndarray, needle: np.ndarray, threshold: float = 0.8) -> tuple[float, int]:
    """(normalised cross-correlation, offset) of the *first* place ``needle`` occurs in ``haystack`` with a
    correlation above ``threshold`` (the best one found if none is); a prompt heard several times is thus
    found at its own turn, not at its best repeat (tests.helpers.best_match picks the best one)."""
    # A call hung up after a goodbye may end within its last samples: those are the renderer's 150 ms of
    # tail silence, so let the needle reach past the end of the recording by that much.
    haystack = np.concatenate((haystack, np.zeros(int(0.15 * RATE))))
    n, m = len(haystack), len(needle)
    if n < m or m == 0:
        return 0.0, 0
    size = n + m
    xc = np.fft.irfft(np.fft.rfft(haystack, size) * np.conj(np.fft.rfft(needle, size)), size)[: n - m + 1]
    energy = np.concatenate(([0.0], np.cumsum(haystack * haystack)))
    norms = np.sqrt(np.maximum(energy[m:] - energy[: n - m + 1], 0.0)) * np.linalg.norm(needle)
    ncc = np.divide(xc, norms, out=np.zeros_like(xc), where=norms > 1e-9)
    above = np.flatnonzero(ncc > threshold)
    if not len(above):
        lag = int(np.argmax(ncc))
        return float(ncc[lag]), lag
    first = int(above[0])
    lag = first + int(np.argmax(ncc[first: first + RATE // 50]))  # the peak within 20 ms
    return float(ncc[lag]), lag


def _assert_heard_in_order(heard: Path, prompts: list[tuple[str, Path, float | None]]) -> list[float]:
    """Find each prompt (id, wav, seconds of it to look for; None = all) in the caller's recording, each
    one after the one before has half played (a key may cut a prompt short); returns the offsets in s."""
    rate, audio = read_wav(heard)
    assert rate == RATE
    offsets: list[float] = []
    start = 0
    for prompt_id, wav, seconds in prompts:
        _, ref = read_wav(wav)
        # Match the opening of each prompt (0.6 s at most), forgiving one slip inside it: the caller's adaptive
        # jitter buffer may drop or add a frame (CI: the greeting slipped 10 ms at 1.0 s, corr 0.56 over 1.2 s
        # while the box's own recording was exact; silence_goodbye 0.77 over 0.6 s on a loaded machine), which
        # says nothing about what the box played.
        ref = ref[: int(min(seconds if seconds is not None else 0.6, 0.6) * rate)]
        corr, lag = heard_match(audio[start:], ref, first=_first_match, threshold=0.8)
        assert corr > 0.8, f"prompt {prompt_id} not heard after {start / rate:.1f} s (corr {corr:.2f})"
        at = start + lag
        offsets.append(at / rate)
        start = at + len(ref) // 2
    return offsets


def _copy_flows(tmp_path: Path) -> Path:
    flows = tmp_path / "flows"
    shutil.copytree(REPO / "ivr_flows", flows)
    return flows


def _write(path: Path, text: str) -> None:
    """Replace a file at once, as an editor saving it would (the box never reads half a file)."""
    part = path.with_suffix(".part")
    part.write_text(text, encoding="utf-8")
    os.replace(part, path)


def _wait_log(box: Any, pattern: str, offset: int, timeout: float = 10.0) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(pattern, box.log()[offset:])
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"box log never matched {pattern!r}:\n{box.log()[offset:][-3000:]}")


# ---------------------------------------------------------------------------------- a. DTMF navigation


@sip
def test_dtmf_navigation_plays_the_prompts_in_order(box, phone, loop_thread, tmp_path):
    heard = tmp_path / "heard.wav"

    async def scenario() -> None:
        call = await phone.call(box.sip_uri)
        await phone.answered(call)
        await phone.record(call, heard)
        await _until(box, _played("main_menu"), what="main menu")  # the greeting cannot be skipped
        await asyncio.sleep(1.5)
        await phone.press(call, "5")  # test preparation
        await _until(box, _played("tests_menu"), what="tests menu")
        await asyncio.sleep(1.5)
        await phone.press(call, "1")  # blood test
        await _until(box, _played("prep_blood"), what="blood test text")
        await asyncio.sleep(4.0)
        await phone.hangup(call)
        await phone.ended(call)

    loop_thread.run(scenario(), timeout=90)
    [call] = wait_for_call_end(box.db_path)

    assert call["outcome"] == "caller_hangup"
    assert call["digits"] == "51"
    assert _kinds(call, "play") == ["greeting recording_notice", "main_menu", "tests_menu", "prep_blood"]
    assert _kinds(call, "choice") == ["main_menu: 5 -> tests_menu", "tests_menu: 1 -> prep_blood"]

    lib = _library(box)
    offsets = _assert_heard_in_order(heard, [
        ("greeting", lib.path("ru", "greeting"), None),
        ("recording_notice", lib.path("ru", "recording_notice"), None),
        ("main_menu", lib.path("ru", "main_menu"), 1.2),  # cut short by the key
        ("tests_menu", lib.path("ru", "tests_menu"), 1.2),
        ("prep_blood", lib.path("ru", "prep_blood"), 3.0),
    ])
    assert offsets[0] < 0.5, "the greeting started late"
    # The notice follows the greeting without a gap; the menu follows the notice once it has played to its
    # very end (not when pjmedia has read the file: that would cut the notice's last syllable).
    greeting_s, notice_s = (len(read_wav(lib.path("ru", p))[1]) / RATE for p in ("greeting", "recording_notice"))
    assert abs(offsets[1] - offsets[0] - greeting_s) < 0.05
    assert -0.03 < offsets[2] - offsets[1] - notice_s < 0.25


# -------------------------------------------------------------------------------------- b. silent caller

QUIET_FLOW = """\
language: ru
start: menu
nodes:
  menu:
    type: menu
    prompts: ["text:Нажмите один."]
    options:
      "1": bye
  bye: {type: hangup, goodbye: [goodbye]}
"""  # no no_input_timeout / retries: the box settings' silence section gives them


@sip
def test_silent_caller_gets_reprompts_then_goodbye_and_the_box_hangs_up(make_box, phone, loop_thread, tmp_path):
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "quiet.yaml").write_text(QUIET_FLOW, encoding="utf-8")
    box = make_box(flows_dir=flows, main="quiet", silence={"no_input_timeout": 1, "retries": 2})
    heard = tmp_path / "heard.wav"

    async def scenario() -> None:
        call = await phone.call(box.sip_uri)
        await phone.answered(call)
        await phone.record(call, heard)
        await phone.ended(call, timeout=60)  # the box hangs up; the caller never does anything

    loop_thread.run(scenario(), timeout=90)
    [call] = wait_for_call_end(box.db_path)

    assert call["outcome"] == "silent"
    assert call["digits"] == ""
    assert _kinds(call, "end")[0].startswith("by box")
    menu = "text:Нажмите один."
    assert _kinds(call, "play") == [menu, f"no_input_reprompt {menu}", f"no_input_reprompt {menu}",
                                    "silence_goodbye"]
    assert _kinds(call, "no_input") == ["menu 1/3", "menu 2/3", "menu 3/3"]  # retries: 2 from the settings
    assert _kinds(call, "hangup") == ["silent", "after goodbye"]

    # The settings' no_input_timeout (1 s, not the built-in 5 s) sets the pause after each menu prompt.
    lib = _library(box)
    menu_s = len(read_wav(lib.path("ru", menu))[1]) / RATE
    plays = [_at(e) for e in call["events"] if e["kind"] == "play"]
    assert 0.8 < plays[1] - plays[0] - menu_s < 2.0

    _assert_heard_in_order(heard, [
        ("menu", lib.path("ru", menu), None),
        ("no_input_reprompt", lib.path("ru", "no_input_reprompt"), None),
        ("menu", lib.path("ru", menu), None),
        ("no_input_reprompt", lib.path("ru", "no_input_reprompt"), None),
        ("menu", lib.path("ru", menu), None),
        ("silence_goodbye", lib.path("ru", "silence_goodbye"), None),
    ])


# ---------------------------------------------------------------------------------------- c. hot reload


@sip
def test_broken_flow_is_rejected_mid_call_and_the_last_good_flow_keeps_serving(make_box, phone, loop_thread,
                                                                                  tmp_path):
    flows = _copy_flows(tmp_path)
    box = make_box(flows_dir=flows)
    main = flows / "clinic_ru.yaml"
    good = main.read_text(encoding="utf-8")
    lines = good.splitlines()

    # A YAML syntax error: an unclosed list.
    menu_prompts = lines.index("    prompts: [main_menu]")
    broken_yaml = "\n".join(lines[:menu_prompts] + ["    prompts: [main_menu"] + lines[menu_prompts + 1:]) + "\n"
    # A dangling target, in a file that would also change the greeting if it were taken.
    option_5 = next(i for i, line in enumerate(lines) if line.strip().startswith('"5": {goto: tests_menu'))
    dangling = good.replace('"5": {goto: tests_menu,', '"5": {goto: tests_menuu,') \
                   .replace("prompts: [greeting, recording_notice]", "prompts: [greeting]")
    # The fix: valid, and the greeting without the recording notice shows that it was taken.
    fixed = good.replace("prompts: [greeting, recording_notice]", "prompts: [greeting]")
    assert broken_yaml != good and dangling != good and fixed != good

    async def first_call() -> None:
        call = await phone.call(box.sip_uri)
        await phone.answered(call)
        await _until(box, _played("greeting"), what="greeting")
        offset = len(box.log())
        _write(main, broken_yaml)  # while the greeting plays
        found = await asyncio.to_thread(
            _wait_log, box, rf"flows not reloaded.*: {re.escape(str(main))}:(\d+): YAML syntax error", offset)
        assert menu_prompts + 1 <= int(found.group(1)) <= menu_prompts + 3, found.group(0)
        offset = len(box.log())
        _write(main, dangling)
        found = await asyncio.to_thread(
            _wait_log, box, rf"{re.escape(str(main))}:(\d+): node 'main_menu': option '5' goes to 'tests_menuu'",
            offset)
        assert int(found.group(1)) == option_5 + 1
        # The call in progress goes on on the flow it started with.
        await _until(box, _played("main_menu"), what="main menu")
        await asyncio.sleep(1.0)
        await phone.press(call, "5")
        await _until(box, _played("tests_menu"), what="tests menu")
        await asyncio.sleep(1.0)
        await phone.hangup(call)
        await phone.ended(call)

    async def short_call(count: int) -> None:
        call = await phone.call(box.sip_uri)
        await phone.answered(call)
        await _until(box, lambda c: c["id"] == count and _kinds(c, "play"), what=f"call {count} playing")
        await phone.hangup(call)
        await phone.ended(call)

    loop_thread.run(first_call(), timeout=90)
    [first] = wait_for_call_end(box.db_path)
    assert first["outcome"] == "caller_hangup"
    assert _kinds(first, "choice") == ["main_menu: 5 -> tests_menu"]

    # A new call after the rejection still gets the last good flow (greeting and recording notice).
    loop_thread.run(short_call(2))
    second = wait_for_call_end(box.db_path, count=2)[0]
    assert second["flow"] == "clinic_ru"
    assert _kinds(second, "play")[0] == "greeting recording_notice"

    # The fix is picked up by the next call.
    offset = len(box.log())
    _write(main, fixed)
    _wait_log(box, r"flows reloaded: clinic_en, clinic_ru", offset)
    loop_thread.run(short_call(3))
    third = wait_for_call_end(box.db_path, count=3)[0]
    assert _kinds(third, "play")[0] == "greeting"
    assert box.scrape()['registratura_flow_reloads_total{result="rejected"}'] == 2.0


def test_sighup_takes_a_valid_change_and_the_call_in_progress_keeps_its_flow(make_box, phone, loop_thread,
                                                                          tmp_path):
    """`systemctl reload registratura` (SIGHUP) takes an edited flow even where the file's time did not change
    (a copy that keeps times, a clock set back); a call in progress finishes on the flow it started with."""
    flows = _copy_flows(tmp_path)
    box = make_box(flows_dir=flows)
    main = flows / "clinic_ru.yaml"
    good = main.read_text(encoding="utf-8")
    changed = good.replace("prompts: [greeting, recording_notice]", "prompts: [greeting]") \
                  .replace("    prompts: [tests_menu]\n", "    prompts: [emergency, tests_menu]\n")
    assert changed.count("[emergency, tests_menu]") == 1 and "[greeting]" in changed

    async def first_call() -> None:
        call = await phone.call(box.sip_uri)
        await phone.answered(call)
        await _until(box, _played("main_menu"), what="main menu")
        before = os.stat(main)
        offset = len(box.log())
        _write(main, changed)
        os.utime(main, ns=(before.st_atime_ns, before.st_mtime_ns))  # the file watch cannot see this edit
        await asyncio.sleep(3.0)  # longer than the watch's 2 s poll
        assert "flows reloaded" not in box.log()[offset:]
        box.proc.send_signal(signal.SIGHUP)
        await asyncio.to_thread(_wait_log, box, r"flows reloaded: clinic_en, clinic_ru", offset)
        await phone.press(call, "5")
        await _until(box, _played("tests_menu"), what="tests menu")
        await asyncio.sleep(0.5)
        await phone.hangup(call)
        await phone.ended(call)

    async def second_call() -> None:
        call = await phone.call(box.sip_uri)
        await phone.answered(call)
        await _until(box, lambda c: c["id"] == 2 and _kinds(c, "play"), what="call 2 playing")
        await phone.hangup(call)
        await phone.ended(call)

    loop_thread.run(first_call(), timeout=90)
    [first] = wait_for_call_end(box.db_path)
    assert _kinds(first, "choice") == ["main_menu: 5 -> tests_menu"]
    assert "tests_menu" in _kinds(first, "play") and "emergency tests_menu" not in _kinds(first, "play")
    assert _kinds(first, "play")[0] == "greeting recording_notice"

    loop_thread.run(second_call())
    second = wait_for_call_end(box.db_path, count=2)[0]
    assert _kinds(second, "play")[0] == "greeting"  # the new call is on the reloaded flow
    assert box.scrape()['registratura_flow_reloads_total{result="ok"}'] == 1.0


# ---------------------------------------------------------------------------------------- d. dead lines


def _speech_wav(tmp_path: Path) -> Path:
    """About 12 s of Russian speech with the pauses of ordinary talk, as a caller would say it."""
    out = tmp_path / "speech.wav"
    EspeakRenderer(rate=RATE).render(
        "ru",
        "Здравствуйте. Я хотела бы записаться к терапевту на следующую неделю. "
        "Лучше всего во вторник или в среду, с утра. Полис ОМС у меня есть, паспорт тоже. "
        "Скажите, пожалуйста, нужно ли брать с собой направление?",
        out,
    )
    return out


@sip
@pytest.mark.parametrize("vad", ["auto", "energy"])  # Silero on a tap / the conference's level, no tap
def test_dead_line_is_hung_up_as_silent(make_box, phone, loop_thread, vad):
    box = make_box(silence={"dead_line_timeout": 5, "vad": vad})

    async def scenario() -> float:
        call = await phone.call(box.sip_uri)
        await phone.answered(call)
        t0 = time.monotonic()
        await phone.ended(call, timeout=20)  # a pjsua2 caller that plays nothing sends RTP of zeros
        return time.monotonic() - t0

    took = loop_thread.run(scenario(), timeout=40)
    [call] = wait_for_call_end(box.db_path)
    assert 4.5 < took < 8.0, took  # 5 s, not the flow's own timers (the greeting alone takes 7 s)
    assert call["outcome"] == "silent"
    assert _kinds(call, "line_silent") == ["5 s without audio"]
    assert _kinds(call, "hangup") == ["silent"]
    assert _kinds(call, "end")[0].startswith("by box")
    assert "no audio from the line for 5 s" in box.log()


@sip
@pytest.mark.parametrize("vad", ["auto", "energy"])
def test_a_caller_who_speaks_is_not_cut_off(make_box, phone, loop_thread, tmp_path, vad):
    box = make_box(silence={"dead_line_timeout": 5, "vad": vad})
    speech = _speech_wav(tmp_path)
    _, samples = read_wav(speech)
    assert len(samples) / RATE > 10
    # The talk has pauses, but none as long as the dead-line timeout.
    frames = samples[: len(samples) // 160 * 160].reshape(-1, 160)
    loud = np.sqrt((frames ** 2).mean(axis=1)) > 100
    gaps = np.diff(np.flatnonzero(loud))
    assert gaps.max() * 0.02 < 2.0

    async def scenario() -> None:
        call = await phone.call(box.sip_uri)
        await phone.answered(call)
        await phone.say(call, speech)
        await asyncio.sleep(10.0)
        await phone.hangup(call)
        await phone.ended(call)

    loop_thread.run(scenario(), timeout=40)
    [call] = wait_for_call_end(box.db_path)
    assert call["outcome"] == "caller_hangup"
    assert _kinds(call, "line_silent") == []
    assert call["duration"] > 9.5


# ------------------------------------------------------------------------------------------- e. the CLI


def _cli() -> list[str]:
    script = Path(sys.executable).with_name("registratura")
    return [str(script)] if script.exists() else [sys.executable, "-m", "appliance"]


def test_cli_flows_validate_passes_on_the_default_flows():
    result = subprocess.run([*_cli(), "flows", "validate", "ivr_flows"], capture_output=True, text=True,
                            cwd=REPO, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok" in result.stdout


def test_cli_flows_graph_draws_the_main_menu():
    result = subprocess.run([*_cli(), "flows", "graph", "clinic_ru"], capture_output=True, text=True,
                            cwd=REPO, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "main_menu" in result.stdout
    assert "tests_menu" in result.stdout and "prep_blood" in result.stdout


def test_cli_flows_validate_names_file_and_line_of_a_dangling_target(tmp_path):
    flows = _copy_flows(tmp_path)
    main = flows / "clinic_ru.yaml"
    text = main.read_text(encoding="utf-8")
    line = next(i for i, s in enumerate(text.splitlines(), 1) if s.strip().startswith('"5": {goto: tests_menu'))
    main.write_text(text.replace('"5": {goto: tests_menu,', '"5": {goto: tests_menuu,'), encoding="utf-8")
    result = subprocess.run([*_cli(), "flows", "validate", str(flows)], capture_output=True, text=True,
                            cwd=REPO, timeout=60)
    assert result.returncode == 1
    out = result.stdout + result.stderr
    assert f"{main}:{line}: node 'main_menu': option '5' goes to 'tests_menuu' which does not exist" in out
    assert "did you mean 'tests_menu'?" in out


def test_box_settings_give_flow_defaults_and_a_flow_file_keeps_its_own(tmp_path):
    from appliance.flow import load_flows

    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "quiet.yaml").write_text(QUIET_FLOW, encoding="utf-8")
    (flows / "own.yaml").write_text(QUIET_FLOW.replace("start: menu", "start: menu\nno_input_timeout: 7\nretries: 0"),
                                    encoding="utf-8")
    catalog = {lang: set(items) for lang, items in load_prompt_catalog(REPO / "voices").items()}
    loaded = load_flows(flows, catalog, {"no_input_timeout": 2.5, "retries": 4, "interdigit_timeout": 1.5})
    assert (loaded["quiet"].no_input_timeout, loaded["quiet"].retries, loaded["quiet"].interdigit_timeout) == \
        (2.5, 4, 1.5)
    assert (loaded["own"].no_input_timeout, loaded["own"].retries, loaded["own"].interdigit_timeout) == (7.0, 0, 1.5)
    assert load_flows(flows, catalog)["quiet"].no_input_timeout == 5.0  # no settings: the language's default
