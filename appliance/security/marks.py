"""Receptionists' feature codes during a call: `*9` marks the caller abusive, `*0` the call a threat (settings)."""

from __future__ import annotations

import logging
import time
from typing import Any

from appliance import metrics
from appliance.numbers import is_withheld, mask
from appliance.security import webhook
from appliance.security.blocklist import abuse_block_due, never_blocked
from appliance.settings import FeatureCodes

_LOGGER = logging.getLogger(__name__)


def feature_code(keys: str, digit: str, codes: FeatureCodes | None = None) -> tuple[str, str | None]:
    """The receptionist's recent keys with ``digit`` added, and the mark they complete (None: not yet).

    ``codes`` is ``security.feature_codes`` (defaults: ``*9`` abusive, ``*0`` threat)."""
    codes = codes or FeatureCodes()
    keys += digit
    for code, kind in codes.by_code().items():
        if keys.endswith(code):
            return "", kind
    return keys[-(codes.longest() - 1):], None  # enough keys for the longest code to complete


async def mark_call(writer: Any, security: Any, session: Any, kind: str, agent: str) -> None:
    """Durable first: the mark (and a block or a legal hold) is stored, then counted, logged and reported."""
    store, now, number = writer.store, time.time(), session.caller
    await writer.run(store.add_mark, number, session.record_id, now, kind)
    if kind == "threat":
        held = False
        hold = getattr(store, "hold_recording", None)
        if hold is not None and session.record_id is not None:
            await writer.run(hold, session.record_id, "threat marked by receptionist", now)
            held = True
        metrics.THREATS.inc()
        await session.note("threat", f"marked by {agent}; recording kept on legal hold")
        _LOGGER.warning("THREAT: call %s from %s marked a threat by %s", session.call_id, mask(number), agent)
        if security.threat_webhook:  # after the store: a dead or slow endpoint loses nothing and delays no one
            payload = webhook.threat_payload(session.record_id, number, now, agent, held)
            webhook.report(security.threat_webhook, payload, lambda detail: session.note("threat", detail))
        return
    await session.note("abusive", f"marked by {agent}")
    metrics.ABUSE_MARKS.inc()
    if is_withheld(number):
        return
    if never_blocked(number, security.never_block):  # emergency services, staff: the mark stays, no block
        await session.note("abusive", "not blocked: the number is on security.never_block")
        return
    days = security.abuse.days
    times = await writer.run(store.mark_times, number, "abusive", now - days * 86400)
    if abuse_block_due(times, now, security.abuse.marks, days):
        await writer.run(store.add_block, number, f"{len(times)} abusive marks within {days:g} days", "abuse", now,
                         None)
        await session.note("blocked", "number blocked after repeated abusive marks")
        _LOGGER.info("%s blocked after %d abusive marks", mask(number), len(times))
