"""Store part: the queue log (like Asterisk's queue_log) and callback requests, both written before acting."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, fields
from typing import Any

from appliance.acd.callbacks import Callback, CallbackState
from appliance.acd.model import QueueEvent, QueueLogRecord

_LOG_COLUMNS = tuple(f.name for f in fields(QueueLogRecord))
_CB_COLUMNS = tuple(f.name for f in fields(Callback))


class QueueMixin:
    _db: Any

    def write_acd(self, records: Iterable[QueueLogRecord] = (), callbacks: Iterable[Callback] = ()) -> None:
        """One transaction: queue events and callback rows are durable before the box acts on them."""
        records, callbacks = list(records), list(callbacks)
        if not records and not callbacks:
            return
        with self._db.atomic():
            for r in records:
                row = asdict(r)
                row["event"] = str(r.event)
                self._db.execute_sql(
                    f'INSERT INTO "queue_log" ({", ".join(_LOG_COLUMNS)}) '
                    f'VALUES ({", ".join("?" for _ in _LOG_COLUMNS)})', tuple(row[c] for c in _LOG_COLUMNS))
            for cb in callbacks:
                row = asdict(cb)
                row["state"] = str(cb.state)
                self._db.execute_sql(
                    f'INSERT OR REPLACE INTO "callback" ({", ".join(_CB_COLUMNS)}) '
                    f'VALUES ({", ".join("?" for _ in _CB_COLUMNS)})', tuple(row[c] for c in _CB_COLUMNS))

    def queue_log(self, start: float, end: float, queue: str | None = None) -> list[QueueLogRecord]:
        sql = f'SELECT {", ".join(_LOG_COLUMNS)} FROM "queue_log" WHERE at >= ? AND at < ?'
        args: list[Any] = [start, end]
        if queue is not None:
            sql += " AND queue = ?"
            args.append(queue)
        rows = self._db.execute_sql(sql + " ORDER BY at, id", args).fetchall()
        out = []
        for row in rows:
            data = dict(zip(_LOG_COLUMNS, row, strict=True))
            data["event"] = QueueEvent(data["event"])
            out.append(QueueLogRecord(**data))
        return out

    def wait_histogram(self, queue: str, buckets: list[float]) -> tuple[int, float, list[int]]:
        """All-time (count, sum, cumulative counts per bucket) of waits of calls that left ``queue``."""
        from appliance.acd.stats import OUTCOMES

        events = tuple(str(e) for e in OUTCOMES)
        cases = ", ".join("SUM(CASE WHEN COALESCE(wait, 0) <= ? THEN 1 ELSE 0 END)" for _ in buckets)
        row = self._db.execute_sql(
            f'SELECT COUNT(*), COALESCE(SUM(wait), 0), {cases} FROM "queue_log" '
            f'WHERE queue = ? AND event IN ({", ".join("?" for _ in events)})',
            (*buckets, queue, *events)).fetchone()
        return int(row[0]), float(row[1]), [int(c or 0) for c in row[2:]]

    def last_callback_at(self, number: str) -> float | None:
        row = self._db.execute_sql(
            'SELECT MAX(at) FROM "queue_log" WHERE number = ? AND event = ?',
            (number, str(QueueEvent.CALLBACK_SCHEDULED))).fetchone()
        return row[0] if row and row[0] is not None else None

    def callbacks(self, states: Iterable[CallbackState] | None = None) -> list[Callback]:
        sql = f'SELECT {", ".join(_CB_COLUMNS)} FROM "callback"'
        args: list[Any] = []
        if states is not None:
            wanted = [str(s) for s in states]
            sql += f' WHERE state IN ({", ".join("?" for _ in wanted)})'
            args = wanted
        rows = self._db.execute_sql(sql + " ORDER BY created_at", args).fetchall()
        out = []
        for row in rows:
            data = dict(zip(_CB_COLUMNS, row, strict=True))
            data["state"] = CallbackState(data["state"])
            out.append(Callback(**data))
        return out

    def callback_counts(self) -> dict[str, int]:
        rows = self._db.execute_sql('SELECT state, COUNT(*) FROM "callback" GROUP BY state').fetchall()
        return {state: count for state, count in rows}

    def reset_interrupted_callbacks(self, at: float) -> int:
        """After a restart a callback caught mid-dial is pending again (its legs died with the process)."""
        with self._db.atomic():
            cur = self._db.execute_sql(
                'UPDATE "callback" SET state = ?, updated_at = ?, detail = ? WHERE state IN (?, ?)',
                (str(CallbackState.PENDING), at, "box restarted while dialling",
                 str(CallbackState.DIALING_AGENT), str(CallbackState.DIALING_PATIENT)))
        return int(cur.rowcount)

    # --- receptionists changed at run time by the CLI; the box applies the commands and publishes states ----

    def add_agent_command(self, queue: str, action: str, uri: str, at: float) -> int:
        with self._db.atomic():
            cur = self._db.execute_sql(
                'INSERT INTO "agent_command" (queue, action, uri, created_at) VALUES (?, ?, ?, ?)',
                (queue, action, uri, at))
        return int(cur.lastrowid)

    def open_agent_commands(self) -> list[tuple[int, str, str, str]]:
        return self._db.execute_sql(
            'SELECT id, queue, action, uri FROM "agent_command" WHERE done_at IS NULL ORDER BY id').fetchall()

    def applied_agent_commands(self) -> list[tuple[str, str, str]]:
        """(queue, action, uri) of every receptionist command the box applied, oldest first."""
        return self._db.execute_sql(
            'SELECT queue, action, uri FROM "agent_command" WHERE done_at IS NOT NULL AND result = ? ORDER BY id',
            ("ok",)).fetchall()

    def finish_agent_command(self, command_id: int, at: float, result: str) -> None:
        with self._db.atomic():
            self._db.execute_sql('UPDATE "agent_command" SET done_at = ?, result = ? WHERE id = ?',
                                 (at, result, command_id))

    def agent_command_result(self, command_id: int) -> str | None:
        row = self._db.execute_sql('SELECT done_at, result FROM "agent_command" WHERE id = ?',
                                   (command_id,)).fetchone()
        return None if row is None or row[0] is None else row[1]

    def set_agent_states(self, queue: str, states: list[tuple[str, str, int, int]], at: float) -> None:
        """Replace the published states of a queue's receptionists: (uri, state, calls taken, missed)."""
        with self._db.atomic():
            self._db.execute_sql('DELETE FROM "agent_state" WHERE queue = ?', (queue,))
            for uri, state, taken, missed in states:
                self._db.execute_sql(
                    'INSERT INTO "agent_state" (queue, uri, state, calls_taken, missed, updated_at) '
                    "VALUES (?, ?, ?, ?, ?, ?)", (queue, uri, state, taken, missed, at))

    def agent_states(self) -> list[dict[str, Any]]:
        rows = self._db.execute_sql(
            'SELECT queue, uri, state, calls_taken, missed, updated_at FROM "agent_state" ORDER BY queue, uri'
        ).fetchall()
        keys = ("queue", "uri", "state", "calls_taken", "missed", "updated_at")
        return [dict(zip(keys, r, strict=True)) for r in rows]
