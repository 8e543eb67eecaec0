"""Service level, abandoned rate and speed of answer from queue_log records over a window (pure arithmetic).

A queue call counts in the window in which it *left the queue*: its one outcome record (CONNECT, ABANDON,
EXITWITHTIMEOUT, EXITWITHKEY, EXIT_CALLBACK) has ``window_start <= at < window_end``; each carries the wait.
Callers still waiting are not counted yet (the live snapshot shows them). "Within the threshold" means
``wait <= threshold``, inclusive, as app_queue compares ``(now - qe->start) <= servicelevel``.

=====================  ===========================================================  ==================
Figure                 Formula                                                      Nothing to count
=====================  ===========================================================  ==================
``service_level``      answered within threshold / offered, where offered = every   None
(ours, the 80/20)      call that left the queue: answered + abandoned + timed out
                       + left by key + took the callback offer
``asterisk_sl``        answered within threshold / answered                         None (Asterisk: 0)
(app_queue             (``callscompletedinsl / callscompleted``)
``servicelevelperf``)
``asterisk_sl2``       (answered within threshold + abandoned within threshold) /   None (Asterisk: 0)
(app_queue             (answered + abandoned), where abandoned = hung up + timed out
``servicelevelperf2``) (``(callscompletedinsl + callsabandonedinsl) /
                       (callscompleted + callsabandoned)``)
``abandoned_ratio``    hung up while waiting (ABANDON) / offered                    None
``asa``                mean wait of answered calls (average speed of answer)        None
=====================  ===========================================================  ==================

Differences from app_queue, on purpose: app_queue counts a call as completed when the bridged call *ends*;
we count it at CONNECT (so a call in progress belongs to the window it was answered in; over a finished day
the totals agree). app_queue's abandoned also includes EXITEMPTY, which this queue never produces (callers
wait for a receptionist even when none is logged in). Neither definition counts EXITWITHKEY (app_queue
does not call ``record_abandoned`` for it) nor our EXIT_CALLBACK in its denominators; ours counts both as
offered and not answered within the threshold, which is the honest reading for a patient.
``short_abandoned`` (hung up within ``grace`` seconds, a change of mind rather than a lost patient) is
reported beside the figures and subtracted nowhere; ``abandoned_in_sl`` is app_queue's
``callsabandonedinsl`` (hung up or timed out within the service-level threshold).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo

from appliance.acd.model import QueueEvent, QueueLogRecord

_E = QueueEvent
OUTCOMES = frozenset({_E.CONNECT, _E.ABANDON, _E.EXITWITHTIMEOUT, _E.EXITWITHKEY, _E.EXIT_CALLBACK})
WAIT_BUCKETS = (5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)  # seconds; 20 is the SL threshold


@dataclass(frozen=True, slots=True)
class HourStats:
    offered: int = 0
    answered: int = 0
    answered_in_sl: int = 0
    abandoned: int = 0


@dataclass(frozen=True, slots=True)
class QueueStats:
    start: float
    end: float
    threshold: float
    offered: int = 0
    answered: int = 0
    answered_in_sl: int = 0
    abandoned: int = 0  # ABANDON: hung up while waiting
    abandoned_in_sl: int = 0  # app_queue's callsabandonedinsl: ABANDON or EXITWITHTIMEOUT with wait <= threshold
    short_abandoned: int = 0  # ABANDON with wait <= grace
    timed_out: int = 0
    key_exits: int = 0
    callback_exits: int = 0
    service_level: float | None = None
    asterisk_sl: float | None = None
    asterisk_sl2: float | None = None
    abandoned_ratio: float | None = None
    asa: float | None = None  # seconds
    longest_wait: float = 0.0  # over every outcome in the window, answered or not
    average_talk: float | None = None  # seconds, over COMPLETE* records in the window
    callbacks_scheduled: int = 0
    callbacks_done: int = 0
    callbacks_failed: int = 0
    by_hour: dict[int, HourStats] = field(default_factory=dict)  # local hour the caller entered -> counts


def compute(
    records: Iterable[QueueLogRecord],
    start: float,
    end: float,
    threshold: float = 20.0,
    *,
    grace: float = 5.0,
    queue: str | None = None,
    tz: tzinfo = UTC,
) -> QueueStats:
    """The figures for ``start <= at < end`` (``queue`` None = every queue). ``tz`` places calls by hour."""
    outcomes: dict[tuple[str, str], QueueLogRecord] = {}
    talks: list[float] = []
    cb = {_E.CALLBACK_SCHEDULED: 0, _E.CALLBACK_DONE: 0, _E.CALLBACK_FAILED: 0}
    for r in records:
        if not start <= r.at < end or (queue is not None and r.queue != queue):
            continue
        if r.event in OUTCOMES:
            outcomes.setdefault((r.queue, r.call_id), r)  # one outcome per call: the first wins
        elif r.event in (_E.COMPLETECALLER, _E.COMPLETEAGENT) and r.talk is not None:
            talks.append(r.talk)
        elif r.event in cb:
            cb[r.event] += 1

    def n(event: QueueEvent, within: float | None = None) -> int:
        return sum(1 for r in outcomes.values() if r.event is event and (within is None or _wait(r) <= within))

    answered, answered_in_sl = n(_E.CONNECT), n(_E.CONNECT, threshold)
    abandoned, timed_out = n(_E.ABANDON), n(_E.EXITWITHTIMEOUT)
    abandoned_in_sl = n(_E.ABANDON, threshold) + n(_E.EXITWITHTIMEOUT, threshold)
    offered = len(outcomes)
    answer_waits = [_wait(r) for r in outcomes.values() if r.event is _E.CONNECT]
    return QueueStats(
        start,
        end,
        threshold,
        offered=offered,
        answered=answered,
        answered_in_sl=answered_in_sl,
        abandoned=abandoned,
        abandoned_in_sl=abandoned_in_sl,
        short_abandoned=n(_E.ABANDON, grace),
        timed_out=timed_out,
        key_exits=n(_E.EXITWITHKEY),
        callback_exits=n(_E.EXIT_CALLBACK),
        service_level=_ratio(answered_in_sl, offered),
        asterisk_sl=_ratio(answered_in_sl, answered),
        asterisk_sl2=_ratio(answered_in_sl + abandoned_in_sl, answered + abandoned + timed_out),
        abandoned_ratio=_ratio(abandoned, offered),
        asa=sum(answer_waits) / len(answer_waits) if answer_waits else None,
        longest_wait=max((_wait(r) for r in outcomes.values()), default=0.0),
        average_talk=sum(talks) / len(talks) if talks else None,
        callbacks_scheduled=cb[_E.CALLBACK_SCHEDULED],
        callbacks_done=cb[_E.CALLBACK_DONE],
        callbacks_failed=cb[_E.CALLBACK_FAILED],
        by_hour=_by_hour(outcomes.values(), threshold, tz),
    )


def wait_histogram(
    records: Iterable[QueueLogRecord], start: float, end: float, buckets: Sequence[float] = WAIT_BUCKETS
) -> tuple[list[int], float, int]:
    """Cumulative counts per bucket upper bound (Prometheus ``le``), the sum and the count of the waits of
    calls that left the queue in the window, for a histogram rebuilt from the store after a restart."""
    seen: dict[tuple[str, str], float] = {}
    for r in records:
        if start <= r.at < end and r.event in OUTCOMES:
            seen.setdefault((r.queue, r.call_id), _wait(r))
    waits = list(seen.values())
    return [sum(1 for w in waits if w <= b) for b in sorted(buckets)], sum(waits), len(waits)


@dataclass(frozen=True, slots=True)
class AbandonedCall:
    call_id: str
    queue: str
    number: str
    at: float
    wait: float
    position: int | None
    callback: str  # "skipped: withheld", "pending", "done", "failed: ...", ...


def abandoned_calls(records: Sequence[QueueLogRecord], start: float, end: float) -> list[AbandonedCall]:
    """Callers who hung up in the queue within the window and what became of their callback (the callback
    records are looked up in all of ``records``, so pass the days after too when there are any)."""
    fate: dict[str, str] = {}
    for r in sorted(records, key=lambda r: r.at):
        if r.event is _E.CALLBACK_SKIPPED:
            fate[r.call_id] = f"skipped: {r.detail}"
        elif r.event in (_E.CALLBACK_SCHEDULED, _E.CALLBACK_ATTEMPT, _E.CALLBACK_RETRY):
            fate[r.call_id] = "pending"
        elif r.event is _E.CALLBACK_DONE:
            fate[r.call_id] = "done"
        elif r.event is _E.CALLBACK_FAILED:
            fate[r.call_id] = f"failed: {r.detail}"
    return [
        AbandonedCall(r.call_id, r.queue, r.number, r.at, _wait(r), r.position, fate.get(r.call_id, "none"))
        for r in sorted(records, key=lambda r: r.at)
        if r.event is _E.ABANDON and start <= r.at < end
    ]


def _wait(r: QueueLogRecord) -> float:
    return r.wait if r.wait is not None else 0.0


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _by_hour(outcomes: Iterable[QueueLogRecord], threshold: float, tz: tzinfo) -> dict[int, HourStats]:
    hours: dict[int, HourStats] = {}
    for r in outcomes:
        hour = datetime.fromtimestamp(r.at - _wait(r), tz).hour  # the hour the caller entered
        h = hours.get(hour, HourStats())
        answered = r.event is _E.CONNECT
        hours[hour] = HourStats(
            h.offered + 1,
            h.answered + answered,
            h.answered_in_sl + (answered and _wait(r) <= threshold),
            h.abandoned + (r.event is _E.ABANDON),
        )
    return dict(sorted(hours.items()))
