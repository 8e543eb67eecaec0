"""Spoken Russian numbers → digits: "восемь девятьсот шестнадцать сто двадцать три сорок пять шестьдесят семь"
→ "89161234567"; and a spoken menu key ("один", "первый", "звёздочка") → "1", "1", "*". Pure functions.

People dictate phone numbers in groups ("восемь, девятьсот шестнадцать, сто двадцать три, сорок пять, шестьдесят
семь"), say zeros as "ноль"/"нуль" or "два нуля", and start with "плюс семь". A group is hundreds, tens and
units in that order (or hundreds and a teen); a word that cannot continue the group starts the next one, so
"двадцать два" is 22 but "два двадцать" is 2, 20. Words that are no number ("мой номер", "так",
"э") are skipped and end the group; ordinals count ("первого мая" → 1); a recogniser's misspellings within one
letter of a number word of six letters or more are accepted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_WORD = re.compile(r"[a-zа-я]+|[0-9]+|[*#]")

_UNITS = {"ноль": 0, "нуль": 0, "один": 1, "одна": 1, "одно": 1, "одну": 1, "два": 2, "две": 2, "три": 3,
          "четыре": 4, "пять": 5, "шесть": 6, "семь": 7, "восемь": 8, "девять": 9}
_TEENS = {"десять": 10, "одиннадцать": 11, "двенадцать": 12, "тринадцать": 13, "четырнадцать": 14,
          "пятнадцать": 15, "шестнадцать": 16, "семнадцать": 17, "восемнадцать": 18, "девятнадцать": 19}
_TENS = {"двадцать": 20, "тридцать": 30, "сорок": 40, "пятьдесят": 50, "шестьдесят": 60, "семьдесят": 70,
         "восемьдесят": 80, "девяносто": 90}
_HUNDREDS = {"сто": 100, "двести": 200, "триста": 300, "четыреста": 400, "пятьсот": 500, "шестьсот": 600,
             "семьсот": 700, "восемьсот": 800, "девятьсот": 900}
_THOUSAND = {"тысяча", "тысячи", "тысяч", "тысячу", "тыща", "тыщи", "тыщу"}
_ZEROS = {"нуля", "ноля", "нулей", "нолей"}  # "два нуля" = 00; alone: a zero
_ORDER = {"hundred": 0, "ten": 1, "teen": 1, "unit": 2}


def _key(word: str) -> str:
    return word.replace("ь", "").replace("ъ", "")


_LEXICON: dict[str, tuple[str, int]] = {}
for _kind, _table in (("unit", _UNITS), ("teen", _TEENS), ("ten", _TENS), ("hundred", _HUNDREDS)):
    for _w, _v in _table.items():
        _LEXICON[_key(_w)] = ("zero" if _v == 0 else _kind, _v)
for _w in _THOUSAND:
    _LEXICON[_key(_w)] = ("thousand", 1000)
for _w in _ZEROS:
    _LEXICON[_key(_w)] = ("zeros", 0)
_LEXICON["плюс"] = ("plus", 0)
_FUZZY = {k: v for k, v in _LEXICON.items() if len(k) >= 6}


def _within_one(a: str, b: str) -> bool:
    """Levenshtein distance <= 1."""
    if a == b:
        return True
    if abs(len(a) - len(b)) > 1:
        return False
    if len(a) > len(b):
        a, b = b, a
    i = 0
    while i < len(a) and a[i] == b[i]:
        i += 1
    return a[i:] == b[i + 1:] if len(a) < len(b) else a[i + 1:] == b[i + 1:]


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower().replace("ё", "е"))


_ADJ = r"(ый|ой|ий|ая|ое|ую|ого|ья|ье|ью|ьего|ьей|ом|ым|ых)$"
_ORDINAL_STEMS = (
    ("unit", (("нулев", 0), ("перв", 1), ("втор", 2), ("трет", 3), ("четверт", 4), ("пят", 5), ("шест", 6),
              ("седьм", 7), ("восьм", 8), ("девят", 9))),
    ("teen", (("десят", 10), ("одиннадцат", 11), ("двенадцат", 12), ("тринадцат", 13), ("четырнадцат", 14),
              ("пятнадцат", 15), ("шестнадцат", 16), ("семнадцат", 17), ("восемнадцат", 18), ("девятнадцат", 19))),
    ("ten", (("двадцат", 20), ("тридцат", 30), ("сороков", 40), ("пятидесят", 50), ("шестидесят", 60),
             ("семидесят", 70), ("восьмидесят", 80), ("девяност", 90))),
)
_ORDINALS = tuple((re.compile(f"^{stem}{_ADJ}"), kind, value) for kind, stems in _ORDINAL_STEMS
                  for stem, value in stems)


def _ordinal(word: str) -> tuple[str, int] | None:
    """"пятого" → ("unit", 5), "двадцатое" → ("ten", 20): dates ("первого мая") and menu answers ("второе")."""
    for pattern, kind, value in _ORDINALS:
        if pattern.match(word):
            return ("zero" if value == 0 else kind, value)
    return None


def _classify(word: str) -> tuple[str, int] | None:
    if word.isdigit():
        return ("digits", 0)
    k = _key(word)
    if k in _LEXICON:
        return _LEXICON[k]
    ordinal = _ordinal(word)
    if ordinal is not None:
        return ordinal
    if len(k) >= 6:
        hits = {v for f, v in _FUZZY.items() if _within_one(k, f)}
        if len(hits) == 1:
            return hits.pop()
    return None


@dataclass
class _Group:
    value: int = 0
    last: int = -1  # _ORDER of the last part added; -1: nothing (or just "тысяча")
    unit: int = 0  # the trailing unit, for "восемьсот два нуля"
    thousand: bool = False
    teen: bool = False

    def fits(self, kind: str) -> bool:
        return not self.teen and _ORDER[kind] > self.last

    def add(self, kind: str, value: int) -> None:
        self.value += value
        self.last = _ORDER[kind]
        self.teen = kind == "teen"
        self.unit = value if kind == "unit" else 0


def digit_groups(text: str) -> list[str]:
    """The digit groups a caller said, in order: "восемь девятьсот шестнадцать" → ["8", "916"]."""
    out: list[str] = []
    cur: _Group | None = None

    def close() -> None:
        nonlocal cur
        if cur is not None and (cur.last >= 0 or cur.thousand):
            out.append(str(cur.value))
        cur = None

    for w in words(text):
        c = _classify(w)
        if c is None:  # "первого мая тысяча ...": a word between numbers ends the group
            close()
            continue
        kind, value = c
        if kind == "plus":
            close()
        elif kind == "digits":
            close()
            out.append(w)
        elif kind == "zero":
            close()
            out.append("0")
        elif kind == "zeros":
            if cur is not None and cur.unit:  # "два нуля" = 00, "восемьсот два нуля" = 800 00
                n = cur.unit
                cur.value -= n
                if not cur.value and not cur.thousand:
                    cur = None
                close()
                out.append("0" * n)
            else:
                close()
                out.append("0")
        elif kind == "thousand":
            if cur is not None and not cur.thousand and cur.last >= 0:
                cur = _Group(cur.value * 1000, -1, 0, True)
            else:
                close()
                cur = _Group(1000, -1, 0, True)
        else:
            if cur is None or not cur.fits(kind):
                close()
                cur = _Group()
            cur.add(kind, value)
    close()
    return out


def parse_digits(text: str) -> str:
    """All the digits a caller said, as one string ("" if none): for phone numbers, dates, codes."""
    return "".join(digit_groups(text))


_SYMBOLS = {"звездочка": "*", "звездочку": "*", "звезда": "*", "звездочки": "*", "решетка": "#", "решетку": "#",
            "решетки": "#", "диез": "#", "*": "*", "#": "#"}
_FILLER = {"нажимаю", "нажать", "нажму", "цифра", "цифру", "кнопка", "кнопку", "номер", "пункт", "вариант", "ну",
           "пожалуйста", "давайте", "э", "так", "это", "мне", "наверное", "на", "я", "выбираю", "хочу"}


def menu_key(text: str) -> str | None:
    """A menu key said as a word: "один" / "первый" / "цифру три" / "звёздочка" → "1" / "1" / "3" / "*".

    Only when the whole answer is that one key (give or take fillers such as "нажимаю", "пожалуйста"):
    "два талона" or "первый раз звоню" is no key press.
    """
    found: list[str] = []
    for w in words(text):
        if w in _FILLER:
            continue
        if w in _SYMBOLS:
            found.append(_SYMBOLS[w])
            continue
        if w.isdigit() and len(w) == 1:
            found.append(w)
            continue
        c = _LEXICON.get(_key(w)) or _ordinal(w)
        if c is None or c[0] not in ("unit", "zero"):
            return None  # a word that is neither a key nor a filler: not a bare key press
        found.append(str(c[1]))
    return found[0] if len(found) == 1 else None
