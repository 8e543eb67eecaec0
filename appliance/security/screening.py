"""Screening a new call against the blocklist and the repeat-call rule; runs on the store's writer thread."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from appliance.numbers import is_withheld
from appliance.security.blocklist import (
    BlockEntry,
    auto_block_minutes,
    find_block,
    never_blocked,
    too_many_calls,
)


@dataclass(frozen=True, slots=True)
class Verdict:
    reason: str  # "withheld" | "blocked" | "auto_block"
    detail: str
    prompt: str  # what the caller hears before the box hangs up


def screen(store: Any, security: Any, caller: str, now: float) -> Verdict | None:
    """None lets the call through. A new automatic block is stored before it is acted on (durable first)."""
    if is_withheld(caller):
        if security.withheld == "block":
            return Verdict("withheld", "withheld number refused by policy", "withheld_blocked")
        return None
    entries = [BlockEntry(r["pattern"], r["reason"], r["source"], r["created_at"], r["expires_at"])
               for r in store.active_blocks(now)]
    hit = find_block(caller, entries, now, security.never_block)
    if hit is not None:
        return Verdict("blocked", f"{hit.source}: {hit.reason}", "blocked_notice")
    rule = security.auto_block
    if rule.calls and not never_blocked(caller, security.never_block):
        times = store.call_times_from(caller, now - rule.minutes * 60)
        if too_many_calls(times, now, rule.calls, rule.minutes):
            minutes = auto_block_minutes(rule.block_minutes, store.count_blocks(caller, "auto_rate"))
            reason = f"{len(times)} calls within {rule.minutes:g} min"
            store.add_block(caller, reason, "auto_rate", now, now + minutes * 60)
            return Verdict("auto_block", f"{reason}; blocked for {minutes:g} min", "blocked_notice")
    return None
