"""The bundled command recogniser (models/ru-commands) through the box's own loader, on voices it never heard.

A fixed small set, loaded as the box loads it (speech.engines.load_engines): menu answers of the shipped
clinic_ru flow and dictated phone numbers, spoken by espeak-ng voices held out of training
(tools/asr_train/synth.HELD_OUT), sent through 8 kHz µ-law as on a call. The full figures are in
models/ru-commands/MODEL_CARD.md (`tools/asr_train/train.sh --full` then evaluate.py).
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
    ("восемь четыреста девяносто пять двести тридцать четыре пятьдесят шесть семьдесят восемь", "84952345678"),
    ("восемь девятьсот пятнадцать ноль ноль один двенадцать тринадцать", "89150011213"),
    ("восемь девять один шесть один два три четыре пять шесть семь", "89161234567"),
    ("восемь девятьсот восемьдесят пять шестьсот сорок девяносто ноль ноль", "89856409000"),
    ("восемь девятьсот семьдесят семь сто восемнадцать пятнадцать сорок", "89771181540"),
]


@pytest.fixture(scope="module")
def asr(tmp_path_factory):
    """The recogniser the box picks for a Russian flow with nothing else installed (its speech engine loader)."""
    from appliance.speech.engines import load_engines

    eng = load_engines(tmp_path_factory.mktemp("models"), "ru", kinds=("asr",))
    assert eng.asr is not None and eng.asr.name == "ru-commands", eng.lines
    return eng.asr


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
    assert len(misses) <= len(PHONES) // 10, misses  # ≥ 90 % digit-exact


# Held-out answers (voice, words per minute, pitch as tools/asr_train/synth renders them) whose greedy transcript
# slipped a letter and so named no option ("ежим", "оулст", "мне нужноузн"): the box then spots the menu's
# phrases in the model's scores (speech/ctc.py) and should still reach the option.
SLIPS = [
    ("main_menu", "можно окулист", "ru+m7", 195, 40, "1"), ("main_menu", "мне нужно на дом", "ru+m8", 210, 50, "2"),
    ("main_menu", "узи", "ru+f5", 160, 40, "5"), ("main_menu", "мне нужно узи", "ru+m7", 125, 60, "5"),
    ("main_menu", "оплата", "ru+f5", 195, 60, "6"), ("main_menu", "ну дмс", "ru+m7", 195, 25, "6"),
    ("tests_menu", "кровь", "ru", 210, 40, "1"), ("tests_menu", "узи", "ru+m8", 210, 75, "2"),
    ("more_menu", "а назад", "ru", 210, 50, "*"),
]
NOT_ANSWERS = ["алло", "да", "нет", "подождите", "спасибо до свидания", "какая сегодня погода",
               "у меня болит голова"]


def _menu(node: str) -> list[tuple[str, list[str]]]:
    import yaml

    flow = yaml.safe_load((REPO / "ivr_flows" / "clinic_ru.yaml").read_text(encoding="utf-8"))
    return [(str(k), list(o.get("keywords") or [])) for k, o in flow["nodes"][node]["options"].items()]


def _decide(asr, pcm: bytes, options) -> str | None:  # noqa: ANN001
    """What the box decides on an answer: the words first (flow.keywords), then the scores (SherpaAsr.spot)."""
    found = choose(asr.transcribe(pcm, 8000).text, options)
    if found:
        return found[0]
    spotted = asr.spot(pcm, 8000, options)
    return spotted.key if spotted else None


def test_answers_whose_words_slip_still_reach_their_option(asr):
    from appliance.speech.tts import float_to_pcm16, resample
    from tools.asr_train import synth

    assert asr.scores is not None, "ru-commands should give the spotter its scores (kaldi-native-fbank installed?)"
    got = []
    for node, text, voice, wpm, pitch, key in SLIPS:
        call = synth.ulaw_roundtrip(resample(synth.espeak(text, voice, wpm, pitch), 16000, 8000))
        got.append((text, key, _decide(asr, float_to_pcm16(call), _menu(node))))
    assert not [g for g in got if g[2] not in (g[1], None)], got  # never a wrong branch
    assert sum(g[2] == g[1] for g in got) >= len(SLIPS) - 1, got


def test_speech_that_answers_no_menu_is_not_sent_down_a_branch(asr, tmp_path):
    options = _menu("main_menu")
    chosen = [(text, key) for i, text in enumerate(NOT_ANSWERS)
              if (key := _decide(asr, _call_audio(text, ("ru+m7", "ru+f5")[i % 2], tmp_path), options))]
    assert len(chosen) <= 1, chosen


# A read-back's answer ("you entered ... is that right?"), said in held-out voices at a brisk pace: decided as the
# box decides it, the words first (keywords.yes_no), then, for words that are neither, a yes or a no spotted in
# the model's scores (the session's _spot with keywords.YES_NO_PHRASES).
READ_BACK_ANSWERS = [("да, верно", True), ("да", True), ("верно", True), ("да, правильно", True),
                     ("конечно", True), ("нет", False), ("нет, неверно", False), ("неправильно", False)]


def test_read_back_answers_are_taken_as_yes_or_no_and_a_no_never_as_a_yes(asr):
    from appliance.flow.keywords import YES_NO_PHRASES, yes_no
    from appliance.speech.tts import float_to_pcm16, resample
    from tools.asr_train import synth

    got = []
    for i, (text, want) in enumerate(READ_BACK_ANSWERS * 2):
        voice, wpm = (("ru+m7", 195), ("ru+f5", 210), ("ru", 210))[i % 3]
        pcm = float_to_pcm16(synth.ulaw_roundtrip(resample(synth.espeak(text, voice, wpm, 50), 16000, 8000)))
        heard = asr.transcribe(pcm, 8000).text
        answer = yes_no(heard)
        if answer is None:
            spotted = asr.spot(pcm, 8000, YES_NO_PHRASES)
            answer = None if spotted is None else spotted.key == "yes"
        got.append((text, voice, wpm, heard, answer, want))
    assert not [g for g in got if g[4] is True and not g[5]], got  # a no is never taken as a yes
    assert sum(g[4] == g[5] for g in got) >= len(got) - 1, got
