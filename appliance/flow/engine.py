"""Pure flow engine: (state, event) -> (state, actions); no I/O, no clock, no randomness.

The session calls ``start`` once the call is answered, then ``step`` for every event, and carries out the
returned actions. Timers are named (``NO_INPUT``, ``INTERDIGIT``): the session runs them and feeds back
``TimerFired(name)``; a ``StartTimer`` for a name that is already running restarts it. Subflows: ``flow`` is
the flow the call started on and ``flows`` the snapshot of all flows taken at call start (hot reload then
never changes a running call); ``state.flow`` names the flow the call is in now.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime
from types import MappingProxyType

from appliance.events import (
    Action,
    CallEnded,
    CancelTimer,
    DtmfReceived,
    Enqueue,
    Event,
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
from appliance.flow import checks, conditions, keywords
from appliance.flow.model import (
    CALLER_VAR,
    DIGITS_PLACEHOLDER,
    TEXT_PREFIX,
    AskNode,
    BranchNode,
    CallbackNode,
    Flow,
    GotoNode,
    HangupNode,
    MenuNode,
    Node,
    QueueNode,
    SayNode,
    SetNode,
    SubflowNode,
    TransferNode,
)
from appliance.flow.state import INTERDIGIT, NO_INPUT, CallContext, CallState
from appliance.speech import numbers_ru

__all__ = ["INTERDIGIT", "NO_INPUT", "CallContext", "CallState", "start", "step"]

_MAX_HOPS = 50  # node entries within one step: a goto/branch loop must not spin forever


class _Run:
    """Collects the actions of one start/step call and resolves flow names."""

    def __init__(self, entry: Flow, flows: Mapping[str, Flow] | None, now: datetime) -> None:
        self.entry = entry
        self.flows = flows or {}
        self.now = now
        self.actions: list[Action] = []
        self.hops = 0

    def flow(self, name: str) -> Flow:
        return self.entry if name == self.entry.name else self.flows[name]

    def emit(self, *actions: Action) -> None:
        self.actions.extend(actions)


def start(
    flow: Flow, ctx: CallContext, now: datetime, flows: Mapping[str, Flow] | None = None
) -> tuple[CallState, list[Action]]:
    """Begin a call at ``flow.start``; ``now`` is the clinic-local aware time (for branches)."""
    run = _Run(flow, flows, now)
    state = CallState(
        flow=flow.name, node=flow.start, context=ctx, vars=MappingProxyType(dict(ctx.variables))
    )
    run.emit(Note("flow", flow.name))
    state = _enter(run, state, flow.name, flow.start)
    return state, run.actions


def step(
    flow: Flow, state: CallState, event: Event, now: datetime, flows: Mapping[str, Flow] | None = None
) -> tuple[CallState, list[Action]]:
    """Feed one event; returns the new state and the actions to carry out, in order."""
    if state.finished:
        return state, []
    handler = _HANDLERS.get(type(event))
    if handler is None:  # CallOffered, CallAnswered: nothing for the flow to do
        return state, []
    run = _Run(flow, flows, now)
    try:
        _node(run, state)
    except KeyError:  # a subflow's flow missing from ``flows``: end cleanly rather than crash the session
        run.emit(Note("error", f"no node '{state.node}' in flow '{state.flow}'"))
        return _hangup(run, state, "error", ()), run.actions
    return handler(run, state, event), run.actions


# ------------------------------------------------------------------------------------------------ helpers


def _node(run: _Run, state: CallState) -> tuple[Flow, Node]:
    flow = run.flow(state.flow)
    return flow, flow.nodes[state.node]


def _play(run: _Run, state: CallState, prompts: tuple[str, ...], interruptible: bool) -> CallState:
    state = _stop(run, state)
    pid = state.playback_id + 1
    run.emit(Play(prompts, pid, interruptible))
    return replace(state, playback_id=pid, playing=True)


def _stop(run: _Run, state: CallState) -> CallState:
    if not state.playing:
        return state
    run.emit(StopPlayback())
    return replace(state, playing=False)


def _start_timer(run: _Run, state: CallState, name: str, seconds: float) -> CallState:
    run.emit(StartTimer(name, seconds))
    return replace(state, timers=tuple(t for t in state.timers if t != name) + (name,))


def _cancel_timer(run: _Run, state: CallState, name: str) -> CallState:
    if name not in state.timers:
        return state
    run.emit(CancelTimer(name))
    return replace(state, timers=tuple(t for t in state.timers if t != name))


def _leave(run: _Run, state: CallState) -> CallState:
    """Stop the node's prompt and timers and reset the per-node counters."""
    state = _stop(run, state)
    for name in state.timers:
        run.emit(CancelTimer(name))
    return replace(state, timers=(), retries=0, digits="", phase="")


def _hangup(run: _Run, state: CallState, outcome: str, goodbye: tuple[str, ...]) -> CallState:
    state = _leave(run, state)
    run.emit(Note("hangup", outcome), Hangup(outcome, goodbye))
    return replace(state, finished=True, outcome=outcome)


def _enter(run: _Run, state: CallState, flow_name: str, node_id: str, typeahead: str = "") -> CallState:
    """Go to a node: note it, then run its entry; instant nodes (branch, set, goto...) chain on."""
    run.hops += 1
    state = _leave(run, state)
    if run.hops > _MAX_HOPS:
        run.emit(Note("error", f"more than {_MAX_HOPS} nodes without waiting, stopped at '{node_id}'"))
        return _hangup(run, state, "error", ())
    try:
        flow = run.flow(flow_name)
        node = flow.nodes[node_id]
    except KeyError:  # the loader prevents this; a stale snapshot must not crash the call
        run.emit(Note("error", f"no node '{node_id}' in flow '{flow_name}'"))
        return _hangup(run, state, "error", ())
    state = replace(state, flow=flow_name, node=node_id)
    run.emit(Note("node", node_id))
    return _ENTER[type(node)](run, state, flow, node, typeahead)


def _next(run: _Run, state: CallState, target: str, typeahead: str = "") -> CallState:
    return _enter(run, state, state.flow, target, typeahead)


def _retry(run: _Run, state: CallState, flow: Flow, node: MenuNode | AskNode, kind: str) -> CallState:
    """One failed try (``kind`` "invalid" or "no_input"): reprompt, or take the node's way out."""
    limit = flow.retries if node.retries is None else node.retries
    tries = state.retries + 1
    run.emit(Note(kind, f"{node.id} {tries}/{limit + 1}"))
    if tries > limit:
        target = node.invalid if kind == "invalid" else node.no_input
        if target:
            return _next(run, state, target)
        if kind == "no_input":
            return _hangup(run, state, "silent", (flow.silence_goodbye,))
        return _hangup(run, state, "invalid_input", (flow.goodbye,))
    if kind == "invalid":
        lead = node.invalid_prompt or flow.invalid_prompt
    else:
        lead = node.no_input_prompt or flow.no_input_prompt
    body = _confirm_prompts(node, state.digits) if state.phase == "confirm" else node.prompts
    state = replace(state, retries=tries, digits=state.digits if state.phase == "confirm" else "")
    return _play(run, state, (lead, *body), node.interruptible)


# ---------------------------------------------------------------------------------------- entering nodes


def _enter_say(run: _Run, state: CallState, flow: Flow, node: SayNode, typeahead: str) -> CallState:
    return _play(run, state, node.prompts, node.interruptible)


def _enter_menu(run: _Run, state: CallState, flow: Flow, node: MenuNode, typeahead: str) -> CallState:
    if typeahead and node.interruptible:  # a key pressed during the previous prompt chooses here at once
        return _menu_choice(run, state, flow, node, typeahead)
    state = _play(run, state, node.prompts, node.interruptible)
    if node.keywords():
        run.emit(Listen(node.keywords()))
    return state


def _enter_ask(run: _Run, state: CallState, flow: Flow, node: AskNode, typeahead: str) -> CallState:
    if node.input == "speech" and not state.context.listening:  # nothing could hear the words: move on
        run.emit(Note("collected", f"{node.var}: skipped (no speech recogniser)"))
        return _next(run, state, node.next)
    return _play(run, state, node.prompts, node.interruptible)


def _enter_branch(run: _Run, state: CallState, flow: Flow, node: BranchNode, typeahead: str) -> CallState:
    ctx = state.context
    for case in node.cases:
        if conditions.matches(
            case.when,
            run.now,
            caller=ctx.caller,
            withheld=ctx.withheld,
            variables=state.vars,
            country=flow.country,
        ):
            run.emit(Note("branch", f"{node.id}: {case.label or case.when.text} -> {case.target}"))
            return _next(run, state, case.target, typeahead)
    run.emit(Note("branch", f"{node.id}: otherwise -> {node.default}"))
    return _next(run, state, node.default, typeahead)


def _enter_handoff(run: _Run, state: CallState, flow: Flow, node: Node, typeahead: str) -> CallState:
    prompts = node.prompts if isinstance(node, QueueNode | TransferNode) else ()
    if prompts:  # announce first; the hand-over happens on PlaybackDone
        return _play(run, state, prompts, False)
    return _handoff(run, state, node)


def _handoff(run: _Run, state: CallState, node: Node) -> CallState:
    state = _leave(run, state)
    if isinstance(node, QueueNode):
        run.emit(Note("queue", node.queue), Enqueue(node.queue))
        return replace(state, finished=True, outcome="queued")
    assert isinstance(node, TransferNode)
    # The flow waits at this node: the session bridges on answer (the flow is done then) or reports
    # TransferFailed, which leads to no_answer.
    flow = run.flow(state.flow)
    run.emit(Note("transfer", node.target), Transfer(node.target, node.timeout or flow.transfer_timeout))
    return state


def _enter_callback(run: _Run, state: CallState, flow: Flow, node: CallbackNode, typeahead: str) -> CallState:
    number = state.vars.get(node.number_var, "") if node.number_var else ""
    if not number and state.context.withheld:
        run.emit(Note("callback", "no number to call back"))
        return _next(run, state, node.no_number or node.next)
    run.emit(Note("callback", node.reason), RequestCallback(node.reason, number))
    if node.prompts:
        return _play(run, state, node.prompts, False)
    return _next(run, state, node.next)


def _enter_set(run: _Run, state: CallState, flow: Flow, node: SetNode, typeahead: str) -> CallState:
    values = dict(state.vars)
    for name, value in node.values:
        values[name] = value
        run.emit(SetVar(name, value))
    state = replace(state, vars=MappingProxyType(values))
    return _next(run, state, node.next, typeahead)


def _enter_goto(run: _Run, state: CallState, flow: Flow, node: GotoNode, typeahead: str) -> CallState:
    return _next(run, state, node.target, typeahead)


def _enter_subflow(run: _Run, state: CallState, flow: Flow, node: SubflowNode, typeahead: str) -> CallState:
    try:
        target = run.flow(node.flow)
    except KeyError:
        run.emit(Note("error", f"no flow '{node.flow}' (pass flows= to the engine)"))
        return _hangup(run, state, "error", ())
    run.emit(Note("subflow", node.flow))
    return _enter(run, state, target.name, target.start, typeahead)


def _enter_hangup(run: _Run, state: CallState, flow: Flow, node: HangupNode, typeahead: str) -> CallState:
    return _hangup(run, state, node.outcome, node.goodbye)


_ENTER: dict[type, Callable[..., CallState]] = {
    SayNode: _enter_say,
    MenuNode: _enter_menu,
    AskNode: _enter_ask,
    BranchNode: _enter_branch,
    QueueNode: _enter_handoff,
    TransferNode: _enter_handoff,
    CallbackNode: _enter_callback,
    SetNode: _enter_set,
    GotoNode: _enter_goto,
    SubflowNode: _enter_subflow,
    HangupNode: _enter_hangup,
}


# ------------------------------------------------------------------------------------------ menu and ask


def _menu_choice(
    run: _Run, state: CallState, flow: Flow, node: MenuNode, key: str, via: str = ""
) -> CallState:
    option = node.option(key)
    if option is None:
        return _retry(run, state, flow, node, "invalid")
    run.emit(Note("choice", f"{node.id}: {key}{via} -> {option.target}"))
    return _next(run, state, option.target)


def _confirm_prompts(node: MenuNode | AskNode, digits: str) -> tuple[str, ...]:
    readback = TEXT_PREFIX + " ".join(digits)  # digit by digit, the way people read numbers back
    confirm = node.confirm if isinstance(node, AskNode) else ()
    return tuple(readback if p == DIGITS_PLACEHOLDER else p for p in confirm)


def _ask_digit(run: _Run, state: CallState, flow: Flow, node: AskNode, digit: str) -> CallState:
    if state.phase == "confirm":
        if digit == "1":
            return _accept(run, state, node)
        if digit == "2":
            run.emit(Note("reenter", node.id))
            state = replace(state, phase="", digits="")
            return _play(run, state, node.prompts, node.interruptible)
        return _retry(run, state, flow, node, "invalid")
    if digit == "*" and node.terminator != "*":  # start over
        state = _cancel_timer(run, state, INTERDIGIT)
        return _start_timer(run, replace(state, digits=""), NO_INPUT, node.timeout or flow.no_input_timeout)
    if node.terminator and digit == node.terminator:
        return _finish_ask(run, _cancel_timer(run, state, INTERDIGIT), flow, node)
    state = replace(state, digits=state.digits + digit)
    if len(state.digits) >= node.max_length:
        return _finish_ask(run, _cancel_timer(run, state, INTERDIGIT), flow, node)
    return _start_timer(run, state, INTERDIGIT, node.interdigit_timeout or flow.interdigit_timeout)


def _finish_ask(run: _Run, state: CallState, flow: Flow, node: AskNode) -> CallState:
    digits = state.digits
    ok = node.min_length <= len(digits) <= node.max_length and (
        node.pattern is None or re.fullmatch(node.pattern, digits) is not None
    ) and checks.passes(node.check, digits, run.now.date())
    if not ok:
        return _retry(run, state, flow, node, "invalid")
    if node.confirm:
        state = replace(state, phase="confirm")
        return _play(run, state, _confirm_prompts(node, digits), node.interruptible)
    return _accept(run, state, node)


def _accept(run: _Run, state: CallState, node: AskNode) -> CallState:
    # The timeline gets the length only: the digits are personal data (phone, date of birth).
    run.emit(SetVar(node.var, state.digits), Note("collected", f"{node.var}: {len(state.digits)} digits"))
    state = replace(state, vars=MappingProxyType({**state.vars, node.var: state.digits}))
    if node.var == CALLER_VAR and state.context.withheld:  # callbacks and the queue may use it from now on
        state = replace(state, context=replace(state.context, caller=state.digits, withheld=False))
    return _next(run, state, node.next)


# ----------------------------------------------------------------------------------------------- events


def _on_playback_done(run: _Run, state: CallState, event: PlaybackDone) -> CallState:
    if not state.playing or event.playback_id != state.playback_id:
        return state  # a stopped or superseded prompt
    state = replace(state, playing=False)
    flow, node = _node(run, state)
    if isinstance(node, SayNode):
        return _next(run, state, node.next)
    if isinstance(node, MenuNode | AskNode):
        if isinstance(node, AskNode) and state.digits and state.phase != "confirm":
            return state  # typing already started; the interdigit timer runs
        return _start_timer(run, state, NO_INPUT, node.timeout or flow.no_input_timeout)
    if isinstance(node, QueueNode | TransferNode):
        return _handoff(run, state, node)
    if isinstance(node, CallbackNode):
        return _next(run, state, node.next)
    return state


def _on_dtmf(run: _Run, state: CallState, event: DtmfReceived) -> CallState:
    flow, node = _node(run, state)
    if isinstance(node, SayNode):
        if state.playing and node.interruptible:
            return _next(run, state, node.next, typeahead=event.digit)
        return state
    if not isinstance(node, MenuNode | AskNode):
        return state  # announcements before a hand-over or after a callback ignore keys
    if state.playing and not node.interruptible:
        return state
    if isinstance(node, AskNode) and node.input == "speech":
        if event.digit != "#":
            return state  # words are wanted; "#" skips the question
        state = _cancel_timer(run, _stop(run, state), NO_INPUT)
        run.emit(SetVar(node.var, ""), Note("collected", f"{node.var}: skipped by the caller (#)"))
        return _next(run, replace(state, vars=MappingProxyType({**state.vars, node.var: ""})), node.next)
    state = _cancel_timer(run, _stop(run, state), NO_INPUT)
    if isinstance(node, MenuNode):
        return _menu_choice(run, state, flow, node, event.digit)
    return _ask_digit(run, state, flow, node, event.digit)


def _on_voice(run: _Run, state: CallState, event: VoiceActivity) -> CallState:
    """Barge-in: the caller starts speaking over an interruptible prompt.

    A menu or ask stops its prompt and waits for the answer as if the prompt had ended (the no-input timer
    starts, so speech that is never understood still leads to the reprompt or the silent path). A ``say``
    plays on: a patient's "ага" or "алло?" must not skip the instructions they called for (a key still
    skips an interruptible say). Non-interruptible prompts (the recording notice, hand-over announcements,
    goodbyes) play on. The end of speech changes nothing here.
    """
    if not event.speaking or not state.playing:
        return state
    flow, node = _node(run, state)
    if not isinstance(node, MenuNode | AskNode) or not node.interruptible:
        return state
    run.emit(Note("speech", f"barge-in: {node.id}"))
    state = _stop(run, state)
    if isinstance(node, AskNode) and state.digits and state.phase != "confirm":
        return state  # typing already started; the interdigit timer runs
    return _start_timer(run, state, NO_INPUT, node.timeout or flow.no_input_timeout)


def _on_timer(run: _Run, state: CallState, event: TimerFired) -> CallState:
    if event.name not in state.timers:
        return state  # cancelled or restarted meanwhile
    state = replace(state, timers=tuple(t for t in state.timers if t != event.name))
    flow, node = _node(run, state)
    if isinstance(node, AskNode) and event.name == INTERDIGIT:
        return _finish_ask(run, state, flow, node)
    if isinstance(node, MenuNode | AskNode) and event.name == NO_INPUT:
        return _retry(run, state, flow, node, "no_input")
    return state


def _on_speech(run: _Run, state: CallState, event: SpeechHeard) -> CallState:
    """A transcript of what the caller said (the session runs the recogniser on each VAD-cut utterance).

    A menu takes a spoken key ("два", "цифру три", "первый") or an option's keywords; an ask takes the digits
    said as numbers ("восемь девятьсот шестнадцать...") and, at its read-back, "да" / "нет"."""
    flow, node = _node(run, state)
    if isinstance(node, AskNode):
        return _ask_speech(run, state, flow, node, event.text, event.spotted)
    if not isinstance(node, MenuNode):
        return state
    found = keywords.choose(event.text, ((o.key, o.keywords) for o in node.options))
    if found is None and event.spotted is not None and any(o.key == event.spotted[0] for o in node.options):
        found = (event.spotted[0], f"≈{event.spotted[1]}")  # the words slipped; the model's scores fit this one
    if state.playing and (found is None or not node.interruptible):
        return state  # unclear speech over the prompt is most likely noise or talking to someone else
    state = _cancel_timer(run, _stop(run, state), NO_INPUT)
    if found is None:
        return _retry(run, state, flow, node, "invalid")
    key, phrase = found
    return _menu_choice(run, state, flow, node, key, via=f" (speech: {phrase})")


def _ask_speech(run: _Run, state: CallState, flow: Flow, node: AskNode, text: str,
                spotted: tuple[str, str] | None = None) -> CallState:
    if node.input == "speech":  # free words: kept as said (the session keeps the audio too)
        text = " ".join(text.split())
        state = _cancel_timer(run, _stop(run, state), NO_INPUT)
        run.emit(SetVar(node.var, text), Note("collected", f"{node.var}: {len(text.split())} words (speech)"))
        state = replace(state, vars=MappingProxyType({**state.vars, node.var: text}))
        return _next(run, state, node.next)
    if state.phase == "confirm":
        answer = keywords.yes_no(text)
        if answer is None and spotted is not None and spotted[0] in ("yes", "no"):
            answer = spotted[0] == "yes"  # the words slipped ("адверно"); the model's scores fit a yes or a no
            run.emit(Note("speech", f"{node.id}: taken as {spotted[0]} (≈{spotted[1]})"))
        if answer is None:
            return state if state.playing else _retry(run, state, flow, node, "invalid")
        state = _cancel_timer(run, _stop(run, state), NO_INPUT)
        return _ask_digit(run, state, flow, node, "1" if answer else "2")
    digits = numbers_ru.parse_digits(text)
    if not digits:
        return state if state.playing else _retry(run, _cancel_timer(run, state, NO_INPUT), flow, node, "invalid")
    run.emit(Note("speech", f"{node.id}: {len(digits)} digits spoken"))  # the digits are personal data
    state = _cancel_timer(run, _cancel_timer(run, _stop(run, state), NO_INPUT), INTERDIGIT)
    return _finish_ask(run, replace(state, digits=digits), flow, node)


def _on_line_silent(run: _Run, state: CallState, event: LineSilent) -> CallState:
    run.emit(Note("line_silent", f"{event.seconds:.0f} s without audio"))
    return _hangup(run, state, "silent", ())


def _on_transfer_failed(run: _Run, state: CallState, event: TransferFailed) -> CallState:
    flow, node = _node(run, state)
    if not isinstance(node, TransferNode):
        return state
    if node.no_answer:
        run.emit(Note("transfer", f"{node.target}: {event.reason} -> {node.no_answer}"))
        return _next(run, state, node.no_answer)
    run.emit(Note("transfer", f"{node.target}: {event.reason}"))
    return _hangup(run, state, "transfer_failed", (flow.transfer_failed,))


def _on_call_ended(run: _Run, state: CallState, event: CallEnded) -> CallState:
    for name in state.timers:
        run.emit(CancelTimer(name))
    outcome = {"caller": "caller_hangup", "error": "failed"}.get(event.by, "box_hangup")
    run.emit(Note("ended", event.by))
    return replace(state, timers=(), playing=False, finished=True, outcome=state.outcome or outcome)


_HANDLERS: dict[type, Callable[..., CallState]] = {
    PlaybackDone: _on_playback_done,
    DtmfReceived: _on_dtmf,
    TimerFired: _on_timer,
    SpeechHeard: _on_speech,
    VoiceActivity: _on_voice,
    LineSilent: _on_line_silent,
    TransferFailed: _on_transfer_failed,
    CallEnded: _on_call_ended,
}
