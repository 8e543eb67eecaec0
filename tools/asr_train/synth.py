"""Stage 2: synthetic Russian speech of the phrases, and the augmentations applied while training.

Voices: Debian's espeak-ng Russian voice with its speaker variants (ru, ru+m1..m8, ru+f1..f5), several speeds
and pitches. espeak-ng is the only offline Russian synthesiser installable here: piper-tts's bundled espeak
data gives phonemes, not a Russian neural voice, and no Russian Piper/VITS voice can be downloaded on this
machine. When one is installed (``--piper-voice model.onnx``, e.g. ru_RU-irina-medium) it is used as well.

Clips are written as 16 kHz mono 16-bit WAV with a manifest (``clips.jsonl``: path, text, kind, ref, voice,
split). Voices listed in ``HELD_OUT`` (and the extreme speed) go to the ``test`` split only: the accuracy in the
model card is measured on voices and speeds the model never heard.

Augmentation (``augment``, numpy only, applied on the fly by train.py): a pause before and after the words,
speed, white / pink / babble noise,
50 Hz hum, G.711 A-law / µ-law round trip at 8 kHz, 300–3400 Hz band-pass, gain and clipping, room echo.

    python -m tools.asr_train.synth --phrases phrases.jsonl --out clips/ [--variants 6] [--jobs 2]
"""

from __future__ import annotations

import argparse
import io
import json
import random
import subprocess
import wave
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from appliance.speech.tts import resample  # the box's own resampler (the same filter the call path uses)

RATE = 16000
VARIANTS = ["ru"] + [f"ru+m{i}" for i in range(1, 9)] + [f"ru+f{i}" for i in range(1, 6)]
HELD_OUT = {"ru+m7", "ru+f5"}  # never trained on: the evaluation voices
SPEEDS = [125, 145, 160, 175, 195]  # words per minute (espeak default 175)
HELD_OUT_SPEED = 210
PITCHES = [25, 40, 50, 60, 75]


# ------------------------------------------------------------------------------------------ synthesis


def read_wav(data: bytes | str | Path) -> tuple[np.ndarray, int]:
    f = wave.open(io.BytesIO(data) if isinstance(data, bytes) else str(data), "rb")
    with f:
        rate, n = f.getframerate(), f.getnframes()
        raw = f.readframes(n)
    if data and isinstance(data, bytes) and len(raw) == 0:  # espeak --stdout leaves the length unset
        raw = data[44:]
    return np.frombuffer(raw[: len(raw) // 2 * 2], dtype="<i2").astype(np.float32) / 32768.0, rate


def write_wav(path: Path, x: np.ndarray, rate: int = RATE) -> None:
    pcm = (np.clip(x, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)


def espeak(text: str, voice: str, speed: int, pitch: int) -> np.ndarray:
    """16 kHz float32 audio of ``text`` from espeak-ng."""
    out = subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", text],
                         check=True, capture_output=True).stdout
    x, rate = read_wav(out)
    return trim(resample(x, rate, RATE))


def trim(x: np.ndarray, pad: float = 0.15) -> np.ndarray:
    """Cut leading/trailing silence, keep ``pad`` seconds (a VAD-cut utterance looks like this)."""
    idx = np.flatnonzero(np.abs(x) > 0.01)
    if not len(idx):
        return x
    p = int(pad * RATE)
    return x[max(idx[0] - p, 0): idx[-1] + p]


class PiperVoice:
    """An installed Russian Piper voice through piper-tts (optional: used when --piper-voice is given)."""

    def __init__(self, model: Path) -> None:
        from piper import PiperVoice as _Voice  # type: ignore[import-not-found]

        self.voice = _Voice.load(str(model))
        self.rate = self.voice.config.sample_rate

    def __call__(self, text: str, length_scale: float) -> np.ndarray:
        from piper import SynthesisConfig  # type: ignore[import-not-found]

        chunks = self.voice.synthesize(text, SynthesisConfig(length_scale=length_scale))
        x = np.concatenate([c.audio_float_array for c in chunks])
        return trim(resample(x, self.rate, RATE))


def by_kind(spec: str) -> dict[str, float]:
    """'menu=30,yesno=30' → {"menu": 30.0, "yesno": 30.0} (synth's --kind-variants, train's --mix)."""
    out = {}
    for part in (p.strip() for p in spec.split(",")):
        if part:
            kind, sep, value = part.partition("=")
            if not sep:
                raise SystemExit(f"expected kind=number, got {part!r}")
            out[kind.strip()] = float(value)
    return out


def plan(items: list[dict], variants: int, seed: int, per_kind: dict[str, int] | None = None) -> list[dict]:
    """Which voice/speed/pitch renders which phrase: ``variants`` training renderings per phrase (``per_kind``
    overrides it by kind: short menu answers need many voices, not many repeats of one) plus one held-out
    rendering (held-out voice or speed) for the test split."""
    rng = random.Random(seed)
    train_voices = [v for v in VARIANTS if v not in HELD_OUT]
    jobs = []
    for i, it in enumerate(items):
        for j in range((per_kind or {}).get(it["kind"].split(":")[0], variants)):
            jobs.append({**it, "voice": rng.choice(train_voices), "speed": rng.choice(SPEEDS),
                         "pitch": rng.choice(PITCHES), "split": "train", "id": f"{i:05d}-{j}"})
        if it["kind"].startswith(("menu", "phone", "key", "yesno", "free")):
            held = rng.random() < 0.7
            jobs.append({**it, "voice": rng.choice(sorted(HELD_OUT)) if held else rng.choice(train_voices),
                         "speed": rng.choice(SPEEDS) if held else HELD_OUT_SPEED, "pitch": rng.choice(PITCHES),
                         "split": "test", "id": f"{i:05d}-t"})
    return jobs


def render(jobs: list[dict], out: Path, threads: int = 2) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)

    def one(job: dict) -> dict:
        path = out / f"{job['id']}.wav"
        if not path.exists():
            write_wav(path, espeak(job["text"], job["voice"], job["speed"], job["pitch"]))
        with wave.open(str(path)) as w:
            seconds = w.getnframes() / w.getframerate()
        return {**job, "path": path.name, "seconds": round(seconds, 3)}

    with ThreadPoolExecutor(max(threads, 1)) as ex:  # each job is an espeak-ng process
        return list(ex.map(one, jobs))


# ---------------------------------------------------------------------------------------- augmentation


def speed(x: np.ndarray, factor: float) -> np.ndarray:
    """Tempo and pitch together (tape speed), by resampling."""
    return resample(x, int(RATE * factor), RATE)


def at_snr(x: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    ps = float(np.mean(x ** 2)) + 1e-12
    pn = float(np.mean(noise ** 2)) + 1e-12
    return x + noise * np.sqrt(ps / (pn * 10 ** (snr_db / 10)))


def pink(n: int, rng: np.random.Generator) -> np.ndarray:
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(len(spec), dtype=np.float64)
    f[0] = 1.0
    return np.fft.irfft(spec / np.sqrt(f), n).astype(np.float32)


def hum(n: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n) / RATE
    base = rng.choice([50.0, 50.0, 60.0])
    return sum(np.sin(2 * np.pi * base * k * t + rng.uniform(0, 6.3)) / k for k in (1, 2, 3, 5)).astype(np.float32)


def babble(n: int, pool: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    out = np.zeros(n, np.float32)
    for _ in range(int(rng.integers(2, 5))):
        y = pool[int(rng.integers(len(pool)))]
        if len(y) < n:
            y = np.tile(y, n // max(len(y), 1) + 1)
        s = int(rng.integers(0, len(y) - n + 1))
        out += y[s: s + n]
    return out


def ulaw_roundtrip(x: np.ndarray) -> np.ndarray:
    """G.711 µ-law encode + decode (segment tables, as a phone line does)."""
    s = np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int32)
    sign = s < 0
    mag = np.minimum(np.where(sign, -s, s), 32635) + 0x84
    exp = np.clip(np.floor(np.log2(mag)).astype(np.int32) - 7, 0, 7)
    mant = (mag >> (exp + 3)) & 0x0F
    t = ((mant << 3) + 0x84) << exp
    return (np.where(sign, 0x84 - t, t - 0x84) / 32768.0).astype(np.float32)


def alaw_roundtrip(x: np.ndarray) -> np.ndarray:
    """G.711 A-law encode + decode (13-bit linear, 8 segments)."""
    s = np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int32) >> 3
    sign = s < 0
    mag = np.where(sign, -s - 1, s)
    seg = np.searchsorted(np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF]), mag)
    seg = np.minimum(seg, 7)
    mag = np.minimum(mag, 0xFFF)
    mant = np.where(seg < 2, (mag >> 1) & 0x0F, (mag >> np.maximum(seg, 1)) & 0x0F)
    t = (mant << 4) + 8
    t = np.where(seg >= 1, (t + 0x100) << np.maximum(seg - 1, 0), t)
    return (np.where(sign, -t, t) / 32768.0).astype(np.float32)


def g711(x: np.ndarray, law: str) -> np.ndarray:
    """Down to 8 kHz, companded, back to 16 kHz: what a SIP call does to the caller's voice."""
    y = resample(x, RATE, 8000)
    y = ulaw_roundtrip(y) if law == "ulaw" else alaw_roundtrip(y)
    return resample(y, 8000, RATE)[: len(x)]


def bandpass(x: np.ndarray, lo: float = 300.0, hi: float = 3400.0) -> np.ndarray:
    n = len(x)
    spec = np.fft.rfft(x)
    f = np.fft.rfftfreq(n, 1 / RATE)
    gain = 1 / np.sqrt(1 + (lo / np.maximum(f, 1e-3)) ** 4) / np.sqrt(1 + (f / hi) ** 8)  # 2nd / 4th order shape
    return np.fft.irfft(spec * gain, n).astype(np.float32)


def echo(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A small room: exponentially decaying noise impulse response, RT60 0.15–0.6 s."""
    rt60 = rng.uniform(0.15, 0.6)
    n = int(rt60 * RATE)
    t = np.arange(n) / RATE
    ir = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)
    ir[0] = 1.0 / rng.uniform(0.3, 1.0)  # direct path
    ir /= np.sqrt(np.sum(ir ** 2))
    m = len(x) + n - 1
    size = 1 << (m - 1).bit_length()
    y = np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(ir, size), size)[: len(x)]
    return y.astype(np.float32)


def augment(x: np.ndarray, rng: np.random.Generator, pool: list[np.ndarray] | None = None,
            strength: float = 1.0) -> np.ndarray:
    """A random chain of the augmentations; ``strength`` 0 returns the clip unchanged."""
    if strength <= 0:
        return x
    p = lambda q: rng.random() < q * strength  # noqa: E731
    if p(0.9):
        # espeak-ng starts speaking at sample 0, but the box's VAD cuts an utterance with up to half a second of
        # line before it and some after: without this the model learnt that speech starts at frame 0 and made
        # up a first word ("два...") for every pause it heard first. Faint noise so the pause is a line's.
        lead, tail = int(rng.uniform(0.0, 0.7) * RATE), int(rng.uniform(0.05, 0.6) * RATE)
        x = np.concatenate([np.zeros(lead, np.float32), x, np.zeros(tail, np.float32)])
        x = x + rng.standard_normal(len(x)).astype(np.float32) * float(10 ** rng.uniform(-4.5, -2.5))
    if p(0.5):
        x = speed(x, float(rng.uniform(0.85, 1.15)))
    if p(0.3):
        x = echo(x, rng)
    n = len(x)
    if p(0.5):
        kind = rng.choice(["white", "pink", "babble", "hum"])
        if kind == "white":
            noise = rng.standard_normal(n).astype(np.float32)
        elif kind == "pink":
            noise = pink(n, rng)
        elif kind == "babble" and pool:
            noise = babble(n, pool, rng)
        else:
            noise = hum(n, rng)
        x = at_snr(x, noise, float(rng.uniform(5, 30)))
    if p(0.5):
        x = bandpass(x)
    if p(0.5):
        x = g711(x, "ulaw" if rng.random() < 0.5 else "alaw")
    gain = 10 ** (rng.uniform(-20, 12) / 20) if p(0.7) else 1.0
    peak = float(np.max(np.abs(x))) + 1e-9
    x = x / peak * 0.5 * gain
    return np.clip(x, -1.0, 1.0).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--phrases", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--variants", type=int, default=6, help="training renderings per phrase")
    ap.add_argument("--kind-variants", default="", help="renderings by kind, e.g. 'menu=24,yesno=24'")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--split", choices=["train", "test"], help="render only this split (same plan as a full run)")
    ap.add_argument("--kinds", default="", help="render only these kinds, e.g. 'menu,yesno' (same plan)")
    args = ap.parse_args(argv)
    items = [json.loads(line) for line in args.phrases.read_text(encoding="utf-8").splitlines() if line]
    per_kind = {k: int(v) for k, v in by_kind(args.kind_variants).items()}
    jobs = plan(items, args.variants, args.seed, per_kind)
    kinds = {k.strip() for k in args.kinds.split(",") if k.strip()}
    jobs = [j for j in jobs if (not args.split or j["split"] == args.split)
            and (not kinds or j["kind"].split(":")[0] in kinds)]
    clips = render(jobs, args.out / "wav", args.jobs)
    with open(args.out / "clips.jsonl", "w", encoding="utf-8") as f:
        for c in clips:
            f.write(json.dumps(c, ensure_ascii=False) + "\n")
    hours = sum(c["seconds"] for c in clips) / 3600
    print(f"synth: {len(clips)} clips ({hours:.2f} h) -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
