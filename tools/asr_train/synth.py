"""Stage 2: synthetic Russian speech of the phrases, and the augmentations applied while training.

Engines (``--engines``): Debian's espeak-ng Russian voice with its speaker variants (ru, ru+m1..m8, ru+f1..f5),
several speeds and pitches (the default); and Debian's Festival with festvox-ru's ``msu_ru_nsh_clunits``, a
unit-selection voice cut from recordings of one male speaker (``apt-get install festival festvox-ru``; UTF-8 text,
ё may be written е: its lexicon restores it). Festival's clunits voices ignore Duration_Stretch and keep each
unit's own pitch, so its variants are made after it speaks: sox ``tempo`` (85–116 %, pitch kept) and ``pitch``
(−3…+3 semitones, tempo kept). An engine that is not installed is skipped with a message; ``--held-out-engines
festival`` renders the test split only, in the voice's own tempo and pitch: a synthesiser the model never heard.
piper-tts's bundled espeak data gives phonemes, not a Russian neural voice, and no Russian Piper/VITS voice can
be downloaded on this machine (``PiperVoice`` takes one when installed).

Clips are written as 16 kHz mono 16-bit WAV with a manifest (``clips.jsonl``: path, text, kind, ref, voice,
split). Voices listed in ``HELD_OUT`` (and the extreme speed) go to the ``test`` split only: the accuracy in the
model card is measured on voices and speeds the model never heard.

Augmentation (``augment``, numpy only, applied on the fly by train.py): a pause before and after the words,
speed, white / pink / babble noise,
50 Hz hum, G.711 A-law / µ-law round trip at 8 kHz, 300–3400 Hz band-pass, gain and clipping, room echo.

    python -m tools.asr_train.synth --phrases phrases.jsonl --out clips/ [--variants 6] [--jobs 2] \
        [--engines espeak,festival=0.25] [--held-out-engines festival]
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import io
import json
import random
import shutil
import subprocess
import sys
import tempfile
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

ESPEAK, FESTIVAL = "espeak", "festival"
FESTIVAL_VOICE = "msu_ru_nsh"  # festvox-ru: (voice_msu_ru_nsh_clunits)
FESTIVAL_VOICES = [f"festival:{FESTIVAL_VOICE}"]  # a clip's voice names its engine: "festival:..." (else espeak)
FEST_TEMPI = [85, 92, 100, 108, 116]  # % of the voice's own tempo (sox tempo: pitch kept)
FEST_HELD_TEMPO = 125
FEST_PITCHES = [-3, -2, -1, 0, 1, 2, 3]  # semitones (sox pitch: tempo kept)
FEST_HELD_PITCHES = [-5, 5]
NATURAL = {ESPEAK: ("ru", 175, 50), FESTIVAL: (FESTIVAL_VOICES[0], 100, 0)}  # a held-out engine's rendering
ENGINES = (ESPEAK, FESTIVAL)


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


def engine_of(voice: str) -> str:
    return voice.split(":", 1)[0] if ":" in voice else ESPEAK


def describe(row: dict) -> str:
    """How a clip was spoken, for reports: 'ru+m7, 210 wpm' or 'festival msu_ru_nsh, tempo 108 %, pitch -2 st'."""
    if engine_of(row["voice"]) == FESTIVAL:
        return f"festival {row['voice'].split(':', 1)[1]}, tempo {row['speed']} %, pitch {row['pitch']:+d} st"
    return f"{row['voice']}, {row['speed']} wpm"


def unavailable(engine: str) -> str | None:
    """Why ``engine`` cannot render here, or None when it can."""
    if engine == ESPEAK:
        return None if shutil.which("espeak-ng") else "espeak-ng is not installed (Debian: apt-get install espeak-ng)"
    if engine != FESTIVAL:
        return f"unknown engine {engine!r} (known: {', '.join(ENGINES)})"
    if not shutil.which("festival"):
        return "festival is not installed (Debian: apt-get install festival festvox-ru)"
    if not shutil.which("sox"):
        return "sox is not installed (festival's tempo and pitch variants; Debian: apt-get install sox)"
    probe = subprocess.run(["festival", "-b", f"(voice_{FESTIVAL_VOICE}_clunits)"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"festival has no voice {FESTIVAL_VOICE}_clunits (Debian: apt-get install festvox-ru)"
    return None


def _scm(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def festival_batch(texts: list[str], paths: list[Path]) -> None:
    """One festival process speaks every text (UTF-8, as festvox-ru expects) into its 16 kHz WAV: the voice loads
    once (~0.5 s), then ~0.1 s a phrase; the audio is byte for byte what ``text2wave -eval
    '(voice_msu_ru_nsh_clunits)'`` writes."""
    lines = [f"(voice_{FESTIVAL_VOICE}_clunits)"]
    lines += [f'(utt.save.wave (utt.synth (Utterance Text "{_scm(t)}")) "{_scm(str(p))}" \'riff)'
              for t, p in zip(texts, paths, strict=True)]
    with tempfile.NamedTemporaryFile("w", suffix=".scm", encoding="utf-8", delete=False) as f:
        f.write("\n".join(lines) + "\n")
    try:
        proc = subprocess.run(["festival", "-b", f.name], capture_output=True, text=True)
    finally:
        Path(f.name).unlink()
    missing = [p for p in paths if not p.exists()]
    if proc.returncode != 0 or missing:
        raise RuntimeError(f"festival failed ({len(missing)} of {len(paths)} unwritten): {proc.stderr[-1500:]}")
    for p in paths:  # written as NAME.part.wav: a batch that died leaves no half file under the cached name
        p.rename(p.with_name(p.name.replace(".part", "")))


def festival_raw(texts: list[str], cache: Path, threads: int = 2, batch: int = 200) -> dict[str, Path]:
    """Festival's own rendering of each distinct text (deterministic), cached in ``cache/`` by text."""
    cache.mkdir(parents=True, exist_ok=True)
    paths = {t: cache / f"{hashlib.sha1(t.encode()).hexdigest()[:16]}.wav" for t in dict.fromkeys(texts)}
    todo = [t for t, p in paths.items() if not p.exists()]
    chunks = [todo[i: i + batch] for i in range(0, len(todo), batch)]
    with ThreadPoolExecutor(max(threads, 1)) as ex:
        list(ex.map(lambda c: festival_batch(c, [paths[t].with_suffix(".part.wav") for t in c]), chunks))
    return paths


def vary(x: np.ndarray, tempo: int, semitones: float) -> np.ndarray:
    """sox ``pitch`` (tempo kept) and ``tempo`` (pitch kept, WSOLA) on 16 kHz audio; unchanged at 100 % / 0."""
    effects = (["pitch", str(round(semitones * 100))] if semitones else []) + \
              (["tempo", "-s", f"{tempo / 100:.4f}"] if tempo != 100 else [])
    if not effects:
        return x
    raw = ["-t", "raw", "-e", "signed-integer", "-b", "16", "-c", "1", "-r", str(RATE)]
    pcm = (np.clip(x, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
    out = subprocess.run(["sox", "-q", *raw, "-", *raw, "-", *effects], input=pcm, check=True,
                         capture_output=True).stdout
    return np.frombuffer(out[: len(out) // 2 * 2], dtype="<i2").astype(np.float32) / 32768.0


def festival(raw: Path, tempo: int, semitones: float) -> np.ndarray:
    """16 kHz float32 audio of one festival rendering at ``tempo`` % and ``semitones``, trimmed like espeak's."""
    x, rate = read_wav(raw)
    x = resample(x - float(np.mean(x)), rate, RATE)  # the voice's units carry a small DC offset
    return trim(vary(x, tempo, semitones))


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


def plan(items: list[dict], variants: int, seed: int, per_kind: dict[str, int] | None = None,
         engines: dict[str, float] | None = None, held_out_engines: tuple[str, ...] = ()) -> list[dict]:
    """Which voice/speed/pitch renders which phrase: ``variants`` training renderings per phrase (``per_kind``
    overrides it by kind: short menu answers need many voices, not many repeats of one) plus one held-out
    rendering (held-out voice or speed) for the test split, for each engine in ``engines`` (engine → share of
    those renderings; default espeak only). Each engine draws from its own random stream, so adding festival
    leaves espeak's plan as it was. Each engine of ``held_out_engines`` adds one test rendering of every test
    phrase in its own voice, tempo and pitch (``NATURAL``) and none for training."""
    engines = {ESPEAK: 1.0} if engines is None else engines
    if set(engines) & set(held_out_engines):
        raise ValueError(f"an engine both trained on and held out: {set(engines) & set(held_out_engines)}")
    test_kinds = ("menu", "phone", "key", "yesno", "free")
    jobs = []
    if ESPEAK in engines:
        rng = random.Random(seed)
        train_voices = [v for v in VARIANTS if v not in HELD_OUT]
        for i, it in enumerate(items):
            for j in range(_count(per_kind, it, variants, engines[ESPEAK])):
                jobs.append({**it, "voice": rng.choice(train_voices), "speed": rng.choice(SPEEDS),
                             "pitch": rng.choice(PITCHES), "split": "train", "id": f"{i:05d}-{j}"})
            if it["kind"].startswith(test_kinds):
                held = rng.random() < 0.7
                jobs.append({**it, "voice": rng.choice(sorted(HELD_OUT)) if held else rng.choice(train_voices),
                             "speed": rng.choice(SPEEDS) if held else HELD_OUT_SPEED,
                             "pitch": rng.choice(PITCHES), "split": "test", "id": f"{i:05d}-t"})
    if FESTIVAL in engines:  # one speaker: tempo and pitch are the variety; 125 % and ±5 semitones held out
        rng = random.Random(f"festival-{seed}")
        for i, it in enumerate(items):
            for j in range(_count(per_kind, it, variants, engines[FESTIVAL])):
                jobs.append({**it, "voice": FESTIVAL_VOICES[0], "speed": rng.choice(FEST_TEMPI),
                             "pitch": rng.choice(FEST_PITCHES), "split": "train", "id": f"{i:05d}-f{j}"})
            if it["kind"].startswith(test_kinds):
                held_pitch = rng.random() < 0.5
                jobs.append({**it, "voice": FESTIVAL_VOICES[0],
                             "speed": rng.choice(FEST_TEMPI) if held_pitch else FEST_HELD_TEMPO,
                             "pitch": rng.choice(FEST_HELD_PITCHES) if held_pitch else rng.choice(FEST_PITCHES),
                             "split": "test", "id": f"{i:05d}-ft"})
    for engine in held_out_engines:
        voice, speed_, pitch = NATURAL[engine]
        jobs += [{**it, "voice": voice, "speed": speed_, "pitch": pitch, "split": "test", "id": f"{i:05d}-{engine}"}
                 for i, it in enumerate(items) if it["kind"].startswith(test_kinds)]
    return jobs


def _count(per_kind: dict[str, int] | None, item: dict, variants: int, share: float) -> int:
    n = (per_kind or {}).get(item["kind"].split(":")[0], variants)
    return n if share == 1.0 else max(1, round(n * share))


def render(jobs: list[dict], out: Path, threads: int = 2) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    todo = [j for j in jobs if engine_of(j["voice"]) == FESTIVAL and not (out / f"{j['id']}.wav").exists()]
    raw = festival_raw([j["text"] for j in todo], out.parent / "festival_raw", threads) if todo else {}

    def one(job: dict) -> dict:
        path = out / f"{job['id']}.wav"
        if not path.exists():
            if engine_of(job["voice"]) == FESTIVAL:
                write_wav(path, festival(raw[job["text"]], job["speed"], job["pitch"]))
            else:
                write_wav(path, espeak(job["text"], job["voice"], job["speed"], job["pitch"]))
        with wave.open(str(path)) as w:
            seconds = w.getnframes() / w.getframerate()
        return {**job, "path": path.name, "seconds": round(seconds, 3)}

    with ThreadPoolExecutor(max(threads, 1)) as ex:  # each job is an espeak-ng (or sox) process
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


def engine_shares(spec: str) -> dict[str, float]:
    """'espeak,festival=0.25' → {"espeak": 1.0, "festival": 0.25}; '' → {}."""
    out = {}
    for part in (p.strip() for p in spec.split(",")):
        if part:
            name, _, share = part.partition("=")
            out[name.strip()] = float(share) if share else 1.0
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--phrases", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--variants", type=int, default=6, help="training renderings per phrase")
    ap.add_argument("--kind-variants", default="", help="renderings by kind, e.g. 'menu=24,yesno=24'")
    ap.add_argument("--engines", default=ESPEAK,
                    help="synthesisers to train on, each with its share of the renderings: 'espeak,festival=0.25' "
                         "('' for none); one not installed is skipped with a message")
    ap.add_argument("--held-out-engines", default="",
                    help="synthesisers for the test split only (never trained on), e.g. 'festival'")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--split", choices=["train", "test"], help="render only this split (same plan as a full run)")
    ap.add_argument("--kinds", default="", help="render only these kinds, e.g. 'menu,yesno' (same plan)")
    args = ap.parse_args(argv)
    items = [json.loads(line) for line in args.phrases.read_text(encoding="utf-8").splitlines() if line]
    per_kind = {k: int(v) for k, v in by_kind(args.kind_variants).items()}
    engines = engine_shares(args.engines)
    held_out = tuple(engine_shares(args.held_out_engines))
    for name in [*engines, *held_out]:
        if name not in ENGINES:
            raise SystemExit(f"synth: unknown engine {name!r} (known: {', '.join(ENGINES)})")
        why = unavailable(name)
        if why:
            print(f"synth: engine {name} skipped: {why}", file=sys.stderr)
            engines.pop(name, None)
            held_out = tuple(e for e in held_out if e != name)
    jobs = plan(items, args.variants, args.seed, per_kind, engines, held_out)
    kinds = {k.strip() for k in args.kinds.split(",") if k.strip()}
    jobs = [j for j in jobs if (not args.split or j["split"] == args.split)
            and (not kinds or j["kind"].split(":")[0] in kinds)]
    clips = render(jobs, args.out / "wav", args.jobs)
    with open(args.out / "clips.jsonl", "w", encoding="utf-8") as f:
        for c in clips:
            f.write(json.dumps(c, ensure_ascii=False) + "\n")
    hours = sum(c["seconds"] for c in clips) / 3600
    by_engine = collections.Counter(engine_of(c["voice"]) for c in clips)
    engines_note = ", ".join(f"{e} {n}" for e, n in by_engine.items()) or "none"
    print(f"synth: {len(clips)} clips ({hours:.2f} h; {engines_note}) -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
