"""Dynamic phrases with correct grammar via num2words: queue position, durations, times of day, dates.

Pure functions of their arguments (no clock): "вы третий в очереди", "через пять минут", "в десять тридцать",
"двадцать третьего февраля", and their English counterparts for English flows. Numbers come out as words,
so every voice (espeak-ng or Piper) reads them in the right gender and case.
"""

from __future__ import annotations

import math
from datetime import date as Date
from datetime import time as Time

from num2words import num2words

from appliance.speech.base import base_language


def ru_plural(n: int, one: str, few: str, many: str) -> str:
    """Russian noun form after a number: 1 минута, 2 минуты, 5 минут, 21 минута, 11 минут."""
    if n % 10 == 1 and n % 100 != 11:
        return one
    if 2 <= n % 10 <= 4 and not 12 <= n % 100 <= 14:
        return few
    return many


def _en(language: str) -> bool:
    """English for every language but Russian (the two the box ships flows in)."""
    return base_language(language) != "ru"


# ------------------------------------------------------------------------------------------- the queue


def queue_position(position: int, language: str = "ru") -> str:
    if not _en(language):
        if position == 1:
            return "Вы первый в очереди."
        return f"Вы {num2words(position, lang='ru', to='ordinal')} в очереди."
    if position == 1:
        return "You are first in line."
    return f"You are number {num2words(position, lang='en')} in line."


def expected_wait(seconds: float | None, language: str = "ru") -> str:
    """Rounded up to whole minutes: a caller should rather be pleasantly surprised."""
    if seconds is None:
        return ""
    minutes = max(1, math.ceil(seconds / 60))
    if not _en(language):
        return f"Примерное время ожидания — {duration(minutes, 'ru')}."
    return f"The expected wait is about {duration(minutes, 'en')}."


def queue_phrases(language: str = "ru", positions: int = 10, minutes: int = 20) -> list[str]:
    """Every queue announcement phrase a caller usually hears: positions 1..``positions`` and expected waits of
    1..``minutes`` minutes. A neural voice takes ~0.2 s per phrase, so the box renders these ahead
    (``registratura prompts render`` and in the background at start) rather than while a caller waits."""
    return [queue_position(n, language) for n in range(1, positions + 1)] + \
        [expected_wait(60 * m, language) for m in range(1, minutes + 1)]


def waited(seconds: float, language: str = "ru") -> str:
    """For the receptionist before a callback: "(ждал) три минуты", "одну минуту", "час и пять минут"."""
    minutes = max(1, round(seconds / 60))
    return duration(minutes, language, case="accusative")


# ------------------------------------------------------------------------------------------- durations

_UNITS_RU = {"minute": ("минута", "минуты", "минут", "минуту"), "hour": ("час", "часа", "часов", "час")}


def _count_ru(n: int, unit: str, case: str) -> str:
    """"две минуты", "одну минуту" (accusative), "пять часов"; one hour is "час" in the accusative."""
    one, few, many, one_acc = _UNITS_RU[unit]
    accusative = case == "accusative"
    if unit == "hour" and n == 1 and accusative:
        return "час"  # "через час", "ждал час"
    gender = "f" if unit == "minute" else "m"
    if accusative:  # inanimate: only "одна" -> "одну" changes
        words = num2words(n, lang="ru", case="accusative", gender=gender, animate=False)
    else:
        words = num2words(n, lang="ru", gender=gender)
    noun = ru_plural(n, one_acc if accusative else one, few, many)
    return f"{words} {noun}"


def _count_en(n: int, unit: str, article: bool) -> str:
    if n == 1:
        return f"an {unit}" if article and unit == "hour" else f"one {unit}"
    return f"{num2words(n, lang='en')} {unit}s"


def duration(minutes: int, language: str = "ru", case: str = "nominative") -> str:
    """Whole minutes as words: "пять минут", "час и двадцать минут"; English "five minutes", "two hours".

    ``case`` is "nominative" ("время ожидания — две минуты") or "accusative" ("через одну минуту", "ждал час").
    """
    if minutes < 0:
        raise ValueError(f"a duration cannot be negative: {minutes}")
    if case not in ("nominative", "accusative"):
        raise ValueError(f"case {case!r}: nominative or accusative")
    hours, rest = divmod(int(minutes), 60)
    if _en(language):
        article = case == "accusative"
        parts = ([_count_en(hours, "hour", article)] if hours else []) + \
            ([_count_en(rest, "minute", article)] if rest or not hours else [])
        return " and ".join(parts)
    parts = ([_count_ru(hours, "hour", case)] if hours else []) + \
        ([_count_ru(rest, "minute", case)] if rest or not hours else [])
    return " и ".join(parts)


def in_time(minutes: int, language: str = "ru") -> str:
    """"через одну минуту", "через две минуты", "через пять минут", "через час"; "in one minute", "in an hour"."""
    if _en(language):
        return f"in {duration(minutes, 'en', case='accusative')}"
    return f"через {duration(minutes, 'ru', case='accusative')}"


# ------------------------------------------------------------------------------------------ time of day

_PARTS_EN = ((1, "at night"), (12, "in the morning"), (17, "in the afternoon"), (22, "in the evening"),
             (24, "at night"))  # (hours before which, part of the day)


def time_of_day(at: Time, language: str = "ru", *, named: bool = True) -> str:
    """A clock time as people say it on the phone, with its preposition.

    Russian, 24-hour as clinics announce it: "в десять тридцать", "в девять ноль пять", "в восемь часов",
    "в двадцать один час", "в час тридцать"; with ``named`` 12:00 and 00:00 are "в полдень" / "в полночь".
    English, 12-hour: "at ten thirty in the morning", "at nine oh five in the morning", "at eight o'clock in
    the evening", "at noon", "at midnight".
    """
    h, m = at.hour, at.minute
    if _en(language):
        if named and m == 0 and h in (0, 12):
            return "at noon" if h == 12 else "at midnight"
        part = next(p for end, p in _PARTS_EN if h < end)
        h12 = h % 12 or 12
        hour = num2words(h12, lang="en")
        if m == 0:
            return f"at {hour} o'clock {part}"
        mins = f"oh {num2words(m, lang='en')}" if m < 10 else num2words(m, lang="en")
        return f"at {hour} {mins} {part}"
    if named and m == 0 and h in (0, 12):
        return "в полдень" if h == 12 else "в полночь"
    hour = "час" if h == 1 else num2words(h, lang="ru")
    if m == 0:
        return "в час" if h == 1 else f"в {hour} {ru_plural(h, 'час', 'часа', 'часов')}"
    # Minutes are feminine (минута is understood): "десять двадцать одна", "девять ноль две".
    mins = num2words(m, lang="ru", gender="f")
    return f"в {hour} {'ноль ' if m < 10 else ''}{mins}"


# ---------------------------------------------------------------------------------------------- dates

_MONTHS_RU = ("января", "февраля", "марта", "апреля", "мая", "июня", "июля", "августа", "сентября", "октября",
              "ноября", "декабря")
_MONTHS_EN = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
              "November", "December")


def date_phrase(day: Date, language: str = "ru", *, year: bool = False) -> str:
    """A calendar date as an answer to "когда?": "пятого декабря", "двадцать третьего февраля", with ``year``
    "первого мая две тысячи двадцать седьмого года"; English "December fifth", "May first, twenty twenty-seven".
    """
    if _en(language):
        text = f"{_MONTHS_EN[day.month - 1]} {num2words(day.day, lang='en', to='ordinal')}"
        return f"{text}, {num2words(day.year, lang='en', to='year')}" if year else text
    text = f"{num2words(day.day, lang='ru', to='ordinal', case='genitive', gender='n')} {_MONTHS_RU[day.month - 1]}"
    if year:
        text += f" {num2words(day.year, lang='ru', to='ordinal', case='genitive', gender='m')} года"
    return text
