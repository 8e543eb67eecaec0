"""Barge-in in the pure flow engine: the caller's speech (VoiceActivity from the VAD) stops a prompt."""

from __future__ import annotations

from pathlib import Path

from appliance.events import (
    CancelTimer,
    Note,
    Play,
    PlaybackDone,
    SpeechHeard,
    StartTimer,
    StopPlayback,
    VoiceActivity,
)
from appliance.flow import NO_INPUT, load_flow
from tests.unit.test_flow_engine import Call, make_flow

REPO = Path(__file__).resolve().parents[2]

FLOW = """
entry:
  type: say
  prompts: [greeting, recording_notice]
  interruptible: false
  next: menu
menu:
  type: menu
  prompts: [main_menu]
  options:
    "1": {goto: info, keywords: [запись, записаться]}
    "2": {goto: number}
info:
  type: say
  prompts: [appointment_info]
  next: bye
number:
  type: ask
  prompts: [callback_enter_number]
  var: phone
  min_length: 3
  max_length: 3
  next: bye
bye:
  type: hangup
  goodbye: [goodbye]
"""


def speak(call: Call) -> list:
    return call.send(VoiceActivity("c1", True))


def at_menu(tmp_path: Path) -> Call:
    call = Call(make_flow(tmp_path, FLOW))
    call.done()  # greeting and notice played out
    assert call.state.node == "menu" and call.state.playing
    return call


def test_speech_over_a_menu_prompt_stops_it_and_waits_for_the_answer(tmp_path):
    call = at_menu(tmp_path)
    actions = speak(call)
    assert actions == [Note("speech", "barge-in: menu"), StopPlayback(), StartTimer(NO_INPUT, 5)]
    assert not call.state.playing and call.state.node == "menu"
    # The prompt's own end arrives late (it was stopped): ignored, no second timer.
    assert call.send(PlaybackDone("c1", call.state.playback_id)) == []
    # More speech, or its end, changes nothing now that the prompt is stopped.
    assert speak(call) == [] and call.send(VoiceActivity("c1", False)) == []


def test_a_barge_in_that_is_never_understood_gets_the_usual_reprompt_then_silent_path(tmp_path):
    call = at_menu(tmp_path)
    speak(call)
    actions = call.fire(NO_INPUT)
    assert Note("no_input", "menu 1/3") in actions
    assert call.of(Play, actions)[0].prompts == ("no_input_reprompt", "main_menu")
    speak(call)  # the reprompt is interruptible too
    call.fire(NO_INPUT)
    speak(call)
    actions = call.fire(NO_INPUT)
    assert call.state.finished and call.state.outcome == "silent"
    assert call.of(Note, actions)[-1] == Note("hangup", "silent")


def test_after_a_barge_in_a_key_or_a_recognised_answer_chooses(tmp_path):
    call = at_menu(tmp_path)
    speak(call)
    actions = call.press("1")
    assert actions[0] == CancelTimer(NO_INPUT)
    assert call.state.node == "info"

    call = at_menu(tmp_path)
    speak(call)
    actions = call.send(SpeechHeard("c1", "я хочу записаться", 0.9))
    assert actions[0] == CancelTimer(NO_INPUT)
    assert call.state.node == "info"


def test_speech_does_not_cut_a_non_interruptible_prompt(tmp_path):
    call = Call(make_flow(tmp_path, FLOW))
    assert call.state.node == "entry" and call.state.playing
    assert speak(call) == []
    assert call.state.playing and call.state.node == "entry"


def test_speech_does_not_skip_information_a_key_would(tmp_path):
    """A patient's "ага" over the test-preparation text must not cut the instructions short."""
    call = at_menu(tmp_path)
    call.press("1")
    assert call.state.node == "info" and call.state.playing
    assert speak(call) == []
    assert call.state.node == "info" and call.state.playing


def test_speech_over_an_ask_prompt_stops_it_and_the_digits_still_count(tmp_path):
    call = at_menu(tmp_path)
    call.press("2")
    assert call.state.node == "number" and call.state.playing
    actions = speak(call)
    assert actions == [Note("speech", "barge-in: number"), StopPlayback(), StartTimer(NO_INPUT, 5)]
    call.press("123")
    assert call.state.vars["phone"] == "123"


def test_no_barge_in_on_hand_over_announcements_or_goodbyes(tmp_path):
    flow = make_flow(tmp_path, """
    entry:
      type: menu
      prompts: [main_menu]
      options:
        "0": reception
    reception:
      type: queue
      queue: reception
      prompts: [queue_connecting]
    """)
    call = Call(flow)
    call.press("0")
    assert call.state.node == "reception" and call.state.playing
    assert speak(call) == []
    call = at_menu(tmp_path)
    call.press("1")
    call.press("1")  # a key skips the info text
    assert call.state.finished  # the goodbye plays under the session's control, not the engine's
    assert speak(call) == []


def test_the_clinic_flow_greeting_is_protected_and_its_main_menu_interruptible():
    flow = load_flow(REPO / "ivr_flows" / "clinic_ru.yaml")
    assert flow.nodes[flow.start].interruptible is False
    assert flow.nodes["main_menu"].interruptible is True
