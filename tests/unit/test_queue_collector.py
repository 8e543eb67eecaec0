"""Queue metrics come from the store: a new process (after a restart) reports the same SL and abandoned."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from appliance.acd.collector import QueueStatsCollector
from appliance.acd.model import QueueEvent as E
from appliance.acd.model import QueueLogRecord as R
from appliance.settings import settings_from_mapping
from appliance.store import Store


def _scrape(db, settings) -> dict[tuple[str, tuple], float]:
    reg = CollectorRegistry()
    reg.register(QueueStatsCollector(db, settings))
    out = {}
    for fam in text_string_to_metric_families(generate_latest(reg).decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_sl_abandoned_and_wait_histogram_from_the_store(tmp_path):
    db = tmp_path / "r.db"
    settings = settings_from_mapping({"data_dir": str(tmp_path), "queues": {"reception": {}}}, tmp_path)
    now = time.time() - 60
    store = Store(db)
    store.write_acd([
        R("reception", "a", "NONE", E.ENTER, now - 100, position=1, number="+79160000001"),
        R("reception", "a", "sip:101@x", E.CONNECT, now - 90, wait=10, position=1, orig_position=1),
        R("reception", "b", "NONE", E.ENTER, now - 80, position=1, number="+79160000002"),
        R("reception", "b", "sip:101@x", E.CONNECT, now - 40, wait=40, position=1, orig_position=1),
        R("reception", "c", "NONE", E.ENTER, now - 30, position=1, number="+79160000003"),
        R("reception", "c", "NONE", E.ABANDON, now - 5, wait=25, position=1, orig_position=1),
    ])
    store.close()
    m = _scrape(db, settings)
    lab = (("queue", "reception"), ("window", "1h"))
    assert m[("registratura_queue_offered_calls", lab)] == 3
    assert abs(m[("registratura_queue_service_level_ratio", lab)] - 1 / 3) < 1e-9
    assert abs(m[("registratura_queue_abandoned_ratio", lab)] - 1 / 3) < 1e-9
    assert m[("registratura_queue_average_speed_of_answer_seconds", lab)] == 25.0
    q = (("queue", "reception"),)
    assert m[("registratura_queue_wait_seconds_bucket", (("le", "20.0"), ("queue", "reception")))] == 1
    assert m[("registratura_queue_wait_seconds_bucket", (("le", "30.0"), ("queue", "reception")))] == 2
    assert m[("registratura_queue_wait_seconds_count", q)] == 3
    assert m[("registratura_callbacks", (("state", "pending"),))] == 0


def test_empty_window_has_no_ratio(tmp_path):
    settings = settings_from_mapping({"data_dir": str(tmp_path), "queues": {"reception": {}}}, tmp_path)
    Store(tmp_path / "r.db").close()
    m = _scrape(tmp_path / "r.db", settings)
    assert m[("registratura_queue_offered_calls", (("queue", "reception"), ("window", "15m")))] == 0
    assert not any(k[0] == "registratura_queue_service_level_ratio" for k in m)
