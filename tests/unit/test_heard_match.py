"""The tests' ear (tests.helpers.heard_match): a prompt heard with one jitter-buffer slip in it is still heard;
another prompt, or the prompt's own later words, is not."""

from __future__ import annotations

import numpy as np
import pytest

from appliance.speech.prompts import EspeakRenderer
from tests.helpers import best_match, heard_match, read_wav

RATE = 8000


@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
    renderer = EspeakRenderer()
    if not renderer.available():
        pytest.skip("espeak-ng and sox are needed")
    out = tmp_path_factory.mktemp("heard")
    texts = {"goodbye": "Вас не слышно. Пожалуйста, перезвоните. До свидания.",
             "menu": "Для записи к врачу нажмите один, для вызова врача на дом нажмите два."}
    found = {}
    for name, text in texts.items():
        renderer.render("ru", text, out / f"{name}.wav")
        found[name] = read_wav(out / f"{name}.wav")[1].astype(np.float64)
    return found


def _call(*parts: np.ndarray) -> np.ndarray:
    """What a caller's recorder holds: a little line noise around the parts, one after another."""
    rng = np.random.default_rng(7)
    audio = np.concatenate([np.zeros(RATE // 2), *parts, np.zeros(RATE // 2)])
    return audio + rng.normal(0, 20, len(audio))


def _speech_start(wav: np.ndarray) -> int:
    return int(np.flatnonzero(np.abs(wav) > 500)[0])


@pytest.mark.parametrize("slip", ["dropped 10 ms", "dropped 20 ms", "added 10 ms", "added 20 ms"])
def test_a_prompt_heard_with_one_slip_is_heard(prompts, slip):
    wav = prompts["goodbye"]
    needle = wav[: int(0.6 * RATE)]
    at = _speech_start(wav) + int(0.2 * RATE)  # in the middle of a word, where a slip hurts most
    frame = 80 if "10" in slip else 160
    if slip.startswith("dropped"):
        heard = np.concatenate((wav[:at], wav[at + frame:]))
    else:
        heard = np.concatenate((wav[:at], np.zeros(frame), wav[at:]))
    audio = _call(prompts["menu"], heard)

    straight, _ = best_match(audio, needle)
    corr, lag = heard_match(audio, needle)
    assert straight < 0.9  # the slip does hurt a straight correlation
    assert corr > 0.95
    assert lag == RATE // 2 + len(prompts["menu"])  # found where it starts, not where its longer side lines up


def test_another_prompt_or_later_words_are_not_taken_for_it(prompts):
    wav = prompts["goodbye"]
    needle = wav[: int(0.6 * RATE)]
    other, _ = heard_match(_call(prompts["menu"]), needle)
    assert other < 0.5
    later = wav[int(0.6 * RATE):]  # the prompt without its opening
    corr, _ = heard_match(_call(prompts["menu"], later), needle)
    assert corr < 0.5


def test_the_first_finder_is_used_for_the_place(prompts):
    wav = prompts["goodbye"]
    needle = wav[: int(0.6 * RATE)]
    audio = _call(wav, prompts["menu"], wav)  # heard twice: best_match alone takes the first

    def in_second_half(haystack: np.ndarray, n: np.ndarray) -> tuple[float, int]:
        corr, at = best_match(haystack[len(haystack) // 2:], n)
        return corr, len(haystack) // 2 + int(at)

    corr, lag = heard_match(audio, needle, first=in_second_half)
    assert corr > 0.99 and lag == RATE // 2 + len(wav) + len(prompts["menu"])
