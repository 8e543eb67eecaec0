"""The bundled command recogniser (models/ru-commands) through the box's own loader, on voices it never heard.

A fixed small set: menu answers of the shipped clinic_ru flow and dictated phone numbers, spoken by espeak-ng
voices held out of training (tools/asr_train/synth.HELD_OUT), sent through 8 kHz µ-law as on a call. The full
figures are in models/ru-commands/MODEL_CARD.md (`tools/asr_train/train.sh --full` then evaluate.py).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

np = pytest.importorskip("numpy")
pytest.importorskip("sherpa_onnx")

from appliance.boxproc import REPO  # noqa: E402
from appliance.flow.keywords import choose  # noqa: E402
from appliance.speech.numbers_ru import parse_digits  # noqa: E402

MODEL_DIR = REPO / "models" / "ru-commands"
pytestmark = [
    pytest.mark.skipif(not (MODEL_DIR / "model.int8.onnx").is_file(), reason="models/ru-commands is not built"),
    pytest.mark.skipif(not shutil.which("espeak-ng"), reason="espeak-ng needed"),
]

MAIN_MENU = [  # clinic_ru main_menu: (what the caller says, the key it must reach)
    ("запись к врачу", "1"), ("записаться на прием", "1"), ("вызвать врача на дом", "2"), ("врач на дом", "2"),
    ("больничный лист", "3"), ("больничный", "3"), ("прививка", "4"), ("вакцинация", "4"),
    ("анализы", "5"), ("подготовка к узи", "5"), ("платные услуги", "6"), ("полис омс", "6"),
    ("регистратура", "0"), ("оператор", "0"), ("один", "1"), ("два", "2"), ("цифру три", "3"), ("четыре", "4"),
    ("пять", "5"), ("ноль", "0"),
]
PHONES = [
    ("восемь девятьсот шестнадцать сто двадцать три сорок пять шестьдесят семь", "89161234567"),
    ("восемь девятьсот двадцать пять семьсот один двадцать два тридцать три", "89257012233"),
    ("плюс семь девятьсот три пятьсот пятьдесят пять девяносто девять ноль восемь", "79035559908"),
    ("восемь девятьсот шестьдесят семь четыреста тридцать два десять одиннадцать", "89674321011"),
    ("восемь девятьсот девяносто девять восемьсот восемьдесят восемь семьдесят семь шестьдесят шесть",
     "89998887766"),
]


@pytest.fixture(scope="module")
def asr():
    from appliance.speech import sherpa

    return sherpa.load_asr("ru-commands", "nemo_ctc", MODEL_DIR, 16000, files=["model.int8.onnx", "tokens.txt"])


def _call_audio(text: str, voice: str, tmp: Path) -> bytes:
    """espeak-ng resampled to 8 kHz (the box's windowed-sinc resampler) through a µ-law round trip: what the box
    hears from a G.711 line."""
    import audioop  # noqa: PLC0415 - deprecated, still in 3.11: the G.711 round trip in one line
    import wave

    from appliance.speech.tts import float_to_pcm16, resample

    wav = tmp / "say.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", "165", "-w", str(wav), text], check=True, capture_output=True)
    with wave.open(str(wav), "rb") as w:
        rate, pcm = w.getframerate(), w.readframes(w.getnframes())
    x = np.frombuffer(pcm, "<i2").astype(np.float32) / 32768.0
    pcm8 = float_to_pcm16(resample(x, rate, 8000))
    return audioop.ulaw2lin(audioop.lin2ulaw(pcm8, 2), 2)


def _options() -> list[tuple[str, list[str]]]:
    import yaml

    flow = yaml.safe_load((REPO / "ivr_flows" / "clinic_ru.yaml").read_text(encoding="utf-8"))
    return [(str(k), list(o.get("keywords") or [])) for k, o in flow["nodes"]["main_menu"]["options"].items()]


def test_menu_answers_in_unheard_voices_reach_the_right_option(asr, tmp_path):
    options, misses = _options(), []
    for i, (text, key) in enumerate(MAIN_MENU):
        heard = asr.transcribe(_call_audio(text, ("ru+m7", "ru+f5")[i % 2], tmp_path), 8000).text
        match = choose(heard, options)  # what the flow engine decides on this transcript
        got = match[0] if match else None
        if got != key:
            misses.append((text, heard, got))
    assert len(misses) <= 1, misses  # ≥ 95 % on this set


def test_dictated_phone_numbers_come_out_digit_exact(asr, tmp_path):
    misses = []
    for i, (text, digits) in enumerate(PHONES):
        heard = asr.transcribe(_call_audio(text, ("ru+f5", "ru+m7")[i % 2], tmp_path), 8000).text
        if parse_digits(heard) != digits:
            misses.append((text, heard))
    assert len(misses) <= 1, misses
