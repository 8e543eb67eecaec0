"""The queue shell: feeds calls, agent legs and time to the pure QueueCore and carries out what it decides.

Durable first: every Step's queue_log records (and a callback row) are written through the store writer
before any action is taken. The caller's CallSession keeps owning the caller's call; while the caller is
queued it forwards DTMF, playback ends and the hang-up here. Agent legs (calls the box places to the
receptionists' phones) belong to this service: the app routes their events here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance import events as ev
from appliance import metrics
from appliance.acd.callbacks import Callback, CallbackState
from appliance.acd.model import (
    AgentConfig,
    AgentForCallback,
    Announce,
    Bridge,
    CallbackPolicy,
    LeaveQueue,
    OfferCallback,
    QueueConfig,
    RingAgents,
    ScheduleCallback,
    Step,
    StopRinging,
)
from appliance.acd.queue import QueueCore
from appliance.errors import CallGone, RegistraturaError
from appliance.numbers import is_withheld, mask
from appliance.security.marks import feature_code, mark_call
from appliance.speech import phrases

_LOGGER = logging.getLogger(__name__)

CALLBACK_KEY = "1"


def queue_config(name: str, qs: Any) -> QueueConfig:
    """Box settings (settings.QueueSettings) -> the core's QueueConfig."""
    cb = qs.callback
    return QueueConfig(
        name=name,
        agents=tuple(AgentConfig(uri=u) for u in qs.agents),
        strategy=qs.strategy,
        ring_timeout=qs.ring_timeout,
        wrapup=qs.wrapup,
        max_wait=qs.max_wait,
        service_level=qs.service_level,
        announce_every=qs.announce_every,
        max_missed=qs.max_missed,
        callback=CallbackPolicy(on_abandon=cb.on_abandon, abandon_after=cb.abandon_after,
                                window=cb.window_hours * 3600, max_attempts=cb.max_attempts),
    )


@dataclass
class _Caller:
    session: Any
    queue: str
    moh_id: int = 0  # playback id of the music now playing (0 = none)
    speaking_id: int = 0  # playback id of an announcement now playing
    offered: bool = False
    bridged_leg: str = ""
    final_id: int = 0  # the confirmation after which the box hangs up


@dataclass
class _Leg:
    queue: str
    agent: str
    target: str  # caller call id (or callback id)
    answered: bool = False
    cancelled: bool = False
    keys: str = ""  # the receptionist's last keys, for feature codes (*9 abusive, *0 threat)


@dataclass
class QueueService:
    settings: Any
    telephony: Any
    writer: Any  # app.StoreWriter
    prompts: Any  # PromptLibrary
    language: str = "ru"
    cores: dict[str, QueueCore] = field(default_factory=dict)
    callers: dict[str, _Caller] = field(default_factory=dict)
    legs: dict[str, _Leg] = field(default_factory=dict)
    _timer: asyncio.TimerHandle | None = None
    _ids: int = 200000
    dialer: Any = None

    def __post_init__(self) -> None:
        now = time.time()
        for name, qs in self.settings.queues.items():
            self.cores[name] = QueueCore(queue_config(name, qs), now)
        self._lock = asyncio.Lock()
        self._leg_events: asyncio.Queue[ev.Event] = asyncio.Queue()
        self._published: dict[str, list[tuple[str, str, int, int]]] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Agent-leg events are handled strictly in order by one task; the dialer picks up stored requests."""
        from appliance.acd.dialer import CallbackDialer

        self.dialer = CallbackDialer(self, self.settings.sip.outbound, self.settings.clinic.region)
        self._task = asyncio.get_running_loop().create_task(self._consume())
        asyncio.get_running_loop().create_task(self.dialer.start())
        asyncio.get_running_loop().create_task(self._commands())
        for name in self.cores:
            self._publish(name)

    def clinic_now(self) -> Any:
        from datetime import datetime
        from zoneinfo import ZoneInfo

        return datetime.now(ZoneInfo(self.settings.clinic.timezone))

    async def feed(self, queue: str, make_step: Any) -> None:
        await self._feed(queue, make_step)

    async def files(self, prompts: tuple[str, ...]) -> list[Path]:
        return await self._files(prompts)

    def post(self, event: ev.Event) -> None:
        self._leg_events.put_nowait(event)

    async def _consume(self) -> None:
        while True:
            event = await self._leg_events.get()
            try:
                await self.leg_event(event)
            except Exception:
                _LOGGER.exception("queue: agent leg event %s failed", type(event).__name__)

    # ------------------------------------------------------------------------------------ inputs

    def has(self, queue: str) -> bool:
        return queue in self.cores

    async def request_callback(self, call_id: str, number: str, reason: str) -> str:
        """A flow's ``request_callback`` node: store the request (durable first), then hand it to the dialer,
        which calls back agent-first during business hours. Returns the queue whose receptionists will call
        ("reception" when there is one), or "" when no queue is configured and nothing could be stored."""
        if not self.cores:
            return ""
        queue = "reception" if "reception" in self.cores else sorted(self.cores)[0]
        # The queue's own path for a callback: stored with the step, then handed to the dialer and counted.
        await self._apply(queue, Step(actions=(ScheduleCallback(call_id, queue, number, 0.0, reason, None),)))
        return queue

    async def join(self, session: Any, queue: str) -> None:
        """The flow handed the caller to ``queue``: music starts and the core decides who rings."""
        caller = _Caller(session, queue)
        self.callers[session.call_id] = caller
        await self._start_music(caller)
        number = session.caller
        withheld = is_withheld(number)
        await self._feed(queue, lambda core, now: core.caller_joined(
            session.call_id, number, now, withheld=withheld, blocked=False))
        _LOGGER.info("call %s joined queue %s", session.call_id, queue)

    async def caller_dtmf(self, call_id: str, digit: str) -> None:
        caller = self.callers.get(call_id)
        if caller is None or caller.bridged_leg or caller.final_id:
            return
        if digit == CALLBACK_KEY and caller.offered:
            await self._feed(caller.queue, lambda core, now: core.callback_offer_accepted(call_id, now))

    async def caller_playback_done(self, call_id: str, playback_id: int) -> None:
        caller = self.callers.get(call_id)
        if caller is None:
            return
        if caller.final_id and playback_id == caller.final_id:
            await self.telephony.hangup(call_id)
        elif playback_id == caller.speaking_id and not caller.bridged_leg:
            caller.speaking_id = 0
            await self._start_music(caller)

    async def caller_ended(self, call_id: str) -> str | None:
        """The caller hung up. Returns the call's outcome as the queue sees it (None: not queued)."""
        caller = self.callers.pop(call_id, None)
        if caller is None:
            return None
        if caller.final_id:
            return "callback_requested"
        number = caller.session.caller
        last = await self.writer.run(self.writer.store.last_callback_at, number) if number else None
        is_open = self.settings.clinic.is_open(caller.session.deps.now())
        await self._feed(caller.queue, lambda core, now: core.caller_left(
            call_id, now, is_open=is_open, last_callback_at=last))
        for leg_id, leg in list(self.legs.items()):
            if leg.target == call_id:
                leg.cancelled = True
                await self._hangup_leg(leg_id)
        return "answered" if caller.bridged_leg else "abandoned"

    def owns(self, call_id: str) -> bool:
        return call_id in self.legs or (self.dialer is not None and self.dialer.owns(call_id))

    async def leg_event(self, event: ev.Event) -> None:
        """Events of agent legs (CallAnswered, CallEnded) arrive here, in order, on the loop."""
        leg_id = getattr(event, "call_id", "")
        if self.dialer is not None and self.dialer.owns(leg_id):
            await self.dialer.leg_event(event)
            return
        leg = self.legs.get(leg_id)
        if leg is None:
            return
        if isinstance(event, ev.CallAnswered):
            leg.answered = True
            if leg.cancelled:
                await self._hangup_leg(leg_id)
                return
            await self._feed(leg.queue, lambda core, now: core.agent_answered(leg.agent, now))
        elif isinstance(event, ev.DtmfReceived):
            leg.keys, kind = feature_code(leg.keys, event.digit, self.settings.security.feature_codes)
            caller = self.callers.get(leg.target)
            if caller is not None and caller.bridged_leg == leg_id and kind:
                await mark_call(self.writer, self.settings.security, caller.session, kind, leg.agent)
        elif isinstance(event, ev.CallEnded):
            self.legs.pop(leg_id, None)
            if leg.cancelled:
                return
            if leg.answered:
                caller = self.callers.get(leg.target)
                await self._feed(leg.queue, lambda core, now: core.call_completed(leg.target, now, by="agent"))
                if caller is not None:
                    await self.telephony.hangup(leg.target)  # the receptionist ended the conversation
            else:
                reason = "busy" if event.status_code in (486, 600) else "no_answer"
                await self._feed(leg.queue, lambda core, now: core.agent_no_answer(leg.agent, now, reason))

    # ------------------------------------------------------------------------------------ the core

    async def _feed(self, queue: str, make_step: Any) -> None:
        async with self._lock:  # one step at a time per box: the core is not re-entrant
            core = self.cores[queue]
            step: Step = make_step(core, time.time())
            await self._apply(queue, step)
            self._publish(queue)
            self._schedule_tick()

    async def _apply(self, queue: str, step: Step) -> None:
        callbacks = [self._callback_row(a) for a in step.actions if isinstance(a, ScheduleCallback)]
        if step.records or callbacks:
            await self.writer.run(self.writer.store.write_acd, step.records, callbacks)  # durable first
        for action in step.actions:
            try:
                await self._act(queue, action)
            except CallGone as exc:  # hung up meanwhile (a burst of hang-ups): its CallEnded follows
                _LOGGER.debug("queue %s: %s skipped: %s", queue, type(action).__name__, exc)
            except RegistraturaError as exc:
                _LOGGER.warning("queue %s: %s failed: %s", queue, type(action).__name__, exc)

    @staticmethod
    def _callback_row(a: ScheduleCallback) -> Callback:
        now = time.time()
        return Callback(id=a.call_id, queue=a.queue, number=a.number, reason=a.reason, waited=a.waited,
                        created_at=now, priority_at=a.priority_at, state=CallbackState.PENDING, next_at=now,
                        updated_at=now)

    async def _act(self, queue: str, action: Any) -> None:
        tel = self.telephony
        if isinstance(action, RingAgents):
            caller = self.callers.get(action.call_id)
            number = caller.session.caller if caller else ""
            for agent in action.agents:
                # The leg is known before the call starts: a desk that answers (or refuses) at once sends its
                # event before originate() returns here, and an unknown leg's events are dropped.
                leg_id = tel.new_call_id()
                self.legs[leg_id] = _Leg(queue, agent, action.call_id)
                try:
                    await tel.originate(agent, caller_id="" if is_withheld(number) else number, call_id=leg_id)
                except RegistraturaError:
                    self.legs.pop(leg_id, None)
                    raise
                _LOGGER.info("queue %s: ringing %s for call %s", queue, agent, action.call_id)
        elif isinstance(action, StopRinging) and self.dialer is not None and action.call_id in self.dialer.callbacks:
            await self.dialer.agent_gone(action.call_id, "no answer")  # the callback's receptionist did not pick up
        elif isinstance(action, StopRinging):
            for leg_id, leg in list(self.legs.items()):
                if leg.agent in action.agents and (not action.call_id or leg.target == action.call_id) \
                        and not (leg.answered and not leg.cancelled and leg.target in self.callers
                                 and self.callers[leg.target].bridged_leg == leg_id):
                    leg.cancelled = True
                    await self._hangup_leg(leg_id)
        elif isinstance(action, Bridge):
            caller = self.callers.get(action.call_id)
            leg_id = next((lid for lid, leg in self.legs.items()
                           if leg.agent == action.agent and leg.target == action.call_id and leg.answered), "")
            if caller is None or not leg_id:
                return
            caller.bridged_leg = leg_id
            caller.moh_id = caller.speaking_id = 0
            await caller.session.start_recording()  # recording.mode queue starts here (before the bridge wires it)
            await tel.bridge(action.call_id, leg_id)
            await caller.session.note("queue", f"connected to {action.agent}")
            _LOGGER.info("queue %s: call %s connected to %s", queue, action.call_id, action.agent)
        elif isinstance(action, Announce):
            lang = self._language(action.call_id)  # the caller's flow language, spoken by that language's voice
            # Two phrases, each cached on its own: a few positions and a few waits cover every caller, where
            # the pair as one text was new (a render before the caller hears anything) for most announcements.
            parts = (phrases.queue_position(action.position, lang), phrases.expected_wait(action.expected_wait, lang))
            await self._say(action.call_id, tuple(f"text:{t}" for t in parts if t))
        elif isinstance(action, OfferCallback):
            caller = self.callers.get(action.call_id)
            if caller is not None:
                caller.offered = True
                await self._say(action.call_id, ("queue_callback_offer",))
        elif isinstance(action, AgentForCallback):
            if self.dialer is not None:
                await self.dialer.agent_found(action.callback_id, action.agent)
        elif isinstance(action, ScheduleCallback):
            if self.dialer is not None:
                self.dialer.add(self._callback_row(action))
            caller = self.callers.get(action.call_id)
            metrics.CALLBACKS_SCHEDULED.labels(action.reason).inc()
            _LOGGER.info("queue %s: callback scheduled for %s (%s)", queue, mask(action.number), action.reason)
            if caller is not None and action.reason == "offer":
                await caller.session.note("queue", "callback requested")
                self._ids += 1
                caller.final_id = self._ids
                files = await self._files(("callback_recorded", "goodbye"), self._language(action.call_id))
                await tel.play(action.call_id, files, caller.final_id)
        elif isinstance(action, LeaveQueue):
            await self._say(action.call_id, ("goodbye",))

    # ------------------------------------------------------------------------------------ media

    async def _files(self, prompts: tuple[str, ...], language: str | None = None) -> list[Path]:
        """Prompt files in ``language`` (a caller's flow language); the box's language for receptionists."""
        loop = asyncio.get_running_loop()
        lang = language or self.language
        return [await loop.run_in_executor(None, self.prompts.path, lang, p) for p in prompts]

    def _language(self, call_id: str) -> str:
        caller = self.callers.get(call_id)
        lang = getattr(caller.session, "language", None) if caller is not None else None
        return lang if isinstance(lang, str) and lang else self.language

    async def _start_music(self, caller: _Caller) -> None:
        self._ids += 1
        caller.moh_id = self._ids
        await self.telephony.play(caller.session.call_id, self.prompts.music(), caller.moh_id, loop=True)

    async def _say(self, call_id: str, prompts: tuple[str, ...]) -> None:
        caller = self.callers.get(call_id)
        if caller is None or caller.bridged_leg or caller.final_id:
            return
        self._ids += 1
        caller.speaking_id = self._ids
        caller.moh_id = 0
        shown = [p for p in prompts if not p.startswith("text:")]
        await caller.session.note("play", " ".join(shown if len(shown) == len(prompts) else ["announcement", *shown]))
        await self.telephony.play(call_id, await self._files(prompts, self._language(call_id)), caller.speaking_id)

    async def _hangup_leg(self, leg_id: str) -> None:
        try:
            await self.telephony.hangup(leg_id)
        except RegistraturaError:
            pass

    # ------------------------------------------------------------------------------------ time and metrics

    def _schedule_tick(self) -> None:
        now = time.time()
        deadlines = [d for d in (core.next_deadline(now) for core in self.cores.values()) if d is not None]
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if deadlines:
            delay = max(0.05, min(deadlines) - now)
            self._timer = asyncio.get_running_loop().call_later(delay, self._tick)

    def _tick(self) -> None:
        self._timer = None

        async def run() -> None:
            for name in list(self.cores):
                await self._feed(name, lambda core, now: core.tick(now))

        asyncio.get_running_loop().create_task(run())

    def _publish(self, queue: str) -> None:
        snap = self.cores[queue].snapshot(time.time())
        metrics.QUEUE_WAITING.labels(queue).set(snap.waiting)
        metrics.QUEUE_LONGEST_WAIT.labels(queue).set(snap.longest_wait)
        for state, count in snap.agents_by_state.items():
            metrics.QUEUE_AGENTS.labels(queue, state).set(count)
        states = [(a.config.uri, str(a.shown.value), a.calls_taken, a.missed) for a in snap.agents]
        if states != self._published.get(queue):  # `registratura agents list` reads these from the store
            self._published[queue] = states
            asyncio.get_running_loop().create_task(
                self.writer.run(self.writer.store.set_agent_states, queue, states, time.time()))

    async def _restore_agents(self) -> None:
        """Receptionists added, removed or paused from the CLI stay so across a restart: the net effect of the
        applied commands is replayed once (a pause the box made itself after missed calls is not: a restart
        gives that receptionist a fresh start)."""
        net: dict[tuple[str, str], dict[str, bool]] = {}
        for queue, action, uri in await self.writer.run(self.writer.store.applied_agent_commands):
            state = net.setdefault((queue, uri), {})
            if action in ("add", "remove"):
                state["member"] = action == "add"
                state.pop("paused", None)  # a new or removed member starts unpaused
            elif action in ("pause", "resume"):
                state["paused"] = action == "pause"
        for (queue, uri), state in net.items():
            core = self.cores.get(queue)
            if core is None:
                continue
            member = state.get("member")
            if member is False and core.agent(uri) is not None:
                await self._agent_command(queue, "remove", uri)
                continue
            if member is True and core.agent(uri) is None:
                await self._agent_command(queue, "add", uri)
            if state.get("paused") and core.agent(uri) is not None:
                await self._agent_command(queue, "pause", uri)
        if net:
            _LOGGER.info("queue: receptionist changes made from the CLI restored (%d)", len(net))

    async def _commands(self, every: float = 1.0) -> None:
        """Apply `registratura agents add|remove|pause|resume` (written to the store by the CLI)."""
        store = self.writer.store
        try:
            await self._restore_agents()
        except Exception:
            _LOGGER.exception("queue: restoring receptionist changes failed")
        while True:
            await asyncio.sleep(every)
            try:
                for command_id, queue, action, uri in await self.writer.run(store.open_agent_commands):
                    result = "ok"
                    if queue not in self.cores:
                        result = f"no queue '{queue}'; queues: {', '.join(sorted(self.cores))}"
                    elif action != "add" and self.cores[queue].agent(uri) is None:
                        result = f"{uri} is not a receptionist of queue '{queue}'"
                    else:
                        await self._agent_command(queue, action, uri)
                    await self.writer.run(store.finish_agent_command, command_id, time.time(), result)
            except Exception:
                _LOGGER.exception("queue: applying receptionist commands failed")

    async def _agent_command(self, queue: str, action: str, uri: str) -> None:
        """Pause, resume, add or remove a receptionist at run time (the core writes the queue log records)."""
        if action == "pause":
            await self._feed(queue, lambda core, now: core.agent_pause(uri, now))
        elif action == "resume":
            await self._feed(queue, lambda core, now: core.agent_resume(uri, now))
        elif action == "add":
            await self._feed(queue, lambda core, now: core.agent_add(AgentConfig(uri=uri), now))
        elif action == "remove":
            await self._feed(queue, lambda core, now: core.agent_remove(uri, now))
