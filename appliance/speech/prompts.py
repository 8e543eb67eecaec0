"""Prompt audio: a clinic's own recordings win; otherwise texts are rendered with a TTS engine and cached.

The cache key is (engine, voice, rate, text), so only changed texts re-render. Files are 16-bit mono WAV at
the telephony rate (the conference bridge's clock), so pjmedia never resamples prompts during a call.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

from appliance.errors import SpeechError

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
    """Maps (language, prompt id) to a WAV file, rendering missing ones into the cache directory."""

    def __init__(
        self,
        catalog: Mapping[str, Mapping[str, str]],
        voices_dir: Path,
        cache_dir: Path,
        variables: Mapping[str, str] | None = None,
        renderer: EspeakRenderer | None = None,
    ) -> None:
        self.catalog = catalog
        self.voices_dir = voices_dir
        self.cache_dir = cache_dir
        self.variables = dict(variables or {})
        self.renderer = renderer or EspeakRenderer()

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
        r = self.renderer
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
        if not out.is_file():
            out.parent.mkdir(parents=True, exist_ok=True)
            self.renderer.render(language, text, out)
        return out

    def render_all(self, progress: Callable[[int, int, str], None] | None = None) -> tuple[int, int]:
        """Render every prompt of every language; returns (rendered now, already cached)."""
        jobs = [(lang, pid) for lang, items in sorted(self.catalog.items()) for pid in sorted(items)]
        rendered = cached = 0
        for n, (lang, pid) in enumerate(jobs, 1):
            if self.recorded(lang, pid) is not None or self._cached(lang, self.text(lang, pid)).is_file():
                cached += 1
            else:
                self.ensure(lang, self.text(lang, pid))
                rendered += 1
            if progress:
                progress(n, len(jobs), f"{lang}/{pid}")
        return rendered, cached
