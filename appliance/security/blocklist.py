"""Pure blocklist decisions: who is blocked, when repeated calls or abuse marks earn a block. No I/O, no clock."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from appliance.numbers import is_withheld

MAX_AUTO_BLOCK_MINUTES = 7 * 24 * 60  # escalation stops at a week: a clinic must stay reachable


@dataclass(frozen=True, slots=True)
class BlockEntry:
    pattern: str  # an E.164 number, or a prefix ending in '*' ("+7495*")
    reason: str
    source: str  # "manual" | "auto_rate" | "abuse"
    created_at: float
    expires_at: float | None = None  # None = until removed

    def active(self, now: float) -> bool:
        return self.expires_at is None or now < self.expires_at


def matches(pattern: str, number: str) -> bool:
    """Exact number, or a prefix when the pattern ends with '*'. Withheld callers never match a pattern."""
    if not number or is_withheld(number):
        return False
    if pattern.endswith("*"):
        return number.startswith(pattern[:-1])
    return number == pattern


def never_blocked(number: str, never_block: Iterable[str]) -> bool:
    return any(matches(p, number) for p in never_block)


def overlaps_never_block(pattern: str, never_block: Iterable[str]) -> list[str]:
    """The never-block entries that share numbers with a block pattern: those numbers keep getting through."""
    out = []
    for keep in never_block:
        if pattern.endswith("*") and keep.endswith("*"):
            a, b = pattern[:-1], keep[:-1]
            hit = a.startswith(b) or b.startswith(a)
        elif pattern.endswith("*"):
            hit = matches(pattern, keep)
        else:
            hit = matches(keep, pattern)
        if hit:
            out.append(keep)
    return out


def find_block(number: str, entries: Iterable[BlockEntry], now: float,
               never_block: Iterable[str] = ()) -> BlockEntry | None:
    """The block that applies to this caller now, if any. Numbers on the never-block list always pass."""
    if never_blocked(number, never_block):
        return None
    hits = [e for e in entries if e.active(now) and matches(e.pattern, number)]
    # The most specific entry explains the block best (an exact number over a prefix).
    hits.sort(key=lambda e: (e.pattern.endswith("*"), -len(e.pattern)))
    return hits[0] if hits else None


def too_many_calls(call_times: Sequence[float], now: float, calls: int, minutes: float) -> bool:
    """True when ``calls`` or more calls (this one included) came within the last ``minutes``."""
    if calls <= 0:
        return False
    window_start = now - minutes * 60
    return sum(1 for t in call_times if window_start <= t <= now) >= calls


def auto_block_minutes(base_minutes: float, previous_auto_blocks: int) -> float:
    """Each repeat doubles the block (60, 120, 240 ... minutes), up to a week."""
    return min(base_minutes * (2 ** max(0, previous_auto_blocks)), MAX_AUTO_BLOCK_MINUTES)


def abuse_block_due(mark_times: Sequence[float], now: float, marks: int = 2, days: float = 30) -> bool:
    """Two receptionist 'abusive' marks within 30 days (by default) block the number."""
    if marks <= 0:
        return False
    since = now - days * 86400
    return sum(1 for t in mark_times if since <= t <= now) >= marks


def normalise_pattern(raw: str, region: str = "RU") -> str:
    """What a technician types ('8 495 123-45-67', '+7495*') -> a stored pattern; ValueError if it is no number."""
    from appliance.numbers import normalize

    text = raw.strip()
    prefix = text.endswith("*")
    body = text[:-1].strip() if prefix else text
    digits = "".join(ch for ch in body if ch.isdigit())
    if not digits:
        raise ValueError(f"'{raw}' is not a phone number or prefix; use e.g. +79161234567 or +7495*")
    if prefix:
        if body.startswith("+"):
            return f"+{digits}*"
        if body.startswith("8") and region == "RU":
            return f"+7{digits[1:]}*"  # Russian trunk prefix 8 means +7
        return f"+{digits}*"
    number = normalize(body, region)
    if not number.startswith("+"):
        raise ValueError(f"'{raw}' is not a full phone number; give it with the country code, e.g. +79161234567")
    return number
