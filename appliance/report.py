"""`registratura report --day`: a manager's day in numbers: SL, abandoned, speed of answer, callbacks."""

from __future__ import annotations

import csv
import io
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from appliance.acd.stats import abandoned_calls, compute
from appliance.numbers import mask


def day_bounds(day: date, tz: ZoneInfo) -> tuple[float, float]:
    start = datetime.combine(day, time(0), tzinfo=tz)
    return start.timestamp(), (start + timedelta(days=1)).timestamp()


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def build(store: Any, settings: Any, day: date) -> dict[str, Any]:
    tz = ZoneInfo(settings.clinic.timezone)
    start, end = day_bounds(day, tz)
    records = store.queue_log(start, end)
    queues = sorted({r.queue for r in records} | set(settings.queues))
    out: dict[str, Any] = {"day": day.isoformat(), "queues": {}}
    for name in queues:
        q = settings.queues.get(name)
        threshold = q.service_level if q else 20.0
        stats = compute(records, start, end, threshold=threshold, queue=name, tz=tz)
        out["queues"][name] = {
            "stats": stats,
            "abandoned": [a for a in abandoned_calls(records, start, end) if a.queue == name],
        }
    calls = [c for c in store.recent_calls(limit=100000)
             if start <= datetime.fromisoformat(c["started_at"].replace("Z", "+00:00")).timestamp() < end]
    out["calls"] = len(calls)
    out["by_outcome"] = {}
    for c in calls:
        out["by_outcome"][c["outcome"] or "in progress"] = out["by_outcome"].get(c["outcome"] or "in progress", 0) + 1
    return out


def as_text(report: dict[str, Any], tz: ZoneInfo, full_numbers: bool = False) -> str:
    lines = [f"Registratura report for {report['day']}", f"calls into the box: {report['calls']}"]
    if report["by_outcome"]:
        lines.append("  by outcome: " + ", ".join(f"{k} {v}" for k, v in sorted(report["by_outcome"].items())))
    for name, q in report["queues"].items():
        s = q["stats"]
        lines += [
            "",
            f"queue {name}: offered {s.offered}, answered {s.answered}, abandoned {s.abandoned}, "
            f"callback offers taken {s.callback_exits}",
            f"  service level (answered within {s.threshold:g} s / offered): {_pct(s.service_level)}   target 80%",
            f"  service level, Asterisk (answered within / answered): {_pct(s.asterisk_sl)}",
            f"  abandoned rate: {_pct(s.abandoned_ratio)}   target at most 5%",
            f"  average speed of answer: {'-' if s.asa is None else f'{s.asa:.1f} s'};"
            f" longest wait {s.longest_wait:.0f} s",
            f"  callbacks: scheduled {s.callbacks_scheduled}, done {s.callbacks_done}, failed {s.callbacks_failed}",
        ]
        if s.by_hour:
            lines.append("  hour  offered answered in-SL abandoned")
            for hour in sorted(s.by_hour):
                h = s.by_hour[hour]
                lines.append(f"  {hour:02d}:00 {h.offered:7d} {h.answered:8d} {h.answered_in_sl:5d} {h.abandoned:9d}")
        if q["abandoned"]:
            lines.append("  abandoned callers:")
            for a in q["abandoned"]:
                when = datetime.fromtimestamp(a.at, tz).strftime("%H:%M:%S")
                number = a.number if full_numbers else mask(a.number)
                lines.append(f"    {when} {number:<14} waited {a.wait:.0f} s at position {a.position or '-'}: "
                             f"callback {a.callback}")
    return "\n".join(lines)


def as_csv(report: dict[str, Any], tz: ZoneInfo, full_numbers: bool = False) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["queue", "hour", "offered", "answered", "answered_in_sl", "abandoned"])
    for name, q in report["queues"].items():
        for hour in sorted(q["stats"].by_hour):
            h = q["stats"].by_hour[hour]
            w.writerow([name, f"{hour:02d}", h.offered, h.answered, h.answered_in_sl, h.abandoned])
    w.writerow([])
    w.writerow(["queue", "abandoned_at", "number", "wait_s", "position", "callback"])
    for name, q in report["queues"].items():
        for a in q["abandoned"]:
            w.writerow([name, datetime.fromtimestamp(a.at, tz).isoformat(timespec="seconds"),
                        a.number if full_numbers else mask(a.number), f"{a.wait:.0f}", a.position or "",
                        a.callback])
    return buf.getvalue()
