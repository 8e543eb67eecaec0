"""Unit tests of the pure flow engine: node types, timers, retries, silence, time and caller conditions."""

from __future__ import annotations

import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from appliance.events import (
    CallEnded,
    CancelTimer,
    DtmfReceived,
    Enqueue,
    Hangup,
    LineSilent,
    Listen,
    Note,
    Play,
    PlaybackDone,
    RequestCallback,
    SetVar,
    SpeechHeard,
    StartTimer,
    StopPlayback,
    TimerFired,
    Transfer,
    TransferFailed,
    VoiceActivity,
)
from appliance.flow import (
    INTERDIGIT,
    NO_INPUT,
    CallContext,
    CallState,
    Flow,
    conditions,
    keywords,
    load_flow,
    start,
    step,
)

MSK = timezone(timedelta(hours=3), "MSK")
MONDAY_10 = datetime(2026, 3, 2, 10, 0, tzinfo=MSK)  # an ordinary working Monday
CALLER = CallContext(
    caller="+79161234567", withheld=False, called="100", variables={"clinic_name": "Здоровье"}
)
WITHHELD = CallContext(caller="anonymous", withheld=True, called="100")


def make_flow(tmp_path: Path, nodes: str, head: str = "", name: str = "test") -> Flow:
    """A flow from the YAML of its nodes (indented as under `nodes:`), loaded without a prompt catalog."""
    text = f"language: ru\nstart: {head or 'entry'}\nretries: 2\nno_input_timeout: 5\ninterdigit_timeout: 3\n"
    text += "nodes:\n" + textwrap.indent(textwrap.dedent(nodes), "  ")
    path = tmp_path / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return load_flow(path)


class Call:
    """Drives one call through the engine and remembers every action, like a tiny session."""

    def __init__(self, flow: Flow, ctx: CallContext = CALLER, now: datetime = MONDAY_10, flows=None) -> None:
        self.flow, self.now, self.flows = flow, now, flows
        self.state, self.actions = start(flow, ctx, now, flows)
        self.log = list(self.actions)

    def send(self, event) -> list:
        self.state, self.actions = step(self.flow, self.state, event, self.now, self.flows)
        self.log.extend(self.actions)
        return self.actions

    def done(self) -> list:
        return self.send(PlaybackDone("c1", self.state.playback_id))

    def press(self, keys: str) -> list:
        out = []
        for key in keys:
            out += self.send(DtmfReceived("c1", key, "rfc2833"))
        return out

    def fire(self, name: str) -> list:
        return self.send(TimerFired("c1", name))

    def of(self, kind: type, actions: list | None = None) -> list:
        return [a for a in (self.log if actions is None else actions) if isinstance(a, kind)]

    def nodes(self) -> list[str]:
        return [a.detail for a in self.of(Note) if a.kind == "node"]


MENU = """
entry:
  type: say
  prompts: [greeting]
  next: menu
menu:
  type: menu
  prompts: [main_menu]
  options:
    "1": {goto: info, keywords: [запись, записаться]}
    "4": {goto: info, keywords: [прививка, вакцинация]}
    "0": {goto: reception, keywords: [оператор, регистратура]}
    "9": menu
info:
  type: say
  prompts: [appointment_info]
  next: bye
reception:
  type: queue
  queue: reception
bye:
  type: hangup
  goodbye: [goodbye]
"""


# ------------------------------------------------------------------------------------------------- say


def test_start_notes_flow_and_node_and_plays_with_increasing_ids(tmp_path):
    call = Call(make_flow(tmp_path, MENU))
    assert call.actions == [
        Note("flow", "test"),
        Note("node", "entry"),
        Play(("greeting",), 1, True),
    ]
    call.done()
    assert call.state.node == "menu"
    assert call.of(Play, call.actions) == [Play(("main_menu",), 2, True)]
    assert call.of(Listen, call.actions)[0].options[:2] == ("запись", "записаться")


def test_say_ignores_stale_playback_done(tmp_path):
    call = Call(make_flow(tmp_path, MENU))
    assert call.send(PlaybackDone("c1", 99)) == []
    assert call.state.node == "entry"


def test_interruptible_say_passes_the_digit_on_to_the_menu(tmp_path):
    call = Call(make_flow(tmp_path, MENU))
    actions = call.press("1")
    assert actions[0] == StopPlayback()
    assert Note("choice", "menu: 1 -> info") in actions
    assert call.state.node == "info"
    assert Play(("main_menu",), 2, True) not in actions  # the caller knew the menu already


def test_uninterruptible_say_ignores_digits(tmp_path):
    flow = make_flow(tmp_path, MENU.replace("  next: menu\n", "  next: menu\n  interruptible: false\n", 1))
    call = Call(flow)
    assert call.of(Play) == [Play(("greeting",), 1, False)]
    assert call.press("1") == []
    call.done()
    assert call.state.node == "menu"


# ------------------------------------------------------------------------------------------------ menu


def test_menu_starts_no_input_timer_after_prompt_and_takes_a_choice(tmp_path):
    call = Call(make_flow(tmp_path, MENU))
    call.done()
    assert call.done() == [StartTimer(NO_INPUT, 5.0)]
    actions = call.press("0")
    assert actions[0] == CancelTimer(NO_INPUT)
    assert Note("choice", "menu: 0 -> reception") in actions
    assert actions[-1] == Enqueue("reception")
    assert call.state.finished and call.state.outcome == "queued"


def test_digit_during_menu_prompt_stops_it(tmp_path):
    call = Call(make_flow(tmp_path, MENU))
    call.done()
    actions = call.press("1")
    assert actions[0] == StopPlayback()
    assert call.state.node == "info"
    assert call.send(PlaybackDone("c1", 2, interrupted=True)) == []  # the stopped prompt reports late


def test_menu_repeat_option_reenters_and_resets_retries(tmp_path):
    call = Call(make_flow(tmp_path, MENU))
    call.done()
    call.done()
    call.fire(NO_INPUT)
    assert call.state.retries == 1
    call.done()
    call.press("9")
    assert call.state.node == "menu" and call.state.retries == 0
    assert call.of(Play, call.actions)[-1].prompts == ("main_menu",)


def test_invalid_choice_reprompts_then_takes_the_invalid_path(tmp_path):
    flow = make_flow(tmp_path, MENU.replace('    "9": menu\n', '    "9": menu\n  invalid: bye\n'))
    call = Call(flow)
    call.done()
    call.done()
    for attempt in (1, 2):
        actions = call.press("5")
        assert Note("invalid", f"menu {attempt}/3") in actions
        assert call.of(Play, actions) == [Play(("invalid", "main_menu"), 2 + attempt, True)]
        call.done()
    actions = call.press("7")
    assert call.state.node == "bye"
    assert actions[-1] == Hangup("completed", ("goodbye",))


def test_invalid_without_invalid_path_says_goodbye_and_hangs_up(tmp_path):
    call = Call(make_flow(tmp_path, MENU))
    call.done()
    for _ in range(3):
        call.done()
        actions = call.press("5")
    assert actions[-1] == Hangup("invalid_input", ("goodbye",))
    assert call.state.outcome == "invalid_input"


def test_silent_caller_gets_reprompts_then_goodbye_and_outcome_silent(tmp_path):
    call = Call(make_flow(tmp_path, MENU))
    call.done()
    plays = []
    for _ in range(2):
        assert call.done() == [StartTimer(NO_INPUT, 5.0)]
        actions = call.fire(NO_INPUT)
        plays += call.of(Play, actions)
    assert [p.prompts for p in plays] == [("no_input_reprompt", "main_menu")] * 2
    call.done()
    actions = call.fire(NO_INPUT)
    assert actions[-1] == Hangup("silent", ("silence_goodbye",))
    assert Note("no_input", "menu 3/3") in actions
    assert call.state.finished and call.state.outcome == "silent"
    assert call.send(DtmfReceived("c1", "1", "rfc2833")) == []  # nothing after the end


def test_menu_timeout_and_retries_can_be_set_per_menu(tmp_path):
    flow = make_flow(tmp_path, MENU.replace('    "9": menu\n', '    "9": menu\n  timeout: 8\n  retries: 0\n'))
    call = Call(flow)
    call.done()
    assert call.done() == [StartTimer(NO_INPUT, 8.0)]
    assert call.fire(NO_INPUT)[-1] == Hangup("silent", ("silence_goodbye",))


def test_no_input_path_is_taken_after_retries(tmp_path):
    flow = make_flow(
        tmp_path, MENU.replace('    "9": menu\n', '    "9": menu\n  retries: 1\n  no_input: bye\n')
    )
    call = Call(flow)
    call.done()
    call.done()
    call.fire(NO_INPUT)
    call.done()
    assert call.fire(NO_INPUT)[-1] == Hangup("completed", ("goodbye",))


def test_uninterruptible_menu_ignores_digits_until_the_prompt_ends(tmp_path):
    flow = make_flow(tmp_path, MENU.replace('    "9": menu\n', '    "9": menu\n  interruptible: false\n'))
    call = Call(flow)
    call.done()
    assert call.press("1") == []
    call.done()
    call.press("1")
    assert call.state.node == "info"


def test_a_cancelled_timer_that_fires_late_is_ignored(tmp_path):
    call = Call(make_flow(tmp_path, MENU))
    call.done()
    call.done()
    call.press("1")
    assert call.fire(NO_INPUT) == []
    assert call.state.node == "info"


def test_spoken_keyword_with_another_ending_chooses_the_option(tmp_path):
    call = Call(make_flow(tmp_path, MENU))
    call.done()
    actions = call.send(SpeechHeard("c1", "Мне нужно сделать прививку ребёнку", 0.8))
    assert actions[0] == StopPlayback()
    assert Note("choice", "menu: 4 (speech: прививка) -> info") in actions


def test_unclear_speech_is_ignored_during_the_prompt_and_invalid_after_it(tmp_path):
    call = Call(make_flow(tmp_path, MENU))
    call.done()
    assert call.send(SpeechHeard("c1", "алло алло", 0.5)) == []
    call.done()
    actions = call.send(SpeechHeard("c1", "какая погода", 0.5))
    assert actions[0] == CancelTimer(NO_INPUT)
    assert call.of(Play, actions)[0].prompts == ("invalid", "main_menu")


def test_an_option_spotted_in_the_scores_chooses_when_the_words_name_none(tmp_path):
    call = Call(make_flow(tmp_path, MENU))
    call.done()
    actions = call.send(SpeechHeard("c1", "ивкэ", 0.6, spotted=("4", "прививка")))
    assert Note("choice", "menu: 4 (speech: ≈прививка) -> info") in actions


def test_a_read_back_answer_spotted_as_a_yes_or_a_no_counts_when_its_words_are_neither(tmp_path):
    call = Call(ask_flow(tmp_path, "confirm: [you_entered, $digits, confirm_number]"))
    call.done()
    call.press("9161234567#")
    call.done()
    actions = call.send(SpeechHeard("c1", "даднерно", 0.6, spotted=("no", "нет")))  # scores fit a no: type again
    assert Note("speech", "entry: taken as no (≈нет)") in actions
    assert call.of(Play, actions)[0].prompts == ("callback_enter_number",)
    call.done()
    call.press("9031112233#")
    call.done()
    actions = call.send(SpeechHeard("c1", "адверно", 0.6))  # neither, nothing spotted: asked again
    assert call.of(Play, actions)[0].prompts[0] == "number_invalid"
    call.done()
    call.send(SpeechHeard("c1", "адверно", 0.6, spotted=("yes", "да верно")))
    assert call.state.vars["phone"] == "9031112233" and call.state.finished


def test_words_that_name_an_option_win_over_what_the_scores_spotted(tmp_path):
    call = Call(make_flow(tmp_path, MENU))
    call.done()
    actions = call.send(SpeechHeard("c1", "нажимаю четыре", 0.9, spotted=("9", "оператор")))
    assert Note("choice", "menu: 4 (speech: key 4) -> info") in actions


def test_a_spotted_key_the_menu_does_not_offer_is_unclear_speech(tmp_path):
    call = Call(make_flow(tmp_path, MENU))
    call.done()
    call.done()  # the menu prompt has finished: unclear speech now asks again
    actions = call.send(SpeechHeard("c1", "какая погода", 0.5, spotted=("7", "погода")))
    assert call.of(Play, actions)[0].prompts == ("invalid", "main_menu")


def test_a_spoken_key_chooses_the_option(tmp_path):
    call = Call(make_flow(tmp_path, MENU))
    call.done()
    call.done()
    actions = call.send(SpeechHeard("c1", "нажимаю четыре", 0.9))
    assert Note("choice", "menu: 4 (speech: key 4) -> info") in actions


def test_voice_activity_without_a_prompt_to_stop_changes_nothing(tmp_path):
    call = Call(make_flow(tmp_path, MENU))
    assert call.send(VoiceActivity("c1", False)) == []  # the end of speech
    call.done()
    call.done()  # the menu prompt has ended: nothing to barge in on (tests/unit/test_barge_in.py)
    assert call.send(VoiceActivity("c1", True)) == []


# ------------------------------------------------------------------------------------------------- ask

ASK = """
entry:
  type: ask
  prompts: [callback_enter_number]
  var: phone
  min_length: 10
  max_length: 11
  pattern: "[78]?\\\\d{{10}}"
  invalid_prompt: number_invalid
  {confirm}
  next: done
done:
  type: hangup
"""


def ask_flow(tmp_path, confirm: str = "") -> Flow:
    return make_flow(tmp_path, ASK.format(confirm=confirm))


def test_ask_collects_digits_until_the_terminator(tmp_path):
    call = Call(ask_flow(tmp_path))
    assert call.done() == [StartTimer(NO_INPUT, 5.0)]
    actions = call.press("9")
    assert actions == [CancelTimer(NO_INPUT), StartTimer(INTERDIGIT, 3.0)]
    call.press("161234567")
    actions = call.press("#")
    assert actions[0] == CancelTimer(INTERDIGIT)
    assert SetVar("phone", "9161234567") in actions
    assert Note("collected", "phone: 10 digits") in actions  # never the number itself
    assert call.state.vars["phone"] == "9161234567"
    assert actions[-1] == Hangup("completed", ())


def test_ask_ends_at_max_length_and_on_interdigit_timeout(tmp_path):
    call = Call(ask_flow(tmp_path))
    call.press("89161234567")  # 11 = max_length, no terminator needed
    assert call.state.vars["phone"] == "89161234567"
    call = Call(ask_flow(tmp_path))
    call.done()
    call.press("9161234567")
    assert call.state.node == "entry"
    call.fire(INTERDIGIT)
    assert call.state.vars["phone"] == "9161234567"


def test_ask_rejects_short_or_malformed_input_with_its_invalid_prompt(tmp_path):
    call = Call(ask_flow(tmp_path))
    call.done()
    actions = call.press("12345#")
    assert call.of(Play, actions) == [Play(("number_invalid", "callback_enter_number"), 2, True)]
    assert call.state.digits == "" and call.state.retries == 1
    call.press("5551234567")  # 10 digits, but starts with 5: fine by the pattern too
    call.press("#")
    assert call.state.vars["phone"] == "5551234567"
    call = Call(ask_flow(tmp_path))
    call.press("12345678901")  # 11 digits not starting with 7 or 8
    assert call.state.node == "entry" and call.state.retries == 1


DATE_OF_BIRTH = """
entry:
  type: ask
  prompts: [callback_enter_number]
  var: born
  check: date_of_birth
  invalid_prompt: number_invalid
  next: done
done:
  type: hangup
"""


@pytest.mark.parametrize(("typed", "taken"), [
    ("05031957", True),   # 5 March 1957
    ("29022000", True),   # a leap day that was
    ("29021999", False),  # one that was not
    ("31042001", False),  # April has 30 days
    ("15132001", False),  # month 13
    ("00012001", False),  # day 0
    ("01011899", False),  # older than any patient (120 years)
    ("01012031", False),  # not born yet (the call is on MONDAY_10)
    ("0503195", False),   # seven digits after the terminator
])
def test_ask_date_of_birth_takes_only_real_dates_in_the_past(tmp_path, typed, taken):
    call = Call(make_flow(tmp_path, DATE_OF_BIRTH))
    call.done()
    call.press(typed + ("#" if len(typed) < 8 else ""))
    if taken:
        assert call.state.vars["born"] == typed
    else:
        assert "born" not in call.state.vars and call.state.retries == 1
        assert Play(("number_invalid", "callback_enter_number"), 2, True) in call.of(Play)


def test_ask_star_clears_what_was_typed(tmp_path):
    call = Call(ask_flow(tmp_path))
    call.done()
    call.press("123")
    actions = call.press("*")
    assert actions == [CancelTimer(INTERDIGIT), StartTimer(NO_INPUT, 5.0)]
    call.press("9161234567#")
    assert call.state.vars["phone"] == "9161234567"


def test_ask_with_confirmation_reads_back_and_accepts_or_retypes(tmp_path):
    flow = ask_flow(tmp_path, "confirm: [you_entered, $digits, confirm_number]")
    call = Call(flow)
    call.done()
    actions = call.press("9161234567#")
    assert call.of(Play, actions) == [
        Play(("you_entered", "text:9 1 6 1 2 3 4 5 6 7", "confirm_number"), 2, True)
    ]
    assert call.state.phase == "confirm" and "phone" not in call.state.vars
    call.done()
    actions = call.press("2")  # wrong number: type again
    assert call.of(Play, actions)[0].prompts == ("callback_enter_number",)
    call.done()
    call.press("9031112233#")
    call.done()
    actions = call.press("5")  # neither 1 nor 2: the confirmation again
    assert call.of(Play, actions)[0].prompts[0] == "number_invalid"
    assert call.of(Play, actions)[0].prompts[2] == "text:9 0 3 1 1 1 2 2 3 3"
    call.press("1")
    assert call.state.vars["phone"] == "9031112233"
    assert call.state.finished


def test_ask_silence_ends_silent(tmp_path):
    call = Call(ask_flow(tmp_path))
    for _ in range(3):
        call.done()
        actions = call.fire(NO_INPUT)
    assert actions[-1] == Hangup("silent", ("silence_goodbye",))


# ---------------------------------------------------------------------------------- hand-over nodes


def test_queue_announces_then_enqueues(tmp_path):
    flow = make_flow(
        tmp_path, "entry:\n  type: queue\n  queue: reception\n  prompts: [transfer_to_reception]\n"
    )
    call = Call(flow)
    assert call.of(Play) == [Play(("transfer_to_reception",), 1, False)]
    assert call.press("1") == []  # not interruptible
    assert call.done()[-1] == Enqueue("reception")
    assert call.state.outcome == "queued"


def test_transfer_rings_a_named_target_and_waits_for_the_result(tmp_path):
    call = Call(make_flow(tmp_path, "entry:\n  type: transfer\n  target: head_doctor\n  timeout: 12\n"))
    assert call.actions[-1] == Transfer("head_doctor", 12.0)
    assert not call.state.finished  # the session reports TransferFailed, or bridges and the flow is done
    assert call.press("5") == []  # keys while it rings do nothing


def test_a_failed_transfer_says_sorry_and_hangs_up(tmp_path):
    call = Call(make_flow(tmp_path, "entry:\n  type: transfer\n  target: head_doctor\n"))
    assert call.actions[-1] == Transfer("head_doctor", 30.0)  # the flow's transfer_timeout default
    actions = call.send(TransferFailed("c1", "busy"))
    assert Note("transfer", "head_doctor: busy") in actions
    assert actions[-1] == Hangup("transfer_failed", ("transfer_failed",))


def test_a_failed_transfer_goes_to_no_answer(tmp_path):
    flow = make_flow(tmp_path, """
        entry: {type: transfer, target: paid_desk, prompts: [transfer_to_reception], no_answer: reception}
        reception: {type: queue, queue: reception}
    """)
    call = Call(flow)
    assert call.done()[-1] == Transfer("paid_desk", 30.0)
    actions = call.send(TransferFailed("c1", "no_answer"))
    assert actions[-1] == Enqueue("reception")
    assert Note("transfer", "paid_desk: no_answer -> reception") in actions


CALLBACK = """
entry:
  type: request_callback
  reason: after_hours
  prompts: [callback_recorded]
  next: bye
  no_number: sorry
bye:
  type: hangup
  goodbye: [goodbye]
sorry:
  type: hangup
  goodbye: [callback_no_number]
"""


def test_request_callback_for_the_callers_own_number(tmp_path):
    call = Call(make_flow(tmp_path, CALLBACK))
    assert RequestCallback("after_hours", "") in call.actions
    assert call.of(Play, call.actions) == [Play(("callback_recorded",), 1, False)]
    assert call.done()[-1] == Hangup("completed", ("goodbye",))


def test_request_callback_without_a_number_takes_no_number(tmp_path):
    call = Call(make_flow(tmp_path, CALLBACK), WITHHELD)
    assert call.of(RequestCallback) == []
    assert call.actions[-1] == Hangup("completed", ("callback_no_number",))


def test_request_callback_uses_the_number_typed_in(tmp_path):
    ask = ASK.format(confirm="").replace("next: done", "next: cb").replace("done:\n  type: hangup\n", "")
    callback = CALLBACK.replace("entry:", "cb:", 1).replace("  next: bye", "  number_var: phone\n  next: bye")
    nodes = ask + callback
    call = Call(make_flow(tmp_path, nodes), WITHHELD)
    call.press("9161234567#")
    assert RequestCallback("after_hours", "9161234567") in call.log


# --------------------------------------------------------------------------- set, goto, subflow, hangup


def test_set_goto_and_a_branch_on_variables(tmp_path):
    nodes = """
    entry:
      type: set
      vars: {topic: tests, lang: ru}
      next: jump
    jump:
      type: goto
      target: check
    check:
      type: branch
      cases:
        - when: {vars: {topic: tests}}
          goto: yes
      default: no
    yes:
      type: hangup
      outcome: tests
    no:
      type: hangup
    """
    call = Call(make_flow(tmp_path, nodes))
    assert call.of(SetVar) == [SetVar("topic", "tests"), SetVar("lang", "ru")]
    assert call.nodes() == ["entry", "jump", "check", "yes"]
    assert call.state.outcome == "tests"
    assert call.state.vars["clinic_name"] == "Здоровье"  # seeded from the call context


def test_subflow_continues_in_the_other_flow(tmp_path):
    main = make_flow(tmp_path, "entry:\n  type: subflow\n  flow: tests_info\n", name="main")
    sub = make_flow(
        tmp_path,
        "start_here:\n  type: say\n  prompts: [prep_blood]\n  next: end\nend:\n  type: hangup\n",
        head="start_here",
        name="tests_info",
    )
    call = Call(main, flows={"main": main, "tests_info": sub})
    assert Note("subflow", "tests_info") in call.actions
    assert call.state.flow == "tests_info" and call.state.node == "start_here"
    assert call.done()[-1] == Hangup("completed", ())


def test_subflow_missing_from_the_snapshot_ends_the_call_cleanly(tmp_path):
    call = Call(make_flow(tmp_path, "entry:\n  type: subflow\n  flow: nowhere\n"))
    assert call.actions[-1] == Hangup("error", ())


def test_goto_loop_is_stopped(tmp_path):
    nodes = "entry:\n  type: goto\n  target: other\nother:\n  type: goto\n  target: entry\n"
    call = Call(make_flow(tmp_path, nodes))
    assert call.actions[-1] == Hangup("error", ())


def test_hangup_node_says_goodbye(tmp_path):
    call = Call(make_flow(tmp_path, "entry:\n  type: hangup\n  goodbye: [goodbye]\n"))
    assert call.actions[-1] == Hangup("completed", ("goodbye",))
    assert call.state.finished and call.state.outcome == "completed"


# --------------------------------------------------------------------------------- line and call end


def test_dead_line_is_hung_up_as_silent(tmp_path):
    call = Call(make_flow(tmp_path, MENU))
    call.done()
    call.done()
    actions = call.send(LineSilent("c1", 30.0))
    assert actions == [
        Note("line_silent", "30 s without audio"),
        CancelTimer(NO_INPUT),
        Note("hangup", "silent"),
        Hangup("silent", ()),
    ]


def test_call_ended_by_caller_and_after_a_hangup(tmp_path):
    call = Call(make_flow(tmp_path, MENU))
    call.done()
    call.done()
    actions = call.send(CallEnded("c1", "caller"))
    assert CancelTimer(NO_INPUT) in actions
    assert call.state.finished and call.state.outcome == "caller_hangup"
    call = Call(make_flow(tmp_path, "entry:\n  type: hangup\n"))
    assert call.send(CallEnded("c1", "box")) == []
    assert call.state.outcome == "completed"


def test_state_is_frozen(tmp_path):
    call = Call(make_flow(tmp_path, MENU))
    assert isinstance(call.state, CallState)
    with pytest.raises(AttributeError):
        call.state.node = "x"  # type: ignore[misc]


# ------------------------------------------------------------------------------------ time and caller

HOURS = """
entry:
  type: branch
  cases:
    - when: {dates: ["2026-12-31", "2027-01-09..2027-01-10"]}
      goto: special
    - when: {lunch: "13:00-14:00"}
      goto: lunch
    - when: {hours: {mon-fri: "08:00-20:00", sat: "09:00-15:00", holiday: "10:00-12:00"}}
      goto: open
  default: closed
special: {type: hangup, outcome: special}
lunch: {type: hangup, outcome: lunch}
open: {type: hangup, outcome: open}
closed: {type: hangup, outcome: closed}
"""


@pytest.mark.parametrize(
    ("when", "outcome"),
    [
        (datetime(2026, 3, 2, 10, 0), "open"),  # Monday
        (datetime(2026, 3, 2, 7, 59), "closed"),
        (datetime(2026, 3, 2, 20, 0), "closed"),  # the end of a range is exclusive
        (datetime(2026, 3, 2, 13, 30), "lunch"),
        (datetime(2026, 3, 7, 10, 0), "open"),  # Saturday hours
        (datetime(2026, 3, 7, 16, 0), "closed"),
        (datetime(2026, 3, 7, 13, 30), "open"),  # no lunch break on a day off
        (datetime(2026, 3, 8, 11, 0), "open"),  # Sunday 8 March: holiday hours 10-12
        (datetime(2026, 3, 1, 11, 0), "closed"),  # an ordinary Sunday
        (datetime(2026, 1, 7, 9, 0), "closed"),  # Christmas, a Wednesday: closed
        (datetime(2026, 1, 7, 11, 0), "open"),  # ... unless the flow gives holiday hours
        (datetime(2026, 1, 7, 13, 30), "closed"),  # lunch is for working days only
        (datetime(2025, 11, 3, 9, 0), "closed"),  # Monday made a day off for the working Saturday
        (datetime(2025, 11, 1, 18, 0), "open"),  # working Saturday: weekday hours until 20:00
        (datetime(2025, 11, 1, 13, 30), "lunch"),  # ... and a working day's lunch break
        (datetime(2025, 11, 8, 18, 0), "closed"),  # an ordinary Saturday closes at 15:00
        (datetime(2026, 12, 31, 10, 0), "special"),  # a date listed in the flow
        (datetime(2027, 1, 10, 10, 0), "special"),  # inside a date range
    ],
)
def test_time_conditions(tmp_path, when, outcome):
    flow = make_flow(tmp_path, HOURS)
    call = Call(flow, now=when.replace(tzinfo=MSK))
    assert call.state.outcome == outcome


def test_calendar_knows_russian_holidays_and_working_saturdays():
    assert conditions.is_holiday(datetime(2026, 1, 7).date())
    assert not conditions.is_holiday(datetime(2026, 1, 12).date())
    assert conditions.is_working_weekend(datetime(2025, 11, 1).date())
    assert conditions.is_workday(datetime(2025, 11, 1).date())
    assert not conditions.is_workday(datetime(2025, 11, 3).date())


CALLERS = """
entry:
  type: branch
  cases:
    - when: {withheld: true}
      goto: hidden
    - when: {caller_in: ["+79161234567", "+74951234567"]}
      goto: known
      label: staff
  default: other
hidden: {type: hangup, outcome: hidden}
known: {type: hangup, outcome: known}
other: {type: hangup, outcome: other}
"""


def test_caller_conditions(tmp_path):
    flow = make_flow(tmp_path, CALLERS)
    assert Call(flow).state.outcome == "known"
    assert Note("branch", "entry: staff -> known") in Call(flow).log
    assert Call(flow, WITHHELD).state.outcome == "hidden"
    stranger = CallContext(caller="+79990000000", withheld=False, called="100")
    assert Call(flow, stranger).state.outcome == "other"


def test_shipped_russian_flow_after_hours_and_open(tmp_path):
    flow = load_flow(Path(__file__).parents[2] / "ivr_flows" / "clinic_ru.yaml")
    holiday = Call(flow, now=datetime(2026, 1, 7, 10, 0, tzinfo=MSK))
    holiday.done()
    assert holiday.nodes()[-1] == "after_hours"
    working = Call(flow, now=MONDAY_10)
    working.done()
    assert working.nodes()[-1] == "main_menu"
    working.press("0")
    assert working.state.outcome == "" and working.state.node == "to_reception"
    assert working.done()[-1] == Enqueue("reception")


# ------------------------------------------------------------------------------------------- keywords


@pytest.mark.parametrize(
    ("keyword", "word", "ok"),
    [
        ("запись", "записаться", True),
        ("прививка", "прививок", True),
        ("больничный", "больничного", True),
        ("дом", "дому", True),
        ("дом", "документ", False),
        ("омс", "омс", True),
        ("анализы", "анализ", True),
        ("оператор", "опыт", False),
    ],
)
def test_keyword_word_matching(keyword, word, ok):
    assert keywords.word_matches(keyword, word) is ok


def test_keyword_best_match_prefers_the_longer_phrase():
    options = [("1", ["на дом"]), ("2", ["вызов врача на дом"])]
    assert keywords.best_match("Хочу вызвать врача на дом", options) == ("2", "вызов врача на дом")
    assert keywords.best_match("ничего", options) is None


def test_withheld_gate_collects_a_number_then_runs_the_clinic_flow(tmp_path):
    from appliance.security.withheld import withheld_gate

    main = make_flow(tmp_path, """
        entry: {type: request_callback, reason: asked, next: bye}
        bye: {type: hangup}
    """)
    gate = withheld_gate(main, "RU")
    call = Call(gate, ctx=WITHHELD, flows={main.name: main})
    assert call.of(Play)[-1].prompts == ("withheld_ask",)
    call.press("12345#")  # too short: the invalid prompt and the question again
    assert call.of(Play)[-1].prompts == ("number_invalid", "withheld_ask")
    call.press("89161112233")  # 11 digits end the input without #
    assert call.of(Play)[-1].prompts == ("you_entered", "text:8 9 1 6 1 1 1 2 2 3 3", "confirm_number")
    actions = call.press("1")
    assert SetVar("caller_number", "89161112233") in actions
    assert RequestCallback("asked", "") in actions  # the typed number now counts as the caller's own
    assert call.state.context.caller == "89161112233" and not call.state.context.withheld


def test_withheld_gate_refuses_a_caller_who_types_nothing(tmp_path):
    from appliance.security.withheld import withheld_gate

    main = make_flow(tmp_path, "entry: {type: hangup}\n")
    call = Call(withheld_gate(main), ctx=WITHHELD, flows={main.name: main})
    for _ in range(3):  # the first try and two reprompts (the flow's retries)
        call.done()
        actions = call.fire(NO_INPUT)
    assert actions[-1] == Hangup("withheld", ("withheld_goodbye",))


def test_ask_takes_a_phone_number_said_in_words_and_a_spoken_yes(tmp_path):
    confirm = 'confirm: [you_entered, "$digits", confirm_number]'
    call = Call(ask_flow(tmp_path, confirm))
    call.done()
    actions = call.send(SpeechHeard("c1", "восемь девятьсот шестнадцать сто двадцать три сорок пять шестьдесят семь",
                                    0.9))
    assert Note("speech", "entry: 11 digits spoken") in actions
    assert call.of(Play, actions)[0].prompts == ("you_entered", "text:8 9 1 6 1 2 3 4 5 6 7", "confirm_number")
    call.done()
    actions = call.send(SpeechHeard("c1", "да верно", 0.9))
    assert SetVar("phone", "89161234567") in actions


def test_ask_spoken_no_asks_again_and_unclear_speech_counts_as_invalid(tmp_path):
    confirm = 'confirm: [you_entered, "$digits", confirm_number]'
    call = Call(ask_flow(tmp_path, confirm))
    call.done()
    call.send(SpeechHeard("c1", "девять один шесть один два три четыре пять шесть семь", 0.9))
    call.done()
    actions = call.send(SpeechHeard("c1", "нет", 0.9))
    assert Note("reenter", "entry") in actions
    call.done()
    actions = call.send(SpeechHeard("c1", "я не знаю", 0.5))  # no digits at all
    assert call.of(Play, actions)[0].prompts[0] == "number_invalid"


REASON = """
entry: {type: ask, input: speech, prompts: [home_visit], var: reason, next: done}
done: {type: hangup}
"""


def test_a_speech_ask_keeps_the_words_and_goes_on(tmp_path):
    from dataclasses import replace as dc_replace

    call = Call(make_flow(tmp_path, REASON), ctx=dc_replace(CALLER, listening=True))
    call.done()
    actions = call.press("5")
    assert actions == []  # words are wanted, keys other than # do nothing
    actions = call.send(SpeechHeard("c1", "температура  и кашель", 0.9))
    assert SetVar("reason", "температура и кашель") in actions
    assert Note("collected", "reason: 3 words (speech)") in actions
    assert actions[-1] == Hangup("completed", ())


def test_a_speech_ask_is_skipped_by_hash_or_without_a_recogniser(tmp_path):
    from dataclasses import replace as dc_replace

    call = Call(make_flow(tmp_path, REASON), ctx=dc_replace(CALLER, listening=True))
    call.done()
    assert Note("collected", "reason: skipped by the caller (#)") in call.press("#")
    call = Call(make_flow(tmp_path, REASON))  # no recogniser: nobody could hear the words
    assert Note("collected", "reason: skipped (no speech recogniser)") in call.log
    assert call.state.finished
