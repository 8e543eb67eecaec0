"""What a waiting caller hears and when: position announcements and the max-wait callback offer (pure)."""

from __future__ import annotations

from appliance.acd.model import QueueConfig, WaitingCaller

OFFER = "offer"
ANNOUNCE = "announce"


def may_offer(c: WaitingCaller, cfg: QueueConfig) -> bool:
    """The callback offer is made once, and never to a withheld or blocked number (nothing to dial)."""
    return bool(cfg.max_wait) and not (c.offered_callback or c.withheld or c.blocked)


def due(c: WaitingCaller, cfg: QueueConfig, now: float) -> str:
    """``OFFER``, ``ANNOUNCE`` or "" for a caller at ``now``.

    Never anything while an agent rings for the caller: they are about to be connected. The offer comes
    first once ``max_wait`` has passed. An announcement is due on entering the queue, when the position
    changed (but not closer than ``announce_min_gap`` to the previous one, so a burst of answers does not
    stack prompts), and every ``announce_every`` seconds.
    """
    if c.ringing:
        return ""
    if may_offer(c, cfg) and now - c.entered_at >= cfg.max_wait:
        return OFFER
    if c.announced_at is None:
        return ANNOUNCE
    since = now - c.announced_at
    if c.announced_position != c.position and since >= cfg.announce_min_gap:
        return ANNOUNCE
    if cfg.announce_every and since >= cfg.announce_every:
        return ANNOUNCE
    return ""


def deadlines(c: WaitingCaller, cfg: QueueConfig, now: float) -> list[float]:
    """When ``due`` (or the queue timeout) may next say something for this caller."""
    if c.ringing:
        return []  # the ring's own deadline comes first
    times = []
    if may_offer(c, cfg):
        times.append(c.entered_at + cfg.max_wait)
    if cfg.timeout:
        times.append(c.entered_at + cfg.timeout)
    if c.announced_at is None:
        times.append(now)
    else:
        if c.announced_position != c.position:
            times.append(c.announced_at + cfg.announce_min_gap)
        if cfg.announce_every:
            times.append(c.announced_at + cfg.announce_every)
    return times
