"""Prompt audio: a clinic's own recordings win; otherwise texts are rendered with a TTS engine and cached.

Each language has its renderer: the neural voice the box loaded for it (``tts.TtsRenderer``, see
``engines.SpeechEngines.prompt_renderers``) or espeak-ng. The cache key is (engine, voice, rate, speed, text),
so only changed texts (or a changed voice) re-render. Files are 16-bit mono WAV at the telephony rate (the
conference bridge's clock), so pjmedia never resamples prompts during a call.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from appliance.errors import SpeechError
from appliance.speech.base import base_language

_LOGGER = logging.getLogger(__name__)

_ESPEAK_VOICES = {"ru": "ru", "en": "en-us"}


class EspeakRenderer:
    """Renders text with Debian's espeak-ng (Russian and English), resampled with sox."""

    name = "espeak-ng"

    def __init__(self, rate: int = 8000, speed: int = 160) -> None:
        self.rate = rate
        self.speed = speed

    def available(self) -> bool:
        return bool(shutil.which("espeak-ng") and shutil.which("sox"))

    def voice(self, language: str) -> str:
        return _ESPEAK_VOICES.get(language, language)

    def render(self, language: str, text: str, out: Path) -> None:
        if not self.available():
            raise SpeechError("espeak-ng and sox are needed to render prompts: apt-get install espeak-ng sox")
        with tempfile.TemporaryDirectory() as tmp:
            raw = Path(tmp) / "raw.wav"
            subprocess.run(
                ["espeak-ng", "-v", self.voice(language), "-s", str(self.speed), "-w", str(raw), text],
                check=True,
                capture_output=True,
            )
            part = out.with_name(f"{out.stem}.{os.getpid()}.part.wav")  # boxes may share a cache
            # A short fade and 150 ms of tail silence keep prompts from clicking into each other.
            subprocess.run(
                ["sox", str(raw), "-r", str(self.rate), "-c", "1", "-b", "16", "-e", "signed-integer",
                 str(part), "pad", "0", "0.15"],
                check=True,
                capture_output=True,
            )
            os.replace(part, out)


MOH_DIR = "moh"


class PromptLibrary:
    """Maps (language, prompt id) to a WAV file, rendering missing ones into the cache directory.

    ``renderers`` maps a language to its renderer (a neural voice that speaks it); other languages use
    ``renderer`` (espeak-ng by default).
    """

    def __init__(
        self,
        catalog: Mapping[str, Mapping[str, str]],
        voices_dir: Path,
        cache_dir: Path,
        variables: Mapping[str, str] | None = None,
        renderer: Any = None,
        renderers: Mapping[str, Any] | None = None,
    ) -> None:
        self.catalog = catalog
        self.voices_dir = voices_dir
        self.cache_dir = cache_dir
        self.variables = dict(variables or {})
        self.renderer = renderer or EspeakRenderer()
        self.renderers = {base_language(k): v for k, v in (renderers or {}).items()}
        self._locks: dict[Path, threading.Lock] = {}
        self._locks_lock = threading.Lock()

    def renderer_for(self, language: str) -> Any:
        """The renderer that speaks ``language``: its neural voice if the box has one, else the default."""
        return self.renderers.get(base_language(language), self.renderer)

    def voice(self, language: str) -> str:
        """Which engine and voice speak ``language`` (for logs and the CLI)."""
        r = self.renderer_for(language)
        return f"{r.name} {r.voice(base_language(language))}"

    def text(self, language: str, prompt_id: str) -> str:
        try:
            template = self.catalog[language][prompt_id]
        except KeyError:
            raise SpeechError(f"prompt '{prompt_id}' is not in voices/{language}/prompts.yaml") from None
        try:
            return template.format(**self.variables)
        except (KeyError, IndexError, ValueError):
            return template

    def recorded(self, language: str, prompt_id: str) -> Path | None:
        """A clinic's own recording (voices/<lang>/<id>.wav) replaces the synthetic voice."""
        path = self.voices_dir / language / f"{prompt_id}.wav"
        return path if path.is_file() else None

    def _cached(self, language: str, text: str) -> Path:
        r = self.renderer_for(language)
        key = hashlib.sha256(f"{r.name}|{r.voice(language)}|{r.rate}|{r.speed}|{text}".encode()).hexdigest()
        return self.cache_dir / language / f"{key[:24]}.wav"

    def music(self) -> list[Path]:
        """Music on hold (queue and transfer waits): every WAV under ``<voices>/moh``, in name order."""
        moh = self.voices_dir / MOH_DIR
        files = sorted(moh.glob("*.wav"))
        if not files:
            raise SpeechError(f"no music on hold in {moh}; put WAV files there (tools/make_moh.sh)")
        return files

    def path(self, language: str, prompt_id: str) -> Path:
        """The file to play for a prompt id or for ``text:...`` (dynamic text); renders if needed."""
        if prompt_id.startswith("text:"):
            return self.ensure(language, prompt_id[5:])
        own = self.recorded(language, prompt_id)
        if own is not None:
            return own
        return self.ensure(language, self.text(language, prompt_id))

    def ensure(self, language: str, text: str) -> Path:
        out = self._cached(language, text)
        if out.is_file():
            return out
        with self._locks_lock:  # two calls asking for the same new phrase render it once
            lock = self._locks.setdefault(out, threading.Lock())
        with lock:
            if not out.is_file():
                out.parent.mkdir(parents=True, exist_ok=True)
                self.renderer_for(language).render(language, text, out)
        with self._locks_lock:
            self._locks.pop(out, None)
        return out

    def render_all(self, progress: Callable[[int, int, str], None] | None = None,
                   workers: int | None = None) -> tuple[int, int]:
        """Render every prompt of every language; returns (rendered now, already cached).

        Missing prompts render on ``workers`` threads (default: one per core, at most 4): a neural voice
        runs one onnxruntime thread per sentence, so two cores render an English catalog twice as fast.
        """
        return self._render([(lang, self.text(lang, pid), f"{lang}/{pid}", self.recorded(lang, pid) is not None)
                             for lang, items in sorted(self.catalog.items()) for pid in sorted(items)],
                            progress, workers)

    def render_texts(self, texts: Mapping[str, Iterable[str]], progress: Callable[[int, int, str], None] | None = None,
                     workers: int | None = None) -> tuple[int, int]:
        """Render dynamic phrases ahead (language -> texts, e.g. ``phrases.queue_phrases``), as ``render_all``."""
        return self._render([(lang, text, f"{lang}: {text}", False) for lang, items in sorted(texts.items())
                             for text in items], progress, workers)

    def _render(self, jobs: list[tuple[str, str, str, bool]], progress: Callable[[int, int, str], None] | None,
                workers: int | None) -> tuple[int, int]:
        """(language, text, label, recorded by the clinic) jobs: render the missing ones; (rendered, cached)."""
        todo = []
        done = 0
        for lang, text, what, recorded in jobs:
            if recorded or self._cached(lang, text).is_file():
                done += 1
                if progress:
                    progress(done, len(jobs), what)
            else:
                todo.append((lang, text, what))
        cached = done
        workers = max(1, min(workers or min(4, os.cpu_count() or 1), len(todo) or 1))
        with ThreadPoolExecutor(workers, thread_name_prefix="prompt") as pool:
            futures = {pool.submit(self.ensure, lang, text): what for lang, text, what in todo}
            for fut in as_completed(futures):
                fut.result()  # a render that fails raises here (the box does not start without its prompts)
                done += 1
                if progress:
                    progress(done, len(jobs), futures[fut])
        return len(todo), cached
