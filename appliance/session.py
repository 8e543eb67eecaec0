"""One call: feeds telephony events to the pure flow engine and carries out the actions it returns."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from appliance import events as ev
from appliance import metrics
from appliance.errors import CallGone, RegistraturaError
from appliance.flow import keywords
from appliance.flow.model import CALLER_VAR, AskNode, MenuNode
from appliance.numbers import is_withheld, mask, normalize
from appliance.recordings import merge_stereo_parts
from appliance.security.marks import feature_code, mark_call
from appliance.speech import numbers_ru

_LOGGER = logging.getLogger(__name__)

CALL_ID: contextvars.ContextVar[str] = contextvars.ContextVar("call_id", default="-")


@dataclass
class SessionDeps:
    """What a session needs from the box; built once by the app (and by tests)."""

    telephony: Any  # telephony.base.Telephony
    store: Any  # app.StoreWriter: async run(func, *args)
    prompts: Any  # speech.prompts.PromptLibrary
    flows: Callable[[], tuple[dict[str, Any], str]]  # current good flows and the main flow's name
    engine: Any  # module with start()/step()
    now: Callable[[], datetime]  # clinic-local aware time
    recordings_dir: Path | None  # None = do not record
    region: str = "RU"
    max_call_seconds: float = 3600.0
    security: Any = None  # settings.SecuritySettings; None = no screening
    queues: Any = None  # acd.service.QueueService; None = no queues configured
    recording_guard: Any = None  # recordings.RecordingGuard: disk space and sealing; None = no checks
    recording_stereo: bool = False  # caller on the left, the box and the receptionist on the right
    record_bridged_only: bool = False  # recording.mode queue: only the part with a receptionist / transfer target
    asr: Any = None  # speech.base.Asr or None: spoken menu choices and spoken digits disabled
    asr_pool: Any = None  # executor the recogniser runs on (None: the loop's default)
    transfers: Mapping[str, str] = field(default_factory=dict)  # flow target name -> SIP URI (settings)
    adopt_leg: Callable[[str, Any], None] = lambda leg_id, session: None  # route a leg's events to a session


@dataclass
class _TransferLeg:
    """The outbound call to a transfer target; its events come to the caller's session."""

    target: str
    leg_id: str
    answered: bool = False
    done: bool = False  # connected and over, failed, or given up on: the flow no longer waits for it
    keys: str = ""  # the target's last keys, for the receptionist feature codes (*9 abusive, *0 threat)


class CallSession:
    """Runs one call from CallOffered to CallEnded. Events are processed strictly in order."""

    def __init__(self, offered: ev.CallOffered, deps: SessionDeps) -> None:
        self.call_id = offered.call_id
        self.offered = offered
        self.deps = deps
        self.caller = normalize(offered.caller, deps.region)
        self.record_id: int | None = None
        self.flows, self.flow_name = deps.flows()  # a call finishes on the flow it started with
        self.flow = self.flows[self.flow_name]
        self.language = getattr(self.flow, "language", "ru")
        self.state: Any = None
        self.outcome: str | None = None
        self.hangup_after: int | None = None  # playback id of the goodbye before hanging up
        self.answered_at: float | None = None
        self.recording_path: Path | None = None
        self.recording_started: float | None = None  # wall time the recorder started (speech offsets)
        self.started = time.monotonic()
        self.ended = False
        self._events: asyncio.Queue[ev.Event] = asyncio.Queue()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._playback_ids = 100000  # ids for plays the session makes itself (goodbyes on errors)
        self.task: asyncio.Task[None] | None = None
        self._said_no_asr = False
        self.verdict: Any = None  # screening result: the caller is refused politely
        self.queued = False  # handed to a queue: DTMF, playback ends and the hang-up go there
        self.legs: dict[str, _TransferLeg] = {}  # transfer legs by call id (a failed one until its end arrives)
        self.music_id = 0  # playback id of the music the caller hears while a transfer rings

    # ------------------------------------------------------------------------------------ plumbing

    def post(self, event: ev.Event) -> None:
        self._events.put_nowait(event)

    def start(self) -> asyncio.Task[None]:
        ctx = contextvars.copy_context()
        ctx.run(CALL_ID.set, self.call_id)
        self.task = asyncio.get_running_loop().create_task(self._run(), context=ctx)
        return self.task

    async def _db(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await self.deps.store.run(func, *args, **kwargs)

    async def note(self, kind: str, detail: str = "") -> None:
        """A line for this call's timeline (the queue service writes through this too)."""
        await self._note(kind, detail)

    async def _note(self, kind: str, detail: str = "") -> None:
        if self.record_id is not None:
            try:
                await self._db(self.deps.store.store.add_event, self.record_id, time.time(), kind, detail)
            except Exception as exc:  # noqa: BLE001 - a full disk loses a timeline line, not the call
                _LOGGER.error("call %s: timeline entry %r not stored: %s", self.call_id, kind, exc)

    async def _run(self) -> None:
        try:
            await self._offered()
            while not self.ended:
                event = await self._events.get()
                try:
                    await self._handle(event)
                except CallGone as exc:  # the caller hung up meanwhile: the CallEnded is next in the queue
                    _LOGGER.debug("call %s: %s", self.call_id, exc)
                except RegistraturaError as exc:
                    _LOGGER.warning("call %s: %s", self.call_id, exc)
                    await self._note("error", str(exc))
        except Exception:
            _LOGGER.exception("call %s: session failed; hanging up", self.call_id)
            self.outcome = self.outcome or "failed"
            await self._safe_hangup()
            await self._drain_until_ended()
        finally:
            for handle in self._timers.values():
                handle.cancel()
            self._timers.clear()

    async def _drain_until_ended(self) -> None:
        while not self.ended:
            event = await asyncio.wait_for(self._events.get(), timeout=10)
            if isinstance(event, ev.CallEnded):
                await self._ended(event)

    async def _safe_hangup(self) -> None:
        await self._hangup_call(self.call_id)

    # ------------------------------------------------------------------------------------ events

    async def _offered(self) -> None:
        o = self.offered
        # Durable first: the call record exists before the box answers.
        self.record_id = await self._db(
            self.deps.store.store.call_started,
            sip_call_id=o.sip_call_id,
            caller=self.caller,
            caller_raw=o.caller,
            called=o.called,
            source=o.source,
            flow=self.flow_name,
            started_at=time.time(),
        )
        metrics.CALLS_STARTED.inc()
        metrics.ACTIVE_CALLS.inc()
        if self.deps.security is not None:
            from appliance.security.screening import screen

            # On the writer thread: an automatic block is stored before it is acted on.
            self.verdict = await self._db(screen, self.deps.store.store, self.deps.security, self.caller, time.time())
            if self.verdict is not None:
                metrics.SCREENED_CALLS.labels(self.verdict.reason).inc()
                await self._note("blocked", f"{self.verdict.reason}: {self.verdict.detail}")
                _LOGGER.info("call %s from %s refused: %s", self.call_id, mask(self.caller), self.verdict.reason)
        _LOGGER.info("call %s from %s to %s: answering with flow %s", self.call_id, mask(self.caller),
                     o.called or "-", self.flow_name)
        await self.deps.telephony.answer(self.call_id)
        self._timers["__max"] = asyncio.get_running_loop().call_later(
            self.deps.max_call_seconds, self.post, ev.TimerFired(self.call_id, "__max_duration")
        )

    async def _handle(self, event: ev.Event) -> None:
        leg = self.legs.get(getattr(event, "call_id", ""))
        if leg is not None:
            await self._leg_event(leg, event)
        elif isinstance(event, ev.CallAnswered):
            await self._answered()
        elif isinstance(event, ev.DtmfReceived):
            metrics.DTMF_DIGITS.labels(event.method).inc()
            await self._db(self.deps.store.store.add_digit, self.record_id, event.digit)
            await self._note("dtmf", f"{event.digit} ({event.method})")
            if self.queued:
                await self.deps.queues.caller_dtmf(self.call_id, event.digit)
            else:
                await self._step(event)
        elif isinstance(event, ev.PlaybackDone) and self.queued:
            await self.deps.queues.caller_playback_done(self.call_id, event.playback_id)
        elif isinstance(event, ev.PlaybackDone):
            if self.hangup_after is not None and event.playback_id == self.hangup_after:
                await self._note("hangup", "after goodbye")
                await self._safe_hangup()
            elif self.state is not None:
                await self._step(event)
        elif isinstance(event, ev.TimerFired):
            self._timers.pop(event.name, None)
            if event.name == "__transfer":
                await self._transfer_gave_up()
            elif event.name == "__max_duration":
                await self._note("hangup", "maximum call duration reached")
                self.outcome = self.outcome or "timeout"
                await self._safe_hangup()
            else:
                await self._step(event)
        elif isinstance(event, ev.CallEnded):
            await self._ended(event)
        elif isinstance(event, ev.LineSilent):
            await self._line_silent(event)
        elif isinstance(event, ev.Utterance):
            await self._utterance(event)
        elif self.state is not None:
            await self._step(event)

    async def _line_silent(self, event: ev.LineSilent) -> None:
        """A dead line. The engine notes it and hangs up (outcome silent); once the flow has ended (handed to
        a queue that is not there yet, say) the session hangs up itself. A goodbye already playing is left
        to finish: the box hangs up after it anyway."""
        _LOGGER.info("call %s: no audio from the line for %.0f s: hanging up", self.call_id, event.seconds)
        if self.hangup_after is not None:
            return
        if self.state is not None and not getattr(self.state, "finished", False):
            await self._step(event)
            return
        await self._note("line_silent", f"{event.seconds:.0f} s without audio")
        self.outcome = self.outcome or "silent"
        await self._safe_hangup()

    async def _utterance(self, event: ev.Utterance) -> None:
        """Decode what the caller said while the flow can use it (a menu or an ask), then feed the engine."""
        if self.deps.asr is None or self.state is None or getattr(self.state, "finished", True) or self.queued:
            return
        node = self.flows.get(self.state.flow, self.flow).nodes.get(self.state.node)
        if not isinstance(node, MenuNode | AskNode):
            return
        loop = asyncio.get_running_loop()
        try:
            heard = await loop.run_in_executor(self.deps.asr_pool, self.deps.asr.transcribe, event.pcm,
                                               event.sample_rate)
        except Exception as exc:  # noqa: BLE001 - a failed decode loses one answer, never the call
            _LOGGER.warning("call %s: speech not recognised: %s", self.call_id, exc)
            return
        metrics.SPEECH_DECODE.observe(heard.decode_seconds)
        # A digits ask hears phone numbers and dates of birth: its timeline keeps the length, not the words.
        # A speech ask (a home visit's reason) is kept as said; its audio is in the call's recording.
        # At the read-back the answer is a yes or a no, kept as heard unless it holds number words (a caller
        # who dictates the number again).
        yes_or_no = self._reading_back(node) and not numbers_ru.parse_digits(heard.text)
        secret = isinstance(node, AskNode) and node.input != "speech" and not yes_or_no
        what = f"{len(heard.text.split())} words" if secret else f"'{heard.text}'"
        where = ""
        if self.recording_path is not None and self.recording_started is not None:
            said_at = time.time() - self.recording_started - heard.audio_seconds - heard.decode_seconds
            where = f"; in the recording at {max(0.0, said_at):.1f} s"
        await self._note("speech", f"{node.id}: heard {what} ({heard.confidence:.2f}, {heard.audio_seconds:.1f} s "
                                   f"of audio, {heard.decode_seconds * 1000:.0f} ms{where})")
        if not heard.empty and not self.ended:
            spotted = await self._spot(node, heard.text, event, yes_or_no)
            await self._step(ev.SpeechHeard(self.call_id, heard.text, heard.confidence, spotted))

    def _reading_back(self, node: MenuNode | AskNode) -> bool:
        """The caller is being read the digits they gave and asked whether they are right."""
        return isinstance(node, AskNode) and node.input != "speech" and getattr(self.state, "phase", "") == "confirm"

    async def _spot(self, node: MenuNode | AskNode, text: str, event: ev.Utterance,
                    yes_or_no: bool) -> tuple[str, str] | None:
        """For a menu answer whose words name no option, or a read-back's answer (``yes_or_no``: no number words
        in it) that is neither yes nor no: the option ("yes" / "no" at a read-back) the recogniser's scores fit, if
        one fits clearly (a second pass of the model, so only for these answers; recognisers without scores give
        None)."""
        spot = getattr(self.deps.asr, "spot", None)
        if spot is None:
            return None
        if isinstance(node, MenuNode):
            options: Sequence[tuple[str, Sequence[str]]] = [(o.key, o.keywords) for o in node.options]
            if keywords.choose(text, options) is not None:
                return None
        elif yes_or_no:
            if keywords.yes_no(text) is not None:
                return None
            options = keywords.YES_NO_PHRASES
        else:
            return None
        loop = asyncio.get_running_loop()
        try:
            found = await loop.run_in_executor(self.deps.asr_pool, spot, event.pcm, event.sample_rate, options)
        except Exception as exc:  # noqa: BLE001 - the answer is then simply unclear: the caller is asked again
            _LOGGER.warning("call %s: menu phrases not spotted: %s", self.call_id, exc)
            return None
        return (found.key, found.phrase) if found is not None else None

    async def _answered(self) -> None:
        self.answered_at = time.time()
        await self._db(self.deps.store.store.call_answered, self.record_id, self.answered_at)
        if not self.deps.record_bridged_only:
            await self.start_recording()
        if self.verdict is not None:  # refused callers hear a short neutral message and never reach a flow
            await self._do(ev.Hangup("blocked", (self.verdict.prompt,)))
            return
        withheld = is_withheld(self.caller)
        if withheld and getattr(self.deps.security, "withheld", "allow") == "ask":
            from appliance.security.withheld import withheld_gate

            gate = withheld_gate(self.flow, self.deps.region)  # type a number first, then the clinic's flow
            self.flows, self.flow = {**self.flows, gate.name: gate}, gate
        ctx = self.deps.engine.CallContext(
            caller=self.caller, withheld=withheld, called=self.offered.called, variables={},
            listening=self.deps.asr is not None,
        )
        self.state, actions = self.deps.engine.start(self.flow, ctx, self.deps.now(), self.flows)
        await self._execute(actions)

    async def start_recording(self) -> None:
        """From the answer (recording.mode all), or just before a receptionist or transfer target is bridged
        in (mode queue: the conversation with staff only). Once per call; a full disk leaves the call unrecorded."""
        guard = self.deps.recording_guard
        if self.deps.recordings_dir is None or self.recording_path is not None:
            return
        if guard is not None and not guard.may_record():
            await self._note("recording", "off: disk full")  # the call goes on unrecorded
            return
        path = self._recording_path()
        self.recording_path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            # Durable first: the path is in the record before the first byte is written.
            await self._db(self.deps.store.store.set_recording, self.record_id, str(path))
            await self.deps.telephony.start_recording(self.call_id, path, stereo=self.deps.recording_stereo)
            self.recording_started = time.time()
            if guard is not None:  # stopped cleanly if the disk fills; sealed after the call
                guard.started(self.call_id, self.record_id, path, self.deps.telephony)
        except (OSError, RegistraturaError) as exc:
            _LOGGER.warning("call %s: recording not started: %s", self.call_id, exc)
            await self._note("recording", f"not started: {exc}")

    def _recording_path(self) -> Path:
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(self.answered_at or time.time()))
        day = time.strftime("%Y/%m/%d", time.gmtime(self.answered_at or time.time()))
        assert self.deps.recordings_dir is not None
        return self.deps.recordings_dir / day / f"{stamp}-call{self.record_id}.wav"

    async def _step(self, event: ev.Event) -> None:
        if self.state is None:
            return
        self.state, actions = self.deps.engine.step(self.flow, self.state, event, self.deps.now(), self.flows)
        await self._execute(actions)

    async def _ended(self, event: ev.CallEnded) -> None:
        if self.ended:
            return
        self.ended = True
        if self.state is not None:
            try:
                self.state, _ = self.deps.engine.step(self.flow, self.state, event, self.deps.now(), self.flows)
            except Exception:  # noqa: BLE001 - the call is over whatever the engine thinks
                _LOGGER.exception("call %s: engine failed on hang-up", self.call_id)
        for leg in self.legs.values():
            if not leg.done or leg.answered:
                leg.done = True
                await self._hangup_call(leg.leg_id)
        if self.queued:
            # The queue writes ABANDON (and maybe a callback) durably before the call record is closed.
            self.outcome = await self.deps.queues.caller_ended(self.call_id) or self.outcome
        outcome = self.outcome
        if outcome is None:
            engine_outcome = getattr(self.state, "outcome", None)
            if event.by == "caller":
                outcome = "caller_hangup" if self.answered_at else "abandoned"
            elif event.by == "error":
                outcome = "failed"
            else:
                outcome = engine_outcome or "completed"
        now = time.time()
        await self._note("end", f"by {event.by} ({event.status_code} {event.reason})".strip())
        await self._db(self.deps.store.store.call_ended, self.record_id, now, outcome, event.reason)
        if self.deps.recording_stereo and self.recording_path is not None:
            # The two sides recorded apart become one stereo file before sealing and the disk quota see it.
            await asyncio.get_running_loop().run_in_executor(None, merge_stereo_parts, self.recording_path)
        if self.deps.recording_guard is not None:
            await self.deps.recording_guard.finished(self.call_id)
        metrics.ACTIVE_CALLS.dec()
        metrics.CALLS.labels(outcome).inc()
        if self.answered_at:
            metrics.CALL_DURATION.observe(max(0.0, now - self.answered_at))
        _LOGGER.info("call %s ended: %s", self.call_id, outcome)

    # ------------------------------------------------------------------------------------ actions

    async def _execute(self, actions: list[Any]) -> None:
        for action in actions:
            if self.ended:
                return
            await self._do(action)

    async def _do(self, action: Any) -> None:
        tel = self.deps.telephony
        if isinstance(action, ev.Play):
            files = await self._files(action.prompts)
            await self._note("play", " ".join(action.prompts))
            await tel.play(self.call_id, files, action.playback_id)
        elif isinstance(action, ev.StopPlayback):
            await tel.stop_playback(self.call_id)
        elif isinstance(action, ev.StartTimer):
            old = self._timers.pop(action.name, None)
            if old:
                old.cancel()
            self._timers[action.name] = asyncio.get_running_loop().call_later(
                action.seconds, self.post, ev.TimerFired(self.call_id, action.name)
            )
        elif isinstance(action, ev.CancelTimer):
            old = self._timers.pop(action.name, None)
            if old:
                old.cancel()
        elif isinstance(action, ev.Note):
            await self._note(action.kind, action.detail)
        elif isinstance(action, ev.SetVar) and action.name == CALLER_VAR and is_withheld(self.caller):
            # Durable first: the typed number is in the call record before the flow may queue or call back.
            self.caller = normalize(action.value, self.deps.region) or action.value
            await self._db(self.deps.store.store.set_caller, self.record_id, self.caller)
            await self._note("caller", "number typed in by a withheld caller")
            _LOGGER.info("call %s: withheld caller typed in %s", self.call_id, mask(self.caller))
        elif isinstance(action, ev.SetVar):
            await self._note("set", action.name)  # values may be a caller's phone number: name only
        elif isinstance(action, ev.Hangup):
            self.outcome = action.outcome
            if action.goodbye:
                self._playback_ids += 1
                self.hangup_after = self._playback_ids
                files = await self._files(action.goodbye)
                await self._note("play", " ".join(action.goodbye))
                await tel.play(self.call_id, files, self.hangup_after)
            else:
                await self._safe_hangup()
        elif isinstance(action, ev.Listen):
            if self.deps.asr is None and not self._said_no_asr:
                self._said_no_asr = True
                await self._note("listen", "no ASR installed: spoken choices disabled, keys only")
        elif isinstance(action, ev.Enqueue) and self.deps.queues is not None and self.deps.queues.has(action.queue):
            self.queued = True
            await self._note("queue", f"joined {action.queue}")
            await self.deps.queues.join(self, action.queue)
        elif isinstance(action, ev.RequestCallback):
            await self._request_callback(action)
        elif isinstance(action, ev.Transfer):
            await self._transfer(action)
        elif isinstance(action, ev.Enqueue):
            _LOGGER.warning("call %s: the flow hands the call to queue %r, which is not configured", self.call_id,
                            action.queue)
            await self._note("queue", f"{action.queue}: not configured")
            await self._do(ev.Hangup("failed", (self._transfer_failed_prompt(),)))
        else:
            await self._note("unknown-action", repr(action))

    # ------------------------------------------------------------------------------------ transfers

    async def _transfer(self, action: ev.Transfer) -> None:
        """Ring the configured target while the caller hears music; bridge when it answers.

        Bridged in the box, not a SIP REFER: FXO gateways rarely honour REFER, and a bridged call keeps the
        recording and the receptionist feature codes. Only names from the settings can be dialled."""
        uri = self.deps.transfers.get(action.target)
        if not uri:
            _LOGGER.warning("call %s: transfer target %r is not configured (settings: transfers)", self.call_id,
                            action.target)
            await self._transfer_result(action.target, "not_configured")
            return
        tel = self.deps.telephony
        leg = _TransferLeg(action.target, tel.new_call_id())
        # Known before the call starts: a target that answers at once sends its event before originate returns.
        self.legs[leg.leg_id] = leg
        self.deps.adopt_leg(leg.leg_id, self)
        await self._note("transfer", f"ringing {action.target}")
        try:
            self._playback_ids += 1
            self.music_id = self._playback_ids
            await tel.play(self.call_id, self.deps.prompts.music(), self.music_id, loop=True)
        except RegistraturaError as exc:  # no music installed: the caller waits in silence, the transfer goes on
            _LOGGER.warning("call %s: no music while the transfer rings: %s", self.call_id, exc)
        await self._do(ev.StartTimer("__transfer", action.seconds))
        number = "" if is_withheld(self.caller) else self.caller
        try:
            await tel.originate(uri, caller_id=number, call_id=leg.leg_id)
        except RegistraturaError as exc:
            _LOGGER.warning("call %s: transfer to %s failed: %s", self.call_id, action.target, exc)
            await self._leg_failed(leg, "failed")

    async def _leg_event(self, leg: _TransferLeg, event: ev.Event) -> None:
        if isinstance(event, ev.CallAnswered):
            if leg.done or self.ended:  # given up on (timeout) or the caller left meanwhile
                await self._hangup_call(leg.leg_id)
                return
            leg.answered = leg.done = True
            await self._do(ev.CancelTimer("__transfer"))
            self.music_id = 0
            self.outcome = "transferred"
            await self.start_recording()  # before the bridge: it wires the target's voice into the recorder
            await self.deps.telephony.bridge(self.call_id, leg.leg_id)
            await self._transfer_result(leg.target, "connected")
        elif isinstance(event, ev.DtmfReceived) and leg.answered:
            leg.keys, kind = feature_code(leg.keys, event.digit, self.deps.security.feature_codes)
            if kind:
                await mark_call(self.deps.store, self.deps.security, self, kind, leg.target)
        elif isinstance(event, ev.CallEnded):
            self.legs.pop(leg.leg_id, None)
            self.deps.adopt_leg(leg.leg_id, None)
            if leg.answered:
                await self._note("transfer", f"{leg.target} hung up")
                await self._safe_hangup()  # the conversation is over
            elif not leg.done:
                reason = {486: "busy", 600: "busy", 603: "busy", 408: "no_answer", 480: "no_answer"}.get(
                    event.status_code, "failed")
                await self._leg_failed(leg, reason)

    async def _transfer_gave_up(self) -> None:
        for leg in list(self.legs.values()):
            if not leg.done:
                await self._leg_failed(leg, "no_answer")
                await self._hangup_call(leg.leg_id)

    async def _leg_failed(self, leg: _TransferLeg, reason: str) -> None:
        leg.done = True
        await self._do(ev.CancelTimer("__transfer"))
        if self.music_id:
            self.music_id = 0
            await self.deps.telephony.stop_playback(self.call_id)
        await self._transfer_result(leg.target, reason)

    async def _transfer_result(self, target: str, result: str) -> None:
        metrics.TRANSFERS.labels(target, result).inc()
        await self._note("transfer", f"{target}: {result}")
        if result != "connected":
            await self._step(ev.TransferFailed(self.call_id, result))  # the flow goes to no_answer or says sorry

    def _transfer_failed_prompt(self) -> str:
        prompt = getattr(self.flow, "transfer_failed", "transfer_failed")
        return prompt if prompt in self.deps.prompts.catalog.get(self.language, {}) else getattr(
            self.flow, "goodbye", "goodbye")

    async def _hangup_call(self, call_id: str) -> None:
        try:
            await self.deps.telephony.hangup(call_id)
        except Exception:  # noqa: BLE001 - the call (or transfer leg) may be gone already
            pass

    async def _request_callback(self, action: ev.RequestCallback) -> None:
        """Stored before the flow goes on to its confirmation prompt (the actions run in order)."""
        number = normalize(action.number, self.deps.region) if action.number else self.caller
        queue = ""
        if self.deps.queues is not None and number:
            queue = await self.deps.queues.request_callback(self.call_id, number, action.reason)
        if queue:
            await self._note("callback", f"requested ({action.reason}), queue {queue}")
        else:
            _LOGGER.warning("call %s: the flow asked for a callback but %s", self.call_id,
                            "no queue is configured to call back from" if number else "there is no number")
            await self._note("callback", f"not stored ({action.reason}): " + ("no queue" if number else "no number"))

    async def _files(self, prompts: tuple[str, ...]) -> list[Path]:
        lib = self.deps.prompts
        loop = asyncio.get_running_loop()
        # Rendering can spawn espeak-ng for dynamic text: keep it off the loop.
        return [await loop.run_in_executor(None, lib.path, self.language, p) for p in prompts]
