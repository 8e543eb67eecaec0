"""The queue state machine: callers wait, agents are rung by strategy, callbacks keep their place (pure).

``QueueCore`` holds one queue's state. Every input takes ``now`` (epoch seconds, from the shell) and returns a
``Step``: queue_log records to write durably first, then actions to carry out in order. Nothing here reads
a clock, sleeps or does I/O; the shell calls ``tick(now)`` at ``next_deadline()`` for ring timeouts, wrap-up
ends, announcements and the max-wait offer.

Agents are keyed by URI. Agent-leg inputs (``agent_answered``, ``agent_no_answer``) name the agent; the core
knows which caller (or callback) the agent was rung for. Due callbacks enter the line with
``callback_waiting``: when a free agent reaches them the core emits ``AgentForCallback`` and the callback
dialer (``acd.callbacks``) takes over; ``StopRinging`` for a callback id means "cancel that callback's agent
leg" (feed ``callbacks.agent_gone``).
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import replace
from typing import Any, NamedTuple

from appliance.acd import strategy, waiting
from appliance.acd.callbacks import abandon_skip_reason
from appliance.acd.model import (
    NONE,
    AcdAction,
    AgentConfig,
    AgentForCallback,
    AgentState,
    AgentStatus,
    Announce,
    Bridge,
    LeaveQueue,
    OfferCallback,
    QueueConfig,
    QueueEvent,
    QueueLogRecord,
    QueueSnapshot,
    RingAgents,
    ScheduleCallback,
    Step,
    StopRinging,
    Strategy,
    WaitingCaller,
)

_RECENT_CALLS = 20  # handle times kept for the expected-wait estimate: recent enough to follow the morning rush
_E = QueueEvent


class _Talk(NamedTuple):
    agent: str
    connected_at: float
    wait: float
    orig_position: int
    callback: bool


class QueueCore:
    def __init__(self, config: QueueConfig, now: float = 0.0) -> None:
        self.config = config
        self._agents: dict[str, AgentState] = {a.uri: AgentState(a, since=now, idle_since=now) for a in config.agents}
        self._callers: list[WaitingCaller] = []  # in order of entry: index + 1 is the position
        self._claims: dict[str, tuple[float | None, float]] = {}  # callback id -> (priority_at, waiting since)
        self._talks: dict[str, _Talk] = {}  # call id (or callback id) -> the bridged call
        self._handle_times: deque[float] = deque(maxlen=_RECENT_CALLS)
        self._last_rung = ""  # round_robin carries on after this agent
        self._records: list[QueueLogRecord] = []
        self._actions: list[AcdAction] = []

    # --- callers ----------------------------------------------------------------------------------------

    def caller_joined(
        self,
        call_id: str,
        number: str,
        now: float,
        *,
        withheld: bool = False,
        blocked: bool = False,
        needs: frozenset[str] = frozenset(),
    ) -> Step:
        if self._caller(call_id) is not None:
            return self._done(now)
        pos = len(self._callers) + 1
        self._callers.append(WaitingCaller(call_id, number, now, withheld, blocked, needs, pos, pos))
        self._rec(_E.ENTER, now, call_id, position=pos, number=number)
        return self._done(now)

    def caller_left(
        self, call_id: str, now: float, *, is_open: bool = True, last_callback_at: float | None = None
    ) -> Step:
        """The caller hung up. While waiting that is an abandon (and maybe a callback); once bridged it
        completes the call. ``is_open``: business hours now; ``last_callback_at``: when a callback was last
        scheduled for this number (from the store), for the once-per-window rule."""
        if call_id in self._talks:
            return self.call_completed(call_id, now, by="caller")
        c = self._caller(call_id)
        if c is None:
            return self._done(now)
        waited = now - c.entered_at
        self._leave(c, now)
        self._exit(_E.ABANDON, c, now, number=c.number)
        why = abandon_skip_reason(
            self.config.callback,
            waited=waited,
            withheld=c.withheld,
            blocked=c.blocked,
            is_open=is_open,
            last_callback_at=last_callback_at,
            now=now,
        )
        if why:
            self._rec(_E.CALLBACK_SKIPPED, now, call_id, wait=waited, number=c.number, detail=why)
        else:
            self._schedule(c, now, "abandon", None)
        return self._done(now)

    def caller_breakout(self, call_id: str, now: float, key: str) -> Step:
        """The caller pressed a breakout key: out of the queue, back to the flow (no callback)."""
        c = self._caller(call_id)
        if c is not None:
            self._leave(c, now)
            self._exit(_E.EXITWITHKEY, c, now, detail=key)
        return self._done(now)

    def callback_offer_accepted(self, call_id: str, now: float) -> Step:
        """The caller took the offer: schedule a callback that keeps their place; they leave the queue.
        Ignored for a withheld or blocked number (there is nothing to dial; it was never offered)."""
        c = self._caller(call_id)
        if c is None or c.withheld or c.blocked:
            return self._done(now)
        self._leave(c, now)
        self._exit(_E.EXIT_CALLBACK, c, now, number=c.number)
        self._schedule(c, now, "offer", c.entered_at)
        return self._done(now)

    # --- agent legs -------------------------------------------------------------------------------------

    def agent_answered(self, uri: str, now: float) -> Step:
        a = self._agents.get(uri)
        if a is None or a.status is not AgentStatus.RINGING:  # answered after we gave up on it
            self._actions.append(StopRinging("", (uri,)))
            return self._done(now)
        target, rang = a.target, now - a.since
        self._agents[uri] = replace(a, status=AgentStatus.BUSY, since=now, missed=0)
        c = self._caller(target)
        if c is None:  # the agent leg of a callback: the dialer does the rest
            self._talks[target] = _Talk(uri, now, 0.0, 0, True)
            return self._done(now)
        others = tuple(u for u in c.ringing if u != uri)
        for other in others:  # ring_all: the first to answer wins
            self._unring(other, now, stop=False)
        if others:
            self._actions.append(StopRinging(target, others))
        wait = now - c.entered_at
        self._rec(
            _E.CONNECT, now, target, uri, wait=wait, position=c.position, orig_position=c.orig_position, ring=rang
        )
        self._actions.append(Bridge(target, uri))
        self._callers = [x for x in self._callers if x.call_id != target]  # ``c`` is stale after _unring
        self._talks[target] = _Talk(uri, now, wait, c.orig_position, False)
        return self._done(now)

    def agent_no_answer(self, uri: str, now: float, reason: str = "no_answer") -> Step:
        """The agent leg failed before answering (no answer, busy, declined, unreachable): a miss."""
        a = self._agents.get(uri)
        if a is not None and a.status is AgentStatus.RINGING:
            self._miss(a, now, reason, stop=False)
        return self._done(now)

    def call_completed(self, call_id: str, now: float, by: str = "caller") -> Step:
        """A bridged call ended (``by``: "caller" -> COMPLETECALLER, anything else -> COMPLETEAGENT)."""
        t = self._talks.pop(call_id, None)
        if t is None:
            return self._done(now)
        talk = now - t.connected_at
        if not t.callback:  # callbacks are logged by the dialer; they are not queue calls for SL
            event = _E.COMPLETECALLER if by == "caller" else _E.COMPLETEAGENT
            self._rec(event, now, call_id, t.agent, wait=t.wait, talk=talk, orig_position=t.orig_position)
        self._handle_times.append(talk + self.config.wrapup)
        a = self._agents.get(t.agent)
        if a is not None and a.target == call_id:
            a = replace(a, target="", calls_taken=a.calls_taken + 1, since=now)
            if self.config.wrapup > 0:
                a = replace(a, status=AgentStatus.WRAPUP)
            else:
                a = replace(a, status=AgentStatus.IDLE, idle_since=now)
            self._agents[t.agent] = a
        return self._done(now)

    def wrapup_done(self, uri: str, now: float) -> Step:
        """The receptionist ended wrap-up early (a key on the phone, the staff page)."""
        a = self._agents.get(uri)
        if a is not None and a.status is AgentStatus.WRAPUP:
            self._agents[uri] = replace(a, status=AgentStatus.IDLE, since=now, idle_since=now)
        return self._done(now)

    # --- agents (settings, CLI, registrations) ----------------------------------------------------------

    def agent_pause(self, uri: str, now: float, reason: str = "manual") -> Step:
        a = self._agents.get(uri)
        if a is not None and not a.paused:
            if a.status is AgentStatus.RINGING:
                self._unring(uri, now)
            self._agents[uri] = replace(self._agents[uri], paused=True, pause_reason=reason)
            self._rec(_E.AGENTPAUSED, now, agent=uri, detail=reason)
        return self._done(now)

    def agent_resume(self, uri: str, now: float) -> Step:
        a = self._agents.get(uri)
        if a is not None and a.paused:
            self._agents[uri] = replace(a, paused=False, pause_reason="", missed=0, rest_until=0.0)
            self._rec(_E.AGENTUNPAUSED, now, agent=uri)
        return self._done(now)

    def agent_add(self, config: AgentConfig, now: float) -> Step:
        """Add an agent, or update an existing agent's name, skills and penalty (no record then)."""
        a = self._agents.get(config.uri)
        if a is not None:
            self._agents[config.uri] = replace(a, config=config)
        else:
            self._agents[config.uri] = AgentState(config, since=now, idle_since=now)
            self._rec(_E.ADDMEMBER, now, agent=config.uri)
        return self._done(now)

    def agent_remove(self, uri: str, now: float) -> Step:
        """Remove an agent; a call in progress goes on and completes normally."""
        a = self._agents.get(uri)
        if a is not None:
            if a.status is AgentStatus.RINGING:
                self._unring(uri, now)
            del self._agents[uri]
            self._rec(_E.REMOVEMEMBER, now, agent=uri)
        return self._done(now)

    def agent_reachable(self, uri: str, now: float, reachable: bool) -> Step:
        """The phone registered (or stopped answering OPTIONS): offline agents are never rung."""
        a = self._agents.get(uri)
        if a is not None and a.online != reachable:
            if not reachable and a.status is AgentStatus.RINGING:
                self._unring(uri, now)
            self._agents[uri] = replace(self._agents[uri], online=reachable)
        return self._done(now)

    # --- callbacks and time -----------------------------------------------------------------------------

    def callback_waiting(self, callback_id: str, now: float, priority_at: float | None = None) -> Step:
        """A due callback wants an agent. With ``priority_at`` (queue entry time) it is served in line with
        live callers by that time; without, after every live caller."""
        self._claims.setdefault(callback_id, (priority_at, now))
        return self._done(now)

    def callback_withdrawn(self, callback_id: str, now: float) -> Step:
        self._claims.pop(callback_id, None)
        return self._done(now)

    def tick(self, now: float) -> Step:
        """Time passed: ring timeouts (misses), ends of wrap-up, then offers, timeouts and announcements."""
        cfg = self.config
        for a in list(self._agents.values()):
            if a.status is AgentStatus.RINGING:
                if now >= a.since + self._ring_limit(a):
                    self._miss(a, now, "timeout", stop=True)
            elif a.status is AgentStatus.WRAPUP and now >= a.since + cfg.wrapup:
                end = a.since + cfg.wrapup  # the deadline, not the late tick: keeps idle order exact
                self._agents[a.uri] = replace(a, status=AgentStatus.IDLE, since=end, idle_since=end)
        return self._done(now)

    def next_deadline(self, now: float) -> float | None:
        """When ``tick`` next has something to do (None: nothing until another input)."""
        cfg, times = self.config, []
        wanted = bool(self._callers or self._claims)
        for a in self._agents.values():
            if a.status is AgentStatus.RINGING:
                times.append(a.since + self._ring_limit(a))
            elif a.status is AgentStatus.WRAPUP:
                times.append(a.since + cfg.wrapup)
            elif wanted and a.status is AgentStatus.IDLE and a.staffed and a.rest_until > now:
                times.append(a.rest_until)
        for c in self._callers:
            times += waiting.deadlines(c, cfg, now)
        return min(times) if times else None

    # --- reads ------------------------------------------------------------------------------------------

    def agent(self, uri: str) -> AgentState | None:
        return self._agents.get(uri)

    def expected_wait(self, position: int) -> float | None:
        """Seconds a caller at ``position`` can expect to wait (see ``strategy.expected_wait``)."""
        staffed = sum(1 for a in self._agents.values() if a.staffed and strategy.eligible(a, self.config.skills))
        return strategy.expected_wait(position, self._handle_times, staffed, self.config.default_handle_time)

    def snapshot(self, now: float) -> QueueSnapshot:
        by_state = dict.fromkeys((s.value for s in AgentStatus), 0)
        by_state.update(Counter(a.shown.value for a in self._agents.values()))
        longest = now - self._callers[0].entered_at if self._callers else 0.0
        callers, agents = tuple(self._callers), tuple(self._agents.values())
        return QueueSnapshot(self.config.name, len(callers), longest, callers, agents, by_state, len(self._claims))

    # --- internals --------------------------------------------------------------------------------------

    def _caller(self, call_id: str) -> WaitingCaller | None:
        return next((c for c in self._callers if c.call_id == call_id), None)

    def _put(self, c: WaitingCaller) -> WaitingCaller:
        for i, old in enumerate(self._callers):
            if old.call_id == c.call_id:
                self._callers[i] = c
        return c

    def _rec(self, event: QueueEvent, at: float, call_id: str = NONE, agent: str = NONE, **data: Any) -> None:
        self._records.append(QueueLogRecord(self.config.name, call_id, agent, event, at, **data))

    def _exit(self, event: QueueEvent, c: WaitingCaller, now: float, **data: Any) -> None:
        """Log a caller leaving the line without an agent (wait and positions as Asterisk logs them)."""
        wait, pos, orig = now - c.entered_at, c.position, c.orig_position
        self._rec(event, now, c.call_id, wait=wait, position=pos, orig_position=orig, **data)

    def _leave(self, c: WaitingCaller, now: float) -> None:
        """Take a caller out of the line, cancelling any agent rung for them (not a miss)."""
        if c.ringing:
            for uri in c.ringing:
                self._unring(uri, now, stop=False)
            self._actions.append(StopRinging(c.call_id, c.ringing))
        self._callers = [x for x in self._callers if x.call_id != c.call_id]

    def _schedule(self, c: WaitingCaller, now: float, reason: str, priority_at: float | None) -> None:
        waited = now - c.entered_at
        self._rec(_E.CALLBACK_SCHEDULED, now, c.call_id, wait=waited, number=c.number, detail=reason)
        self._actions.append(ScheduleCallback(c.call_id, self.config.name, c.number, waited, reason, priority_at))

    def _unring(self, uri: str, now: float, stop: bool = True) -> None:
        """Stop ringing an agent for reasons that are not theirs (RINGCANCELED, no miss)."""
        a = self._agents[uri]
        self._agents[uri] = replace(a, status=AgentStatus.IDLE, since=now, target="")
        self._rec(_E.RINGCANCELED, now, a.target, uri, ring=now - a.since)
        c = self._caller(a.target)
        if c is not None:
            self._put(replace(c, ringing=tuple(u for u in c.ringing if u != uri)))
        if stop:
            self._actions.append(StopRinging(a.target, (uri,)))

    def _miss(self, a: AgentState, now: float, reason: str, stop: bool) -> None:
        """The agent did not answer an offered call: count it, rest them, pause them at ``max_missed``."""
        cfg, missed = self.config, a.missed + 1
        a2 = replace(a, status=AgentStatus.IDLE, since=now, target="", missed=missed, rest_until=now + cfg.retry)
        self._rec(_E.RINGNOANSWER, now, a.target, a.uri, ring=now - a.since, detail=reason)
        if stop:
            self._actions.append(StopRinging(a.target, (a.uri,)))
        c = self._caller(a.target)
        if c is not None:
            self._put(replace(c, ringing=tuple(u for u in c.ringing if u != a.uri), tried=c.tried | {a.uri}))
        if cfg.max_missed and missed >= cfg.max_missed and not a2.paused:
            a2 = replace(a2, paused=True, pause_reason=f"missed {missed} calls in a row")
            self._rec(_E.AGENTPAUSED, now, agent=a.uri, detail=a2.pause_reason)
        self._agents[a.uri] = a2

    def _done(self, now: float) -> Step:
        self._renumber()
        self._timeouts(now)
        self._renumber()
        self._dispatch(now)
        self._speak(now)
        step = Step(tuple(self._records), tuple(self._actions))
        self._records, self._actions = [], []
        return step

    def _renumber(self) -> None:
        self._callers = [c if c.position == i else replace(c, position=i) for i, c in enumerate(self._callers, 1)]

    def _timeouts(self, now: float) -> None:
        if not self.config.timeout:
            return
        for c in list(self._callers):
            if not c.ringing and now - c.entered_at >= self.config.timeout:
                self._leave(c, now)
                self._exit(_E.EXITWITHTIMEOUT, c, now)
                self._actions.append(LeaveQueue(c.call_id, "timeout"))

    def _dispatch(self, now: float) -> None:
        """Give free agents to the line in order: live callers and keep-place callbacks by entry time, then
        callbacks after abandons. A caller whose skills no free agent has lets the next one go first."""
        cfg, order = self.config, list(self._agents)
        line: list[tuple[int, float, int, str]] = [(0, c.entered_at, 0, c.call_id) for c in self._callers]
        line += [
            (0 if p is not None else 1, p if p is not None else since, 1, cb) for cb, (p, since) in self._claims.items()
        ]
        for _, _, is_claim, key in sorted(line):
            free = [a for a in self._agents.values() if a.free(now)]
            if not free:
                return
            if is_claim:  # one agent for a callback, even under ring_all
                pool = [a for a in free if strategy.eligible(a, cfg.skills)]
                one = Strategy.LONGEST_IDLE if cfg.strategy is Strategy.RING_ALL else cfg.strategy
                chosen = strategy.pick(one, pool, order, self._last_rung)[:1]
                if chosen:
                    del self._claims[key]
                    self._ring(chosen, key, now)
                    self._actions.append(AgentForCallback(key, chosen[0]))
                continue
            c = self._caller(key)
            if c is None or (c.ringing and cfg.strategy is not Strategy.RING_ALL):
                continue
            pool = [a for a in free if strategy.eligible(a, cfg.skills | c.needs)]
            if c.ringing:  # ring_all adds agents that came free, but never a higher penalty tier
                top = min(self._agents[u].config.penalty for u in c.ringing)
                pool = [a for a in pool if a.config.penalty <= top]
            chosen = strategy.pick(cfg.strategy, pool, order, self._last_rung, c.tried)
            if chosen:
                self._ring(chosen, key, now)
                self._put(replace(c, ringing=c.ringing + chosen))
                self._actions.append(RingAgents(key, chosen, cfg.ring_timeout))

    def _ring(self, uris: tuple[str, ...], target: str, now: float) -> None:
        for uri in uris:
            self._agents[uri] = replace(self._agents[uri], status=AgentStatus.RINGING, since=now, target=target)
        self._last_rung = uris[-1]

    def _ring_limit(self, a: AgentState) -> float:
        # a callback's agent leg has its own timeout; the dialer's DialAgent carries the same one
        return self.config.ring_timeout if self._caller(a.target) else self.config.callback.agent_ring_timeout

    def _speak(self, now: float) -> None:
        for c in list(self._callers):
            what = waiting.due(c, self.config, now)
            if what == waiting.OFFER:
                # the offer takes this caller's announcement slot so the two never talk over each other
                self._put(replace(c, offered_callback=True, announced_at=now))
                self._rec(_E.CALLBACK_OFFERED, now, c.call_id, wait=now - c.entered_at, position=c.position)
                self._actions.append(OfferCallback(c.call_id))
            elif what == waiting.ANNOUNCE:
                self._put(replace(c, announced_at=now, announced_position=c.position))
                self._actions.append(Announce(c.call_id, c.position, self.expected_wait(c.position)))
