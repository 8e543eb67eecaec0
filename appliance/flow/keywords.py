"""Spoken keyword matching for menus: lowercase, word prefixes, tolerant to Russian word endings."""

from __future__ import annotations

import re
from collections.abc import Iterable

_WORD = re.compile(r"[a-zа-я0-9]+")


def words(text: str) -> list[str]:
    """Lowercase words; ё is folded to е because recognisers and people write either."""
    return _WORD.findall(text.lower().replace("ё", "е"))


def _common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def word_matches(keyword: str, word: str) -> bool:
    """``word`` is ``keyword`` with another ending: they share all but the last 3 letters (at least 3).

    Russian inflects by endings (запись/записи/записью, прививка/прививку/прививок), so a shared stem is a
    cheap, predictable stand-in for a stemmer. Short keywords (омс, узи, дом) must match as a whole prefix.
    """
    need = min(len(keyword), max(3, len(keyword) - 3))
    return _common_prefix(keyword, word) >= need


def phrase_score(phrase: str, heard: list[str]) -> int:
    """Letters matched when every word of ``phrase`` is found in ``heard``, else 0."""
    wanted = words(phrase)
    if not wanted or not all(any(word_matches(k, w) for w in heard) for k in wanted):
        return 0
    return sum(len(k) for k in wanted)


def best_match(text: str, options: Iterable[tuple[str, Iterable[str]]]) -> tuple[str, str] | None:
    """(option key, keyword) whose keyword matches best; longer matches win, ties go to the first option."""
    heard = words(text)
    best: tuple[int, str, str] | None = None
    for key, phrases in options:
        for phrase in phrases:
            score = phrase_score(phrase, heard)
            if score and (best is None or score > best[0]):
                best = (score, key, phrase)
    return (best[1], best[2]) if best else None


_YES = {"да", "верно", "правильно", "конечно", "ага", "угу", "точно", "yes", "yeah", "correct", "right"}
_NO = {"нет", "неверно", "неправильно", "не", "no", "wrong"}


def yes_no(text: str) -> bool | None:
    """True for "да" / "верно", False for "нет" / "неверно" ("не так" counts as no), None when unclear."""
    heard = set(words(text))
    yes, no = bool(heard & _YES), bool(heard & _NO)
    return yes if yes != no else None
