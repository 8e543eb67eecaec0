"""Silero VAD through sherpa-onnx on real audio: espeak-ng Russian over G.711, line noise, hum and music."""

from __future__ import annotations

import shutil
import subprocess
import wave
from pathlib import Path

import pytest

np = pytest.importorskip("numpy")
pytest.importorskip("sherpa_onnx")

from appliance import events as ev  # noqa: E402
from appliance.speech.base import Vad  # noqa: E402
from appliance.speech.engines import SpeechEngines, load_engines, packaged_silero  # noqa: E402
from appliance.speech.sherpa import (  # noqa: E402
    SharedSileroModel,
    SharedSileroVad,
    SileroVad,
    SileroVadPool,
    check_silero,
)
from appliance.speech.vad import EnergyVad, LineWatch  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
RATE = 8000
FRAME = 160  # 20 ms at 8 kHz, as the conference bridge delivers them
MODEL = packaged_silero()
pytestmark = pytest.mark.skipif(MODEL is None, reason="pip install --no-deps silero-vad")


# ------------------------------------------------------------------ G.711 (ITU-T G.711, numpy, no audioop)


def alaw_encode(x: np.ndarray) -> np.ndarray:
    """16-bit linear → A-law bytes (segment search as in the reference C code)."""
    pcm = x.astype(np.int32) >> 3  # 13-bit
    sign = np.where(pcm >= 0, 0xD5, 0x55)
    mag = np.where(pcm >= 0, pcm, -pcm - 1)
    mag = np.minimum(mag, 0xFFF)
    seg = np.searchsorted(np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF]), mag)
    mant = np.where(seg < 2, (mag >> 1) & 0xF, (mag >> seg) & 0xF)
    return (((seg << 4) | mant) ^ sign).astype(np.uint8)


def alaw_decode(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.int32) ^ 0x55
    seg = (a & 0x70) >> 4
    mant = a & 0x0F
    mag = np.where(seg == 0, (mant << 4) + 8, ((mant << 4) + 0x108) << np.maximum(seg - 1, 0))
    return np.where(a & 0x80, mag, -mag).astype(np.int16)


def ulaw_encode(x: np.ndarray) -> np.ndarray:
    bias, clip = 0x84, 32635
    pcm = x.astype(np.int32)
    sign = np.where(pcm < 0, 0x80, 0)
    mag = np.minimum(np.abs(pcm), clip) + bias
    exp = np.floor(np.log2(mag)).astype(np.int32) - 7
    mant = (mag >> (exp + 3)) & 0x0F
    return (~(sign | (exp << 4) | mant) & 0xFF).astype(np.uint8)


def ulaw_decode(u: np.ndarray) -> np.ndarray:
    u = ~u.astype(np.int32) & 0xFF
    sign, exp, mant = u & 0x80, (u >> 4) & 0x07, u & 0x0F
    mag = (((mant << 3) + 0x84) << exp) - 0x84
    return np.where(sign, -mag, mag).astype(np.int16)


def test_g711_round_trip_is_close():
    x = (np.sin(np.linspace(0, 200, 8000)) * 20000).astype(np.int16)
    for enc, dec in ((alaw_encode, alaw_decode), (ulaw_encode, ulaw_decode)):
        y = dec(enc(x))
        err = np.abs(y.astype(np.int32) - x) / np.maximum(np.abs(x.astype(np.int32)), 64)
        assert np.median(err) < 0.04  # 8-bit companding: ~3 % error
    assert alaw_decode(alaw_encode(np.zeros(4, np.int16))).tolist() == [8, 8, 8, 8]  # A-law idle: ±8


# ---------------------------------------------------------------------------------------- audio


def espeak_ru(text: str, tmp: Path) -> np.ndarray:
    if not (shutil.which("espeak-ng") and shutil.which("sox")):
        pytest.skip("apt-get install espeak-ng sox")
    raw, out = tmp / "raw.wav", tmp / "8k.wav"
    subprocess.run(["espeak-ng", "-v", "ru", "-w", str(raw), text], check=True, capture_output=True)
    subprocess.run(["sox", str(raw), "-r", str(RATE), "-c", "1", "-b", "16", str(out)], check=True,
                   capture_output=True)
    return read(out)


def read(path: Path) -> np.ndarray:
    with wave.open(str(path)) as w:
        assert w.getframerate() == RATE and w.getsampwidth() == 2
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")


def line(signal: np.ndarray, lead: float = 0.5, tail: float = 1.0, noise_db: float = -60.0) -> np.ndarray:
    """A phone line: some line noise, the signal, more noise; through G.711 A-law."""
    rng = np.random.default_rng(1)
    pre, post = np.zeros(int(lead * RATE)), np.zeros(int(tail * RATE))
    x = np.concatenate((pre, signal.astype(np.float64), post))
    x += rng.normal(0, 32768 * 10 ** (noise_db / 20), len(x))
    return alaw_decode(alaw_encode(np.clip(x, -32768, 32767).astype(np.int16)))


def run(vad: SileroVad | SharedSileroVad, x: np.ndarray) -> tuple[list[tuple[float, bool]], float]:
    """(time, speaking) at every flip, and total seconds spoken."""
    flips, spoken = [], 0.0
    for i in range(0, len(x) - FRAME + 1, FRAME):
        r = vad.feed(x[i:i + FRAME].tobytes(), FRAME / RATE)
        if r.changed:
            flips.append((i / RATE, r.speaking))
        spoken += FRAME / RATE if r.speaking else 0.0
    return flips, spoken


@pytest.fixture(scope="module")
def shared_model() -> SharedSileroModel:
    return SharedSileroModel(MODEL)


@pytest.fixture(scope="module", params=["sherpa", "shared"])
def vad(request, shared_model) -> SileroVad | SharedSileroVad:
    """Both detectors: sherpa's VoiceActivityDetector and one onnxruntime session shared by all calls."""
    return SileroVad(MODEL) if request.param == "sherpa" else SharedSileroVad(shared_model)


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> np.ndarray:
    return espeak_ru("Здравствуйте. Я хочу записаться к терапевту на завтра.", tmp_path_factory.mktemp("ru"))


def pink(n: int, rng: np.random.Generator) -> np.ndarray:
    spec = np.fft.rfft(rng.normal(size=n))
    spec /= np.sqrt(np.maximum(np.arange(len(spec)), 1))
    y = np.fft.irfft(spec, n)
    return y / np.std(y)


# ----------------------------------------------------------------------------------------- tests


def test_is_a_vad(vad):
    as_vad: Vad = vad  # the protocol of speech/vad.py (not runtime-checkable): same methods as EnergyVad
    assert callable(as_vad.feed) and callable(as_vad.reset)
    assert check_silero(MODEL).inputs[0].name == "input"


def test_finds_russian_speech_through_alaw(vad, speech):
    vad.reset()
    x = line(speech)
    flips, spoken = run(vad, x)
    vad.flush()
    talk = len(speech) / RATE
    assert flips and flips[0][1] is True
    assert 0.5 - 0.05 <= flips[0][0] <= 0.5 + 0.5  # starts within half a second of the first word
    assert spoken >= 0.7 * talk
    utts = vad.utterances()
    assert utts and sum(u.seconds for u in utts) >= 0.7 * talk
    assert utts[0].sample_rate == 16000 and 0.3 <= utts[0].start <= 1.0


def test_finds_speech_through_ulaw_at_low_level(vad, speech):
    vad.reset()
    quiet = (speech.astype(np.float64) * 10 ** (-18 / 20)).astype(np.int16)  # a quiet caller, -18 dB
    x = ulaw_decode(ulaw_encode(line(quiet)))
    _, spoken = run(vad, x)
    assert spoken >= 0.5 * len(speech) / RATE


@pytest.mark.parametrize("kind", ["white", "pink", "hum", "hum+white"])
def test_no_speech_in_line_noise(vad, kind):
    vad.reset()
    rng = np.random.default_rng(7)
    n = 5 * RATE
    t = np.arange(n) / RATE
    noise = {
        "white": rng.normal(0, 32768 * 10 ** (-50 / 20), n),
        "pink": pink(n, rng) * 32768 * 10 ** (-45 / 20),
        "hum": 32768 * 10 ** (-30 / 20) * np.sqrt(2) * (np.sin(2 * np.pi * 50 * t) + 0.3 * np.sin(2 * np.pi * 150 * t)),
        "hum+white": 32768 * 10 ** (-35 / 20) * np.sin(2 * np.pi * 50 * t) + rng.normal(0, 50, n),
    }[kind]
    x = alaw_decode(alaw_encode(noise.astype(np.int16)))
    flips, spoken = run(vad, x)
    assert spoken == 0.0, flips


def test_no_speech_in_music_on_hold(vad):
    vad.reset()
    x = read(ROOT / "voices" / "moh" / "calm.wav")
    x = alaw_decode(alaw_encode(x))
    flips, spoken = run(vad, x)
    assert spoken < 0.5, flips  # 38 s of music: at most a blip


def test_line_watch_events_and_dead_line(vad, speech):
    """Drop-in for EnergyVad under LineWatch: voice events from the model, dead line from the level."""
    vad.reset()
    watch = LineWatch("c1", vad, dead_line_timeout=2.0)
    events: list = []
    x = line(speech, lead=0.3, tail=1.5)
    for i in range(0, len(x) - FRAME + 1, FRAME):
        events += watch.feed(x[i:i + FRAME].tobytes(), FRAME / RATE)
    silence = np.zeros(FRAME, np.int16).tobytes()
    for _ in range(int(2.5 / 0.02)):
        events += watch.feed(silence, 0.02)
    kinds = [type(e).__name__ for e in events]
    assert kinds[0] == "VoiceActivity" and events[0].speaking
    assert ev.VoiceActivity("c1", False) in events
    assert kinds.count("LineSilent") == 1 and kinds[-1] == "LineSilent"


def test_line_watch_cuts_the_utterance_with_its_beginning(vad, speech):
    """With utterances on, the words between the VAD's start and stop come out once, the start included."""
    vad.reset()
    watch = LineWatch("c1", vad, utterances=True, sample_rate=RATE)
    x = line(speech, lead=1.0, tail=1.5)
    cuts = []
    for i in range(0, len(x) - FRAME + 1, FRAME):
        cuts += [e for e in watch.feed(x[i:i + FRAME].tobytes(), FRAME / RATE) if isinstance(e, ev.Utterance)]
    assert len(cuts) == 1
    audio = np.frombuffer(cuts[0].pcm, np.int16)
    spoken = np.flatnonzero(np.abs(x) > 500)
    assert len(audio) >= spoken[-1] - spoken[0]  # the whole phrase
    assert np.abs(audio[:400]).max() <= 500  # it starts in the quiet before the first word: nothing clipped
    assert cuts[0].sample_rate == RATE


def test_both_engines_agree(shared_model, speech):
    x = line(speech)
    a, _ = run(SileroVad(MODEL), x)
    b, _ = run(SharedSileroVad(shared_model), x)
    assert [s for _, s in a] == [s for _, s in b]
    assert all(abs(ta - tb) <= 0.1 for (ta, _), (tb, _) in zip(a, b, strict=True))


def test_shared_model_serves_calls_from_threads(shared_model, speech):
    import threading

    x = line(speech)
    results: dict[int, float] = {}

    def call(n: int) -> None:
        results[n] = run(SharedSileroVad(shared_model), x)[1]

    threads = [threading.Thread(target=call, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results.values())) == 1 and results[0] > 0  # same audio, same answer, no crosstalk


@pytest.mark.parametrize("engine", ["shared", "sherpa"])
def test_pool_reuses_and_bounds(engine):
    pool = SileroVadPool(MODEL, 2, engine)
    a, b = pool.acquire(), pool.acquire()
    assert a is not None and b is not None and pool.acquire() is None
    pool.release(a)
    assert pool.acquire() is a
    eng = SpeechEngines(vad_pool=pool)
    assert isinstance(eng.new_vad(), EnergyVad)  # pool empty: the energy detector takes over


def test_engines_pick_silero(tmp_path):
    eng = load_engines(tmp_path, "ru", kinds=("vad",), max_vad=4)
    assert eng.vad_pool is not None and eng.lines[0].startswith("VAD: Silero")
    assert "shared by all calls" in eng.lines[0]
    vad = eng.new_vad()
    assert isinstance(vad, SharedSileroVad)
    eng.release_vad(vad)
    eng = load_engines(tmp_path, "ru", kinds=("vad",), max_vad=4, vad_engine="sherpa")
    assert "sherpa-onnx" in eng.lines[0] and isinstance(eng.new_vad(), SileroVad)
