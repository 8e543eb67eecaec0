"""What an `ask` node's `check` accepts beyond length and pattern: typed dates that really exist."""

from __future__ import annotations

from datetime import date

ASK_CHECKS = ("date", "date_of_birth")
OLDEST_PATIENT_YEARS = 120


def typed_date(digits: str) -> date | None:
    """DDMMYYYY as typed on a phone keypad (the Russian order), or None when it is not a real date."""
    if len(digits) != 8 or not digits.isdigit():
        return None
    try:
        return date(int(digits[4:]), int(digits[2:4]), int(digits[:2]))
    except ValueError:  # 31.02, month 13, day 00
        return None


def passes(check: str | None, digits: str, today: date) -> bool:
    """True when ``digits`` satisfy ``check``; ``today`` is the clinic's date (the engine has no clock)."""
    if check is None:
        return True
    day = typed_date(digits)
    if day is None:
        return False
    if check == "date_of_birth":
        return today.replace(year=today.year - OLDEST_PATIENT_YEARS, day=min(today.day, 28)) <= day <= today
    return True
