"""Branch conditions: parse the YAML `when:` keys and evaluate them against a clinic-local time (pure)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache
from typing import Any

import holidays

DAYS = {"mon": 0, "tue": 1, "wed": 2, "thu": 3, "fri": 4, "sat": 5, "sun": 6}
HOLIDAY = 7  # key in `hours` for the hours kept on public holidays (default: closed)

# Working weekend days ("рабочая суббота") moved by the Government decrees on days off; source: the same
# consultant.ru decree texts the `holidays` package cites (cons_doc_LAW_455140 for 2024, _481586 for 2025,
# _515170 for 2026, _544706 for 2027). Used only if the installed `holidays` lacks `weekend_workdays`.
_WORKING_WEEKENDS = {
    2024: (date(2024, 4, 27), date(2024, 11, 2), date(2024, 12, 28)),
    2025: (date(2025, 11, 1),),
    2026: (),
    2027: (date(2027, 2, 20),),
}

CONDITION_KEYS = (
    "hours",
    "lunch",
    "time",
    "days",
    "workday",
    "holiday",
    "dates",
    "caller_in",
    "withheld",
    "vars",
)

_TIME_RANGE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")
_DATE_RANGE = re.compile(r"^\s*(\d{4}-\d{2}-\d{2})\s*(?:\.\.\s*(\d{4}-\d{2}-\d{2}))?\s*$")
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_VAR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ConditionError(ValueError):
    """A `when:` value is malformed; ``problem`` and ``fix`` become one loader message."""

    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(f"{problem}; {fix}")
        self.problem = problem
        self.fix = fix


@dataclass(frozen=True, slots=True)
class TimeRange:
    """Minutes since midnight, start inclusive, end exclusive (end may be 24:00 = 1440)."""

    start: int
    end: int

    def __contains__(self, minute: int) -> bool:
        return self.start <= minute < self.end


@dataclass(frozen=True, kw_only=True)
class When:
    """All set fields must hold (AND). ``text`` is the source, for diagrams and the call timeline."""

    hours: Mapping[int, tuple[TimeRange, ...]] | None = None
    lunch: tuple[TimeRange, ...] | None = None
    time: tuple[TimeRange, ...] | None = None
    days: frozenset[int] | None = None
    workday: bool | None = None
    holiday: bool | None = None
    dates: tuple[tuple[date, date], ...] | None = None
    caller_in: frozenset[str] | None = None
    withheld: bool | None = None
    vars: tuple[tuple[str, str], ...] | None = None
    text: str = ""


# ------------------------------------------------------------------------------------------------ parsing


def parse_condition(key: str, value: Any) -> Any:
    """Turn one `when:` entry into the value of the matching `When` field, or raise ConditionError."""
    if key == "hours":
        return _parse_hours(value)
    if key in ("lunch", "time"):
        return _parse_ranges(value, key)
    if key == "days":
        if not isinstance(value, str):
            raise ConditionError(f"days must be text like 'mon-fri', got {value!r}", "write days: mon-fri")
        return frozenset(_parse_days(value))
    if key in ("workday", "holiday", "withheld"):
        if not isinstance(value, bool):
            raise ConditionError(f"{key} must be true or false, got {value!r}", f"write {key}: true")
        return value
    if key == "dates":
        return _parse_dates(value)
    if key == "caller_in":
        return _parse_callers(value)
    if key == "vars":
        return _parse_vars(value)
    raise ConditionError(f"unknown condition '{key}'", "use one of: " + ", ".join(CONDITION_KEYS))


def _parse_days(spec: str) -> list[int]:
    days: list[int] = []
    for part in spec.replace(" ", "").lower().split(","):
        first, _, last = part.partition("-")
        if first not in DAYS or (last and last not in DAYS):
            raise ConditionError(
                f"bad day '{part}'", "use mon, tue, wed, thu, fri, sat, sun, ranges like mon-fri, or lists"
            )
        a, b = DAYS[first], DAYS[last or first]
        if b < a:
            raise ConditionError(f"day range '{part}' runs backwards", "write it as e.g. mon-fri")
        days.extend(range(a, b + 1))
    return days


def _parse_range(text: Any, key: str) -> TimeRange:
    m = _TIME_RANGE.match(text) if isinstance(text, str) else None
    if not m:
        raise ConditionError(
            f"{key}: bad time range {text!r}", 'write "HH:MM-HH:MM" in quotes, e.g. "08:00-20:00"'
        )
    h1, m1, h2, m2 = (int(g) for g in m.groups())
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if h1 > 23 or m1 > 59 or m2 > 59 or end > 24 * 60 or end <= start:
        raise ConditionError(
            f"{key}: time range {text!r} is not a valid same-day range",
            "start must be before end (00:00-24:00 at most); split ranges that cross midnight",
        )
    return TimeRange(start, end)


def _parse_ranges(value: Any, key: str) -> tuple[TimeRange, ...]:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise ConditionError(f"{key}: no time ranges", 'write e.g. "13:00-14:00"')
    return tuple(_parse_range(v, key) for v in items)


def _parse_hours(value: Any) -> dict[int, tuple[TimeRange, ...]]:
    if not isinstance(value, dict) or not value:
        raise ConditionError(
            "hours must be a mapping of days to time ranges", 'write hours: {mon-fri: "08:00-20:00"}'
        )
    hours: dict[int, tuple[TimeRange, ...]] = {}
    for spec, ranges in value.items():
        days = [HOLIDAY] if str(spec).strip().lower() == "holiday" else _parse_days(str(spec))
        parsed = _parse_ranges(ranges, "hours")
        for day in days:
            if day in hours:
                raise ConditionError(f"hours: day '{spec}' is given twice", "list each day once")
            hours[day] = parsed
    return hours


def _parse_dates(value: Any) -> tuple[tuple[date, date], ...]:
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        # YAML turns an unquoted 2026-01-07 into a date already; ranges stay text.
        if isinstance(item, date):
            out.append((item, item))
            continue
        m = _DATE_RANGE.match(item) if isinstance(item, str) else None
        try:
            first = date.fromisoformat(m.group(1)) if m else None
            last = date.fromisoformat(m.group(2)) if m and m.group(2) else first
        except ValueError:
            first = last = None
        if first is None or last is None or last < first:
            raise ConditionError(
                f"dates: bad date or range {item!r}", 'write "2026-01-07" or "2026-12-30..2027-01-08"'
            )
        out.append((first, last))
    if not out:
        raise ConditionError("dates: no dates", 'write "2026-01-07" or a range "2026-12-30..2027-01-08"')
    return tuple(out)


def _parse_callers(value: Any) -> frozenset[str]:
    items = value if isinstance(value, list) else [value]
    for item in items:
        if not isinstance(item, str) or not _E164.match(item):
            raise ConditionError(
                f"caller_in: {item!r} is not an E.164 number",
                'quote numbers in E.164 form, e.g. "+74951234567"',
            )
    return frozenset(items)


def _parse_vars(value: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict) or not value:
        raise ConditionError("vars must be a mapping of variable names to values", "write vars: {lang: ru}")
    for name in value:
        if not isinstance(name, str) or not _VAR.match(name):
            raise ConditionError(f"vars: bad variable name {name!r}", "use letters, digits and _")
    return tuple((k, str(v)) for k, v in value.items())


# --------------------------------------------------------------------------------------------- evaluating


@lru_cache(maxsize=32)
def _calendar(country: str, year: int) -> tuple[frozenset[date], frozenset[date]]:
    """(days off incl. moved days off, working weekend days) for one year; pure, so cached."""
    cal = holidays.country_holidays(country, years=year)
    off = frozenset(cal.keys())
    working = getattr(cal, "weekend_workdays", None)
    if working is None and country == "RU":
        working = _WORKING_WEEKENDS.get(year, ())
    return off, frozenset(working or ())


def is_holiday(day: date, country: str = "RU") -> bool:
    """A public holiday or a day off moved by decree (e.g. 2026-01-07, 2025-11-03 in Russia)."""
    return day in _calendar(country, day.year)[0]


def is_working_weekend(day: date, country: str = "RU") -> bool:
    """A Saturday or Sunday made a working day by decree (e.g. Saturday 2025-11-01 in Russia)."""
    return day.weekday() >= 5 and day in _calendar(country, day.year)[1]


def is_workday(day: date, country: str = "RU") -> bool:
    if is_holiday(day, country):
        return False
    return day.weekday() < 5 or is_working_weekend(day, country)


def in_hours(hours: Mapping[int, tuple[TimeRange, ...]], now: datetime, country: str = "RU") -> bool:
    """Public for the box settings' opening hours (callbacks, reports): the same rules as a flow's `hours`."""
    return _in_hours(hours, now, country)


def _in_hours(hours: Mapping[int, tuple[TimeRange, ...]], now: datetime, country: str) -> bool:
    day, minute = now.date(), now.hour * 60 + now.minute
    if is_holiday(day, country):
        ranges = hours.get(HOLIDAY, ())
    elif is_working_weekend(day, country):
        # A working Saturday follows weekday hours: the first of mon..fri that has hours (usually mon).
        weekday = next((d for d in range(5) if d in hours), day.weekday())
        ranges = hours.get(weekday, ())
    else:
        ranges = hours.get(day.weekday(), ())
    return any(minute in r for r in ranges)


def matches(
    when: When,
    now: datetime,
    *,
    caller: str,
    withheld: bool,
    variables: Mapping[str, str],
    country: str = "RU",
) -> bool:
    """True when every condition set in ``when`` holds at clinic-local time ``now`` for this caller."""
    day, minute = now.date(), now.hour * 60 + now.minute
    checks = []
    if when.hours is not None:
        checks.append(_in_hours(when.hours, now, country))
    if when.lunch is not None:
        checks.append(is_workday(day, country) and any(minute in r for r in when.lunch))
    if when.time is not None:
        checks.append(any(minute in r for r in when.time))
    if when.days is not None:
        checks.append(day.weekday() in when.days)
    if when.workday is not None:
        checks.append(is_workday(day, country) == when.workday)
    if when.holiday is not None:
        checks.append(is_holiday(day, country) == when.holiday)
    if when.dates is not None:
        checks.append(any(a <= day <= b for a, b in when.dates))
    if when.caller_in is not None:
        checks.append(not withheld and caller in when.caller_in)
    if when.withheld is not None:
        checks.append(withheld == when.withheld)
    if when.vars is not None:
        checks.append(all(variables.get(k) == v for k, v in when.vars))
    return all(checks)
