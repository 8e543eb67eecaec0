"""Unit tests of SL/AAR arithmetic: a scripted queue morning whose figures were worked out by hand."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from appliance.acd import stats
from appliance.acd.model import AgentConfig, QueueConfig, QueueEvent, QueueLogRecord
from appliance.acd.queue import QueueCore

A = "sip:101@10.0.0.1"
T0 = datetime(2025, 3, 3, 9, 0, tzinfo=UTC).timestamp()  # Monday 09:00
E = QueueEvent


def scripted_morning() -> list[QueueLogRecord]:
    """One receptionist, SL threshold 20 s. Waits: answered 5, 60, 2, 55, 20; abandoned 10, 3, 50."""
    q = QueueCore(QueueConfig("reception", (AgentConfig(A),), wrapup=0.0, max_wait=0), now=T0)
    records: list[QueueLogRecord] = []

    def at(t: float, method: str, *args: object, **kw: object) -> None:
        records.extend(getattr(q, method)(*args, T0 + t, **kw).records)

    at(0, "caller_joined", "c1", "+79160000001")  # rings A
    at(5, "agent_answered", A)  # c1: wait 5, in SL
    at(10, "caller_joined", "c2", "+79160000002")
    at(20, "caller_joined", "c3", "+79160000003")
    at(30, "caller_left", "c3")  # abandoned after 10 s: in SL, not short
    at(65, "call_completed", "c1")  # A free: rings c2
    at(70, "agent_answered", A)  # c2: wait 60
    at(100, "call_completed", "c2")
    at(110, "caller_joined", "c4", "+79160000004")
    at(112, "agent_answered", A)  # c4: wait 2
    at(120, "caller_joined", "c5", "+79160000005")
    at(123, "caller_left", "c5")  # abandoned after 3 s: in SL and short
    at(130, "caller_joined", "c6", "+79160000006")
    at(150, "caller_joined", "c7", "+79160000007")
    at(180, "caller_left", "c6")  # abandoned after 50 s
    at(200, "call_completed", "c4")  # rings c7
    at(205, "agent_answered", A)  # c7: wait 55
    at(280, "caller_joined", "c8", "+79160000008")
    at(300, "call_completed", "c7", by="agent")  # rings c8
    at(300, "agent_answered", A)  # c8: wait exactly 20, in SL (<=)
    at(360, "call_completed", "c8")
    return records


def test_scripted_scenario_matches_the_figures_worked_out_by_hand() -> None:
    s = stats.compute(scripted_morning(), T0, T0 + 3600, threshold=20, grace=5)
    assert (s.offered, s.answered, s.answered_in_sl) == (8, 5, 3)
    assert (s.abandoned, s.abandoned_in_sl, s.short_abandoned) == (3, 2, 1)
    assert s.service_level == pytest.approx(3 / 8)  # answered within 20 s / offered
    assert s.asterisk_sl == pytest.approx(3 / 5)  # servicelevelperf
    assert s.asterisk_sl2 == pytest.approx((3 + 2) / (5 + 3))  # servicelevelperf2
    assert s.abandoned_ratio == pytest.approx(3 / 8)
    assert s.asa == pytest.approx((5 + 60 + 2 + 55 + 20) / 5)
    assert s.longest_wait == 60
    assert s.average_talk == pytest.approx((60 + 30 + 88 + 95 + 60) / 5)
    assert s.callbacks_scheduled == 1  # only c6 waited more than 10 s (c3 waited exactly 10)
    assert s.by_hour == {9: stats.HourStats(offered=8, answered=5, answered_in_sl=3, abandoned=3)}


def test_window_counts_calls_by_when_they_left_the_queue() -> None:
    s = stats.compute(scripted_morning(), T0, T0 + 100)  # c1 (5), c3 (abandon, 10), c2 (60)
    assert (s.offered, s.answered, s.answered_in_sl, s.abandoned) == (3, 2, 1, 1)
    assert s.service_level == pytest.approx(1 / 3)


def test_empty_window_has_no_ratios() -> None:
    s = stats.compute(scripted_morning(), T0 - 100, T0)
    assert s.offered == 0 and s.service_level is None and s.asterisk_sl is None and s.abandoned_ratio is None


def test_timeouts_key_exits_and_callback_exits_in_each_definition() -> None:
    def rec(call_id: str, event: QueueEvent, wait: float, t: float = 100) -> QueueLogRecord:
        return QueueLogRecord("reception", call_id, "NONE", event, T0 + t, wait=wait)

    records = [
        rec("a", E.CONNECT, 10),
        rec("b", E.EXITWITHTIMEOUT, 15),  # app_queue counts a timeout as abandoned (in SL here)
        rec("c", E.EXITWITHKEY, 5),  # left by key: neither answered nor abandoned for app_queue
        rec("d", E.EXIT_CALLBACK, 65),  # took the callback offer
        rec("a", E.ABANDON, 99, t=101),  # a second outcome for one call is ignored
        rec("e", E.CONNECT, 30, t=3700),  # 10:01
    ]
    s = stats.compute(records, T0, T0 + 7200, threshold=20)
    assert (s.offered, s.answered, s.timed_out, s.key_exits, s.callback_exits) == (5, 2, 1, 1, 1)
    assert s.service_level == pytest.approx(1 / 5)
    assert s.asterisk_sl == pytest.approx(1 / 2)
    assert s.asterisk_sl2 == pytest.approx((1 + 1) / (2 + 1))
    assert s.abandoned_ratio == 0
    assert sorted(s.by_hour) == [9, 10]  # by the hour the caller entered
    assert stats.compute(records, T0, T0 + 7200, queue="other").offered == 0


def test_wait_histogram_has_the_threshold_bucket() -> None:
    counts, total, n = stats.wait_histogram(scripted_morning(), T0, T0 + 3600, buckets=(5, 20, 60))
    assert counts == [3, 5, 8]  # waits 5 2 3 | 10 20 | 60 55 50
    assert (total, n) == (5 + 60 + 2 + 55 + 20 + 10 + 3 + 50, 8)


def test_abandoned_calls_with_what_became_of_their_callback() -> None:
    records = scripted_morning()
    rows = stats.abandoned_calls(records, T0, T0 + 3600)
    assert [(r.call_id, r.number, r.wait, r.position, r.callback) for r in rows] == [
        ("c3", "+79160000003", 10, 2, "skipped: short_wait"),
        ("c5", "+79160000005", 3, 1, "skipped: short_wait"),
        ("c6", "+79160000006", 50, 1, "pending"),
    ]
    done = QueueLogRecord("reception", "c6", A, E.CALLBACK_DONE, T0 + 4000)
    assert stats.abandoned_calls([*records, done], T0, T0 + 3600)[-1].callback == "done"
