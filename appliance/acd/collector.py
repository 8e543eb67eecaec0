"""Queue metrics computed from the store at scrape time, so SL and abandoned figures survive restarts."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from appliance.acd.stats import WAIT_BUCKETS, compute

WINDOWS = ("15m", "1h", "today")


class QueueStatsCollector(Collector):
    """Reads the queue log on every scrape (on the HTTP thread, with its own read connection)."""

    def __init__(self, db_path: Path, settings: Any) -> None:
        self.db_path = db_path
        self.settings = settings
        self._local = threading.local()

    def _store(self) -> Any:
        store = getattr(self._local, "store", None)
        if store is None:
            from appliance.store import Store

            store = self._local.store = Store(self.db_path, migrate=False)
        return store

    def describe(self) -> Iterator[Any]:  # static names, so the registry never calls collect() to learn them
        return iter(())

    def collect(self) -> Iterator[Any]:
        store = self._store()
        tz = ZoneInfo(self.settings.clinic.timezone)
        now = time.time()
        midnight = datetime.fromtimestamp(now, tz).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
        starts = {"15m": now - 900, "1h": now - 3600, "today": midnight}
        records = store.queue_log(min(starts.values()), now + 1)
        names = sorted(set(self.settings.queues) | {r.queue for r in records})

        sl = GaugeMetricFamily("registratura_queue_service_level_ratio",
                               "Answered within the service-level threshold / offered (SL 80/20)",
                               labels=["queue", "window"])
        sl_ast = GaugeMetricFamily("registratura_queue_service_level_asterisk_ratio",
                                   "Asterisk app_queue servicelevelperf: answered within threshold / answered",
                                   labels=["queue", "window"])
        aban = GaugeMetricFamily("registratura_queue_abandoned_ratio",
                                 "Callers who hung up while waiting / offered", labels=["queue", "window"])
        offered = GaugeMetricFamily("registratura_queue_offered_calls", "Calls offered to the queue",
                                    labels=["queue", "window"])
        asa = GaugeMetricFamily("registratura_queue_average_speed_of_answer_seconds",
                                "Average wait of answered calls", labels=["queue", "window"])
        for name in names:
            q = self.settings.queues.get(name)
            threshold = q.service_level if q else 20.0
            for window in WINDOWS:
                s = compute(records, starts[window], now + 1, threshold=threshold, queue=name, tz=tz)
                offered.add_metric([name, window], s.offered)
                # No calls, no figure: an empty window is neither 0% nor 100% service.
                if s.service_level is not None:
                    sl.add_metric([name, window], s.service_level)
                if s.asterisk_sl is not None:
                    sl_ast.add_metric([name, window], s.asterisk_sl)
                if s.abandoned_ratio is not None:
                    aban.add_metric([name, window], s.abandoned_ratio)
                if s.asa is not None:
                    asa.add_metric([name, window], s.asa)
        yield from (sl, sl_ast, aban, offered, asa)
        yield self._histogram(store, names)
        cbs = GaugeMetricFamily("registratura_callbacks", "Callback requests by state", labels=["state"])
        counts = store.callback_counts()
        for state in ("pending", "dialing_agent", "dialing_patient", "done", "failed"):
            cbs.add_metric([state], counts.get(state, 0))
        yield cbs

    def _histogram(self, store: Any, names: list[str]) -> HistogramMetricFamily:
        hist = HistogramMetricFamily("registratura_queue_wait_seconds",
                                     "How long callers waited in the queue before leaving it (any outcome)",
                                     labels=["queue"])
        for name in names:
            q = self.settings.queues.get(name)
            buckets = sorted(set(WAIT_BUCKETS) | {q.service_level if q else 20.0})
            count, total, cumulative = store.wait_histogram(name, buckets)
            points = [(floatToGoString(b), c) for b, c in zip(buckets, cumulative, strict=True)] + [("+Inf", count)]
            hist.add_metric([name], points, total)
        return hist
