"""Unit tests of the callback dialer: agent first, retries with back-off, giving up, and the queue hand-off."""

from __future__ import annotations

from appliance.acd import callbacks as cbs
from appliance.acd.callbacks import (
    AnnounceToAgent,
    BridgeCallback,
    Callback,
    CallbackState,
    DialAgent,
    DialPatient,
    HangupLeg,
)
from appliance.acd.model import (
    AgentConfig,
    AgentForCallback,
    AgentStatus,
    CallbackPolicy,
    QueueConfig,
    QueueEvent,
    ScheduleCallback,
)
from appliance.acd.queue import QueueCore

A = "sip:101@10.0.0.1"
POLICY = CallbackPolicy(max_attempts=3, backoff=(120.0, 600.0), agent_retry=30.0)
E = QueueEvent


def pending(reason: str = "abandon", waited: float = 185.0, now: float = 1000.0) -> Callback:
    return cbs.new_callback("c1", "reception", "+79161234567", reason, waited, now)


def to_patient(cb: Callback, now: float) -> Callback:
    cb = cbs.agent_found(cb, A, now, POLICY).callback
    return cbs.agent_answered(cb, now + 2, POLICY).callback


def test_agent_first_then_patient_then_bridge() -> None:
    cb = pending()
    step = cbs.agent_found(cb, A, 1000, POLICY)
    assert step.callback.state is CallbackState.DIALING_AGENT
    assert step.actions == (DialAgent("c1", A, POLICY.agent_ring_timeout),)
    step = cbs.agent_answered(step.callback, 1005, POLICY)
    assert step.callback.state is CallbackState.DIALING_PATIENT
    announce, dial = step.actions  # the receptionist hears who before the patient is dialled
    assert announce == AnnounceToAgent(
        "c1", A, "Обратный звонок на номер +7 916 123 45 67. Пациент ждал три минуты и не дождался ответа."
    )
    assert dial == DialPatient("c1", "+79161234567", POLICY.patient_ring_timeout)
    assert [r.event for r in step.records] == [E.CALLBACK_ATTEMPT]
    step = cbs.patient_answered(step.callback, 1020)
    assert step.callback.state is CallbackState.DONE
    assert step.actions == (BridgeCallback("c1", A),)
    assert [(r.event, r.agent, r.number) for r in step.records] == [(E.CALLBACK_DONE, A, "+79161234567")]


def test_retries_with_backoff_then_gives_up_and_records_why() -> None:
    cb = pending()
    cb = to_patient(cb, 1000)
    step = cbs.patient_failed(cb, 1040, POLICY, reason="no_answer")
    cb = step.callback
    assert (cb.state, cb.attempts, cb.next_at, cb.agent) == (CallbackState.PENDING, 1, 1160.0, "")
    assert step.actions == (HangupLeg("c1", "agent", "Пациент не ответил. Перезвоним позже."),)
    assert [(r.event, r.detail) for r in step.records] == [(E.CALLBACK_RETRY, "no_answer; attempt 2 in 120 s")]
    assert cbs.due([cb], 1159, is_open=True) == []
    assert cbs.due([cb], 1160, is_open=True) == [cb]

    cb = cbs.patient_failed(to_patient(cb, 1160), 1200, POLICY, reason="busy").callback
    assert (cb.attempts, cb.next_at) == (2, 1800.0)  # second back-off
    step = cbs.patient_failed(to_patient(cb, 1800), 1840, POLICY, reason="no_answer")
    cb = step.callback
    assert (cb.state, cb.attempts) == (CallbackState.FAILED, 3)
    assert cb.detail == "no_answer: gave up after 3 attempt(s)"
    assert [(r.event, r.detail) for r in step.records] == [(E.CALLBACK_FAILED, cb.detail)]
    assert step.actions[0].leg == "agent"


def test_backoff_last_value_repeats() -> None:
    policy = CallbackPolicy(max_attempts=5, backoff=(60.0, 300.0))
    assert [policy.delay_after(n) for n in (1, 2, 3, 4)] == [60.0, 300.0, 300.0, 300.0]


def test_an_agent_who_does_not_answer_is_no_patient_attempt() -> None:
    cb = cbs.agent_found(pending(), A, 1000, POLICY).callback
    step = cbs.agent_gone(cb, 1020, POLICY)
    assert (step.callback.state, step.callback.attempts, step.callback.next_at) == (CallbackState.PENDING, 0, 1050)
    assert step.actions == ()
    # the receptionist hangs up while the patient's phone rings: drop the patient leg, try again later
    step = cbs.agent_gone(to_patient(step.callback, 1050), 1060, POLICY, reason="agent_hung_up")
    assert step.actions == (HangupLeg("c1", "patient"),)
    assert (step.callback.state, step.callback.attempts) == (CallbackState.PENDING, 0)


def test_due_only_when_open_and_keep_place_first() -> None:
    a = cbs.new_callback("a", "reception", "+79160000001", "abandon", 30, 100)
    b = cbs.new_callback("b", "reception", "+79160000002", "offer", 70, 200, priority_at=130)
    c = cbs.new_callback("c", "reception", "+79160000003", "abandon", 30, 50)
    assert cbs.due([a, b, c], 300, is_open=False) == []
    assert [x.id for x in cbs.due([a, b, c], 300, is_open=True)] == ["b", "c", "a"]


def test_expire_and_cancel() -> None:
    cb = pending(now=0)
    assert cbs.expire([cb], 8 * 3600 - 1, POLICY) == []
    (step,) = cbs.expire([cb], 8 * 3600, POLICY)
    assert step.callback.state is CallbackState.FAILED and step.records[0].event is E.CALLBACK_FAILED
    assert "expired" in step.callback.detail
    step = cbs.cancel(to_patient(pending(), 10), 20)
    assert step.callback.state is CallbackState.FAILED
    assert [a.leg for a in step.actions] == ["patient", "agent"]
    assert cbs.cancel(step.callback, 30).records == ()  # already finished: nothing changes


def test_late_events_change_nothing() -> None:
    cb = pending()
    step = cbs.agent_answered(cb, 1000, POLICY)  # the leg was given up already
    assert step.callback == cb and step.actions == (HangupLeg("c1", "agent"),)
    assert cbs.patient_failed(cb, 1000, POLICY).callback == cb
    assert cbs.agent_gone(cb, 1000, POLICY).callback == cb


def test_announcement_text() -> None:
    """Minutes in words: a voice reads "1 минуту" as "один минуту"."""
    assert cbs.agent_announcement(pending(waited=61), "ru").endswith("ждал одну минуту и не дождался ответа.")
    assert "ждал пять минут" in cbs.agent_announcement(pending(waited=300))
    assert "ждал двадцать две минуты" in cbs.agent_announcement(pending(waited=22 * 60))
    assert "ждал двадцать одну минуту" in cbs.agent_announcement(pending(waited=21 * 60))
    assert "ждал одиннадцать минут" in cbs.agent_announcement(pending(waited=11 * 60))
    assert "ждал час и пять минут" in cbs.agent_announcement(pending(waited=65 * 60))
    assert "меньше минуты" in cbs.agent_announcement(pending(waited=20))
    assert cbs.agent_announcement(pending("offer", 180), "en") == (
        "Callback to +7 916 123 45 67. The patient waited three minutes and asked to be called back."
    )
    assert "waited an hour and" in cbs.agent_announcement(pending("offer", 62 * 60), "en")
    assert cbs.spoken_number("+4930123456") == "+4930123456"


def test_abandon_then_callback_is_placed_agent_first_once_a_receptionist_is_free() -> None:
    """The shell's wiring in miniature: queue -> ScheduleCallback -> dialer -> queue reserves an agent."""
    q = QueueCore(QueueConfig("reception", (AgentConfig(A),), wrapup=0.0, max_wait=0))
    q.caller_joined("busy-call", "+79160000000", 0)
    q.agent_answered(A, 1)
    q.caller_joined("c1", "+79161234567", 10)
    (sched,) = [a for a in q.caller_left("c1", 190).actions if isinstance(a, ScheduleCallback)]
    cb = cbs.new_callback(sched.call_id, sched.queue, sched.number, sched.reason, sched.waited, 190)
    assert cbs.due([cb], 190, is_open=True) == [cb]
    assert q.callback_waiting(cb.id, 190, cb.priority_at).actions == ()  # the receptionist is busy
    step = q.call_completed("busy-call", 300)
    assert [a for a in step.actions if isinstance(a, AgentForCallback)] == [AgentForCallback("c1", A)]
    cb = cbs.agent_found(cb, A, 300, POLICY).callback
    q.agent_answered(A, 305)
    step = cbs.agent_answered(cb, 305, POLICY)
    assert "ждал три минуты" in step.actions[0].text
    step = cbs.patient_answered(step.callback, 320)
    assert step.callback.state is CallbackState.DONE
    assert q.agent(A).status is AgentStatus.BUSY
    q.call_completed("c1", 400)
    assert q.agent(A).status is AgentStatus.IDLE and q.agent(A).calls_taken == 2
