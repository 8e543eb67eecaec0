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


def _fuzzy_in(keyword: str, heard: str) -> float:
    """How well ``keyword`` occurs somewhere in ``heard`` (letters only): 1 - edit distance / its length, the
    best over every stretch of ``heard`` (semi-global alignment: free start and end in ``heard``)."""
    prev = [0] * (len(heard) + 1)  # an empty keyword matches anywhere at no cost
    for i, a in enumerate(keyword, 1):
        cur = [i] + [0] * len(heard)
        for j, b in enumerate(heard, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a != b))
        prev = cur
    return 1.0 - min(prev) / len(keyword)


def closest(text: str, options: Iterable[tuple[str, Iterable[str]]], threshold: float = 0.75,
            margin: float = 0.15, min_letters: int = 6) -> tuple[str, str] | None:
    """The option whose keyword is spelt almost exactly somewhere in ``text``: a small letter recogniser's
    near misses ("запис к врачу", "вызвать врыча") still choose when no keyword matches as a word. Only
    keywords of ``min_letters`` letters or more count (short ones match noise), the best must reach
    ``threshold`` and beat every other option by ``margin``; otherwise None (the caller is asked again)."""
    heard = "".join(words(text))
    if not heard:
        return None
    best: dict[str, tuple[float, str]] = {}
    for key, phrases in options:
        for phrase in phrases:
            letters = "".join(words(phrase))
            if len(letters) < min_letters:
                continue
            score = _fuzzy_in(letters, heard)
            if score > best.get(key, (0.0, ""))[0]:
                best[key] = (score, phrase)
    ranked = sorted(((v[0], k, v[1]) for k, v in best.items()), reverse=True)
    if not ranked or ranked[0][0] < threshold:
        return None
    if len(ranked) > 1 and ranked[0][0] - ranked[1][0] < margin:
        return None
    return ranked[0][1], ranked[0][2]


def choose(text: str, options: Iterable[tuple[str, Iterable[str]]]) -> tuple[str, str] | None:
    """A menu answer: (option key, what decided it) or None. A key said as a word ("два", "цифру три") first,
    then a keyword heard as a word (``best_match``), then a keyword spelt almost right (``closest``)."""
    from appliance.speech.numbers_ru import menu_key

    options = [(key, tuple(phrases)) for key, phrases in options]
    key = menu_key(text)
    if key is not None and any(k == key for k, _ in options):
        return key, f"key {key}"
    found = best_match(text, options)
    if found is not None:
        return found
    near = closest(text, options)
    return (near[0], f"~{near[1]}") if near else None


_YES = {"да", "верно", "правильно", "конечно", "ага", "угу", "точно", "yes", "yeah", "correct", "right"}
_NO = {"нет", "неверно", "неправильно", "не", "no", "wrong"}
# What a read-back's answer is spotted against in a CTC model's scores when its transcript is neither (the
# session's ``_spot``): each a ("yes" | "no", phrases) option, as a menu's options are.
YES_NO_PHRASES = (("yes", ("да", "да верно", "верно", "да да", "правильно", "конечно")),
                  ("no", ("нет", "неверно", "нет нет", "неправильно", "не так")))


def _run_together(letters: str) -> list[str] | None:
    """``letters`` as yes/no words said without a pause ("даверно", "нетнет"), or None if it is not that."""
    if not letters:
        return []
    for word in sorted(_YES | _NO, key=len, reverse=True):
        if letters.startswith(word) and (rest := _run_together(letters[len(word):])) is not None:
            return [word, *rest]
    return None


def _distance(a: str, b: str) -> int:
    """Levenshtein distance between two words."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def _near_yes_no(word: str) -> str | None:
    """The long yes/no word ``word`` is one letter away from ("аверно": the "д" of "да, верно" cut off, "верна"),
    when exactly one polarity is that near; short words ("да", "не") are too easily made from noise."""
    if len(word) < 4:
        return None
    near = {w for w in _YES | _NO if len(w) >= 5 and _distance(word, w) <= 1}
    if near and (near <= _YES or near <= _NO):
        return min(near)
    return None


def yes_no(text: str) -> bool | None:
    """True for "да" / "верно", False for "нет" / "неверно" ("не так" counts as no), None when unclear.
    A small letter recogniser often writes two quick words as one ("даверно"): such a run counts as its words;
    a long yes/no word with one letter wrong counts as that word."""
    heard: set[str] = set()
    said = words(text)
    while said:  # "не правильно" / "не верно" written apart is one no, not a "не" and a yes
        word = said.pop(0)
        if word == "не" and said and f"не{said[0]}" in _NO:
            word = f"не{said.pop(0)}"
        heard.add(word)
    for word in list(heard - _YES - _NO):
        heard.update(_run_together(word) or ())
        if (near := _near_yes_no(word)) is not None:
            heard.add(near)
    yes, no = bool(heard & _YES), bool(heard & _NO)
    return yes if yes != no else None
