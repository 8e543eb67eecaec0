#!/usr/bin/env python3
"""Speech benchmark (a script, not a test): VAD cost per call-second and call capacity, TTS time to first audio
and real-time factor per engine, ASR figures when a Russian model is installed, resident memory.

    python tests/bench/bench_speech.py                      # everything installed here
    python tests/bench/bench_speech.py --models-dir DIR     # also the models of a box (ASR, Russian voices)
    python tests/bench/bench_speech.py --quick              # fewer repetitions

Targets (issue 4): >= 60 calls with live VAD real-time on 2 cores; end of speech -> menu decision p95 <= 250 ms;
a dynamic phrase's first audio <= 150 ms; resident memory with Russian ASR, TTS and VAD <= 350 MB.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import wave
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from appliance.boxproc import REPO  # noqa: E402
from appliance.speech import models  # noqa: E402
from appliance.speech.engines import packaged_silero  # noqa: E402
from appliance.speech.tts import EspeakTts, PiperTts, SherpaPiperTts, packaged_voices  # noqa: E402
from appliance.speech.vad import EnergyVad  # noqa: E402

RATE = 8000
FRAME = 160
PHRASES_EN = [
    "You are number three in line.",
    "The expected wait is about five minutes. Please stay on the line.",
]
PROMPT_EN = ("Hello, this is the city clinic. To make an appointment, press one. To call a doctor to your home, "
             "press two. For sick leave, press three. To speak to the reception desk, press zero.")
PHRASES_RU = ["Вы третий в очереди.", "Примерное время ожидания — пять минут. Оставайтесь на линии."]
MENU_RU = ["запись к врачу", "вызвать врача на дом", "больничный лист", "прививка", "анализы", "оператор",
           "восемь девятьсот шестнадцать сто двадцать три сорок пять шестьдесят семь"]


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def pct(values: list[float], p: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]


def espeak_8k(text: str, tmp: Path) -> np.ndarray:
    raw, out = tmp / "raw.wav", tmp / "8k.wav"
    subprocess.run(["espeak-ng", "-v", "ru", "-w", str(raw), text], check=True, capture_output=True)
    subprocess.run(["sox", str(raw), "-r", str(RATE), "-c", "1", "-b", "16", str(out)], check=True,
                   capture_output=True)
    with wave.open(str(out)) as w:
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")


def call_audio(seconds: float, tmp: Path) -> np.ndarray:
    """A call's worth of caller audio: speech, pauses with line noise, some music bleed."""
    rng = np.random.default_rng(0)
    parts = []
    have = shutil.which("espeak-ng") and shutil.which("sox")
    speech = [espeak_8k(t, tmp) for t in MENU_RU[:3]] if have else []
    with wave.open(str(ROOT / "voices" / "moh" / "calm.wav")) as w:
        music = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    total = 0
    i = 0
    while total < seconds * RATE:
        pause = rng.normal(0, 30, int(RATE * rng.uniform(0.5, 2.0))).astype(np.int16)
        parts.append(pause)
        parts.append(speech[i % len(speech)] if speech else music[: RATE * 2])
        parts.append((music[RATE * i % len(music):][: RATE] // 8).astype(np.int16))
        total += sum(len(p) for p in parts[-3:])
        i += 1
    return np.concatenate(parts)[: int(seconds * RATE)]


# -------------------------------------------------------------------------------------------------- VAD


def bench_vad(args: argparse.Namespace, tmp: Path) -> None:
    print("\n== VAD ==")
    audio = call_audio(20 if args.quick else 60, tmp)
    frames = [audio[i:i + FRAME].tobytes() for i in range(0, len(audio) - FRAME + 1, FRAME)]
    seconds = len(frames) * FRAME / RATE

    def cost(vad) -> float:
        vad.reset()
        t0 = time.process_time()
        for fr in frames:
            vad.feed(fr, FRAME / RATE)
        return (time.process_time() - t0) / seconds

    e = cost(EnergyVad())
    print(f"EnergyVad (pure Python): {e * 1000:.2f} ms CPU per call-second")
    model = None
    if args.models_dir:
        choice = models.choose(args.models_dir, "vad", "any")
        model = choice.path / choice.entry.files[0].path if choice else None
    model = model or packaged_silero()
    if model is None:
        print("Silero: n/a: no model (pip install --no-deps silero-vad)")
        return
    from appliance.speech.sherpa import SharedSileroModel, SharedSileroVad, SileroVad

    shared: list[SharedSileroModel] = []

    def make(engine: str):
        if engine == "sherpa":
            return SileroVad(model)
        if not shared:
            shared.append(SharedSileroModel(model))
        return SharedSileroVad(shared[0])

    def work(v) -> None:
        for fr in frames:
            v.feed(fr, FRAME / RATE)

    for engine, label in (("sherpa", "sherpa-onnx VoiceActivityDetector, a session per call"),
                          ("shared", "onnxruntime, one session shared by all calls")):
        r0 = rss_mb()
        vad = make(engine)
        c = min(cost(vad) for _ in range(1 if args.quick else 3))
        per_core = 1.0 / c
        print(f"Silero {model.name} ({label}): {c * 1000:.2f} ms CPU per call-second ({seconds:.0f} s of 8 kHz "
              "call audio in 20 ms frames, 8->16 kHz upsampling included)")
        # Threads: does the engine release the GIL? Two threads, each its own detector.
        vads = [make(engine) for _ in range(2)]
        t0 = time.perf_counter()
        work(vads[0])
        serial = time.perf_counter() - t0
        threads = [threading.Thread(target=work, args=(v,)) for v in vads]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        speedup = 2 * serial / (time.perf_counter() - t0)
        print(f"  two threads: {speedup:.2f}x one thread's throughput; live calls in real time: {per_core:.0f} per "
              f"core, ~{per_core * max(1.0, min(2.0, speedup)):.0f} in one box process on 2 cores (target >= 60)")
        r1 = rss_mb()
        pool = [make(engine) for _ in range(20)]
        per = (rss_mb() - r1) / 20
        print(f"  memory: {r1 - r0:.1f} MB for the model and first 3 detectors, then {per:.2f} MB per detector "
              f"(60 calls in the IVR: {r1 - r0 + 57 * per:.0f} MB)")
        del pool, vads, vad


# -------------------------------------------------------------------------------------------------- TTS


def bench_tts_engine(label: str, tts, phrases: list[str], prompt: str, reps: int) -> None:
    for _ in range(2):  # warm up: first runs allocate
        list(tts.stream(phrases[0]))
    firsts, rtfs = [], []
    for _ in range(reps):
        for text in phrases:
            t0 = time.perf_counter()
            it = tts.stream(text)
            next(it)
            firsts.append(time.perf_counter() - t0)
            for _ in it:
                pass
        t0 = time.perf_counter()
        audio = tts.synthesize(prompt)
        rtfs.append((time.perf_counter() - t0) / audio.seconds)
    print(f"{label}\n{'':44s} first audio p50 {statistics.median(firsts) * 1000:6.0f} ms, p95 "
          f"{pct(firsts, 95) * 1000:6.0f} ms; RTF {statistics.median(rtfs):.3f} ({audio.seconds:.1f} s prompt)")


def bench_tts(args: argparse.Namespace, tmp: Path) -> dict[str, object]:
    print("\n== TTS (8 kHz out; first audio = first sentence of a dynamic phrase) ==")
    reps = 2 if args.quick else 5
    loaded: dict[str, object] = {}
    variants = [("piper", 1, "piper"), ("piper", 2, "piper"), ("sherpa-piper", 1, "piper"),
                ("sherpa-piper", 2, "piper"), ("sherpa-piper", 1, "espeak-ng")]
    for v in packaged_voices() + _manifest_voices(args):
        for engine, threads, phonemizer in variants:
            label = f"{v.name} via {engine}, {threads} thread(s)" + (
                ", espeak-ng program phonemes" if phonemizer == "espeak-ng" else "")
            try:
                t0 = time.perf_counter()
                r0 = rss_mb()
                if engine == "piper":
                    tts = PiperTts(v.model, v.config, voice=v.name, num_threads=threads)
                else:
                    tts = SherpaPiperTts(v.model, v.tokens, config=v.config, cache_dir=tmp / "sherpa", voice=v.name,
                                         num_threads=threads, phonemizer=phonemizer)
                load = time.perf_counter() - t0
            except Exception as exc:  # noqa: BLE001 - report and go on
                print(f"{label}: n/a ({exc})")
                continue
            phrases = PHRASES_EN if v.language == "en" else PHRASES_RU
            prompt = PROMPT_EN if v.language == "en" else " ".join(PHRASES_RU * 3)
            bench_tts_engine(label, tts, phrases, prompt, reps)
            print(f"{'':44s} loaded in {load:.2f} s, +{rss_mb() - r0:.0f} MB resident")
            loaded[label] = tts
    if EspeakTts.available():
        bench_tts_engine("espeak-ng ru (subprocess per sentence)", EspeakTts("ru"), PHRASES_RU,
                         " ".join(PHRASES_RU * 3), reps)
    else:
        print("espeak-ng: n/a (apt-get install espeak-ng)")
    for v in packaged_voices()[:1]:
        bench_box_phrases(PiperTts(v.model, v.config, voice=v.name), v.language, tmp)
    return loaded


def bench_box_phrases(tts, language: str, tmp: Path) -> None:
    """The box's own path for a queue announcement: ``PromptLibrary.path`` returns the WAV the call plays. Cold:
    each phrase synthesised whole on first use; warm: after ``render_texts(queue_phrases)`` as the box does at
    start (and ``prompts render`` at image build)."""
    from appliance.speech.phrases import queue_phrases
    from appliance.speech.prompts import PromptLibrary
    from appliance.speech.tts import TtsRenderer

    texts = queue_phrases(language)
    for label in ("cold cache (rendered when a caller needs it)", "warm cache (rendered ahead at start)"):
        lib = PromptLibrary({language: {}}, tmp / "voices", tmp / f"box-cache-{label[:4]}",
                            renderers={language: TtsRenderer(tts)})
        if label.startswith("warm"):
            t0 = time.perf_counter()
            lib.render_texts({language: texts}, workers=1)
            print(f"box path, {tts.voice}: {len(texts)} queue phrases rendered ahead in "
                  f"{time.perf_counter() - t0:.1f} s (one thread)")
        ready = []
        for text in texts:
            t0 = time.perf_counter()
            lib.path(language, f"text:{text}")
            ready.append(time.perf_counter() - t0)
        print(f"box path, {tts.voice}, {label}:\n{'':44s} announcement file ready p50 "
              f"{statistics.median(ready) * 1000:7.1f} ms, p95 {pct(ready, 95) * 1000:7.1f} ms")


def _manifest_voices(args: argparse.Namespace) -> list:
    if not args.models_dir:
        return []
    from appliance.speech.tts import voice_from_dir

    out = []
    for m in models.installed(args.models_dir):
        if m.entry.kind == "tts":
            out.append(voice_from_dir(m.entry.name, m.entry.language, m.path, [f.path for f in m.entry.files]))
    return out


# -------------------------------------------------------------------------------------------------- ASR


def bench_asr(args: argparse.Namespace, tmp: Path) -> object | None:
    print("\n== ASR ==")
    from appliance.flow.keywords import best_match

    # Without --models-dir: the models that ship with the box (ru-commands), found whatever the directory.
    found = [m for m in models.installed(args.models_dir or tmp / "no-models") if m.entry.kind == "asr" and
             m.entry.language.startswith("ru")]
    if not found:
        print("ASR: n/a: no Russian model installed (pass --models-dir with t-one-ru, gigaam-v2-ctc-ru, "
              "vosk-small-streaming-ru or ru-commands)")
        _bench_asr_glue(tmp)
        return None
    if not (shutil.which("espeak-ng") and shutil.which("sox")):
        print("ASR: n/a: espeak-ng and sox make the test utterances")
        return None
    from appliance.speech.sherpa import load_asr

    utts = [espeak_8k(t, tmp) for t in MENU_RU]
    options = [("1", ["запись", "к врачу"]), ("2", ["вызвать врача", "на дом"]), ("3", ["больничный"]),
               ("4", ["прививка"]), ("5", ["анализы"]), ("0", ["оператор"])]
    asr = None
    for m in found:
        e = m.entry
        r0 = rss_mb()
        t0 = time.perf_counter()
        asr = load_asr(e.name, e.family, m.path, e.sample_rate, files=[f.path for f in e.files])
        print(f"{e.name} ({e.family}): loaded in {time.perf_counter() - t0:.1f} s, +{rss_mb() - r0:.0f} MB")
        lat, rtf, cpu = [], [], 0.0
        for _ in range(1 if args.quick else 3):
            for u in utts:
                s = asr.stream()
                c0 = time.process_time()
                t0 = time.perf_counter()
                pcm = u.tobytes()
                for i in range(0, len(pcm), 2 * FRAME):  # live: 20 ms frames
                    s.feed(pcm[i:i + 2 * FRAME])
                t_end = time.perf_counter()  # end of speech: the VAD's hangover is not counted here
                t = s.finish()
                best_match(t.text, options)
                done = time.perf_counter()
                lat.append(done - t_end)
                rtf.append((done - t0) / (len(u) / RATE))
                cpu += time.process_time() - c0
        audio_s = sum(len(u) for u in utts) / RATE * (1 if args.quick else 3)
        print(f"  RTF {statistics.median(rtf):.3f}; end of speech -> decision p50 {pct(lat, 50) * 1000:.0f} ms, "
              f"p95 {pct(lat, 95) * 1000:.0f} ms (target 250); ~{2 * audio_s / cpu:.0f} recognitions real-time "
              "on 2 cores")
        if getattr(asr, "scores", None) is not None:
            _bench_spot(asr, utts, args)
        for text, u in zip(MENU_RU, utts, strict=True):
            print(f"  {text!r} -> {asr.transcribe(u.tobytes()).text!r}")
    return asr


def _bench_spot(asr, utts: list[np.ndarray], args: argparse.Namespace) -> None:  # noqa: ANN001 - a SherpaAsr
    """The second pass for an answer whose words name no option: the model again through onnxruntime, then
    every phrase of clinic_ru's main menu (the largest shipped menu) aligned against its scores."""
    import yaml

    flow = yaml.safe_load((REPO / "ivr_flows" / "clinic_ru.yaml").read_text(encoding="utf-8"))
    options = [(str(k), list(o.get("keywords") or [])) for k, o in flow["nodes"]["main_menu"]["options"].items()]
    lat = []
    for _ in range(1 if args.quick else 3):
        for u in utts:
            t0 = time.perf_counter()
            asr.spot(u.tobytes(), RATE, options)
            lat.append(time.perf_counter() - t0)
    phrases = sum(len(k) for _, k in options)
    print(f"  menu spotting in the scores ({phrases} phrases; only answers whose words name no option): "
          f"p50 {pct(lat, 50) * 1000:.0f} ms, p95 {pct(lat, 95) * 1000:.0f} ms more")


def _bench_asr_glue(tmp: Path) -> None:
    """The engine code's own cost (resampling, sherpa's fbank, greedy CTC) with a 12 KB dummy model."""
    try:
        from appliance.speech.sherpa import load_asr
        from tests.unit.test_speech_asr import tiny_ctc
    except Exception as exc:  # noqa: BLE001
        print(f"ASR glue: n/a ({exc})")
        return
    d = tmp / "tiny"
    tiny_ctc(d)
    asr = load_asr("tiny", "nemo_ctc", d, 16000)
    x = (np.random.default_rng(0).normal(0, 3000, RATE * 2)).astype(np.int16).tobytes()
    lat = []
    for _ in range(20):
        s = asr.stream()
        for i in range(0, len(x), 2 * FRAME):
            s.feed(x[i:i + 2 * FRAME])
        t0 = time.perf_counter()
        s.finish()
        lat.append(time.perf_counter() - t0)
    print(f"ASR glue with a dummy 12 KB NeMo-CTC model (not a recogniser): finish() of a 2 s utterance "
          f"p50 {pct(lat, 50) * 1000:.1f} ms, p95 {pct(lat, 95) * 1000:.1f} ms (features + resampling overhead)")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models-dir", type=Path, help="a box's models directory (ASR and Russian voices)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--child-memory", metavar="LANG", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child_memory:
        return child_memory(args.child_memory, args.models_dir)
    import platform

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    try:
        import sherpa_onnx

        print(f"sherpa-onnx {sherpa_onnx.__version__}")
    except ImportError:
        print("sherpa-onnx: not installed")
    base = rss_mb()
    print(f"resident memory at start: {base:.0f} MB")
    with tempfile.TemporaryDirectory() as tmp:
        bench_vad(args, Path(tmp))
        loaded = bench_tts(args, Path(tmp))
        asr = bench_asr(args, Path(tmp))
        del loaded, asr
    print("\n== memory of a box's speech (fresh process, the start-up path: engines.load_engines) ==")
    for language in ("ru", "en"):
        cmd = [sys.executable, __file__, "--child-memory", language]
        if args.models_dir:
            cmd += ["--models-dir", str(args.models_dir)]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        print(out.stdout.rstrip() or out.stderr[-2000:])
    return 0


def child_memory(language: str, models_dir: Path | None) -> int:
    """Resident memory as a box would load its speech for ``language``; 60 calls in the IVR."""
    from appliance.speech.engines import load_engines

    r0 = rss_mb()
    with tempfile.TemporaryDirectory() as tmp:
        eng = load_engines(models_dir or Path(tmp), language, max_vad=60)
        r1 = rss_mb()
        vads = [eng.new_vad() for _ in range(60)]
        if eng.tts is not None:
            eng.tts.synthesize("Один. Два." if language == "ru" else "One. Two.")
        r2 = rss_mb()
    print(f"[{language}] python + appliance imports {r0:.0f} MB; engines loaded {r1:.0f} MB; with 60 calls' VAD "
          f"instances ({sum(type(v).__name__ != 'EnergyVad' for v in vads)} Silero) and a first synthesis "
          f"{r2:.0f} MB")
    for line in eng.lines:
        print(f"[{language}]   {line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
