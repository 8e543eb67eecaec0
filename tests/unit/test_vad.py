"""EnergyVad and LineWatch: pure, clock-free, fed 16-bit PCM chunks and their duration."""

from __future__ import annotations

import math
import struct
from array import array

import pytest

from appliance import events as ev
from appliance.speech.vad import EnergyVad, LineWatch, Vad, from_dbfs, pcm16_rms, to_dbfs

RATE = 8000
FRAME = 0.02  # 20 ms, as the conference bridge delivers them


def tone(level_dbfs: float, seconds: float = FRAME, freq: float = 440.0) -> bytes:
    """A sine whose RMS is ``level_dbfs`` as little-endian 16-bit PCM."""
    amp = from_dbfs(level_dbfs) * math.sqrt(2)
    n = int(RATE * seconds)
    return struct.pack(f"<{n}h", *(round(amp * math.sin(2 * math.pi * freq * i / RATE)) for i in range(n)))


SILENCE = bytes(int(RATE * FRAME) * 2)  # what a pjsua2 caller that plays nothing sends: zeros
ALAW_SILENCE = struct.pack("<160h", *([8, -8] * 80))  # G.711 A-law idle pattern decoded: about -72 dBFS


def feed(vad: EnergyVad, chunk: bytes, seconds: float) -> list:
    """Feed ``seconds`` of ``chunk`` frames; return every result."""
    return [vad.feed(chunk, FRAME) for _ in range(round(seconds / FRAME))]


def test_levels():
    assert pcm16_rms(SILENCE) == 0.0
    assert to_dbfs(0.0) == -math.inf
    assert to_dbfs(pcm16_rms(tone(-20))) == pytest.approx(-20, abs=0.2)
    assert pcm16_rms(array("h", [3, -4, 3, -4])) == pytest.approx(math.sqrt(12.5))
    assert pcm16_rms([100] * 10, step=3) == pytest.approx(100)
    assert pcm16_rms(b"") == 0.0
    assert pcm16_rms(b"\x01") == 0.0  # an odd trailing byte is ignored
    assert to_dbfs(pcm16_rms(ALAW_SILENCE)) < -70


def test_energy_vad_satisfies_the_protocol():
    vad: Vad = EnergyVad()
    result = vad.feed(SILENCE, FRAME)
    assert not result.speaking and not result.changed
    vad.reset()


def test_speech_starts_after_start_seconds_and_ends_after_hangover():
    vad = EnergyVad(start_dbfs=-40, stop_dbfs=-46, start_seconds=0.06, stop_seconds=0.5)
    loud = tone(-20)
    results = feed(vad, loud, 0.1)
    assert [r.changed for r in results] == [False, False, True, False, False]
    assert results[2].speaking and results[2].level_dbfs == pytest.approx(-20, abs=0.2)
    # A pause shorter than the hangover does not end speech.
    assert not any(r.changed for r in feed(vad, SILENCE, 0.4))
    assert vad.speaking
    feed(vad, loud, 0.02)
    results = feed(vad, SILENCE, 0.5)
    assert [r.changed for r in results].count(True) == 1 and results[-1].changed
    assert not results[-1].speaking


def test_hysteresis_between_thresholds():
    vad = EnergyVad(start_dbfs=-40, stop_dbfs=-46, start_seconds=0.04, stop_seconds=0.1)
    middle = tone(-43)  # between stop and start
    assert not any(r.speaking for r in feed(vad, middle, 1.0))  # not loud enough to start
    feed(vad, tone(-30), 0.04)
    assert vad.speaking
    assert all(r.speaking for r in feed(vad, middle, 1.0))  # but loud enough to keep going
    feed(vad, tone(-50), 0.1)
    assert not vad.speaking


def test_a_click_does_not_start_speech():
    vad = EnergyVad(start_seconds=0.06)
    for _ in range(20):
        assert not vad.feed(tone(-10), FRAME).speaking
        assert not vad.feed(SILENCE, FRAME).speaking


def test_no_energy_counts_zeros_and_alaw_idle_but_not_line_noise():
    vad = EnergyVad(dead_dbfs=-66)
    assert feed(vad, SILENCE, 1.0)[-1].no_energy_seconds == pytest.approx(1.0)
    assert feed(vad, ALAW_SILENCE, 1.0)[-1].no_energy_seconds == pytest.approx(2.0)
    # Faint line noise (-60 dBFS) is not speech, but it is not a dead line either.
    result = vad.feed(tone(-60), FRAME)
    assert result.no_energy_seconds == 0.0 and not result.speaking
    assert vad.feed(SILENCE, 0.5).no_energy_seconds == 0.5  # durations are whatever the caller says


def test_bad_thresholds():
    with pytest.raises(ValueError):
        EnergyVad(start_dbfs=-50, stop_dbfs=-40)


def test_line_watch_reports_speech_and_a_dead_line_once():
    watch = LineWatch("c1", EnergyVad(), dead_line_timeout=5.0)
    events: list = []
    for _ in range(10):
        events += watch.feed(tone(-20), FRAME)
    assert events == [ev.VoiceActivity("c1", True)]
    events = []
    for _ in range(round(10 / FRAME)):  # ten seconds of zeros
        events += watch.feed(SILENCE, FRAME)
    assert events[0] == ev.VoiceActivity("c1", False)
    silent = [e for e in events if isinstance(e, ev.LineSilent)]
    assert len(silent) == 1 and silent[0].seconds == pytest.approx(5.0, abs=FRAME)
    # Energy again re-arms it.
    watch.feed(tone(-60), FRAME)
    assert watch.quiet_seconds == 0.0
    events = []
    for _ in range(round(5.1 / FRAME)):
        events += watch.feed(SILENCE, FRAME)
    assert [type(e) for e in events] == [ev.LineSilent]


def test_line_watch_activity_restarts_the_count():
    watch = LineWatch("c1", EnergyVad(), dead_line_timeout=3.0)
    out = []
    for i in range(round(6 / 0.1)):
        if i == 20:  # a DTMF digit after 2 s
            watch.activity()
        out += watch.feed(SILENCE[:160], 0.1)  # 100 ms steps: one frame in five, as the adapter feeds
    [silent] = out  # at 5 s, not at 3 s
    assert isinstance(silent, ev.LineSilent) and silent.seconds == pytest.approx(3.0, abs=0.1)
    assert watch.quiet_seconds == pytest.approx(4.0, abs=0.1)


def test_line_watch_without_timeout_never_says_dead():
    watch = LineWatch("c1", EnergyVad(), dead_line_timeout=None)
    assert all(watch.feed(SILENCE, 1.0) == [] for _ in range(100))
    assert watch.quiet_seconds == pytest.approx(100.0)
