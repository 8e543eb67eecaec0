"""Voice activity: the Vad protocol, a pure energy detector and the per-call line watch built on it.

Everything here is pure and clock-free (ARCHITECTURE rule 1): callers feed 16-bit PCM chunks together with
their duration in seconds and assert on what comes back. The telephony adapter feeds it live frames from the
media clock thread; tests feed it arrays. The speech issue swaps ``EnergyVad`` for a model behind ``Vad``.
"""

from __future__ import annotations

import math
import sys
from array import array
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from operator import mul
from typing import Protocol

from appliance import events as ev

FULL_SCALE = 32768.0  # 16-bit PCM

Samples = bytes | bytearray | memoryview | array | Sequence[int]


def to_dbfs(rms: float) -> float:
    """Level relative to a full-scale square wave; -inf for digital silence."""
    return 20.0 * math.log10(rms / FULL_SCALE) if rms > 0 else -math.inf


def from_dbfs(level: float) -> float:
    return FULL_SCALE * 10.0 ** (level / 20.0)


def pcm16_rms(samples: Samples, step: int = 1) -> float:
    """RMS of signed 16-bit little-endian PCM (bytes) or of integer samples; every ``step``-th sample."""
    if isinstance(samples, bytes | bytearray | memoryview):
        data = array("h")
        data.frombytes(bytes(samples[: len(samples) // 2 * 2]))
        if sys.byteorder == "big":
            data.byteswap()
        seq: Sequence[int] = data
    else:
        seq = samples
    if step > 1:
        seq = seq[::step]
    n = len(seq)
    if not n:
        return 0.0
    return math.sqrt(sum(map(mul, seq, seq)) / n)


@dataclass(frozen=True, slots=True)
class VadResult:
    """The detector's view after one chunk."""

    speaking: bool  # the caller is speaking (after hysteresis)
    changed: bool  # ``speaking`` flipped with this chunk
    level_dbfs: float  # this chunk's level
    no_energy_seconds: float  # how long the line has carried no audio energy at all, up to this chunk


class Vad(Protocol):
    """A voice activity detector fed chunks of 16-bit mono PCM and their duration (no clock inside)."""

    def feed(self, samples: Samples, seconds: float) -> VadResult: ...

    def reset(self) -> None: ...


class EnergyVad:
    """Speech by level with hysteresis; a dead line is a level below ``dead_dbfs`` (no energy at all).

    Speech starts when the level stays at or above ``start_dbfs`` for ``start_seconds`` and ends when it
    stays below ``stop_dbfs`` for ``stop_seconds`` (a word's pauses do not end it). G.711 digital silence
    decodes to ±8 (about -72 dBFS), while even a quiet analogue line carries noise near -60 dBFS: the
    default ``dead_dbfs`` of -66 sits between the two.
    """

    def __init__(
        self,
        *,
        start_dbfs: float = -40.0,
        stop_dbfs: float = -46.0,
        start_seconds: float = 0.06,
        stop_seconds: float = 0.5,
        dead_dbfs: float = -66.0,
        sample_step: int = 1,
    ) -> None:
        if stop_dbfs > start_dbfs:
            raise ValueError("stop_dbfs must not be above start_dbfs (that is the hysteresis)")
        self.start_rms = from_dbfs(start_dbfs)
        self.stop_rms = from_dbfs(stop_dbfs)
        self.dead_rms = from_dbfs(dead_dbfs)
        self.start_seconds = start_seconds
        self.stop_seconds = stop_seconds
        self.sample_step = max(1, sample_step)
        self.reset()

    def reset(self) -> None:
        self.speaking = False
        self._above = 0.0  # seconds at or above the start level while not speaking
        self._below = 0.0  # seconds below the stop level while speaking
        self.no_energy_seconds = 0.0

    def feed(self, samples: Samples, seconds: float) -> VadResult:
        rms = pcm16_rms(samples, self.sample_step)
        return self.feed_rms(rms, seconds)

    def feed_rms(self, rms: float, seconds: float) -> VadResult:
        """Same as ``feed`` for a level computed elsewhere."""
        changed = False
        if self.speaking:
            if rms < self.stop_rms:
                self._below += seconds
                if self._below >= self.stop_seconds:
                    self.speaking, changed, self._below = False, True, 0.0
            else:
                self._below = 0.0
        else:
            if rms >= self.start_rms:
                self._above += seconds
                if self._above >= self.start_seconds:
                    self.speaking, changed, self._above = True, True, 0.0
            else:
                self._above = 0.0
        if rms < self.dead_rms:
            self.no_energy_seconds += seconds
        else:
            self.no_energy_seconds = 0.0
        return VadResult(self.speaking, changed, to_dbfs(rms), self.no_energy_seconds)


class LineWatch:
    """One call's audio watch: feeds a Vad and turns what it sees into call events.

    ``VoiceActivity`` when the caller starts or stops speaking; ``LineSilent`` once when the line has
    carried no energy for ``dead_line_timeout`` seconds (a dead FXO line that missed the hang-up). Other
    signs of life (a DTMF digit) restart the dead-line count through ``activity()``. None disables it.
    """

    def __init__(self, call_id: str, vad: Vad, dead_line_timeout: float | None = None, *,
                 utterances: bool = False, sample_rate: int = 8000, preroll: float = 0.5,
                 max_utterance: float = 10.0) -> None:
        self.call_id = call_id
        self.vad = vad
        self.dead_line_timeout = dead_line_timeout
        # Utterances for the recogniser: the VAD decides "speaking" a little after the first syllable, so the
        # last ``preroll`` seconds before it are kept; a caller who never stops is cut at ``max_utterance``.
        self.utterances = utterances
        self.sample_rate = sample_rate
        self._preroll: deque[bytes] = deque()
        self._preroll_bytes = int(preroll * sample_rate) * 2
        self._max_bytes = int(max_utterance * sample_rate) * 2
        self._speech: list[bytes] | None = None
        self._speech_bytes = 0
        self._floor = 0.0  # no-energy seconds already forgiven by activity()
        self._last_quiet = 0.0
        self._dead_sent = False

    @property
    def quiet_seconds(self) -> float:
        """How long the line has been dead (no energy, no other sign of life) as of the last chunk."""
        return max(0.0, self._last_quiet - self._floor)

    def activity(self) -> None:
        self._floor = self._last_quiet

    def feed(self, samples: Samples, seconds: float) -> list[ev.Event]:
        result = self.vad.feed(samples, seconds)
        out = self._after(result)
        if self.utterances and isinstance(samples, bytes | bytearray):
            cut = self._collect(bytes(samples), result)
            if cut is not None:
                out.append(cut)
        return out

    def _collect(self, pcm: bytes, result: VadResult) -> ev.Utterance | None:
        if self._speech is None and result.changed and result.speaking:
            self._speech, self._speech_bytes = list(self._preroll), sum(map(len, self._preroll))
            self._preroll.clear()
        if self._speech is None:
            self._preroll.append(pcm)
            held = sum(map(len, self._preroll))
            while self._preroll and held - len(self._preroll[0]) >= self._preroll_bytes:
                held -= len(self._preroll.popleft())
            return None
        self._speech.append(pcm)
        self._speech_bytes += len(pcm)
        if (result.changed and not result.speaking) or self._speech_bytes >= self._max_bytes:
            audio, self._speech = b"".join(self._speech), None
            return ev.Utterance(self.call_id, audio, self.sample_rate)
        return None

    def feed_level(self, rms: float, seconds: float) -> list[ev.Event]:
        """A level measured elsewhere (the conference bridge's); needs an ``EnergyVad``."""
        return self._after(self.vad.feed_rms(rms, seconds))  # type: ignore[attr-defined]

    def feed_result(self, result: VadResult) -> list[ev.Event]:
        return self._after(result)

    def _after(self, result: VadResult) -> list[ev.Event]:
        out: list[ev.Event] = []
        if result.changed:
            out.append(ev.VoiceActivity(self.call_id, result.speaking))
        if result.no_energy_seconds < self._last_quiet or result.no_energy_seconds == 0.0:
            self._floor = 0.0  # energy came back: the count starts over
            self._dead_sent = False
        self._last_quiet = result.no_energy_seconds
        timeout = self.dead_line_timeout
        quiet = self.quiet_seconds
        if timeout is not None and not self._dead_sent and quiet >= timeout:
            self._dead_sent = True
            out.append(ev.LineSilent(self.call_id, quiet))
        return out
