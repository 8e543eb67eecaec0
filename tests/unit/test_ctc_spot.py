"""Spotting menu phrases in CTC scores (speech/ctc.py) on hand-made per-frame log-probabilities."""

from __future__ import annotations

import math

import pytest

np = pytest.importorskip("numpy")

from appliance.speech.ctc import costs, log_softmax, spot  # noqa: E402

TOKENS = {"<blk>": 0, "▁": 1, **{ch: i + 2 for i, ch in enumerate("абвгдежзийклмнопрстуфхцчшщъыьэюя")}}
MENU = [("1", ["режим", "часы работы"]), ("2", ["запись"]), ("5", ["узи"])]


def frames(*columns: dict[str, float]) -> np.ndarray:
    """Log-probabilities, one frame per dict of token → probability (the rest shared by all other tokens)."""
    out = np.full((len(columns), len(TOKENS)), 1e-4)
    for t, col in enumerate(columns):
        for tok, p in col.items():
            out[t, TOKENS[tok]] = p
    return np.log(out / out.sum(axis=1, keepdims=True))


def greedy(*letters: str, runner_up: dict[int, str] | None = None, p: float = 0.9) -> np.ndarray:
    """Frames that spell ``letters`` with blanks between; ``runner_up``: frame index → a second-best letter."""
    cols: list[dict[str, float]] = [{"<blk>": 0.95}]
    for ch in letters:
        cols.append({ch: p})
        cols.append({"<blk>": 0.95})
    for i, ch in (runner_up or {}).items():
        cols[i][ch] = 1.0 - p - 0.01
    return frames(*cols)


def ids(word: str) -> list[int]:
    return [TOKENS[ch] for ch in word]


def test_a_phrase_the_scores_spell_exactly_costs_nothing_wherever_it_is():
    logp = greedy(*"мнеузи")
    assert costs(logp, [ids("узи")], 0)[0] == pytest.approx(0.0, abs=1e-9)


def test_every_letter_the_model_must_be_talked_into_costs_more():
    logp = greedy(*"ежим")
    near, far = costs(logp, [ids("жим"), ids("жук")], 0)
    assert near < 1e-9 < far
    one, two = costs(greedy(*"узи"), [ids("уза"), ids("ыза")], 0)
    assert 0 < one < two


def test_a_doubled_letter_needs_a_blank_between_its_frames():
    together = frames({"с": 0.9}, {"с": 0.9})  # "сс" with no blank between is one "с" to CTC
    apart = frames({"с": 0.9}, {"<blk>": 0.9}, {"с": 0.9})
    assert costs(apart, [ids("сс")], 0)[0] < 1e-9 < costs(together, [ids("сс")], 0)[0]


def test_a_phrase_longer_than_the_utterance_cannot_fit():
    [c] = costs(greedy(*"уз"), [ids("узиузиузи")], 0)
    assert c > 50 or math.isinf(c)


def test_a_slipped_first_letter_still_finds_its_option():
    # greedy "ежим" (the "р" lost), but the first frame gave "р" some probability
    logp = greedy(*"ежим", runner_up={1: "р"})
    logp = np.vstack([frames({"р": 0.3, "<blk>": 0.6}), logp])
    found = spot(logp, MENU, TOKENS, max_cost=4.0, margin=2.0)
    assert found is not None and (found.key, found.phrase) == ("1", "режим")
    assert found.cost < found.runner_up


def test_nothing_is_chosen_when_no_phrase_fits_or_two_fit_alike():
    assert spot(greedy(*"погода"), MENU, TOKENS, max_cost=4.0, margin=2.0) is None
    alike = [("1", ["узи"]), ("2", ["узи"])]
    assert spot(greedy(*"узи"), alike, TOKENS, max_cost=4.0, margin=2.0) is None


def test_a_phrase_with_letters_the_model_has_no_token_for_is_left_out():
    assert spot(greedy(*"узи"), [("1", ["uzi"]), ("5", ["узи"])], TOKENS, max_cost=4.0, margin=2.0).key == "5"
    assert spot(greedy(*"узи"), [("1", ["uzi"])], TOKENS, max_cost=4.0, margin=2.0) is None


def test_words_are_spotted_with_the_space_between_them():
    logp = greedy(*"часы", "▁", *"работы")
    found = spot(logp, MENU, TOKENS, max_cost=1.0, margin=2.0)
    assert found is not None and found.phrase == "часы работы" and found.cost < 1e-9


def test_log_softmax_rows_are_distributions():
    x = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    assert np.allclose(np.exp(log_softmax(x)).sum(axis=1), 1.0)
