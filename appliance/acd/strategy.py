"""Which free agent(s) to ring, by strategy and penalty, and the expected-wait estimate."""

from __future__ import annotations

import math
from collections.abc import Sequence

from appliance.acd.model import AgentState, Strategy


def eligible(agent: AgentState, needs: frozenset[str]) -> bool:
    """The agent has every skill the queue and the caller need."""
    return needs <= agent.config.skills


def pick(
    strategy: Strategy,
    free: Sequence[AgentState],
    order: Sequence[str],
    last_rung: str = "",
    tried: frozenset[str] = frozenset(),
) -> tuple[str, ...]:
    """Agent URIs to ring now, chosen from ``free`` (all free and eligible).

    * Only the lowest penalty present among ``free`` is considered (as app_queue does).
    * Agents in ``tried`` (they already missed this caller) are passed over while another is free.
    * ``ring_all``: every remaining agent, in settings order.
    * ``longest_idle``: the one with the oldest ``idle_since``; ties go to settings order.
    * ``round_robin``: the first one after ``last_rung`` in settings order, wrapping around.
    * ``fewest_calls``: the one with the fewest ``calls_taken``; ties go to longest idle, then settings order.
    """
    if not free:
        return ()
    low = min(a.config.penalty for a in free)
    pool = [a for a in free if a.config.penalty == low]
    pool = [a for a in pool if a.uri not in tried] or pool
    rank = {uri: i for i, uri in enumerate(order)}
    pool.sort(key=lambda a: rank.get(a.uri, len(rank)))
    if strategy is Strategy.RING_ALL:
        return tuple(a.uri for a in pool)
    if strategy is Strategy.LONGEST_IDLE:
        return (min(pool, key=lambda a: a.idle_since).uri,)  # min() keeps the first of equals: settings order
    if strategy is Strategy.FEWEST_CALLS:
        return (min(pool, key=lambda a: (a.calls_taken, a.idle_since)).uri,)
    # round_robin: continue after the agent rung last (even if that one is busy or gone now)
    start = rank.get(last_rung, -1)
    after = [a for a in pool if rank.get(a.uri, len(rank)) > start]
    return ((after or pool)[0].uri,)


def expected_wait(
    position: int, handle_times: Sequence[float], staffed: int, default_handle_time: float
) -> float | None:
    """Seconds a caller at ``position`` can expect to wait, or None when nobody is staffed.

    A deliberately simple estimate: callers are served ``staffed`` at a time (agents neither paused nor
    offline, busy ones included since they will come free), each taking the average handle time (talk +
    wrap-up) of the recent calls (``default_handle_time`` until a call has been seen):
    ``ceil(position / staffed) * average_handle_time``. No credit is taken for calls already in progress,
    so it errs on the long side: callers prefer a pleasant surprise to a broken promise.
    """
    if staffed <= 0 or position <= 0:
        return None
    aht = sum(handle_times) / len(handle_times) if handle_times else default_handle_time
    return math.ceil(position / staffed) * aht
