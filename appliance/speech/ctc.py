"""Spotting a menu's phrases in a CTC model's per-frame log-probabilities (pure numpy, no model, no I/O).

Greedy CTC decoding keeps the single best letter of every frame; when a small model slips ("ежим" for
"режим", "оэмэс" for "о эм эс", "ози" for "узи") the transcript no longer names any option, although the
model's scores still lean to the right one. Here each phrase of the active menu is aligned against the scores:
the best path that spends some stretch of frames spelling the phrase (CTC rules: blanks and repeats between
letters) and lets every other frame take its best token. Its ``cost`` is how many nats worse that path is than
the unconstrained best path: 0 when the phrase is exactly what the model heard somewhere in the utterance,
growing with every letter the model would have to be talked into.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

_NEG = -1e30


def log_softmax(x: np.ndarray) -> np.ndarray:
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def costs(logp: np.ndarray, phrases: Sequence[Sequence[int]], blank: int) -> np.ndarray:
    """Cost of each phrase (token ids, spaces included) against ``logp`` (T, V) log-probabilities; inf for an
    empty phrase or one longer than the utterance can spell. All phrases go through one Viterbi pass: their
    CTC state sequences (blank, l1, blank, l2, ..., blank) are laid end to end and kept apart by masks."""
    n = len(phrases)
    out = np.full(n, np.inf)
    if n == 0 or logp.shape[0] == 0:
        return out
    ext: list[int] = []
    first: list[int] = []
    for labels in phrases:
        first.append(len(ext))
        ext.append(blank)
        for token in labels:
            ext += [int(token), blank]
    ext_ids = np.asarray(ext)
    starts = np.asarray(first)
    lengths = np.asarray([2 * len(p) + 1 for p in phrases])
    local = np.arange(len(ext)) - np.repeat(starts, lengths)  # a state's position within its phrase
    step = local >= 1  # may come from the state before it (same phrase)
    prev2 = np.concatenate([[blank, blank], ext_ids[:-2]])
    skip = (local >= 2) & (ext_ids != blank) & (ext_ids != prev2)  # from two before: a letter after a blank
    entry = local <= 1  # the phrase may start on its leading blank or its first letter
    last, last_letter = starts + lengths - 1, starts + lengths - 2
    best = logp.max(axis=1)
    free = 0.0  # every frame so far free
    alpha = np.full(len(ext), _NEG)
    done = np.full(n, _NEG)  # the phrase spelt, the frames since free
    for t in range(logp.shape[0]):
        done = np.maximum(done, np.maximum(alpha[last], alpha[last_letter])) + best[t]
        a = alpha.copy()
        a[1:] = np.where(step[1:], np.maximum(a[1:], alpha[:-1]), a[1:])
        a[2:] = np.where(skip[2:], np.maximum(a[2:], alpha[:-2]), a[2:])
        a = np.where(entry, np.maximum(a, free), a)
        alpha = a + logp[t, ext_ids]
        free += best[t]
    total = np.maximum(done, np.maximum(alpha[last], alpha[last_letter]))
    spelt = np.asarray([len(p) > 0 for p in phrases])
    out[spelt] = np.maximum(free - total[spelt], 0.0)
    return out


@dataclass(frozen=True, slots=True)
class Spotted:
    key: str  # the menu option
    phrase: str  # its keyword that fitted best
    cost: float  # nats from the unconstrained best path (see the module docstring)
    runner_up: float  # the best cost of any other option (inf when there is none)


def spot(logp: np.ndarray, options: Iterable[tuple[str, Iterable[str]]], tokens: dict[str, int], *,
         max_cost: float, margin: float) -> Spotted | None:
    """The option whose phrase fits the scores best, if it costs at most ``max_cost`` nats and beats every
    other option by ``margin``; None otherwise (the caller is asked again, never sent down a guessed branch).
    Phrases are lowercase words; a letter the model has no token for drops the phrase."""
    blank, space = tokens.get("<blk>", 0), tokens.get("▁")
    keys: list[str] = []
    texts: list[str] = []
    seqs: list[list[int]] = []
    for key, phrases in options:
        for phrase in phrases:
            words = phrase.lower().replace("ё", "е").split()
            ids: list[int] = []
            for i, word in enumerate(words):
                if i and space is not None:
                    ids.append(space)
                ids += [tokens.get(ch, -1) for ch in word]
            if ids and -1 not in ids:
                keys.append(key)
                texts.append(phrase)
                seqs.append(ids)
    if not seqs:
        return None
    c = costs(logp, seqs, blank)
    per_key: dict[str, tuple[float, str]] = {}
    for key, text, cost in zip(keys, texts, c, strict=True):
        if cost < per_key.get(key, (np.inf, ""))[0]:
            per_key[key] = (float(cost), text)
    ranked = sorted((v[0], k, v[1]) for k, v in per_key.items())
    cost, key, phrase = ranked[0]
    runner_up = ranked[1][0] if len(ranked) > 1 else np.inf
    if not accepted(cost, runner_up, max_cost, margin):
        return None
    return Spotted(key, phrase, cost, float(runner_up))


def accepted(cost: float, runner_up: float, max_cost: float, margin: float) -> bool:
    """The rule ``spot`` decides by (tools/asr_train/evaluate.py sweeps it): cheap enough, and clear of the rest."""
    return cost <= max_cost and runner_up - cost >= margin
