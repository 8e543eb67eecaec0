"""Callback rules and the agent-first callback dialer's pure decisions (no I/O, no clock).

Life of a callback::

    pending --agent_found--> dialing_agent --agent_answered--> dialing_patient --patient_answered--> done
       ^                          |                                  |
       +------ agent_gone --------+----------- agent_gone -----------+
       +------------------- patient_failed (attempts < max) ---------+
                            patient_failed (attempts == max), expire, cancel --> failed

Agent first: a free receptionist is rung, hears "callback to +7..., waited 3 minutes", then the patient is
dialled and both legs are bridged. Only unanswered *patient* legs count as attempts: a receptionist who
does not answer is the queue's business (a miss), and the callback simply looks for an agent again.
SIP legs race (a CANCEL crosses a 200 OK), so an input for a callback in another state changes nothing;
a late answer gets its leg hung up.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import StrEnum

from appliance.acd.model import CallbackPolicy, QueueEvent, QueueLogRecord
from appliance.speech.phrases import duration


class CallbackState(StrEnum):
    PENDING = "pending"
    DIALING_AGENT = "dialing_agent"
    DIALING_PATIENT = "dialing_patient"
    DONE = "done"
    FAILED = "failed"


FINISHED = frozenset({CallbackState.DONE, CallbackState.FAILED})


@dataclass(frozen=True, slots=True)
class Callback:
    id: str  # the call id of the queue call that asked for it (one callback per queue call)
    queue: str
    number: str
    reason: str  # "offer" (pressed 1) | "abandon" (hung up while waiting)
    waited: float  # seconds the patient waited in the queue
    created_at: float
    priority_at: float | None = None  # queue entry time when the patient keeps their place
    state: CallbackState = CallbackState.PENDING
    attempts: int = 0  # patient legs that ended unanswered
    next_at: float = 0.0  # not dialled before this
    agent: str = ""
    updated_at: float = 0.0
    detail: str = ""  # the last failure, or why it was given up


# ------------------------------------------------------------------------------------------------ actions


@dataclass(frozen=True, slots=True)
class DialAgent:
    callback_id: str
    agent: str
    timeout: float


@dataclass(frozen=True, slots=True)
class AnnounceToAgent:
    """Speak ``text`` to the receptionist (TTS) before the patient is dialled; carry out before DialPatient."""

    callback_id: str
    agent: str
    text: str


@dataclass(frozen=True, slots=True)
class DialPatient:
    callback_id: str
    number: str
    timeout: float


@dataclass(frozen=True, slots=True)
class BridgeCallback:
    callback_id: str
    agent: str


@dataclass(frozen=True, slots=True)
class HangupLeg:
    """End one leg; ``text`` is said to the receptionist first ("" = nothing)."""

    callback_id: str
    leg: str  # "agent" | "patient"
    text: str = ""


CallbackAction = DialAgent | AnnounceToAgent | DialPatient | BridgeCallback | HangupLeg


@dataclass(frozen=True, slots=True)
class CallbackStep:
    """The callback after one input; write it and ``records`` durably, then carry out ``actions`` in order."""

    callback: Callback
    actions: tuple[CallbackAction, ...] = ()
    records: tuple[QueueLogRecord, ...] = ()


# ------------------------------------------------------------------------------------------------ rules


def abandon_skip_reason(
    policy: CallbackPolicy,
    *,
    waited: float,
    withheld: bool,
    blocked: bool,
    is_open: bool,
    last_callback_at: float | None,
    now: float,
) -> str:
    """Why a caller who hung up in the queue gets no automatic callback, or "" if they get one.

    Rules, in order: automatic callbacks are on; the number is not blocked; it is not withheld (nothing to
    dial); they waited more than ``abandon_after`` seconds (a hang-up after a few seconds is a change of
    mind, not a lost patient); the clinic is open now (``is_open`` comes from the calendar, outside);
    no callback was scheduled for this number within ``window`` seconds (``last_callback_at``, from the store).
    """
    if not policy.on_abandon:
        return "disabled"
    if blocked:
        return "blocked"
    if withheld:
        return "withheld"
    if waited <= policy.abandon_after:
        return "short_wait"
    if not is_open:
        return "closed"
    if last_callback_at is not None and now - last_callback_at < policy.window:
        return "recent"
    return ""


def new_callback(
    call_id: str, queue: str, number: str, reason: str, waited: float, now: float, priority_at: float | None = None
) -> Callback:
    """The pending callback for a ``ScheduleCallback`` action (the queue already wrote CALLBACK_SCHEDULED)."""
    return Callback(
        call_id, queue, number, reason, waited, created_at=now, priority_at=priority_at, next_at=now, updated_at=now
    )


def due(callbacks: Iterable[Callback], now: float, is_open: bool) -> list[Callback]:
    """Pending callbacks that may be dialled now, in service order: keep-place ones by queue entry, then the
    rest by creation. Nothing is due while the clinic is closed."""
    if not is_open:
        return []
    ready = [c for c in callbacks if c.state is CallbackState.PENDING and c.next_at <= now]
    return sorted(ready, key=lambda c: (c.priority_at is None, c.priority_at or c.created_at, c.created_at))


def expire(callbacks: Iterable[Callback], now: float, policy: CallbackPolicy) -> list[CallbackStep]:
    """Give up on pending callbacks asked for more than ``expire_after`` seconds ago."""
    return [
        _fail(c, now, f"expired: not reached within {policy.expire_after / 3600:g} h")
        for c in callbacks
        if c.state is CallbackState.PENDING and now - c.created_at >= policy.expire_after
    ]


# ------------------------------------------------------------------------------------------------ dialer


def agent_found(cb: Callback, agent: str, now: float, policy: CallbackPolicy) -> CallbackStep:
    """The queue reserved ``agent`` for this callback (``AgentForCallback``): ring them."""
    if not _in(cb, CallbackState.PENDING):
        return CallbackStep(cb)
    cb = replace(cb, state=CallbackState.DIALING_AGENT, agent=agent, updated_at=now)
    return CallbackStep(cb, (DialAgent(cb.id, agent, policy.agent_ring_timeout),))


def agent_answered(cb: Callback, now: float, policy: CallbackPolicy, lang: str = "ru") -> CallbackStep:
    """The receptionist picked up: tell them who and why, then dial the patient."""
    if not _in(cb, CallbackState.DIALING_AGENT):  # answered too late: the callback moved on
        return CallbackStep(cb, (HangupLeg(cb.id, "agent"),))
    cb = replace(cb, state=CallbackState.DIALING_PATIENT, updated_at=now)
    record = _record(cb, QueueEvent.CALLBACK_ATTEMPT, now, detail=f"attempt {cb.attempts + 1}")
    actions = (
        AnnounceToAgent(cb.id, cb.agent, agent_announcement(cb, lang)),
        DialPatient(cb.id, cb.number, policy.patient_ring_timeout),
    )
    return CallbackStep(cb, actions, (record,))


def agent_gone(cb: Callback, now: float, policy: CallbackPolicy, reason: str = "no_answer") -> CallbackStep:
    """The agent leg failed or the receptionist hung up before the patient answered: find another agent
    ``agent_retry`` seconds from now. Not a patient attempt."""
    if not _in(cb, CallbackState.DIALING_AGENT, CallbackState.DIALING_PATIENT):
        return CallbackStep(cb)
    actions: tuple[CallbackAction, ...] = ()
    if cb.state is CallbackState.DIALING_PATIENT:
        actions = (HangupLeg(cb.id, "patient"),)
    cb = replace(
        cb, state=CallbackState.PENDING, agent="", next_at=now + policy.agent_retry, updated_at=now, detail=reason
    )
    return CallbackStep(cb, actions)


def patient_answered(cb: Callback, now: float) -> CallbackStep:
    if not _in(cb, CallbackState.DIALING_PATIENT):
        return CallbackStep(cb, (HangupLeg(cb.id, "patient"),))
    cb = replace(cb, state=CallbackState.DONE, updated_at=now, detail="")
    record = _record(cb, QueueEvent.CALLBACK_DONE, now, detail=f"attempt {cb.attempts + 1}")
    return CallbackStep(cb, (BridgeCallback(cb.id, cb.agent),), (record,))


def patient_failed(
    cb: Callback, now: float, policy: CallbackPolicy, reason: str = "no_answer", lang: str = "ru"
) -> CallbackStep:
    """The patient did not answer (or was busy, or the number failed): retry after back-off or give up."""
    if not _in(cb, CallbackState.DIALING_PATIENT):
        return CallbackStep(cb)
    attempts = cb.attempts + 1
    cb = replace(cb, attempts=attempts)
    texts = _TEXTS.get(lang, _TEXTS["ru"])
    if attempts >= policy.max_attempts:
        step = _fail(cb, now, f"{reason}: gave up after {attempts} attempt(s)")
        return replace(step, actions=(HangupLeg(cb.id, "agent", texts["gave_up"]),))
    delay = policy.delay_after(attempts)
    cb = replace(cb, state=CallbackState.PENDING, agent="", next_at=now + delay, updated_at=now, detail=reason)
    record = _record(cb, QueueEvent.CALLBACK_RETRY, now, detail=f"{reason}; attempt {attempts + 1} in {delay:g} s")
    return CallbackStep(cb, (HangupLeg(cb.id, "agent", texts["retry"]),), (record,))


def cancel(cb: Callback, now: float, reason: str = "cancelled") -> CallbackStep:
    """Give up by hand (CLI) or because the patient called in again and was served."""
    if cb.state in FINISHED:
        return CallbackStep(cb)
    step = _fail(cb, now, reason)
    legs = {CallbackState.DIALING_AGENT: ("agent",), CallbackState.DIALING_PATIENT: ("patient", "agent")}
    return replace(step, actions=tuple(HangupLeg(cb.id, leg) for leg in legs.get(cb.state, ())))


# ------------------------------------------------------------------------------------------------ text


def agent_announcement(cb: Callback, lang: str = "ru") -> str:
    """What the receptionist hears before the patient is dialled (rendered by TTS)."""
    number = spoken_number(cb.number)
    minutes = round(cb.waited / 60)
    if lang == "en":
        waited = "less than a minute" if minutes < 1 else duration(minutes, "en", case="accusative")
        why = "asked to be called back" if cb.reason == "offer" else "hung up"
        return f"Callback to {number}. The patient waited {waited} and {why}."
    # In words: a voice reads "1 минуту" as "один минуту"; "одну минуту", "три минуты", "час и пять минут".
    waited = "меньше минуты" if minutes < 1 else duration(minutes, "ru", case="accusative")
    why = "попросил перезвонить" if cb.reason == "offer" else "не дождался ответа"
    return f"Обратный звонок на номер {number}. Пациент ждал {waited} и {why}."


def spoken_number(number: str) -> str:
    """``+79161234567`` -> ``+7 916 123 45 67`` (groups TTS reads as numbers); other numbers unchanged."""
    if number.startswith("+7") and len(number) == 12 and number[1:].isdigit():
        d = number[2:]
        return f"+7 {d[:3]} {d[3:6]} {d[6:8]} {d[8:]}"
    return number


_TEXTS = {
    "ru": {"retry": "Пациент не ответил. Перезвоним позже.", "gave_up": "Пациент не ответил. Попытки исчерпаны."},
    "en": {
        "retry": "The patient did not answer. We will try again later.",
        "gave_up": "The patient did not answer. No attempts left.",
    },
}



# ------------------------------------------------------------------------------------------------ helpers


def _fail(cb: Callback, now: float, why: str) -> CallbackStep:
    cb = replace(cb, state=CallbackState.FAILED, updated_at=now, detail=why)
    return CallbackStep(cb, (), (_record(cb, QueueEvent.CALLBACK_FAILED, now, detail=why),))


def _record(cb: Callback, event: QueueEvent, now: float, detail: str = "") -> QueueLogRecord:
    return QueueLogRecord(
        cb.queue, cb.id, cb.agent or "NONE", event, now, wait=cb.waited, number=cb.number, detail=detail
    )


def _in(cb: Callback, *states: CallbackState) -> bool:
    # SIP legs race (a CANCEL crosses a 200 OK): an event for a callback that has moved on changes nothing.
    return cb.state in states
