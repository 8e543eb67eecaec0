"""The threat webhook: a JSON POST to the clinic's security endpoint, off the event loop, never failing a call.

The payload carries the caller's full number on purpose: it goes only to the endpoint the clinic configured
(`security.threat_webhook`, on its LAN or over https), and a guard who must ring back, recognise a repeat caller
or tell the police cannot act on a masked one. Logs keep masking it."""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

_LOGGER = logging.getLogger(__name__)

TIMEOUT = 5.0  # seconds for connecting and for each read; a slow endpoint holds only its own thread
# A guard's endpoint that is briefly down (a restart, a Wi-Fi blip) still gets the alert: two more tries, after
# 2 s and 10 s. Not after a 4xx: the address or token is wrong and trying again will not help. A try that timed
# out may have arrived after all, so a guard can get the same alert twice (same call_id and at): better than never.
RETRY_DELAYS = (2.0, 10.0)
_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="webhook")  # not the loop's default executor
_PENDING: set[asyncio.Task[None]] = set()  # keeps running reports referenced until they finish


def threat_payload(call_id: int | None, number: str, at: float, marked_by: str, held: bool) -> dict[str, Any]:
    """What the guard receives (documented in the README's security section)."""
    return {
        "event": "threat",
        "call_id": call_id,  # `registratura recordings export ID --out call.wav` gets the recording
        "number": number,  # full E.164, or "anonymous" for a withheld caller
        "time": datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds"),
        "at": at,
        "marked_by": marked_by,
        "recording_held": held,
    }


def post(url: str, payload: dict[str, Any], timeout: float | None = None) -> str:
    """POST the payload, trying again after ``RETRY_DELAYS``; returns what happened in a few words. Never raises."""
    req = urllib.request.Request(url, data=json.dumps(payload, ensure_ascii=False).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    where = url.split("?")[0]  # a query string may hold a token
    tries = len(RETRY_DELAYS) + 1
    for n in range(1, tries + 1):
        try:
            with urllib.request.urlopen(req, timeout=TIMEOUT if timeout is None else timeout) as resp:
                _LOGGER.info("threat webhook %s answered %s", where, resp.status)
                return f"delivered (HTTP {resp.status})" + (f" on try {n}" if n > 1 else "")
        except (OSError, http.client.HTTPException, ValueError) as exc:  # HTTPError, timeouts, refused, bad replies
            final = n == tries or (isinstance(exc, urllib.error.HTTPError) and 400 <= exc.code < 500)
            _LOGGER.error("threat webhook %s failed (try %d of %d): %s", where, n, tries, exc)
            if final:
                return f"failed: {exc}" + (f" (after {n} tries)" if n > 1 else "")
            time.sleep(RETRY_DELAYS[n - 1])
    raise AssertionError("unreachable")


def report(url: str, payload: dict[str, Any], note: Any) -> asyncio.Task[None]:
    """Start the POST in the background; ``note(detail)`` (a coroutine) records the result in the timeline."""
    async def run() -> None:
        result = await asyncio.get_running_loop().run_in_executor(_POOL, post, url, payload)
        await note(f"webhook {result}")

    task = asyncio.get_running_loop().create_task(run(), name="threat-webhook")
    _PENDING.add(task)
    task.add_done_callback(_PENDING.discard)
    return task
