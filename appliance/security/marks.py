"""Receptionists' feature codes during a call: *9 marks the caller abusive, *0 marks the call a threat."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.request
from typing import Any

from appliance import metrics
from appliance.numbers import is_withheld, mask
from appliance.security.blocklist import abuse_block_due

FEATURE_CODES = {"*9": "abusive", "*0": "threat"}  # pressed by the receptionist during a connected call


def feature_code(keys: str, digit: str) -> tuple[str, str | None]:
    """The receptionist's last two keys with ``digit`` added, and the mark they complete (None: not yet)."""
    keys = (keys + digit)[-2:]
    kind = FEATURE_CODES.get(keys)
    return ("" if kind else keys), kind

_LOGGER = logging.getLogger(__name__)


async def mark_call(writer: Any, security: Any, session: Any, kind: str, agent: str) -> None:
    """Durable first: the mark (and a block or a legal hold) is stored, then counted, logged and reported."""
    store, now, number = writer.store, time.time(), session.caller
    await writer.run(store.add_mark, number, session.record_id, now, kind)
    if kind == "threat":
        hold = getattr(store, "hold_recording", None)
        if hold is not None and session.record_id is not None:
            await writer.run(hold, session.record_id, "threat marked by receptionist", now)
        metrics.THREATS.inc()
        await session.note("threat", f"marked by {agent}; recording kept on legal hold")
        _LOGGER.warning("THREAT: call %s from %s marked a threat by %s", session.call_id, mask(number), agent)
        if security.threat_webhook:
            payload = {"event": "threat", "at": now, "call_id": session.record_id, "number": number,
                       "marked_by": agent}
            asyncio.get_running_loop().run_in_executor(None, _post, security.threat_webhook, payload)
        return
    await session.note("abusive", f"marked by {agent}")
    metrics.ABUSE_MARKS.inc()
    if is_withheld(number):
        return
    days = security.abuse.days
    times = await writer.run(store.mark_times, number, "abusive", now - days * 86400)
    if abuse_block_due(times, now, security.abuse.marks, days):
        await writer.run(store.add_block, number, f"{len(times)} abusive marks within {days:g} days", "abuse", now,
                         None)
        await session.note("blocked", "number blocked after repeated abusive marks")
        _LOGGER.info("%s blocked after %d abusive marks", mask(number), len(times))


def _post(url: str, payload: dict[str, Any]) -> None:
    """The clinic's security webhook; failures are logged, never raised into the call."""
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            _LOGGER.info("threat webhook answered %s", resp.status)
    except OSError as exc:
        _LOGGER.error("threat webhook %s failed: %s", url.split("?")[0], exc)
