"""Composition root: builds the parts, starts them, routes events to sessions, stops gracefully."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from appliance import events as ev
from appliance import metrics, update
from appliance.errors import FlowError
from appliance.firstboot import read_status as read_firstboot_status
from appliance.notify import Notifier
from appliance.session import CallSession, SessionDeps

_LOGGER = logging.getLogger(__name__)


class StoreWriter:
    """The one writer: every durable write runs on one thread, in order, off the event loop."""

    def __init__(self, store: Any, initializer: Callable[[], None] | None = None) -> None:
        self.store = store
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        self._initializer = initializer

    async def run(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()

        def call() -> Any:
            if self._initializer is not None:
                self._initializer()  # cheap once registered; the SIP stack may start after this thread did
            return func(*args, **kwargs)

        return await loop.run_in_executor(self._pool, call)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.store.close()


class FlowSet:
    """The last good flows. A broken file is rejected with a clear log line; the old flows keep serving."""

    def __init__(self, directory: Path, main: str, prompt_ids: dict[str, set[str]],
                 defaults: dict[str, Any] | None = None) -> None:
        self.directory = directory
        self.main = main
        self.prompt_ids = prompt_ids
        self.defaults = defaults or {}  # the box settings' silence/DTMF defaults; a flow's own values win
        self.flows: dict[str, Any] = {}
        self._stamp: tuple[tuple[str, float], ...] = ()

    def _mtimes(self) -> tuple[tuple[str, float], ...]:
        files = sorted(self.directory.glob("*.yaml"))
        return tuple((f.name, f.stat().st_mtime) for f in files)

    def load(self) -> None:
        """Load or raise FlowError (used at start-up: no good flows, no service)."""
        from appliance.flow import load_flows

        stamp = self._mtimes()
        flows = load_flows(self.directory, self.prompt_ids, self.defaults)
        if self.main not in flows:
            raise FlowError(f"{self.directory}: main flow '{self.main}' not found; "
                            f"available: {', '.join(sorted(flows)) or 'none'} (settings flows.main)")
        self.flows, self._stamp = flows, stamp

    def reload_if_changed(self, force: bool = False) -> bool:
        if not force and self._mtimes() == self._stamp:
            return False
        try:
            self.load()
        except FlowError as exc:
            self._stamp = self._mtimes()  # do not repeat the same complaint every poll
            metrics.FLOW_RELOADS.labels("rejected").inc()
            _LOGGER.error("flows not reloaded, the last good flows keep serving: %s", exc)
            return False
        metrics.FLOW_RELOADS.labels("ok").inc()
        _LOGGER.info("flows reloaded: %s", ", ".join(sorted(self.flows)))
        return True

    def current(self) -> tuple[dict[str, Any], str]:
        return self.flows, self.main


def _register_pj_thread() -> None:
    """Worker threads register with pjlib once the SIP stack exists (see telephony.pjsua.register_thread)."""
    try:
        from appliance.telephony.pjsua import register_thread
    except ImportError:
        return
    register_thread(threading.current_thread().name)


def flow_clock(tz: ZoneInfo) -> Callable[[], datetime]:
    """The clinic-local clock the flows see. REGISTRATURA_FLOW_TIME (ISO time) pins it for demos and tests,
    so that opening hours do not depend on when they run; it then advances with real time."""
    pinned = os.environ.get("REGISTRATURA_FLOW_TIME", "").strip()
    if not pinned:
        return lambda: datetime.now(tz)
    base = datetime.fromisoformat(pinned)
    if base.tzinfo is None:
        base = base.replace(tzinfo=tz)
    t0 = time.monotonic()
    return lambda: base + timedelta(seconds=time.monotonic() - t0)


class App:
    """The service: ``await App(settings).run()`` until SIGTERM/SIGINT."""

    def __init__(self, settings: Any, telephony: Any = None) -> None:
        self.settings = settings
        self.telephony = telephony
        self.sessions: dict[str, CallSession] = {}
        self.legs: dict[str, CallSession] = {}  # transfer legs -> the caller's session
        # Recognition off the loop and off the default pool (prompt renders): at most two utterances at once.
        self._asr_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="asr")
        self.stopping = asyncio.Event()
        self.ready = asyncio.Event()
        self.writer: StoreWriter | None = None
        self.flowset: FlowSet | None = None
        self.prompts: Any = None
        self._notify = Notifier()
        self._http: Any = None
        self.queues: Any = None
        self.recordings: Any = None  # recordings.RecordingGuard
        self.speech: Any = None  # speech.engines.SpeechEngines: VAD for barge-in, ASR, TTS

    # ------------------------------------------------------------------------------------ start-up

    def _prepare_data_dir(self) -> Path:
        os.umask(0o077)  # recordings and the database are for the clinic's eyes only
        data = Path(self.settings.data_dir)
        data.mkdir(parents=True, exist_ok=True, mode=0o700)
        return data

    def _open_store(self, data: Path) -> StoreWriter:
        from appliance.recordings import merge_stereo_parts
        from appliance.store import Store
        from appliance.telephony.base import stereo_parts
        from appliance.wavfile import repair_wav

        store = Store(data / "registratura.db")
        store.migrate()
        open_calls = store.open_calls()
        closed = store.close_interrupted(time.time())
        for call in open_calls:
            rec = call.get("recording")
            if not rec:
                continue
            parts = stereo_parts(Path(rec))  # a stereo recording is two mono files until the call ends
            for path in (rec, *parts):
                if not Path(path).exists():
                    continue
                try:
                    if repair_wav(path):
                        _LOGGER.info("repaired the recording of interrupted call %s", call["id"])
                except ValueError as exc:
                    _LOGGER.warning("recording of interrupted call %s is unreadable: %s", call["id"], exc)
            if not Path(rec).exists():
                merge_stereo_parts(Path(rec))
        if closed:
            metrics.INTERRUPTED_CALLS.inc(len(closed))
            _LOGGER.warning("%d call(s) were open when the box stopped; closed as interrupted", len(closed))
        return StoreWriter(store, initializer=_register_pj_thread)

    def _load_prompts_and_flows(self, data: Path) -> None:
        from appliance.flow import load_prompt_catalog
        from appliance.speech.prompts import PromptLibrary

        s = self.settings
        catalog = load_prompt_catalog(s.voices.dir)
        self.prompts = PromptLibrary(
            catalog, s.voices.dir, s.voices.cache or data / "prompt-cache",
            variables={"clinic_name": s.clinic.name},
        )
        ids = {lang: set(items) for lang, items in catalog.items()}
        defaults = {"no_input_timeout": s.silence.no_input_timeout, "retries": s.silence.retries,
                    "interdigit_timeout": s.sip.dtmf.interdigit_timeout}
        self.flowset = FlowSet(s.flows.dir, s.flows.main, ids, defaults)
        self.flowset.load()

    def _build_telephony(self) -> Any:
        from appliance.telephony.pjsua import PjsuaTelephony, StackConfig

        sip = self.settings.sip
        return PjsuaTelephony(
            StackConfig(
                host=sip.host,
                port=sip.port,
                public_address=sip.public_address,
                rtp_port_min=sip.rtp_port_min,
                rtp_port_max=sip.rtp_port_max,
                codecs=tuple(sip.codecs),
                max_calls=sip.max_calls,
                allow=sip.allows,
                registration=sip.registration,
                log_level=1 if self.settings.log.level != "DEBUG" else 4,
                dead_line_timeout=self.settings.silence.dead_line_timeout,
                new_vad=self.speech.new_vad if self.speech is not None else None,
                release_vad=self.speech.release_vad if self.speech is not None else None,
                utterances=self._asr() is not None,
            )
        )

    def _asr(self) -> Any:
        return getattr(self.speech, "asr", None)

    def _load_speech(self, data: Path) -> Any:
        """Silero VAD when installed (else the energy detector), ASR, TTS; one log line each saying why."""
        from appliance.speech.engines import load_engines

        try:
            listen = self.settings.silence
            # The recogniser decodes what the model VAD cuts: no model VAD, no recogniser.
            kinds = ("vad", "asr", "tts") if listen.vad != "energy" and listen.asr != "off" else \
                ("vad", "tts") if listen.vad != "energy" else ("tts",)
            eng = load_engines(data / "models", self.settings.clinic.language, kinds=kinds,
                               max_vad=max(1, min(self.settings.sip.max_calls, 64)),
                               tts_languages=sorted(self.prompts.catalog) if self.prompts is not None else ())
        except Exception as exc:  # noqa: BLE001 - speech is optional: the box answers with keys and energy VAD
            _LOGGER.warning("speech engines not loaded (%s): energy VAD, keys only", exc)
            return None
        if "vad" not in kinds:
            eng.lines.insert(0, "VAD: energy detector (silence.vad: energy)")
        if "asr" not in kinds:
            eng.lines.insert(1, "ASR: off (" + ("silence.asr: off" if listen.asr == "off" else
                                               "silence.vad: energy cuts no utterances") + "); keys only")
        elif eng.vad_pool is None and eng.asr is not None:
            eng.lines.append("ASR: unused: it needs the Silero VAD to cut utterances; keys only")
            eng.asr = None
        eng.log(_LOGGER)
        return eng

    def _start_metrics(self) -> None:
        from appliance.acd.collector import QueueStatsCollector
        from appliance.web import serve

        metrics.REGISTRY.register(QueueStatsCollector(Path(self.settings.data_dir) / "registratura.db", self.settings))
        self._http = serve(self.settings.metrics, self.health)
        metrics.UP_SINCE.set(time.time())

    def health(self) -> dict[str, Any]:
        """For /healthz: called from the HTTP thread, reads plain attributes only."""
        info = getattr(self.telephony, "info", None)
        return {
            "ok": self.ready.is_set() and not self.stopping.is_set(),
            "ready": self.ready.is_set(),
            "stopping": self.stopping.is_set(),
            "active_calls": len(self.sessions),
            "sip_capacity": getattr(info, "capacity", 0),
            "sip_registration": dict(getattr(self.telephony, "registration", {"state": "none"})),
            "flows": sorted(self.flowset.flows) if self.flowset else [],
            "firstboot": read_firstboot_status(),
            "image": self._image(),
        }

    async def run(self) -> int:
        started = time.monotonic()
        loop = asyncio.get_running_loop()
        data = self._prepare_data_dir()
        self.writer = self._open_store(data)
        from appliance.recordings import RecordingGuard

        self.recordings = RecordingGuard(self.settings, self.writer)
        await self.recordings.start()  # retention and quota at start-up, then the disk watch
        self._load_prompts_and_flows(data)
        self.speech = await loop.run_in_executor(None, self._load_speech, data)
        if self.speech is not None:  # each prompt language is spoken by the voice picked for it
            self.prompts.renderers = self.speech.prompt_renderers()
        rendered, cached = await loop.run_in_executor(None, self.prompts.render_all)
        _LOGGER.info("prompts ready: %d rendered, %d cached", rendered, cached)
        await loop.run_in_executor(None, self._render_queue_phrases)
        self._start_metrics()
        # Built after the speech engines: its StackConfig takes their VAD factory and whether utterances are cut
        # for the recogniser (built earlier, calls get the energy VAD and spoken answers are never decoded).
        if self.telephony is None:
            self.telephony = self._build_telephony()
        await self.telephony.start(self.on_event)
        loop.set_default_executor(ThreadPoolExecutor(thread_name_prefix="work", initializer=_register_pj_thread))
        if self.settings.queues:
            from appliance.acd.service import QueueService

            self.queues = QueueService(self.settings, self.telephony, self.writer, self.prompts,
                                       language=self.settings.clinic.language)
            self.queues.start()
        info = self.telephony.info
        metrics.SIP_CALL_CAPACITY.set(info.capacity)
        metrics.STACK_INFO.info({"library": info.library, "build": info.build, "capacity": str(info.capacity)})
        if info.build == "pypi":
            _LOGGER.warning(
                "SIP stack: %s from PyPI, capped at %d concurrent calls (asked for %d); install the wheel "
                "built by tools/build_pjsua2.sh for a clinic line", info.library, info.capacity, info.requested)
        else:
            _LOGGER.info("SIP stack: %s, %d concurrent calls", info.library, info.capacity)
        for sig, handler in ((signal.SIGTERM, self.stop), (signal.SIGINT, self.stop), (signal.SIGHUP, self._hup)):
            try:
                loop.add_signal_handler(sig, handler)
            except (NotImplementedError, RuntimeError):  # not the main thread (tests)
                pass
        sip = self.settings.sip
        _LOGGER.info("ready: listening for SIP on %s:%d, metrics on %s:%d (%.2f s after start)",
                     sip.host, sip.port, self.settings.metrics.host, self.settings.metrics.port,
                     time.monotonic() - started)
        self._notify("READY=1")
        self.ready.set()
        background = [loop.create_task(self._watchdog()), loop.create_task(self._watch_flows())]
        await self.stopping.wait()
        await self._shutdown()
        for task in background:
            task.cancel()
        return 0

    # ------------------------------------------------------------------------------------ running

    @staticmethod
    def _image() -> dict[str, Any]:
        """/healthz's image part; never an exception (a 500 would fail the update check and roll the box back)."""
        try:
            return update.running()
        except Exception as exc:  # noqa: BLE001 - health must answer
            return {"error": str(exc)}

    def _render_queue_phrases(self) -> None:
        """Render the queue announcements of every language a neural voice speaks, before the box takes calls:
        such a voice takes ~0.2 s per phrase (espeak-ng ~20 ms, rendered when needed), so a cold cache (a new
        voice, or no ``prompts render`` at image build) would otherwise delay a caller's announcement. Not in a
        background thread beside live calls: its Python work would compete for the GIL with the media thread's
        Python VAD taps, which must run every 20 ms. Cached after the first start."""
        from appliance.speech.base import base_language
        from appliance.speech.phrases import queue_phrases

        langs = sorted(lang for lang in self.prompts.catalog if base_language(lang) in self.prompts.renderers)
        if not langs or not self.settings.queues:
            return
        started = time.monotonic()
        try:
            rendered, cached = self.prompts.render_texts({lang: queue_phrases(lang) for lang in langs})
        except Exception as exc:  # noqa: BLE001 - a phrase that fails here is rendered (or fails) when needed
            _LOGGER.warning("queue phrases (%s): not rendered ahead: %s", ", ".join(langs), exc)
            return
        _LOGGER.info("queue phrases (%s): %d rendered ahead in %.1f s, %d cached", ", ".join(langs), rendered,
                     time.monotonic() - started, cached)

    def stop(self) -> None:
        if not self.stopping.is_set():
            _LOGGER.info("stopping: no new calls; draining %d call(s)", len(self.sessions))
            self._notify("STOPPING=1")
            self.stopping.set()

    def _hup(self) -> None:
        if self.flowset is not None:
            self.flowset.reload_if_changed(force=True)

    async def _watch_flows(self) -> None:
        while True:
            await asyncio.sleep(2.0)
            if self.flowset is not None:
                await asyncio.get_running_loop().run_in_executor(None, self.flowset.reload_if_changed)

    async def _watchdog(self) -> None:
        usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
        if not usec:
            return
        # Pinged from the loop itself: a stuck loop stops the pings and systemd restarts us.
        while True:
            self._notify("WATCHDOG=1")
            await asyncio.sleep(usec / 2_000_000)

    def on_event(self, event: ev.Event) -> None:
        """Called on the loop for every telephony event (via call_soon_threadsafe)."""
        if isinstance(event, ev.InviteRejected):
            metrics.REJECTED_INVITES.labels(event.reason).inc()
            _LOGGER.info("INVITE refused (%s, %d) from %s", event.reason, event.status_code,
                         event.source.rsplit(":", 1)[0])
            return
        if isinstance(event, ev.CallOffered):
            session = CallSession(event, self._deps())
            self.sessions[event.call_id] = session
            task = session.start()
            task.add_done_callback(lambda _t, cid=event.call_id: self._session_done(cid))
            return
        call_id = getattr(event, "call_id", "")
        session = self.sessions.get(call_id) or self.legs.get(call_id)
        if session is not None:
            session.post(event)
        elif self.queues is not None and self.queues.owns(call_id):
            self.queues.post(event)

    def _deps(self) -> SessionDeps:
        from appliance.flow import engine

        s = self.settings
        tz = ZoneInfo(s.clinic.timezone)
        record = s.recording.mode != "none"
        assert self.writer is not None and self.flowset is not None
        return SessionDeps(
            telephony=self.telephony,
            store=self.writer,
            prompts=self.prompts,
            flows=self.flowset.current,
            engine=engine,
            now=flow_clock(tz),
            recordings_dir=(Path(s.data_dir) / "recordings") if record else None,
            region=s.clinic.region,
            security=s.security,
            queues=self.queues,
            recording_guard=self.recordings,
            recording_stereo=self.settings.recording.format == "stereo",
            record_bridged_only=s.recording.mode == "queue",
            asr=self._asr(),
            asr_pool=self._asr_pool,
            transfers=s.transfers,
            adopt_leg=self._adopt_leg,
        )

    def _session_done(self, call_id: str) -> None:
        session = self.sessions.pop(call_id, None)
        for leg_id in getattr(session, "legs", ()):
            self.legs.pop(leg_id, None)

    def _adopt_leg(self, leg_id: str, session: Any) -> None:
        """A session's outbound leg (a transfer): its events go to that session; None forgets it."""
        if session is None:
            self.legs.pop(leg_id, None)
        else:
            self.legs[leg_id] = session

    async def _shutdown(self, drain_seconds: float = 20.0) -> None:
        if self.telephony is not None and hasattr(self.telephony, "stop_accepting"):
            self.telephony.stop_accepting()
        deadline = time.monotonic() + drain_seconds
        while self.sessions and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        if self.telephony is not None:
            await self.telephony.stop()  # hangs up what is left
        pending = [s.task for s in self.sessions.values() if s.task]
        if pending:
            await asyncio.wait(pending, timeout=5)
        if self.recordings is not None:
            await self.recordings.stop()  # seals still running finish first
        self._asr_pool.shutdown(wait=False, cancel_futures=True)
        if self.writer is not None:
            self.writer.close()
        if self._http is not None:
            self._http.shutdown()
        _LOGGER.info("stopped")
