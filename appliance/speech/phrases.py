"""Dynamic phrases with correct grammar ("вы третий в очереди", "примерно две минуты") via num2words."""

from __future__ import annotations

import math

from num2words import num2words


def ru_plural(n: int, one: str, few: str, many: str) -> str:
    """Russian noun form after a number: 1 минута, 2 минуты, 5 минут, 21 минута, 11 минут."""
    if n % 10 == 1 and n % 100 != 11:
        return one
    if 2 <= n % 10 <= 4 and not 12 <= n % 100 <= 14:
        return few
    return many


def queue_position(position: int, language: str = "ru") -> str:
    if language == "ru":
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
    if language == "ru":
        words = num2words(minutes, lang="ru", gender="f")
        return f"Примерное время ожидания — {words} {ru_plural(minutes, 'минута', 'минуты', 'минут')}."
    unit = "minute" if minutes == 1 else "minutes"
    return f"The expected wait is about {num2words(minutes, lang='en')} {unit}."


def waited(seconds: float, language: str = "ru") -> str:
    """For the receptionist before a callback: 'ждал три минуты'."""
    minutes = max(1, round(seconds / 60))
    if language == "ru":
        words = num2words(minutes, lang="ru", gender="f")
        # Accusative of an inanimate noun: only "одна" changes ("ждал одну минуту", "две минуты").
        if words.endswith("одна"):
            words = words[:-4] + "одну"
        return f"{words} {ru_plural(minutes, 'минуту', 'минуты', 'минут')}"
    return f"{num2words(minutes, lang='en')} minute{'s' if minutes != 1 else ''}"
