"""Start-up: load the speech engines that are installed (VAD, ASR, TTS) and say which run and why.

``load_engines`` never fails the box: a missing or broken model leaves that capability on its fallback
(energy VAD, no spoken menu choices, espeak-ng) and the reason goes into ``lines``, which the app logs at
start, e.g. "ASR: none installed; spoken menu choices disabled". ``python -m appliance.speech.engines
--models-dir DIR`` prints the same lines.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.errors import SpeechError
from appliance.speech import models
from appliance.speech.base import TELEPHONY_RATE, base_language
from appliance.speech.vad import EnergyVad, Vad

_LOGGER = logging.getLogger(__name__)

NO_SHERPA = "sherpa-onnx is not installed (pip install 'registratura[speech]')"


def _sherpa() -> Any:
    """The sherpa module, or None when sherpa-onnx (or numpy) is missing."""
    try:
        from appliance.speech import sherpa
    except ImportError as exc:
        _LOGGER.debug("speech engines unavailable: %s", exc)
        return None
    return sherpa


def packaged_silero() -> Path | None:
    """silero_vad.onnx from the pip package silero-vad (found without importing it: it imports torch)."""
    spec = importlib.util.find_spec("silero_vad")
    for root in (spec.submodule_search_locations or []) if spec else []:
        data = Path(root) / "data"
        for name in ("silero_vad_16k_op15.onnx", "silero_vad.onnx"):  # the 16 kHz-only file: half the memory
            if (data / name).is_file():
                return data / name
    return None


@dataclass
class SpeechEngines:
    """What the box speaks and listens with. ``new_vad`` gives each call its detector."""

    lines: list[str] = field(default_factory=list)
    asr: Any = None  # base.Asr or None: spoken menu choices disabled
    tts: Any = None  # base.Tts or None: only pre-rendered prompts (the voice of the box's main language)
    voices: dict[str, Any] = field(default_factory=dict)  # language -> base.Tts picked for it (tts included)
    vad_model: Path | None = None
    vad_pool: Any = None  # sherpa.SileroVadPool or None: EnergyVad for every call
    vad_options: dict[str, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def spoken_menus(self) -> bool:
        return self.asr is not None

    def new_vad(self) -> Vad:
        """A Silero detector while the pool has one, else the energy detector (same protocol)."""
        if self.vad_pool is not None:
            vad = self.vad_pool.acquire()
            if vad is not None:
                return vad
        return EnergyVad()

    def release_vad(self, vad: Vad) -> None:
        if self.vad_pool is not None and not isinstance(vad, EnergyVad):
            self.vad_pool.release(vad)

    def prompt_renderers(self, rate: int | None = None) -> dict[str, Any]:
        """Renderers for ``PromptLibrary``: a language whose picked voice is a neural one that speaks it gets
        that voice; every other language (espeak-ng picked, or a voice of another language) is left to the
        library's espeak-ng renderer."""
        out: dict[str, Any] = {}
        for lang, tts in self.voices.items():
            if tts is None or tts.name == "espeak-ng" or base_language(tts.language) != base_language(lang):
                continue
            from appliance.speech.tts import TtsRenderer  # numpy: only when a neural voice loaded

            out[base_language(lang)] = TtsRenderer(tts, rate or TELEPHONY_RATE)
        return out

    def log(self, logger: logging.Logger = _LOGGER) -> None:
        for line in self.lines:
            logger.info("%s", line)


def _load_vad(eng: SpeechEngines, sherpa: Any, models_dir: Path | None, manifest: Any, max_vad: int,
              vad_options: dict[str, Any], vad_engine: str) -> None:
    choice = models.choose(models_dir, "vad", "any", manifest) if models_dir is not None else None
    path, source = None, ""
    if choice is not None:
        path, source = choice.path / choice.entry.files[0].path, choice.entry.name
    elif (pkg := packaged_silero()) is not None:
        path, source = pkg, "pip package silero-vad"
    if path is None:
        eng.lines.append("VAD: energy detector: no Silero model installed (`registratura models fetch "
                         "silero-vad` or pip install --no-deps silero-vad)")
        return
    if sherpa is None:
        eng.lines.append(f"VAD: energy detector: {NO_SHERPA}")
        return
    failed = []
    for engine in dict.fromkeys((vad_engine, "sherpa")):  # the shared session needs onnxruntime and a v5 model
        try:
            pool = sherpa.SileroVadPool(path, max_vad, engine, **vad_options)
            pool.release(pool.acquire())  # load one now: a broken model shows at start, not on the first call
        except (SpeechError, RuntimeError, OSError, ImportError) as exc:
            failed.append(f"{engine}: {exc}")
            continue
        how = ("one onnxruntime session shared by all calls" if engine == "shared"
               else f"sherpa-onnx {sherpa.VERSION}, a session per call")
        eng.vad_model, eng.vad_pool, eng.vad_options = path, pool, vad_options
        eng.lines.append(f"VAD: Silero ({source}, {path.name}; {how}), up to {max_vad} calls at once (then the "
                         "energy detector)" + (f" (skipped {'; '.join(failed)})" if failed else ""))
        return
    eng.lines.append(f"VAD: energy detector: Silero failed to load ({'; '.join(failed)})")


def _load_asr(eng: SpeechEngines, sherpa: Any, models_dir: Path | None, language: str, manifest: Any,
              probe: bool, num_threads: int) -> None:
    if models_dir is None:
        eng.lines.append(models.describe("asr", None))
        return
    want = base_language(language)
    found = [m for m in models.installed(models_dir, manifest)
             if m.entry.kind == "asr" and m.entry.language.split("_")[0].lower() in (want, "any")]
    if not found:
        eng.lines.append(models.describe("asr", None))
        return
    if sherpa is None:
        eng.lines.append(f"ASR: none loaded: {NO_SHERPA}; spoken menu choices disabled")
        return
    failed: list[str] = []
    for m in found:
        e = m.entry
        t0 = time.perf_counter()
        try:
            asr = sherpa.load_asr(e.name, e.family, m.path, e.sample_rate, files=[f.path for f in e.files],
                                  num_threads=num_threads, safe=probe)
        except (SpeechError, RuntimeError, OSError, ValueError) as exc:
            failed.append(f"{e.name}: {exc}")
            continue
        eng.asr = asr
        line = f"{models.describe('asr', m)}, loaded in {time.perf_counter() - t0:.1f} s; spoken menu choices enabled"
        if getattr(asr, "scores", None) is not None:
            line += " (answers whose words slip are spotted in its scores)"
        eng.lines.append(line + (f" (skipped {'; '.join(failed)})" if failed else ""))
        return
    eng.lines.append(f"ASR: none loaded ({'; '.join(failed)}); spoken menu choices disabled")


def load_engines(models_dir: str | Path | None, language: str = "ru", *, manifest: Any = None,
                 kinds: Sequence[str] = ("vad", "asr", "tts"), max_vad: int = 32, probe: bool = True,
                 num_threads: int = 1, vad_options: dict[str, Any] | None = None, vad_engine: str = "shared",
                 tts_cache_dir: Path | None = None, tts_languages: Sequence[str] = ()) -> SpeechEngines:
    """Load the best installed engine of each kind for ``language``; the reasons go into ``.lines``.

    ``tts_languages``: more languages to pick a voice for (the box's prompt languages); each gets its own
    "TTS" line naming the language, and ``voices`` maps every language to its engine.

    ``vad_engine``: "shared" (one onnxruntime Silero session for every call: ~16 MB in all) or "sherpa"
    (sherpa_onnx.VoiceActivityDetector: ~3.5 MB a call); "shared" falls back to "sherpa" if it cannot load.
    """
    eng = SpeechEngines()
    models_dir = Path(models_dir) if models_dir is not None else None
    man = None
    if models_dir is not None:
        try:
            man = manifest if isinstance(manifest, models.Manifest) else models.load_manifest(manifest)
        except SpeechError as exc:
            eng.lines.append(f"models: manifest unreadable ({exc}); looking only at packaged models")
            models_dir = None
    sherpa = _sherpa() if ("vad" in kinds or "asr" in kinds) else None
    if "vad" in kinds:
        _load_vad(eng, sherpa, models_dir, man, max_vad, dict(vad_options or {}), vad_engine)
    if "asr" in kinds:
        _load_asr(eng, sherpa, models_dir, language, man, probe, num_threads)
    if "tts" in kinds:
        try:
            from appliance.speech import tts as tts_mod
        except ImportError as exc:
            eng.lines.append(f"TTS: pre-rendered prompts only (numpy missing: {exc})")
        else:
            langs = list(dict.fromkeys(base_language(x) for x in (language, *tts_languages)))
            for lang in langs:
                tts, line = tts_mod.best_tts(lang, models_dir, manifest=man, num_threads=num_threads,
                                             cache_dir=tts_cache_dir)
                eng.voices[lang] = tts
                eng.lines.append(line)
            eng.tts = eng.voices[langs[0]]
    return eng


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="load the speech engines and say which run and why")
    p.add_argument("--models-dir", type=Path, help="the box's models directory")
    p.add_argument("--language", default="ru")
    p.add_argument("--no-probe", action="store_true", help="do not test-load models in a child process first")
    p.add_argument("--prompt-languages", default="", help="more languages to pick a voice for, e.g. en "
                   "(the box picks one for every voices/<language>/)")
    args = p.parse_args(argv)
    eng = load_engines(args.models_dir, args.language, probe=not args.no_probe,
                       tts_languages=[x.strip() for x in args.prompt_languages.split(",") if x.strip()])
    for line in eng.lines:
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
