"""Unit tests of the pure queue core: strategies, wrap-up, misses, announcements, offers and abandon rules."""

from __future__ import annotations

import pytest

from appliance.acd.model import (
    AgentConfig,
    AgentForCallback,
    AgentStatus,
    Announce,
    Bridge,
    CallbackPolicy,
    LeaveQueue,
    OfferCallback,
    QueueConfig,
    QueueEvent,
    RingAgents,
    ScheduleCallback,
    Step,
    StopRinging,
    Strategy,
)
from appliance.acd.queue import QueueCore
from appliance.acd.strategy import expected_wait
from appliance.errors import ConfigError

A, B, C = "sip:101@10.0.0.1", "sip:102@10.0.0.2", "sip:103@10.0.0.3"
E = QueueEvent


def make(*uris: str, strategy: Strategy = Strategy.LONGEST_IDLE, **kw: object) -> QueueCore:
    agents = tuple(u if isinstance(u, AgentConfig) else AgentConfig(u) for u in (uris or (A, B, C)))
    kw.setdefault("wrapup", 0.0)
    kw.setdefault("retry", 0.0)
    return QueueCore(QueueConfig("reception", agents, strategy, **kw))  # type: ignore[arg-type]


def of(step: Step, kind: type) -> list:
    return [a for a in step.actions if isinstance(a, kind)]


def events(step: Step) -> list[QueueEvent]:
    return [r.event for r in step.records]


def rung(step: Step) -> tuple[str, ...]:
    rings = of(step, RingAgents)
    return tuple(u for r in rings for u in r.agents)


def serve(q: QueueCore, call_id: str, t: float, talk: float = 10.0) -> str:
    """A caller joins at ``t``, the agent rung answers at once, the call lasts ``talk``; returns the agent."""
    (agent,) = rung(q.caller_joined(call_id, "+79161234567", t))
    q.agent_answered(agent, t)
    q.call_completed(call_id, t + talk)
    return agent


# --- strategies -----------------------------------------------------------------------------------------


def test_longest_idle_rings_the_agent_idle_longest() -> None:
    q = make()
    assert rung(q.caller_joined("c1", "+7916", 0)) == (A,)  # all idle since 0: settings order
    q.agent_answered(A, 1)
    assert rung(q.caller_joined("c2", "+7916", 2)) == (B,)
    q.agent_answered(B, 3)
    q.call_completed("c1", 10)  # A idle since 10
    q.call_completed("c2", 5)  # B idle since 5
    assert rung(q.caller_joined("c3", "+7916", 20)) == (C,)  # idle since 0
    q.agent_answered(C, 21)
    assert rung(q.caller_joined("c4", "+7916", 22)) == (B,)  # 5 < 10


def test_round_robin_rotates_and_skips_busy_agents() -> None:
    q = make(strategy=Strategy.ROUND_ROBIN)
    assert [serve(q, f"c{i}", i * 100) for i in range(4)] == [A, B, C, A]
    # B busy: after A (rung last) comes C, then A again
    assert rung(q.caller_joined("x", "+7916", 500)) == (B,)
    q.agent_answered(B, 500)
    assert [serve(q, f"y{i}", 600 + i * 100) for i in range(2)] == [C, A]


def test_fewest_calls_rings_the_agent_with_fewest_calls_ties_by_longest_idle() -> None:
    q = make(strategy=Strategy.FEWEST_CALLS)
    assert serve(q, "c1", 0) == A  # all 0 calls, all idle since 0 -> settings order
    assert serve(q, "c2", 100) == B  # A has 1
    assert serve(q, "c3", 200) == C
    assert serve(q, "c4", 300) == A  # all have 1; A idle longest (since 10)
    assert q.agent(A).calls_taken == 2
    assert serve(q, "c5", 400) == B  # B and C have 1; B idle since 110, C since 210


def test_ring_all_rings_every_free_agent_and_the_first_answer_wins() -> None:
    q = make(strategy=Strategy.RING_ALL)
    q.agent_pause(C, 0)
    step = q.caller_joined("c1", "+7916", 1)
    assert of(step, RingAgents) == [RingAgents("c1", (A, B), 15.0)]  # paused C is not rung
    step = q.agent_answered(B, 4)
    assert of(step, StopRinging) == [StopRinging("c1", (A,))]
    assert of(step, Bridge) == [Bridge("c1", B)]
    assert events(step) == [E.RINGCANCELED, E.CONNECT]
    assert q.agent(A).status is AgentStatus.IDLE and q.agent(A).missed == 0  # a cancelled ring is no miss
    assert q.agent(B).status is AgentStatus.BUSY
    assert rung(q.caller_joined("c2", "+7916", 5)) == (A,)  # busy B and paused C skipped


def test_ring_all_adds_agents_that_come_free_but_not_a_higher_penalty() -> None:
    q = make(AgentConfig(A), AgentConfig(B), AgentConfig(C, penalty=1), strategy=Strategy.RING_ALL)
    q.agent_pause(B, 0)
    assert rung(q.caller_joined("c1", "+7916", 1)) == (A,)  # only the penalty-0 tier
    assert rung(q.agent_resume(B, 2)) == (B,)  # B joins the ringing for c1
    assert q.agent(C).status is AgentStatus.IDLE


def test_penalty_tier_first_then_higher() -> None:
    q = make(AgentConfig(A, penalty=1), AgentConfig(B))
    assert rung(q.caller_joined("c1", "+7916", 0)) == (B,)
    q.agent_answered(B, 1)
    assert rung(q.caller_joined("c2", "+7916", 2)) == (A,)  # no penalty-0 agent free


def test_skills_route_a_caller_and_let_the_next_one_pass() -> None:
    q = make(AgentConfig(A, skills=frozenset({"ru"})), AgentConfig(B, skills=frozenset({"ru", "en"})))
    q.agent_pause(B, 0)
    assert rung(q.caller_joined("en1", "+7916", 1, needs=frozenset({"en"}))) == ()
    assert rung(q.caller_joined("ru1", "+7916", 2)) == (A,)  # the English caller does not block A
    assert rung(q.agent_resume(B, 3)) == (B,)
    assert q.agent(B).target == "en1"


# --- wrap-up, misses, pause -----------------------------------------------------------------------------


def test_wrapup_is_respected_and_can_end_early() -> None:
    q = make(A, wrapup=10.0)
    q.caller_joined("c1", "+7916", 0)
    q.agent_answered(A, 1)
    q.call_completed("c1", 30, by="agent")
    assert q.agent(A).status is AgentStatus.WRAPUP
    assert rung(q.caller_joined("c2", "+7916", 31)) == ()
    assert q.next_deadline(31) == 40
    assert rung(q.tick(39.9)) == ()
    step = q.tick(40.5)
    assert rung(step) == (A,)
    assert q.agent(A).idle_since == 40  # the deadline, not the late tick
    q.agent_answered(A, 41)
    q.call_completed("c2", 50)
    step = q.caller_joined("c3", "+7916", 51)
    assert rung(q.wrapup_done(A, 52)) == (A,) and rung(step) == ()


def test_missing_max_missed_calls_in_a_row_pauses_the_agent() -> None:
    q = make(A, max_missed=2, retry=5.0)
    assert rung(q.caller_joined("c1", "+7916", 0)) == (A,)
    assert q.next_deadline(0) == 15
    step = q.tick(15)
    assert events(step) == [E.RINGNOANSWER]
    assert of(step, StopRinging) == [StopRinging("c1", (A,))]
    assert rung(step) == ()  # A rests for ``retry``
    assert rung(q.tick(20)) == (A,)
    step = q.agent_no_answer(A, 25, reason="busy")  # a 486 counts too
    assert events(step) == [E.RINGNOANSWER, E.AGENTPAUSED]
    assert step.records[1].detail == "missed 2 calls in a row"
    assert q.agent(A).shown is AgentStatus.PAUSED
    assert rung(q.tick(100)) == ()
    step = q.agent_resume(A, 101)
    assert events(step) == [E.AGENTUNPAUSED] and rung(step) == (A,)
    assert q.agent(A).missed == 0


def test_misses_must_be_in_a_row() -> None:
    q = make(A, max_missed=2)
    q.caller_joined("c1", "+7916", 0)
    q.tick(15)  # miss 1, rung again at once (retry 0)
    q.agent_answered(A, 16)  # answer resets the count
    assert q.agent(A).missed == 0
    q.call_completed("c1", 20)
    q.caller_joined("c2", "+7916", 21)
    q.tick(36)
    assert not q.agent(A).paused and q.agent(A).missed == 1


def test_a_caller_tries_other_agents_before_ringing_a_missing_one_again() -> None:
    q = make(A, B)
    assert rung(q.caller_joined("c1", "+7916", 0)) == (A,)
    assert rung(q.tick(15)) == (B,)
    assert rung(q.tick(30)) == (A,)  # both tried: start over


def test_pause_while_busy_takes_effect_after_the_call_and_pause_while_ringing_cancels() -> None:
    q = make(A, B)
    q.caller_joined("c1", "+7916", 0)
    q.agent_answered(A, 1)
    q.agent_pause(A, 2, reason="lunch")
    assert q.agent(A).shown is AgentStatus.BUSY
    q.call_completed("c1", 10)
    assert q.agent(A).shown is AgentStatus.PAUSED
    q.caller_joined("c2", "+7916", 11)  # rings B
    step = q.agent_pause(B, 12)
    assert events(step) == [E.RINGCANCELED, E.AGENTPAUSED]
    assert of(step, StopRinging) == [StopRinging("c2", (B,))]
    assert q.agent(B).missed == 0


def test_add_remove_and_offline_agents() -> None:
    q = make(A)
    q.agent_reachable(A, 0, False)
    assert q.snapshot(0).agents_by_state["offline"] == 1
    assert rung(q.caller_joined("c1", "+7916", 1)) == ()
    step = q.agent_add(AgentConfig(B), 2)
    assert events(step)[0] is E.ADDMEMBER and rung(step) == (B,)
    step = q.agent_remove(B, 3)
    assert events(step) == [E.RINGCANCELED, E.REMOVEMEMBER]
    assert of(step, StopRinging) == [StopRinging("c1", (B,))]
    assert rung(q.agent_reachable(A, 4, True)) == (A,)


# --- announcements, max wait, timeout -------------------------------------------------------------------


def test_announcements_on_entry_on_position_change_and_periodically_never_while_ringing() -> None:
    q = make(A, announce_every=30.0, announce_min_gap=10.0, max_wait=0, default_handle_time=120.0)
    q.agent_pause(A, 0)
    assert of(q.caller_joined("c1", "+7916", 0), Announce) == [Announce("c1", 1, None)]  # nobody staffed
    q.agent_resume(A, 0.5)  # rings A for c1: c1 hears nothing from now on
    assert of(q.caller_joined("c2", "+7916", 1), Announce) == [Announce("c2", 2, 240.0)]  # ceil(2/1) * 120
    assert of(q.tick(4), Announce) == []  # c1 is being rung: nothing for it
    step = q.agent_answered(A, 5)
    assert of(step, Announce) == []  # c2 moved to 1, but only 4 s after its last announcement
    assert q.next_deadline(5) == 11
    assert of(q.tick(11), Announce) == [Announce("c2", 1, 120.0)]
    assert of(q.tick(30), Announce) == []
    assert of(q.tick(41), Announce) == [Announce("c2", 1, 120.0)]  # every 30 s
    q.call_completed("c1", 50)  # talk 45 s: average handle time now 45 + wrap-up 0
    assert q.agent(A).target == "c2"  # c2 is being rung now
    assert of(q.tick(80), Announce) == []


def test_no_announcement_for_a_caller_connected_at_once() -> None:
    q = make(A)
    step = q.caller_joined("c1", "+7916", 0)
    assert rung(step) == (A,) and of(step, Announce) == []


def test_max_wait_offers_a_callback_once_and_not_while_ringing() -> None:
    q = make(A, max_wait=60.0, announce_every=0)
    q.agent_pause(A, 0)
    q.caller_joined("c1", "+7916", 0)
    q.caller_joined("anon", "anonymous", 0, withheld=True)
    assert q.next_deadline(1) == 60
    step = q.tick(60)
    assert of(step, OfferCallback) == [OfferCallback("c1")]  # never to the withheld caller
    assert events(step) == [E.CALLBACK_OFFERED] and step.records[0].wait == 60
    assert of(q.tick(200), OfferCallback) == []
    # a caller being rung at max wait is offered only if the ring fails
    q2 = make(A, max_wait=60.0, ring_timeout=30.0)
    q2.agent_pause(A, 0)
    q2.caller_joined("c1", "+7916", 0)
    q2.agent_resume(A, 45)
    assert of(q2.tick(60), OfferCallback) == []
    assert of(q2.agent_pause(A, 70), OfferCallback) == [OfferCallback("c1")]  # the ring ended


def test_accepting_the_offer_schedules_a_callback_that_keeps_the_place() -> None:
    q = make(A, max_wait=60.0)
    q.agent_pause(A, 0)
    q.caller_joined("c1", "+79161234567", 10)
    q.tick(70)
    step = q.callback_offer_accepted("c1", 72)
    assert events(step) == [E.EXIT_CALLBACK, E.CALLBACK_SCHEDULED]
    assert of(step, ScheduleCallback) == [ScheduleCallback("c1", "reception", "+79161234567", 62.0, "offer", 10.0)]
    assert q.snapshot(72).waiting == 0


def test_timeout_leaves_the_queue() -> None:
    q = make(A, timeout=120.0, max_wait=0)
    q.agent_pause(A, 0)
    q.caller_joined("c1", "+7916", 0)
    step = q.tick(120)
    assert events(step) == [E.EXITWITHTIMEOUT] and of(step, LeaveQueue) == [LeaveQueue("c1", "timeout")]


def test_breakout_key_leaves_without_callback() -> None:
    q = make(A)
    q.caller_joined("c1", "+7916", 0)  # rings A
    step = q.caller_breakout("c1", 3, "*")
    assert events(step) == [E.RINGCANCELED, E.EXITWITHKEY]
    assert of(step, StopRinging) == [StopRinging("c1", (A,))] and of(step, ScheduleCallback) == []


# --- abandon -> callback rules --------------------------------------------------------------------------


def abandon(wait: float, number: str = "+79161234567", policy: CallbackPolicy | None = None, **kw: object) -> Step:
    q = make(A, max_wait=0, callback=policy or CallbackPolicy(abandon_after=10.0, window=3600.0))
    q.agent_pause(A, 0)
    flags = {k: kw.pop(k) for k in ("withheld", "blocked") if k in kw}
    q.caller_joined("c1", number, 100, **flags)  # type: ignore[arg-type]
    return q.caller_left("c1", 100 + wait, **kw)  # type: ignore[arg-type]


def test_abandon_is_logged_with_position_and_wait_and_schedules_a_callback() -> None:
    step = abandon(45)
    assert events(step) == [E.ABANDON, E.CALLBACK_SCHEDULED]
    rec = step.records[0]
    assert (rec.wait, rec.position, rec.orig_position, rec.number) == (45, 1, 1, "+79161234567")
    assert of(step, ScheduleCallback) == [ScheduleCallback("c1", "reception", "+79161234567", 45, "abandon", None)]


@pytest.mark.parametrize(
    ("wait", "kw", "why"),
    [
        (10, {}, "short_wait"),  # only after waiting MORE than N s
        (45, {"blocked": True}, "blocked"),
        (45, {"withheld": True}, "withheld"),
        (45, {"is_open": False}, "closed"),
        (45, {"last_callback_at": 145 - 3599}, "recent"),  # once per number per window
    ],
)
def test_abandon_callback_rules(wait: float, kw: dict, why: str) -> None:
    step = abandon(wait, **kw)
    assert events(step) == [E.ABANDON, E.CALLBACK_SKIPPED]
    assert step.records[1].detail == why and of(step, ScheduleCallback) == []


def test_abandon_callback_window_expired_and_disabled() -> None:
    assert of(abandon(45, last_callback_at=145 - 3600), ScheduleCallback)  # the window has passed
    step = abandon(45, policy=CallbackPolicy(on_abandon=False))
    assert step.records[1].detail == "disabled"


def test_abandon_while_ringing_cancels_the_ring_without_a_miss() -> None:
    q = make(A)
    q.caller_joined("c1", "+79161234567", 0)
    step = q.caller_left("c1", 5)
    assert events(step)[:2] == [E.RINGCANCELED, E.ABANDON]
    assert of(step, StopRinging) == [StopRinging("c1", (A,))]
    assert q.agent(A).missed == 0 and q.agent(A).status is AgentStatus.IDLE


def test_hangup_after_connect_completes_the_call() -> None:
    q = make(A)
    q.caller_joined("c1", "+7916", 0)
    q.agent_answered(A, 2)
    step = q.caller_left("c1", 62)
    assert events(step) == [E.COMPLETECALLER]
    assert (step.records[0].wait, step.records[0].talk) == (2, 60)


# --- callbacks in line ----------------------------------------------------------------------------------


def test_keep_place_callback_goes_before_later_callers_abandon_callback_after_all() -> None:
    q = make(A)
    q.agent_pause(A, 0)
    q.caller_joined("late", "+7916", 50)
    q.callback_waiting("cb-abandon", 55)
    q.callback_waiting("cb-offer", 60, priority_at=10)
    step = q.agent_resume(A, 61)
    assert of(step, AgentForCallback) == [AgentForCallback("cb-offer", A)] and rung(step) == ()
    step = q.agent_answered(A, 62)
    assert events(step) == []  # the dialer logs callbacks; they are not queue calls
    step = q.call_completed("cb-offer", 100, by="agent")
    assert events(step) == [] and rung(step) == (A,)  # the live caller before the abandon callback
    q.agent_answered(A, 101)
    step = q.call_completed("late", 150)
    assert of(step, AgentForCallback) == [AgentForCallback("cb-abandon", A)]
    assert q.snapshot(150).callbacks_waiting == 0


def test_callback_agent_ring_times_out_with_its_own_timeout() -> None:
    q = make(A, callback=CallbackPolicy(agent_ring_timeout=20.0))
    q.callback_waiting("cb", 0)
    assert q.next_deadline(0) == 20
    step = q.tick(20)
    assert events(step) == [E.RINGNOANSWER] and of(step, StopRinging) == [StopRinging("cb", (A,))]


def test_late_answer_is_hung_up() -> None:
    q = make(A)
    q.caller_joined("c1", "+7916", 0)
    q.caller_left("c1", 1)
    assert of(q.agent_answered(A, 2), StopRinging) == [StopRinging("", (A,))]


# --- snapshot, estimate, settings -----------------------------------------------------------------------


def test_snapshot_counts_waiting_and_agents_by_state() -> None:
    q = make(A, B, C)
    q.agent_pause(C, 0)
    q.caller_joined("c1", "+7916", 0)
    q.agent_answered(A, 1)
    q.caller_joined("c2", "+7916", 2)  # rings B
    q.caller_joined("c3", "+7916", 3)
    snap = q.snapshot(10)
    assert (snap.waiting, snap.longest_wait) == (2, 8)
    assert snap.agents_by_state == {"idle": 0, "ringing": 1, "busy": 1, "wrapup": 0, "paused": 1, "offline": 0}


def test_expected_wait_formula() -> None:
    assert expected_wait(3, [60.0, 120.0], 2, 180.0) == 2 * 90.0
    assert expected_wait(1, [], 1, 180.0) == 180.0
    assert expected_wait(1, [], 0, 180.0) is None


def test_bad_settings_say_what_to_fix() -> None:
    with pytest.raises(ConfigError, match="unknown strategy 'random'"):
        QueueConfig("reception", strategy="random")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="same phone twice"):
        QueueConfig("reception", (AgentConfig(A), AgentConfig(A)))
    assert QueueConfig("r", strategy="ring_all").strategy is Strategy.RING_ALL  # type: ignore[arg-type]
