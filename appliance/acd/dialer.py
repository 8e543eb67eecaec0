"""The callback dialer's shell: agent first (ring a receptionist, tell them who), then the patient, then bridge.

Decisions live in ``acd.callbacks`` (pure); this class writes each CallbackStep durably, then places and
ends the legs through telephony. The queue core hands out receptionists (``AgentForCallback``), so a
callback never jumps over a caller who keeps a better place in line.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import phonenumbers

from appliance.acd import callbacks as cbx
from appliance.acd.callbacks import Callback, CallbackState
from appliance.errors import RegistraturaError
from appliance.numbers import mask

_LOGGER = logging.getLogger(__name__)
POLL_SECONDS = 2.0
_ANNOUNCING = object()  # marks an agent leg whose announcement is playing (the next DialPatient waits)


def dial_uri(template: str, number: str, region: str = "RU") -> str:
    """Fill the outbound route: {number} = E.164, {digits} = E.164 without '+', {national} = as dialled
    inside the country (8 916 ... in Russia, what FXO gateways expect)."""
    national = number.lstrip("+")
    try:
        parsed = phonenumbers.parse(number, region)
        national = "".join(ch for ch in phonenumbers.format_number(
            parsed, phonenumbers.PhoneNumberFormat.NATIONAL) if ch.isdigit())
    except phonenumbers.NumberParseException:
        pass
    return template.format(number=number, digits=number.lstrip("+"), national=national)


@dataclass
class _CbLeg:
    callback_id: str
    kind: str  # "agent" | "patient"
    answered: bool = False
    ended: bool = False
    closing: bool = False  # the receptionist is hearing why the callback stops; hang up after it
    then: Any = None  # an action held until the announcement to the receptionist has played (DialPatient)


class CallbackDialer:
    def __init__(self, service: Any, outbound: str | None, region: str = "RU") -> None:
        self.service = service
        self.outbound = outbound
        self.region = region
        self.callbacks: dict[str, Callback] = {}
        self.legs: dict[str, _CbLeg] = {}  # leg call id -> which callback and which side
        self.claimed: set[str] = set()  # waiting for an agent in the core
        self._task: asyncio.Task[None] | None = None

    @property
    def writer(self) -> Any:
        return self.service.writer

    async def start(self) -> None:
        store = self.writer.store
        reset = await self.writer.run(store.reset_interrupted_callbacks, time.time())
        if reset:
            _LOGGER.warning("%d callback(s) were being dialled when the box stopped; pending again", reset)
        for cb in await self.writer.run(store.callbacks, [CallbackState.PENDING]):
            self.callbacks[cb.id] = cb
        if self.outbound is None:
            _LOGGER.warning("callbacks: no outbound route (settings sip.outbound); requests are stored and "
                            "reported but not dialled")
            return
        self._task = asyncio.get_running_loop().create_task(self._poll())

    def add(self, cb: Callback) -> None:
        """A new request (the queue already stored it)."""
        self.callbacks[cb.id] = cb

    async def _poll(self) -> None:
        while True:
            try:
                await self._due()
            except Exception:
                _LOGGER.exception("callback dialer poll failed")
            await asyncio.sleep(POLL_SECONDS)

    async def _due(self) -> None:
        now = time.time()
        is_open = self.service.settings.clinic.is_open(self.service.clinic_now())
        for cb in cbx.due(self.callbacks.values(), now, is_open):
            if cb.id in self.claimed or cb.queue not in self.service.cores:
                continue
            self.claimed.add(cb.id)
            await self.service.feed(cb.queue, lambda core, t, cb=cb: core.callback_waiting(cb.id, t, cb.priority_at))
        for cb in list(self.callbacks.values()):
            policy = self.service.cores[cb.queue].config.callback if cb.queue in self.service.cores else None
            if policy is not None:
                for step in cbx.expire([cb], now, policy):
                    await self._apply(step)

    # ------------------------------------------------------------------------------------ inputs

    async def agent_found(self, callback_id: str, agent: str) -> None:
        self.claimed.discard(callback_id)
        cb = self.callbacks.get(callback_id)
        if cb is None:
            return
        await self._apply(cbx.agent_found(cb, agent, time.time(), self._policy(cb)))

    async def agent_gone(self, callback_id: str, reason: str) -> None:
        cb = self.callbacks.get(callback_id)
        if cb is not None:
            await self._apply(cbx.agent_gone(cb, time.time(), self._policy(cb), reason))

    def owns(self, call_id: str) -> bool:
        return call_id in self.legs

    async def leg_event(self, event: Any) -> None:
        from appliance import events as ev

        leg = self.legs.get(event.call_id)
        if leg is None:
            return
        cb = self.callbacks.get(leg.callback_id)
        now = time.time()
        if isinstance(event, ev.CallAnswered):
            leg.answered = True
            if cb is None:
                await self._hangup(event.call_id)
            elif leg.kind == "agent":
                await self.service.feed(cb.queue, lambda core, t: core.agent_answered(cb.agent, t))
                await self._apply(cbx.agent_answered(cb, now, self._policy(cb), self.service.language))
            else:
                await self._apply(cbx.patient_answered(cb, now))
        elif isinstance(event, ev.PlaybackDone) and leg.kind == "agent" and leg.closing:
            await self._hangup(event.call_id)
        elif isinstance(event, ev.PlaybackDone) and leg.kind == "agent" and leg.then is not None and cb is not None:
            held, leg.then = leg.then, None
            await self._run_action(cb, held)  # the receptionist knows who it is: now dial the patient
        elif isinstance(event, ev.CallEnded):
            leg.ended = True
            self.legs.pop(event.call_id, None)
            if cb is None:
                return
            if leg.kind == "agent":
                if leg.answered:
                    await self.service.feed(cb.queue, lambda core, t: core.call_completed(cb.id, t, by="agent"))
                else:
                    await self.service.feed(cb.queue, lambda core, t: core.agent_no_answer(cb.agent, t))
                if cb.state is not CallbackState.DONE:
                    await self._apply(cbx.agent_gone(cb, now, self._policy(cb), "receptionist hung up"))
                else:
                    await self._hangup_side(cb.id, "patient")
            else:
                if cb.state is CallbackState.DONE:  # the conversation is over
                    await self._hangup_side(cb.id, "agent")
                else:
                    reason = "busy" if event.status_code in (486, 600) else "no_answer"
                    await self._apply(cbx.patient_failed(cb, now, self._policy(cb), reason, self.service.language))

    # ------------------------------------------------------------------------------------ steps

    def _policy(self, cb: Callback) -> Any:
        return self.service.cores[cb.queue].config.callback

    async def _apply(self, step: cbx.CallbackStep) -> None:
        cb = step.callback
        await self.writer.run(self.writer.store.write_acd, step.records, [cb])  # durable first
        self.callbacks[cb.id] = cb  # finished ones stay until their legs are gone; due() skips them
        for action in step.actions:
            agent_leg = self.legs.get(self._leg(cb.id, "agent"))
            if isinstance(action, cbx.DialPatient) and agent_leg is not None and agent_leg.then is _ANNOUNCING:
                agent_leg.then = action  # dialled once the announcement has played
                continue
            await self._run_action(cb, action)

    async def _run_action(self, cb: Callback, action: Any) -> None:
        try:
            await self._act(cb, action)
        except RegistraturaError as exc:
            _LOGGER.warning("callback %s: %s failed: %s", cb.id, type(action).__name__, exc)
            if isinstance(action, cbx.DialPatient):
                await self._apply(cbx.patient_failed(cb, time.time(), self._policy(cb), "dial failed"))

    async def _originate(self, uri: str, leg: _CbLeg, caller_id: str = "") -> str:
        """Known before it starts (see QueueService: a leg's first event may beat originate() back here)."""
        tel = self.service.telephony
        leg_id = tel.new_call_id()
        self.legs[leg_id] = leg
        try:
            return await tel.originate(uri, caller_id=caller_id, call_id=leg_id)
        except RegistraturaError:
            self.legs.pop(leg_id, None)
            raise

    async def _act(self, cb: Callback, action: Any) -> None:
        tel = self.service.telephony
        if isinstance(action, cbx.DialAgent):
            leg = await self._originate(action.agent, _CbLeg(cb.id, "agent"), caller_id=cb.number)
            _LOGGER.info("callback %s: ringing %s first", cb.id, action.agent)
        elif isinstance(action, cbx.AnnounceToAgent):
            leg = self._leg(cb.id, "agent")
            if leg:
                files = await self.service.files((f"text:{action.text}",))
                self.legs[leg].then = _ANNOUNCING
                await tel.play(leg, files, 1)
        elif isinstance(action, cbx.DialPatient):
            assert self.outbound is not None
            leg = await self._originate(dial_uri(self.outbound, action.number, self.region), _CbLeg(cb.id, "patient"))
            _LOGGER.info("callback %s: dialling %s", cb.id, mask(action.number))
        elif isinstance(action, cbx.BridgeCallback):
            agent, patient = self._leg(cb.id, "agent"), self._leg(cb.id, "patient")
            if agent and patient:
                await tel.bridge(agent, patient)
                _LOGGER.info("callback %s: receptionist and patient connected", cb.id)
        elif isinstance(action, cbx.HangupLeg):
            leg = self._leg(cb.id, action.leg)
            if leg and action.text and action.leg == "agent":
                files = await self.service.files((f"text:{action.text}",))
                self.legs[leg].closing = True
                await tel.play(leg, files, 2)  # the receptionist hears why, then the box hangs up
            elif leg:
                await self._hangup(leg)

    def _leg(self, callback_id: str, kind: str) -> str:
        return next((lid for lid, leg in self.legs.items() if leg.callback_id == callback_id and leg.kind == kind), "")

    async def _hangup_side(self, callback_id: str, kind: str) -> None:
        leg = self._leg(callback_id, kind)
        if leg:
            await self._hangup(leg)

    async def _hangup(self, leg: str) -> None:
        try:
            await self.service.telephony.hangup(leg)
        except RegistraturaError:
            pass
