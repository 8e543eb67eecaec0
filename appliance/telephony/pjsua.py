"""The only door to pjsua2: one pj thread owns every pjsua2 object and talks to asyncio by events/commands.

Rules (see ARCHITECTURE.md): pjsua2 callbacks copy plain values into a frozen event and hand it to the
asyncio loop with ``call_soon_threadsafe``; they never block and never touch the engine. Commands from the
loop run on the pj thread through a queue of (function, future). Every ``pj.Call`` is dropped before
``libDestroy`` (pjsua2 aborts otherwise).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import gc
import itertools
import logging
import os
import queue
import re
import sys
import threading
import time
import wave
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.errors import CallGone, StackMissing, TelephonyError

try:
    import pjsua2 as pj
except ImportError as exc:  # a clear line for `check` and `run`, not a traceback
    raise StackMissing(f"the SIP stack pjsua2 is not installed ({exc}); install the box's own wheel built by "
                       "tools/build_pjsua2.sh for this machine's architecture (see image/README.md)") from exc

from appliance import metrics
from appliance.events import (
    CallAnswered,
    CallEnded,
    CallOffered,
    DtmfReceived,
    Event,
    InviteRejected,
    PlaybackDone,
)
from appliance.speech.vad import EnergyVad, LineWatch
from appliance.telephony.base import StackInfo, stereo_parts
from appliance.telephony.sipmsg import parse_invite, uri_user

_LOGGER = logging.getLogger(__name__)

_CODEC_IDS = {"PCMA": "PCMA/8000/1", "PCMU": "PCMU/8000/1", "G722": "G722/16000/1"}
_DTMF_METHODS = {
    pj.PJSUA_DTMF_METHOD_RFC2833: "rfc2833",
    pj.PJSUA_DTMF_METHOD_SIP_INFO: "sip_info",
}
_LONG_DIGITS = re.compile(r"\+?\d{5,}")
_GRAVE_SECONDS = 2.0  # how long a stopped player stays referenced (many conference clock ticks)
_PORT_REMOVAL_S = 0.08  # a few conference clock ticks (20 ms each)
_POLL_MS = 5  # how long the pj thread waits for SIP events before it checks the command queue
_PLAYLIST_BUFSIZE = 4000  # PJMEDIA_FILE_PORT_BUFSIZE: a playlist reads its files ahead in chunks this big
_FRAME_USEC = 20000  # the conference bridge's frame (ptime)
_LEVEL_POLL_S = 0.1  # the energy watch reads each call's level this often (one frame in five: enough for energy)
_MEAN_TO_RMS = 1.2533  # sqrt(pi/2): RMS over mean absolute amplitude for noise-like audio


def _level_table() -> list[float]:
    """pjmedia keeps a conference port's level as the complemented u-law code (0..255) of the last frame's mean
    absolute amplitude, and pjsua2 hands it out scaled to 0..100. This maps each percent back to an RMS
    estimate: the lowest code giving that percent, expanded by G.711 u-law. Percent 0 (codes 0..2: digital
    silence) maps to 0; percent 1 is about -61 dBFS, the noise floor of a quiet analogue line."""
    table = []
    for pct in range(101):
        code = next(c for c in range(256) if c * 100 // 255 == pct)
        mean = ((((code & 0x0F) << 3) + 0x84) << ((code >> 4) & 0x07)) - 0x84
        table.append(0.0 if pct == 0 else mean * _MEAN_TO_RMS)
    return table


_LEVEL_RMS = _level_table()
_RETIRED: list[Any] = []  # media ports outliving their library (see _destroy_lib)
# Strangers (sources outside sip.allow_from): this many INVITEs a second (after a burst) get a clear 403,
# the rest a stateless 421 or 500 that costs pjsua almost nothing; a log line per source a minute at most.
_STRANGER_403_RATE, _STRANGER_403_BURST = 2.0, 3
_STRANGER_LOG_EVERY_S, _STRANGER_LOG_BURST = 60.0, 10


@dataclass(frozen=True, slots=True)
class StackConfig:
    """What the adapter needs from the settings; plain values so tests and the demo build it easily."""

    host: str = "127.0.0.1"
    port: int = 5060
    public_address: str | None = None
    rtp_port_min: int = 20000
    rtp_port_max: int = 20999
    codecs: tuple[str, ...] = ("PCMA", "PCMU", "G722")
    max_calls: int = 128
    clock_rate: int = 8000
    allow: Callable[[str], bool] | None = None  # source IP -> allowed; None = accept every source
    accept_incoming: bool = True  # a softphone (demo, tests) rejects incoming calls
    user: str = "registratura"
    registration: Any = None  # settings.Registration or None
    log_level: int = 2  # pjsip's own log level routed into logging (numbers masked)
    dead_line_timeout: float | None = None  # watch incoming audio (VAD, dead line); None = no watch (softphone)
    new_vad: Callable[[], Any] | None = None  # a call's detector (speech.engines.SpeechEngines.new_vad); None = energy
    release_vad: Callable[[Any], None] | None = None  # gives a model detector back when the call's audio ends
    utterances: bool = False  # cut the caller's speech into Utterance events (an ASR is installed)


def _mask(line: str) -> str:
    return _LONG_DIGITS.sub(lambda m: m.group(0)[:2] + "*" * (len(m.group(0)) - 4) + m.group(0)[-2:], line)


class _LogWriter(pj.LogWriter):
    def write(self, entry: Any) -> None:  # called from any pj thread
        msg = entry.msg.rstrip()
        level = entry.level
        if level <= 1:
            _LOGGER.error("pjsip: %s", _mask(msg))
        elif level == 2:
            _LOGGER.warning("pjsip: %s", _mask(msg))
        else:
            _LOGGER.debug("pjsip: %s", msg)


def _unplayed_at_eof(paths: Sequence[str]) -> float:
    """Seconds of audio a playlist still holds when pjmedia reports its end.

    pjmedia raises the EOF when it *reads* the last chunk of the last file, which has yet to be played:
    without waiting for it, the next prompt (which replaces the player) or the hang-up after a goodbye cuts
    up to a quarter of a second off the end of every prompt."""
    sizes, rate = [], 0
    try:
        for path in paths:
            with wave.open(path, "rb") as w:
                width = w.getsampwidth() * w.getnchannels()
                sizes.append(w.getnframes() * width)
                rate = w.getframerate() * width
    except (OSError, EOFError, wave.Error):
        return 0.0
    buf = min([_PLAYLIST_BUFSIZE, *sizes])  # the buffer shrinks to the shortest file
    return (sum(sizes) % buf) / rate if buf and rate else 0.0


class _Player(pj.AudioMediaPlayer):
    """A playlist that tells the loop when it has played to its end (called on a pjmedia thread)."""

    finished = True  # see _AudioTap.closed: an EOF during deallocation finds this, not an AttributeError

    def __init__(self, adapter: PjsuaTelephony, call_id: str, playback_id: int, tail: float = 0.0) -> None:
        super().__init__()
        self.adapter = adapter
        self.call_id = call_id
        self.playback_id = playback_id
        self.tail = tail  # audio still buffered when pjmedia says EOF
        self.finished = False

    def onEof2(self) -> None:  # noqa: N802 (pjsua2 name)
        if not self.finished:
            self.finished = True
            self.adapter._emit(PlaybackDone(self.call_id, self.playback_id), delay=self.tail)


_VECTOR = ctypes.c_void_p * 2  # std::vector<unsigned char> starts with (begin, end) in libstdc++ and libc++


def _vector_bytes_fast(vec: Any) -> bytes:
    begin, end = _VECTOR.from_address(int(vec.this))
    if not begin or not end or not 0 < end - begin <= 65536:
        return b""
    return ctypes.string_at(begin, end - begin)


def _vector_bytes_slow(vec: Any) -> bytes:
    return bytes(vec)


@functools.cache
def _pick_vector_reader() -> Callable[[Any], bytes]:
    """SWIG copies a ByteVector to bytes one element at a time (~200 µs for a 20 ms frame); reading the
    vector's two pointers takes ~10 µs. The layout is checked once on a vector we fill ourselves; if it
    does not hold, the slow copy is used."""
    probe = bytes(range(1, 251))
    try:
        if _vector_bytes_fast(pj.ByteVector(list(probe))) == probe:
            return _vector_bytes_fast
    except Exception:  # noqa: BLE001 - any doubt: the safe copy
        pass
    return _vector_bytes_slow


class _VadWorker:
    """Runs model VADs (Silero) off the media clock thread.

    The tap only copies a frame's bytes and queues them (~10 µs); this one thread feeds each call's
    ``LineWatch`` in order and hands the events to the loop. Silero costs ~0.16 ms a 20 ms frame (p99 ~0.9 ms):
    30 calls of it on the clock thread would eat a quarter of every tick. Jobs hold plain Python objects
    only (never a pjsua2 object: dropping one on this thread would call into pjsua2). Past ``max_backlog``
    queued frames (the CPU cannot keep up) new frames are dropped and counted, never waited for.
    """

    def __init__(self, adapter: PjsuaTelephony, release: Callable[[Any], None] | None,
                 max_backlog: int = 3000) -> None:
        self.adapter = adapter
        self.release = release
        self.max_backlog = max_backlog
        self.dropped = 0
        self._jobs: queue.SimpleQueue[tuple[LineWatch, bool, bytes | None] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="vad", daemon=True)
        self._thread.start()

    def submit(self, watch: LineWatch, poked: bool, data: bytes) -> None:  # media clock thread
        if self._jobs.qsize() > self.max_backlog:
            self.dropped += 1
            return
        self._jobs.put((watch, poked, data))

    def done(self, watch: LineWatch) -> None:
        """The call's audio has ended: give its detector back once the frames before this are fed."""
        self._jobs.put((watch, False, None))

    def stop(self, timeout: float = 2.0) -> None:
        self._jobs.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        register_thread("vad")
        while (job := self._jobs.get()) is not None:
            watch, poked, data = job
            if data is None:  # the call's audio ended: give the detector back (once)
                if getattr(watch, "released", False):
                    continue
                watch.off = watch.released = True  # type: ignore[attr-defined]
                if self.release is not None:
                    try:
                        self.release(watch.vad)
                    except Exception:  # noqa: BLE001
                        _LOGGER.exception("call %s: VAD not given back to the pool", watch.call_id)
                continue
            if getattr(watch, "off", False):  # released or failed: a late frame is skipped
                continue
            try:
                if poked:
                    watch.activity()
                for event in watch.feed(data, _FRAME_USEC / 1e6):
                    self.adapter._emit(event)
            except Exception:  # say it once and stop watching this call
                watch.off = True  # type: ignore[attr-defined]
                _LOGGER.exception("call %s: audio watch failed and is off for this call", watch.call_id)


class _AudioTap(pj.AudioMediaPort):
    """The caller's audio, every 20 ms frame, for a model VAD (Silero) on the ``_VadWorker`` thread.

    ``onFrameReceived`` runs on the media clock thread: it only copies the frame's bytes and queues them.
    Taps are pooled and reused, never destroyed while the library runs: destroying a pjsua2 media port under
    call churn crashed the box (pjmedia removes conference ports asynchronously). The energy detector needs
    no tap at all: it reads the level the conference bridge already computes (``_poll_levels``).
    """

    # Python clears an instance's attributes before SWIG deletes the C++ port, and pjmedia may deliver one
    # more frame in between: the lookup then falls back to this class attribute instead of raising
    # AttributeError, which the director turns into a C++ exception and an abort.
    closed = True

    def __init__(self, adapter: PjsuaTelephony) -> None:
        super().__init__()
        self.reader = _pick_vector_reader()
        self.adapter = adapter
        self.watch: LineWatch | None = None
        self.worker: _VadWorker | None = None
        self.poked = False  # set from the DTMF callback: a sign of life that is not audio

    def attach(self, watch: LineWatch, worker: _VadWorker) -> None:  # pj thread
        self.watch, self.worker, self.poked = watch, worker, False
        self.closed = False  # last: the media thread looks at nothing else before this

    def onFrameReceived(self, frame: Any) -> None:  # noqa: N802 (pjsua2 name; media clock thread)
        if self.closed:
            return
        try:
            poked, self.poked = self.poked, False
            data = b""
            if frame.type == pj.PJMEDIA_FRAME_TYPE_AUDIO and frame.size:
                data = self.reader(frame.buf)
            self.worker.submit(self.watch, poked, data)  # type: ignore[union-attr]
        except Exception:  # an exception must never reach pjmedia; say it once and stop watching
            self.closed = True
            _LOGGER.exception("audio tap failed and is off for this call")


def _source_ip(address: str) -> str:
    """'192.0.2.1:5060' or '[2001:db8::1]:5060' -> the IP."""
    return address.rsplit(":", 1)[0].strip("[]")


class _Bucket:
    """A token bucket fed the time (no clock of its own): ``take(now)`` is false once it is spent."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, float(burst)
        self.tokens, self.last = float(burst), 0.0

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


@dataclass
class _CallRec:
    """Everything the pj thread holds for one call. Touched on the pj thread only."""

    call: Any
    call_id: str
    incoming: bool
    media: Any = None
    player: Any = None
    recorder: Any = None  # everything (mixed), or the caller's side only (stereo)
    recorder_box: Any = None  # stereo: the box's prompts and the receptionist
    recorder_pending: tuple[Path, bool] | None = None  # (path, stereo) until media is up
    tap: Any = None  # _AudioTap: the caller's audio for a model VAD
    watch: LineWatch | None = None  # energy VAD and dead-line watch fed from the conference level
    watched_at: float = 0.0  # when the level was last read
    hung_up_by_box: bool = False
    answered_sent: bool = False
    stats_counted: bool = False  # RTP stats taken before the box hung up (no onStreamDestroyed then)
    peers: list[str] = field(default_factory=list)

    @property
    def box_side(self) -> Any:
        """Where the box's prompts and a bridged party go: the box side's own file, or the one mixed file."""
        return self.recorder_box if self.recorder_box is not None else self.recorder


class _Call(pj.Call):
    def __init__(self, adapter: PjsuaTelephony, account: pj.Account, pj_call_id: int = pj.PJSUA_INVALID_ID):
        super().__init__(account, pj_call_id)
        self.adapter = adapter
        self.box_id = ""
        self.tap: _AudioTap | None = None
        self.poked = False  # a digit arrived: a sign of life for the energy watch (read on the pj thread)

    def onCallState(self, prm: Any) -> None:  # noqa: N802  (pj thread)
        self.adapter._on_call_state(self)

    def onCallMediaState(self, prm: Any) -> None:  # noqa: N802  (pj thread)
        self.adapter._on_media_state(self)

    def onStreamDestroyed(self, prm: Any) -> None:  # noqa: N802  (pj thread; not called when the box hangs up)
        rec = self.adapter._calls.get(self.box_id)
        if rec is not None and not rec.stats_counted:
            self.adapter._count_stream_stats(self, int(prm.streamIdx))

    def onDtmfDigit(self, prm: Any) -> None:  # noqa: N802  (pj or media thread: only emit)
        method = _DTMF_METHODS.get(prm.method, "inband")
        self.poked = True  # a dead line sends no digits
        tap = self.tap
        if tap is not None:
            tap.poked = True
        self.adapter._emit(DtmfReceived(self.box_id, prm.digit, method))


class _Account(pj.Account):
    def __init__(self, adapter: PjsuaTelephony) -> None:
        super().__init__()
        self.adapter = adapter

    def onIncomingCall(self, prm: Any) -> None:  # noqa: N802  (pj thread)
        self.adapter._on_incoming(self, prm)

    def onIncomingSubscribe(self, prm: Any) -> None:  # noqa: N802  (pj thread)
        prm.code = 403  # pjsua would accept anyone's presence subscription; the box has no presence

    def onRegState(self, prm: Any) -> None:  # noqa: N802  (pj thread)
        self.adapter._on_reg_state(self, prm)


class _Endpoint(pj.Endpoint):
    def __init__(self, adapter: PjsuaTelephony) -> None:
        super().__init__()
        self.adapter = adapter

    def onSelectAccount(self, prm: Any) -> None:  # noqa: N802  (pj thread: before any dialog or media)
        self.adapter._select_account(prm)

    def onRejectedIncomingCall(self, prm: Any) -> None:  # noqa: N802  (pj thread: refused by pjsua itself)
        self.adapter._on_pjsua_rejected(prm)


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if not n:
            return out


_LIB_LOCK = threading.RLock()  # guards _LIB_GEN: no thread registers while the library is destroyed
_LIB_GEN = 0  # odd while the library is alive; a new generation after each (re)start
_THREAD = threading.local()  # .gen: the generation this thread registered with


def register_thread(name: str) -> None:
    """Make the calling thread known to pjlib. Python may free a pjsua2 object on any thread (its cyclic
    garbage collector runs wherever memory is allocated); pjlib aborts the process if that thread is unknown.
    A thread that starts while the library is being destroyed (an executor worker joining the pj thread)
    must not register: pjlib's thread table is gone and its mutex assertion aborts the process."""
    with _LIB_LOCK:
        if not _LIB_GEN % 2 or getattr(_THREAD, "gen", 0) == _LIB_GEN:
            return
        _THREAD.gen = _LIB_GEN
        try:
            ep = pj.Endpoint.instance()
            if not ep.libIsThreadRegistered():
                ep.libRegisterThread(name)
        except (pj.Error, RuntimeError, AttributeError):
            pass


def _before_collection(phase: str, info: dict[str, Any]) -> None:
    """The garbage collector is about to run on this thread, which may then free pjsua2 objects: any thread
    (the metrics server's, a store connection's) must be known to pjlib first."""
    if phase == "start" and _LIB_GEN % 2 and getattr(_THREAD, "gen", 0) != _LIB_GEN:
        register_thread(threading.current_thread().name)


gc.callbacks.append(_before_collection)


def _set_lib_alive(alive: bool) -> None:
    global _LIB_GEN
    with _LIB_LOCK:
        if alive != bool(_LIB_GEN % 2):
            _LIB_GEN += 1
        if alive:
            _THREAD.gen = _LIB_GEN  # the thread that created the library is registered by pjlib itself


def call_capacity() -> int:
    """What pjsua really allows after libInit: the build's PJSUA_MAX_CALLS caps uaConfig.maxCalls."""
    # The PyPI wheel is a package (pjsua2/_pjsua2.so), our own build a top-level pjsua2.py + _pjsua2.so;
    # SWIG's pjsua2.py binds the native module as `_pjsua2` in both layouts.
    native = pj._pjsua2

    lib = ctypes.CDLL(native.__file__)
    return int(lib.pjsua_call_get_max_count())


class PjsuaTelephony:
    """The Telephony Protocol over pjsua2. Construct, ``await start(on_event)``, use, ``await stop()``."""

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.info = StackInfo(library="pjsua2", build="unknown", capacity=0, requested=config.max_calls)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_event: Callable[[Event], None] | None = None
        self._commands: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._running = threading.Event()
        self._accepting = True
        self._ids = itertools.count(1)
        self._boot = _base36(int(time.time() * 10) % 36**6)  # changes every 0.1 s: two starts never share it
        self._calls: dict[str, _CallRec] = {}  # pj thread only
        self._rejected: dict[int, Any] = {}  # refused calls (pj.Call by id()), kept alive until DISCONNECTED
        self._ended: list[Any] = []  # calls past DISCONNECTED, dropped after the current libHandleEvents
        self._refusals: list[tuple[Any, int]] = []  # (pj.Call, status) to refuse after onIncomingCall; pj thread
        self._deferred: list[tuple[float, Event]] = []  # pj thread only
        self._graveyard: list[tuple[float, Any]] = []  # media objects waiting to be dropped (pj thread only)
        self._ep: Any = None
        self._acc: Any = None
        self.registration: dict[str, Any] = {"state": "none"}  # trunk registration, read by /healthz
        self._quarantine: tuple[Any, Any] | None = None  # (refuse, shed) accounts for strangers
        self._account_ids = (-1, -1, -1)  # (ours, refuse, shed) as pjsua numbers them
        self._allow_cache: dict[str, bool] = {}  # pj thread only
        self._stranger_403 = _Bucket(_STRANGER_403_RATE, _STRANGER_403_BURST)
        self._stranger_log = _Bucket(1.0 / _STRANGER_LOG_EVERY_S, _STRANGER_LOG_BURST)
        self._strangers: dict[str, list[float]] = {}  # ip -> [last logged, refusals since]; pj thread only
        self._log_writer: Any = None
        self._vad_worker: _VadWorker | None = None  # started with the first call that gets a model VAD
        self._tap_pool: list[_AudioTap] = []  # idle taps (pj thread only); see _AudioTap
        self._taps: list[_AudioTap] = []  # every tap ever made: kept until the library is gone
        self._next_level_poll = 0.0
        self._next_port_count = 0.0

    def _new_id(self) -> str:
        """Call ids are unique across restarts too: callbacks and the queue log outlive the process."""
        return f"{self._boot}-{next(self._ids)}"

    # ------------------------------------------------------------------------------------ lifecycle

    async def start(self, on_event: Callable[[Event], None]) -> None:
        self._loop = asyncio.get_running_loop()
        self._on_event = on_event
        ready: Future[StackInfo] = Future()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="pj", daemon=True)
        self._running.set()
        self._thread.start()
        self.info = await asyncio.wrap_future(ready)
        register_thread("asyncio")  # the loop thread drops events and futures that may hold pjsua2 objects

    async def stop(self) -> None:
        """Hang up what is left, drop every pj.Call, destroy the library, join the thread."""
        if not self._thread:
            return
        self._accepting = False
        try:
            await self._submit(self._hangup_all)
        except TelephonyError:
            pass
        await asyncio.sleep(0.2)  # let BYEs go out and DISCONNECTED callbacks run
        self._running.clear()
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 10)
        self._thread = None
        if self._vad_worker is not None:
            worker, self._vad_worker = self._vad_worker, None
            await asyncio.get_running_loop().run_in_executor(None, worker.stop)
            if worker.dropped:
                _LOGGER.warning("VAD: %d audio frames dropped (the CPU could not keep up)", worker.dropped)

    def stop_accepting(self) -> None:
        """New INVITEs get 503 from now on (graceful shutdown drains the calls in progress)."""
        self._accepting = False

    # ------------------------------------------------------------------------------------ the pj thread

    def _run(self, ready: Future[StackInfo]) -> None:
        try:
            info = self._init_lib()
        except Exception as exc:  # noqa: BLE001 - report any start failure to the loop
            ready.set_exception(TelephonyError(f"SIP stack failed to start: {exc}"))
            self._destroy_lib()
            return
        ready.set_result(info)
        ep = self._ep
        while self._running.is_set():
            ep.libHandleEvents(_POLL_MS)
            if self._ended:
                self._drop_ended()
            if self._refusals:
                self._send_refusals()
            self._drain_commands()
            if self._deferred:
                self._flush_deferred()
            if self._graveyard:
                self._purge_graveyard()
            now = time.monotonic()
            if now >= self._next_level_poll:
                self._next_level_poll = now + _LEVEL_POLL_S
                self._poll_levels(now)
        self._drain_commands()
        self._flush_deferred(force=True)
        self._destroy_lib()

    def _flush_deferred(self, force: bool = False) -> None:
        now = time.monotonic()
        due = [e for t, e in self._deferred if force or t <= now]
        self._deferred = [(t, e) for t, e in self._deferred if not force and t > now]
        for event in due:
            self._emit(event)

    def _drain_commands(self) -> None:
        while True:
            try:
                func, fut = self._commands.get_nowait()
            except queue.Empty:
                return
            if fut.set_running_or_notify_cancel():
                try:
                    fut.set_result(func())
                except Exception as exc:  # noqa: BLE001 - handed back to the awaiting coroutine
                    fut.set_exception(exc)

    def _init_lib(self) -> StackInfo:
        cfg = self.config
        ep = _Endpoint(self)
        self._ep = ep
        with _quiet_stdout():  # pjlib prints its banner before our log writer is installed
            ep.libCreate()
        ep_cfg = pj.EpConfig()
        ep_cfg.uaConfig.threadCnt = 0  # SIP events run on this thread only
        ep_cfg.uaConfig.mainThreadOnly = False
        ep_cfg.uaConfig.maxCalls = cfg.max_calls
        ep_cfg.uaConfig.userAgent = "Registratura"
        ep_cfg.logConfig.level = cfg.log_level
        ep_cfg.logConfig.consoleLevel = 0
        self._log_writer = _LogWriter()
        ep_cfg.logConfig.writer = self._log_writer
        ep_cfg.logConfig.decor = 0
        med = ep_cfg.medConfig
        med.clockRate = cfg.clock_rate
        med.sndClockRate = cfg.clock_rate
        med.channelCount = 1
        med.noVad = True  # no silence suppression: callers must never hear gaps
        med.ecTailLen = 0  # an IVR plays files; no echo canceller to pay for
        med.quality = 4
        med.threadCnt = 1
        med.maxMediaPorts = max(64, cfg.max_calls * 4)
        ep.libInit(ep_cfg)
        _set_lib_alive(True)

        tcfg = pj.TransportConfig()
        tcfg.boundAddress = cfg.host
        tcfg.port = cfg.port
        if cfg.public_address:
            tcfg.publicAddress = cfg.public_address
        ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tcfg)
        ep.libStart()
        ep.audDevManager().setNullDev()  # no sound card: the conference bridge runs on its own clock

        for codec in ep.codecEnum2():
            ep.codecSetPriority(codec.codecId, 0)
        for rank, name in enumerate(cfg.codecs):
            ep.codecSetPriority(_CODEC_IDS[name], 250 - rank)

        acc_cfg = pj.AccountConfig()
        host_for_uri = cfg.public_address or cfg.host
        acc_cfg.idUri = f"sip:{cfg.user}@{host_for_uri}:{cfg.port}"
        reg = cfg.registration
        if reg is not None:
            acc_cfg.regConfig.registrarUri = reg.registrar
            acc_cfg.regConfig.timeoutSec = reg.expires
            acc_cfg.idUri = f"sip:{reg.user}@{reg.registrar.split(':', 1)[-1]}"
            acc_cfg.sipConfig.authCreds.append(pj.AuthCredInfo("digest", reg.realm, reg.user, 0, reg.password))
        else:
            acc_cfg.regConfig.registerOnAdd = False
        rtp = acc_cfg.mediaConfig.transportConfig
        rtp.port = cfg.rtp_port_min
        rtp.portRange = cfg.rtp_port_max - cfg.rtp_port_min
        rtp.boundAddress = cfg.host
        if cfg.public_address:
            rtp.publicAddress = cfg.public_address
        self._acc = _Account(self)
        self._acc.create(acc_cfg, True)
        if cfg.allow is not None:
            self._quarantine = self._create_quarantine(host_for_uri, cfg.port)
            self._account_ids = (self._acc.getId(), *(a.getId() for a in self._quarantine))

        capacity = call_capacity()
        metrics.MEDIA_PORTS.labels("max").set(ep.mediaMaxPorts())
        build = "pypi" if capacity <= 4 else "appliance"
        return StackInfo(
            library=f"pjsua2 {ep.libVersion().full}", build=build, capacity=capacity, requested=cfg.max_calls
        )

    def _on_reg_state(self, acc: Any, prm: Any) -> None:
        """The trunk registration's result: metric, /healthz and one log line per change (never the password)."""
        reg = self.config.registration
        if reg is None or acc is not self._acc:
            return
        code = int(prm.code)
        ok = 200 <= code < 300 and int(prm.expiration) > 0
        state = "registered" if ok else ("unregistered" if 200 <= code < 300 else "failed")
        metrics.SIP_REGISTERED.set(1 if ok else 0)
        metrics.SIP_REGISTRATION_STATUS.set(code)
        changed = self.registration.get("state") != state or self.registration.get("code") != code
        self.registration = {"state": state, "code": code, "registrar": reg.registrar, "user": reg.user}
        if not changed:
            return
        if ok:
            _LOGGER.info("registered with %s as %s (expires in %d s)", reg.registrar, reg.user, prm.expiration)
        elif state == "failed":
            hint = "check sip.registration user, password and realm" if code in (401, 403, 407) else \
                "check sip.registration.registrar and the network"
            _LOGGER.warning("registration with %s as %s failed: %d %s; %s", reg.registrar, reg.user, code,
                            prm.reason, hint)

    def _create_quarantine(self, host: str, port: int) -> tuple[Any, Any]:
        """Two accounts that only ever refuse strangers, steered there by ``_select_account``.

        pjsua binds a call's RTP/RTCP sockets before ``onIncomingCall`` can refuse it, and pjlib keeps a
        closed socket's ioqueue slot for 500 ms: a few dozen refused INVITEs in half a second exhaust the
        slots (64 in the PyPI build, 1024 in ours) and pjlib aborts the process. Both accounts use loopback
        media (no sockets). "refuse": ``_on_incoming`` answers 403. "shed" makes pjsua refuse statelessly
        (no dialog, no transaction, no retransmission, no onIncomingCall): 100rel and session timers are
        required, so an INVITE that offers neither gets 421 at once; one that offers both gets 500 when its
        dialog cannot take the account's unparseable Contact.
        """
        accounts = []
        for name, strict in (("refuse", False), ("shed", True)):
            acc_cfg = pj.AccountConfig()
            acc_cfg.idUri = f"sip:{name}@{host}:{port}"
            acc_cfg.regConfig.registerOnAdd = False
            acc_cfg.mediaConfig.useLoopMedTp = True
            if strict:
                acc_cfg.callConfig.prackUse = pj.PJSUA_100REL_MANDATORY
                acc_cfg.callConfig.timerUse = pj.PJSUA_SIP_TIMER_REQUIRED
                acc_cfg.sipConfig.contactForced = "<no contact>"
            acc = _Account(self)
            acc.create(acc_cfg, False)
            accounts.append(acc)
        return accounts[0], accounts[1]

    def _destroy_lib(self) -> None:
        ep = self._ep
        if ep is None:
            return
        for rec in list(self._calls.values()):
            self._release_media(rec)
        for _ in range(3):  # let the conference clock remove the ports before their objects go
            ep.libHandleEvents(50)
        self._purge_graveyard(force=True)
        self._calls.clear()  # drop every pj.Call before libDestroy: pjsua2 aborts otherwise
        self._rejected.clear()
        self._ended.clear()
        self._refusals.clear()
        for acc in self._quarantine or ():
            with contextlib.suppress(Exception):
                acc.shutdown()
        self._quarantine = None
        if self._acc is not None:
            try:
                self._acc.shutdown()
            except Exception:  # noqa: BLE001
                pass
            self._acc = None
        for tap in self._taps:
            tap.closed = True
        _set_lib_alive(False)
        try:
            ep.libDestroy()
        except Exception as exc:  # noqa: BLE001
            _LOGGER.warning("pjsua2 libDestroy: %s", exc)
        # The library has removed the taps' ports; deleting their C++ objects now would call into the
        # destroyed library. Python forgets them without the delete; the process's exit frees the memory.
        for tap in self._taps:
            tap.thisown = False
        _RETIRED.extend(self._taps)
        self._taps, self._tap_pool = [], []
        self._ep = None

    # ------------------------------------------------------------------------------ callbacks (pj thread)

    def _emit(self, event: Event, delay: float = 0.0) -> None:
        """Hand an event to the loop (``delay`` seconds later). Safe from any thread; never blocks."""
        loop, handler = self._loop, self._on_event
        if loop is None or handler is None or loop.is_closed():
            return
        try:
            if delay > 0:
                loop.call_soon_threadsafe(loop.call_later, delay, handler, event)
            else:
                loop.call_soon_threadsafe(handler, event)
        except RuntimeError:  # loop closed while we were shutting down
            pass

    def _allowed(self, ip: str) -> bool:
        allow = self.config.allow
        if allow is None:
            return True
        ok = self._allow_cache.get(ip)
        if ok is None:
            if len(self._allow_cache) >= 4096:  # spoofed sources must not grow it without bound
                self._allow_cache.clear()
            ok = self._allow_cache[ip] = bool(allow(ip))
        return ok

    def _select_account(self, prm: Any) -> None:
        """Pick the account for an out-of-dialog INVITE (or MESSAGE/SUBSCRIBE) before pjsua builds anything.

        Runs for every stranger's packet in a flood: no parsing, no logging, no event."""
        if self._quarantine is None:
            return
        ours, refuse, shed = self._account_ids
        try:
            if self._allowed(_source_ip(prm.rdata.srcAddress)):
                prm.accountIndex = ours
            elif self._stranger_403.take(time.monotonic()):
                prm.accountIndex = refuse
            else:
                prm.accountIndex = shed
        except Exception:  # noqa: BLE001 - nothing may reach pjsua; when in doubt, the cheapest refusal
            prm.accountIndex = shed

    def _count_refused(self, ip: str) -> None:
        """A stranger refused: counted at once; logged at most once a minute per source, and a few lines a
        minute in all (spoofed sources), so a flood costs no log I/O."""
        metrics.REJECTED_INVITES.labels("not_allowed").inc()
        now = time.monotonic()
        seen = self._strangers.get(ip)
        if seen is not None and now - seen[0] < _STRANGER_LOG_EVERY_S:
            seen[1] += 1
            return
        if not self._stranger_log.take(now):
            return
        if len(self._strangers) >= 1024:
            self._strangers.clear()
        more = int(seen[1]) if seen else 0
        self._strangers[ip] = [now, 0]
        _LOGGER.warning("SIP from %s refused: not in sip.allow_from%s", ip,
                        f" ({more} more since the last line)" if more else "")

    def _on_pjsua_rejected(self, prm: Any) -> None:
        """pjsua refused an INVITE itself: a stranger shed with 421, no call slot (486) or a bad request."""
        source = ""
        with contextlib.suppress(Exception):
            source = prm.rdata.srcAddress
        code = int(prm.statusCode)
        if source and not self._allowed(_source_ip(source)):
            self._count_refused(_source_ip(source))
            return
        self._emit(InviteRejected(source, "capacity" if code in (486, 503) else "invalid", code))

    def _on_incoming(self, account: _Account, prm: Any) -> None:
        source = prm.rdata.srcAddress
        source_ip = _source_ip(source)
        if self._quarantine is not None and account is self._quarantine[1]:
            # Not expected (pjsua refuses these itself); should one get here: no pj.Call, so pjsua2 answers
            # 500 once this returns, and the call slot is free at once.
            self._count_refused(source_ip)
            return
        call = _Call(self, account, prm.callId)
        reason = ""
        code = 0
        if not self.config.accept_incoming:
            reason, code = "not_accepting", 603
        elif account is not self._acc or not self._allowed(source_ip):
            reason, code = "not_allowed", 403
        elif not self._accepting:
            reason, code = "shutting_down", 503
        if reason:
            # Not here: refusing an INVITE without SDP inside onIncomingCall disconnects the call at once,
            # pjsua frees the request pjsua2 then frees again, and the process aborts (pjsua2 2.15 and 2.16).
            # The refusal goes out as soon as this callback has returned (``_send_refusals``).
            self._refusals.append((call, code))
            if reason == "not_allowed":
                self._count_refused(source_ip)
            else:
                self._emit(InviteRejected(source, reason, code))
            return
        box_id = self._new_id()
        call.box_id = box_id
        self._calls[box_id] = _CallRec(call=call, call_id=box_id, incoming=True)
        ident = parse_invite(prm.rdata.wholeMsg)
        self._emit(
            CallOffered(
                call_id=box_id,
                sip_call_id=ident.call_id or call.getInfo().callIdString,
                caller=ident.caller,
                caller_name=ident.from_name,
                called=ident.request_user,
                source=source,
            )
        )

    def _send_refusals(self) -> None:
        refusals, self._refusals = self._refusals, []
        for call, code in refusals:
            op = pj.CallOpParam()
            op.statusCode = code
            try:
                call.hangup(op)
            except pj.Error as exc:
                _LOGGER.debug("could not refuse an INVITE with %d: %s", code, exc.info())
            if call.isActive():  # else DISCONNECTED has come already and the call is in _ended
                self._rejected[id(call)] = call

    def _drop_ended(self) -> None:
        """Drop the pj.Call objects of ended calls, soon but not inside their own callback.

        pjsua2's ~Call clears the user data of, and hangs up, whatever call holds its pjsua call id *now*.
        pjsua hands ids out round-robin, so right after DISCONNECTED the id is still free; keeping the object
        longer let a new call inherit the id, and dropping the old object then cut that new call off (seen at
        50 calls/s: "unexpected BYE"). Should an id be taken already, the object is leaked instead."""
        ended, self._ended = self._ended, []
        for call in ended:
            try:
                if call.isActive():
                    call.thisown = False
            except pj.Error:
                pass

    def _on_call_state(self, call: _Call) -> None:
        try:
            info = call.getInfo()
        except pj.Error:
            return
        if info.state != pj.PJSIP_INV_STATE_DISCONNECTED:
            return
        self._ended.append(call)
        rec = self._calls.pop(call.box_id, None) if call.box_id else None
        if rec is None:
            self._rejected.pop(id(call), None)  # a refused stranger
            return
        had_recorder = rec.recorder is not None or rec.recorder_box is not None
        self._release_media(rec)
        by = "box" if rec.hung_up_by_box else "caller"
        if info.lastStatusCode >= 400 and not info.connectDuration.sec and not rec.hung_up_by_box:
            by = "error" if rec.incoming else "remote"
        ended = CallEnded(rec.call_id, by, int(info.lastStatusCode), info.lastReason)
        if had_recorder:
            # pjmedia (>= 2.14) removes conference ports on the next clock tick, and only then does the
            # recorder write the WAV sizes: hold the event back until the file on disk is complete.
            self._deferred.append((time.monotonic() + _PORT_REMOVAL_S, ended))
        else:
            self._emit(ended)

    def _on_media_state(self, call: _Call) -> None:
        rec = self._calls.get(call.box_id)
        if rec is None:
            return
        info = call.getInfo()
        for i, media in enumerate(info.media):
            if media.type == pj.PJMEDIA_TYPE_AUDIO and media.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
                rec.media = call.getAudioMedia(i)
                break
        else:
            return
        if rec.player is not None:
            rec.player.startTransmit(rec.media)
        if rec.incoming and self.config.dead_line_timeout is not None:
            self._start_watch(rec, call)
        if rec.recorder_pending is not None:
            self._start_recorder(rec, *rec.recorder_pending)
        if not rec.answered_sent:
            rec.answered_sent = True
            self._emit(CallAnswered(rec.call_id))

    def _start_watch(self, rec: _CallRec, call: _Call) -> None:
        """Watch the caller's audio: the energy detector reads the conference level (no per-frame Python);
        a model VAD gets every frame through a pooled tap."""
        if rec.watch is None and rec.tap is None:
            vad = self.config.new_vad() if self.config.new_vad is not None else EnergyVad()
            tap = None
            if not isinstance(vad, EnergyVad):
                tap = self._take_tap()
                if tap is None:
                    _LOGGER.warning("call %s: no audio tap for the VAD model; using the energy detector", rec.call_id)
                    if self.config.release_vad is not None:
                        self.config.release_vad(vad)
                    vad = EnergyVad()
            watch = LineWatch(rec.call_id, vad, self.config.dead_line_timeout,
                              utterances=tap is not None and self.config.utterances,
                              sample_rate=self.config.clock_rate)
            if tap is None:
                rec.watch, rec.watched_at = watch, time.monotonic()
            else:
                if self._vad_worker is None:
                    self._vad_worker = _VadWorker(self, self.config.release_vad)
                tap.attach(watch, self._vad_worker)
                rec.tap = call.tap = tap
        # The conference computes a port's level only while the port has a listener: the null sound
        # device's port is one that costs a few additions per frame. Again after a re-INVITE.
        sink = rec.tap if rec.tap is not None else self._ep.audDevManager().getPlaybackDevMedia()
        try:
            rec.media.startTransmit(sink)
        except pj.Error as exc:
            _LOGGER.warning("call %s: audio watch not connected: %s", rec.call_id, exc.info())

    def _take_tap(self) -> _AudioTap | None:
        if self._tap_pool:
            return self._tap_pool.pop()
        tap = _AudioTap(self)
        fmt = pj.MediaFormatAudio()
        fmt.init(pj.PJMEDIA_FORMAT_PCM, self.config.clock_rate, 1, _FRAME_USEC, 16)
        try:
            tap.createPort(f"tap{len(self._taps)}", fmt)
        except pj.Error as exc:
            _LOGGER.warning("audio tap not created: %s", exc.info())
            return None
        self._taps.append(tap)
        return tap

    def _poll_levels(self, now: float) -> None:
        """Feed each energy watch the caller's level as the conference bridge last measured it (pj thread)."""
        if now >= self._next_port_count:
            self._next_port_count = now + 1.0
            metrics.MEDIA_PORTS.labels("used").set(self._ep.mediaActivePorts())
        for rec in self._calls.values():
            watch = rec.watch
            if watch is None or rec.media is None:
                continue
            seconds, rec.watched_at = now - rec.watched_at, now
            try:
                level = rec.media.getTxLevel()  # pjsua2's "tx": what the port sends into the bridge (the caller)
            except pj.Error:
                continue
            if rec.call.poked:
                rec.call.poked = False
                watch.activity()
            for event in watch.feed_level(_LEVEL_RMS[min(level, 100)], seconds):
                self._emit(event)

    def _release_media(self, rec: _CallRec) -> None:
        """Let go of an ending call's player, tap and recorder.

        pjsua has already queued the removal of the call's conference port. pjmedia (2.14-2.16)
        runs conference operations later, on its clock thread, and a disconnect queued after a removal of
        one of its ports then disconnects the other port from *everything* or, when both ports are gone by
        then, fails an assertion and aborts the process (pjproject #4700, #4719; seen here at 50 calls/s).
        So this disconnects nothing: removing a port drops its connections, and our own ports are
        removed when their buried objects are dropped."""
        self._stop_player(rec, disconnect=False)
        rec.watch = None
        if rec.tap is not None:
            tap, rec.tap = rec.tap, None
            tap.closed = True
            if tap.worker is not None and tap.watch is not None:
                tap.worker.done(tap.watch)
            if isinstance(rec.call, _Call):
                rec.call.tap = None
            # Back to the pool: the call's port removal (queued before this) drops the connection before
            # any new one made for the next call, since pjmedia runs its operations in order.
            self._tap_pool.append(tap)
        self._close_recorders(rec)

    @staticmethod
    def _close_recorders(rec: _CallRec) -> None:
        recorders = [r for r in (rec.recorder, rec.recorder_box) if r is not None]
        rec.recorder = rec.recorder_box = None
        del recorders  # closing a recorder finalises its WAV header

    def _bury(self, obj: Any) -> None:
        """Keep a player referenced until pjmedia can no longer call it back."""
        self._graveyard.append((time.monotonic() + _GRAVE_SECONDS, obj))

    def _purge_graveyard(self, force: bool = False) -> None:
        now = time.monotonic()
        keep = [(t, o) for t, o in self._graveyard if not force and t > now]
        if len(keep) != len(self._graveyard):
            self._graveyard = keep  # the rest are dropped here, on the pj thread

    def _stop_player(self, rec: _CallRec, disconnect: bool = True) -> bool:
        player, rec.player = rec.player, None
        if player is None:
            return False
        self._bury(player)
        player.finished = True  # no PlaybackDone from a stopped player
        if not disconnect:  # see _release_media
            return True
        try:
            if rec.media is not None:
                player.stopTransmit(rec.media)
            if rec.box_side is not None:
                player.stopTransmit(rec.box_side)
        except pj.Error:
            pass
        return True

    def _start_recorder(self, rec: _CallRec, path: Path, stereo: bool = False) -> None:
        """Mixed: one file at ``path``. Stereo: ``stereo_parts(path)``, the caller and the box side, started
        together so that they line up sample for sample; the session merges them after the call."""
        rec.recorder_pending = None
        caller_path, box_path = stereo_parts(path) if stereo else (path, None)
        recorder = pj.AudioMediaRecorder()
        recorder.createRecorder(str(caller_path))
        rec.recorder = recorder
        if box_path is not None:
            rec.recorder_box = pj.AudioMediaRecorder()
            rec.recorder_box.createRecorder(str(box_path))
        rec.media.startTransmit(recorder)
        if rec.player is not None:
            rec.player.startTransmit(rec.box_side)

    def _hangup_all(self) -> None:
        for rec in list(self._calls.values()):
            rec.hung_up_by_box = True
            self._count_stream_stats(rec.call)
            try:
                rec.call.hangup(pj.CallOpParam())
            except pj.Error:
                pass

    def _count_stream_stats(self, call: Any, index: int | None = None) -> None:
        """Add an ending call's RTP and jitter-buffer statistics to the metrics (pj thread, once per stream).

        From onStreamDestroyed when the caller hangs up, and just before the box hangs up (pjsua then
        destroys the stream without that callback)."""
        rec = self._calls.get(getattr(call, "box_id", ""))
        if rec is not None:
            if rec.stats_counted:
                return
            if index is None:
                rec.stats_counted = True
        try:
            indexes = [index] if index is not None else [
                i for i, m in enumerate(call.getInfo().media) if m.type == pj.PJMEDIA_TYPE_AUDIO]
        except pj.Error:
            return
        for i in indexes:
            try:
                stat = call.getStreamStat(i)
            except pj.Error:
                continue  # no stream (never answered)
            rx, jb = stat.rtcp.rxStat, stat.jbuf
            metrics.RTP_PACKETS.labels("rx").inc(rx.pkt)
            metrics.RTP_PACKETS.labels("tx").inc(stat.rtcp.txStat.pkt)
            for kind, value in (("lost", rx.loss), ("discarded", rx.discard), ("duplicate", rx.dup),
                                ("reordered", rx.reorder)):
                metrics.RTP_RX_ISSUES.labels(kind).inc(value)
            for event, value in (("lost", jb.lost), ("discarded", jb.discard), ("empty", jb.empty)):
                metrics.JITTER_BUFFER_FRAMES.labels(event).inc(value)

    # ------------------------------------------------------------------------------------ commands

    async def _submit(self, func: Callable[[], Any]) -> Any:
        if self._thread is None or not self._running.is_set():
            raise TelephonyError("SIP stack is not running")
        fut: Future[Any] = Future()
        self._commands.put((func, fut))
        return await asyncio.wrap_future(fut)

    def _rec(self, call_id: str) -> _CallRec:
        rec = self._calls.get(call_id)
        if rec is None:
            raise CallGone(f"call {call_id} is gone")
        return rec

    async def answer(self, call_id: str) -> None:
        def run() -> None:
            op = pj.CallOpParam()
            op.statusCode = 200
            self._rec(call_id).call.answer(op)

        await self._submit(run)

    async def hangup(self, call_id: str, status_code: int = 0) -> None:
        def run() -> None:
            rec = self._calls.get(call_id)
            if rec is None:
                return
            rec.hung_up_by_box = True
            self._count_stream_stats(rec.call)
            op = pj.CallOpParam()
            if status_code:
                op.statusCode = status_code
            try:
                rec.call.hangup(op)
            except pj.Error as exc:
                _LOGGER.debug("hangup %s: %s", call_id, exc.info())

        await self._submit(run)

    async def play(self, call_id: str, files: Sequence[Path], playback_id: int, loop: bool = False) -> None:
        """Play files in order; PlaybackDone when the audio is out. ``loop`` (music on hold) never ends."""
        paths = [str(f) for f in files]

        def run() -> None:
            rec = self._rec(call_id)
            self._stop_player(rec)
            player = _Player(self, call_id, playback_id, _unplayed_at_eof(paths))
            player.finished = loop  # a loop has no end to report
            player.createPlaylist(paths, f"p{playback_id}", 0 if loop else pj.PJMEDIA_FILE_NO_LOOP)
            rec.player = player
            if rec.media is not None:
                player.startTransmit(rec.media)
            if rec.box_side is not None:
                player.startTransmit(rec.box_side)

        await self._submit(run)

    async def stop_playback(self, call_id: str) -> None:
        def run() -> bool:
            rec = self._calls.get(call_id)
            return self._stop_player(rec) if rec else False

        await self._submit(run)

    async def start_recording(self, call_id: str, path: Path, stereo: bool = False) -> None:
        def run() -> None:
            rec = self._rec(call_id)
            if rec.media is None:
                rec.recorder_pending = (path, stereo)  # starts as soon as media is up
            else:
                self._start_recorder(rec, path, stereo)

        await self._submit(run)

    async def stop_recording(self, call_id: str) -> None:
        def run() -> None:
            rec = self._calls.get(call_id)
            if rec is not None:
                self._close_recorders(rec)

        await self._submit(run)

    async def send_dtmf(self, call_id: str, digits: str, method: str = "rfc2833") -> None:
        def run() -> None:
            rec = self._rec(call_id)
            prm = pj.CallSendDtmfParam()
            prm.digits = digits
            prm.method = pj.PJSUA_DTMF_METHOD_SIP_INFO if method == "sip_info" else pj.PJSUA_DTMF_METHOD_RFC2833
            rec.call.sendDtmf(prm)

        await self._submit(run)

    async def bridge(self, call_a: str, call_b: str) -> None:
        def run() -> None:
            a, b = self._rec(call_a), self._rec(call_b)
            if a.media is None or b.media is None:
                raise TelephonyError("both calls need active audio to be bridged")
            self._stop_player(a)
            self._stop_player(b)
            a.media.startTransmit(b.media)
            b.media.startTransmit(a.media)
            # Each side's recording holds the whole conversation: the other party's voice goes in too.
            if a.box_side is not None:
                b.media.startTransmit(a.box_side)
            if b.box_side is not None:
                a.media.startTransmit(b.box_side)
            a.peers.append(call_b)
            b.peers.append(call_a)

        await self._submit(run)

    def new_call_id(self) -> str:
        """An id for ``originate(call_id=...)``: whoever follows the call's events can know it before the
        first event can arrive (a phone that answers or refuses at once)."""
        return self._new_id()

    async def originate(self, uri: str, caller_id: str = "", call_id: str | None = None) -> str:
        box_id = call_id or self._new_id()

        def run() -> str:
            call = _Call(self, self._acc)
            call.box_id = box_id
            self._calls[box_id] = _CallRec(call=call, call_id=box_id, incoming=False)
            op = pj.CallOpParam(True)
            if caller_id:
                header = pj.SipHeader()
                header.hName = "P-Asserted-Identity"
                header.hValue = f"<sip:{caller_id}@{self.config.host}>"
                op.txOption.headers.append(header)
            try:
                call.makeCall(uri, op)
            except pj.Error as exc:
                self._calls.pop(box_id, None)
                raise TelephonyError(f"could not call {uri_user(uri) or uri}: {exc.info()}") from None
            return box_id

        return await self._submit(run)


def probe_capacity(requested: int) -> str:
    """Start the library without transports and say what it is (for `registratura check`)."""
    ep = pj.Endpoint()
    with _quiet_stdout():
        ep.libCreate()
    try:
        cfg = pj.EpConfig()
        cfg.uaConfig.maxCalls = requested
        cfg.uaConfig.threadCnt = 0
        cfg.logConfig.level = 0
        cfg.logConfig.consoleLevel = 0
        ep.libInit(cfg)
        capacity = call_capacity()
        metrics.MEDIA_PORTS.labels("max").set(ep.mediaMaxPorts())
        version = ep.libVersion().full
    finally:
        ep.libDestroy()
    if capacity <= 4:
        return (f"pjsua2 {version} from PyPI: {capacity} concurrent calls (asked for {requested}); "
                "install the wheel built by tools/build_pjsua2.sh for a clinic line")
    return f"pjsua2 {version} (appliance build): {capacity} concurrent calls (asked for {requested})"
