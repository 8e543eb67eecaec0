"""The one store module: durable facts (calls, timelines, blocks, queue log, callbacks) in SQLite with WAL."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import peewee as pw

from appliance.errors import StoreError
from appliance.store.blocks import BlocksMixin
from appliance.store.migrations import MIGRATIONS
from appliance.store.queue import QueueMixin
from appliance.store.recordings import RecordingsMixin

_LOGGER = logging.getLogger(__name__)

PRAGMAS = {"journal_mode": "wal", "synchronous": "normal", "foreign_keys": 1, "busy_timeout": 5000}
INTERRUPTED = "interrupted"
_DTMF = frozenset("0123456789*#ABCD")



# --- models, bound per Store instance (several stores may live in one process) -----------------------


def _make_models(db: pw.SqliteDatabase) -> tuple[type[pw.Model], type[pw.Model]]:
    class Call(pw.Model):
        id = pw.AutoField()
        sip_call_id = pw.TextField(default="")
        caller = pw.TextField(default="")
        caller_raw = pw.TextField(default="")
        called = pw.TextField(default="")
        source = pw.TextField(default="")
        flow = pw.TextField(default="")
        started_at = pw.FloatField(index=True)
        answered_at = pw.FloatField(null=True)
        ended_at = pw.FloatField(null=True)
        outcome = pw.TextField(null=True)
        digits = pw.TextField(default="")
        recording = pw.TextField(null=True)
        end_reason = pw.TextField(default="")

        class Meta:
            database = db
            table_name = "call"

    class CallEvent(pw.Model):
        id = pw.AutoField()
        call = pw.ForeignKeyField(Call, column_name="call_id", backref="events", on_delete="CASCADE")
        at = pw.FloatField()
        kind = pw.TextField()
        detail = pw.TextField(default="")

        class Meta:
            database = db
            table_name = "call_event"

    return Call, CallEvent


class _Database(pw.SqliteDatabase):
    """SqliteDatabase that remembers every per-thread connection so ``close_all`` can close them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._conns: set[Any] = set()
        self._conns_lock = threading.Lock()

    def _connect(self) -> Any:
        conn = super()._connect()
        with self._conns_lock:
            self._conns.add(conn)
        return conn

    def _close(self, conn: Any) -> None:
        with self._conns_lock:
            self._conns.discard(conn)
        super()._close(conn)

    def close_all(self) -> None:
        self.close()
        with self._conns_lock:
            conns, self._conns = self._conns, set()
        for conn in conns:
            conn.close()


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _chmod_quietly(path: Path, mode: int) -> None:
    try:
        os.chmod(path, mode)
    except FileNotFoundError:
        pass
    except OSError as exc:
        _LOGGER.warning("cannot set mode %o on %s: %s", mode, path, exc)


class Store(BlocksMixin, QueueMixin, RecordingsMixin):
    """Every durable fact goes through here. Writes are synchronous; run them on one writer thread.

    Reads may come from other threads (each thread gets its own SQLite connection; WAL lets readers
    run beside the writer).
    """

    def __init__(self, path: Path | str, *, migrate: bool = True) -> None:
        self.path = Path(path)
        try:
            if not self.path.parent.exists():
                self.path.parent.mkdir(mode=0o700, parents=True)
                os.chmod(self.path.parent, 0o700)
            # Only a new file: closing any descriptor of an open database drops this process's SQLite (POSIX)
            # locks on it, and another process closing its connection then deletes the WAL under our writer.
            if not self.path.exists():
                os.close(os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600))
        except OSError as exc:
            raise StoreError(
                f"cannot create the database {self.path}: {exc.strerror}; check the directory exists "
                "and the service user may write to it"
            ) from exc
        _chmod_quietly(self.path, 0o600)
        # check_same_thread=False only so close() may close other threads' connections; peewee still
        # gives each thread its own connection.
        self._db = _Database(str(self.path), pragmas=PRAGMAS, timeout=5, check_same_thread=False)
        self.Call, self.CallEvent = _make_models(self._db)
        self._sidecars_secured = False
        try:
            self._db.connect(reuse_if_open=True)
            if migrate:
                self.migrate()
        except pw.DatabaseError as exc:
            self._db.close_all()
            raise StoreError(f"cannot open the database {self.path}: {exc}; is it a SQLite file?") from exc
        except BaseException:
            self._db.close_all()
            raise

    # --- lifecycle ------------------------------------------------------------------------------------

    def migrate(self) -> list[int]:
        """Apply missing schema migrations in one transaction; return the versions applied ([] if none)."""
        applied: list[int] = []
        try:
            with self._db.atomic("IMMEDIATE"):
                self._db.execute_sql(
                    'CREATE TABLE IF NOT EXISTS "schema_version" '
                    '("version" INTEGER NOT NULL PRIMARY KEY, "applied_at" REAL NOT NULL)'
                )
                row = self._db.execute_sql('SELECT COALESCE(MAX("version"), 0) FROM "schema_version"')
                current = int(row.fetchone()[0])
                if current > len(MIGRATIONS):
                    raise StoreError(
                        f"the database {self.path} has schema version {current} but this software knows "
                        f"only up to {len(MIGRATIONS)}; install the newer release or restore a backup"
                    )
                for version in range(current + 1, len(MIGRATIONS) + 1):
                    MIGRATIONS[version - 1](self._db)
                    self._db.execute_sql(
                        'INSERT INTO "schema_version" ("version", "applied_at") VALUES (?, ?)',
                        (version, time.time()),
                    )
                    applied.append(version)
        except pw.DatabaseError as exc:
            raise StoreError(f"cannot migrate the database {self.path}: {exc}") from exc
        if applied:
            _LOGGER.info("database %s migrated to schema version %d", self.path, applied[-1])
        self._secure_sidecars()
        return applied

    def schema_version(self) -> int:
        row = self._db.execute_sql('SELECT COALESCE(MAX("version"), 0) FROM "schema_version"').fetchone()
        return int(row[0])

    def close(self) -> None:
        """Close every connection this store opened (from any thread)."""
        self._db.close_all()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _secure_sidecars(self) -> None:
        if self._sidecars_secured:
            return
        for suffix in ("-wal", "-shm"):
            side = self.path.with_name(self.path.name + suffix)
            if side.exists():
                _chmod_quietly(side, 0o600)
                self._sidecars_secured = True

    # --- writes (one writer thread) -------------------------------------------------------------------

    def call_started(
        self,
        *,
        sip_call_id: str,
        caller: str,
        caller_raw: str,
        called: str,
        source: str,
        flow: str,
        started_at: float,
        recording: str | None = None,
    ) -> int:
        """Record a new call and commit before returning its id (durable first)."""
        row = self.Call.create(
            sip_call_id=sip_call_id,
            caller=caller,
            caller_raw=caller_raw,
            called=called,
            source=source,
            flow=flow,
            started_at=float(started_at),
            recording=None if recording is None else str(recording),
        )
        self._secure_sidecars()
        return int(row.id)

    def call_answered(self, call_id: int, at: float) -> None:
        """Set the answer time (the first one wins)."""
        Call = self.Call
        query = Call.update(answered_at=float(at)).where((Call.id == call_id) & Call.answered_at.is_null())
        if not query.execute() and Call.get_or_none(Call.id == call_id) is None:
            _LOGGER.warning("call_answered: no call with id %s", call_id)

    def add_digit(self, call_id: int, digit: str) -> None:
        """Append DTMF digit(s) (0-9 * # A-D) to the call's digit string."""
        digits = str(digit).upper()
        if not digits or not set(digits) <= _DTMF:
            raise ValueError(f"not a DTMF digit: {digit!r} (expected 0-9, *, #, A-D)")
        Call = self.Call
        if not Call.update(digits=Call.digits.concat(digits)).where(Call.id == call_id).execute():
            _LOGGER.warning("add_digit: no call with id %s", call_id)

    def add_event(self, call_id: int, at: float, kind: str, detail: str = "") -> None:
        """Append one entry to the call's timeline."""
        try:
            self.CallEvent.create(call=call_id, at=float(at), kind=kind, detail=detail)
        except pw.IntegrityError as exc:
            raise StoreError(f"cannot add event {kind!r}: no call with id {call_id}") from exc

    def set_caller(self, call_id: int, caller: str) -> None:
        """The number a withheld caller typed in (``caller_raw`` keeps what the line sent)."""
        Call = self.Call
        if not Call.update(caller=caller).where(Call.id == call_id).execute():
            _LOGGER.warning("set_caller: no call with id %s", call_id)

    def set_recording(self, call_id: int, path: str | os.PathLike[str] | None) -> None:
        Call = self.Call
        value = None if path is None else str(path)
        if not Call.update(recording=value).where(Call.id == call_id).execute():
            _LOGGER.warning("set_recording: no call with id %s", call_id)

    def call_ended(self, call_id: int, at: float, outcome: str, reason: str = "") -> bool:
        """Close an open call; return False (and change nothing) if it is unknown or already closed."""
        if not outcome:
            raise ValueError("outcome must be a non-empty string (None means the call is still open)")
        Call = self.Call
        n = (
            Call.update(ended_at=float(at), outcome=outcome, end_reason=reason)
            .where((Call.id == call_id) & Call.outcome.is_null())
            .execute()
        )
        return bool(n)

    def close_interrupted(self, at: float) -> list[int]:
        """At start-up after a crash: close every open call as ``interrupted``; return their ids."""
        Call = self.Call
        with self._db.atomic("IMMEDIATE"):
            ids = [r.id for r in Call.select(Call.id).where(Call.outcome.is_null()).order_by(Call.id)]
            if ids:
                Call.update(ended_at=float(at), outcome=INTERRUPTED, end_reason="box restarted").where(
                    Call.outcome.is_null()
                ).execute()
                self.CallEvent.insert_many(
                    [
                        {"call": i, "at": float(at), "kind": INTERRUPTED, "detail": "box restarted"}
                        for i in ids
                    ]
                ).execute()
        if ids:
            _LOGGER.warning("closed %d call(s) left open by a previous run", len(ids))
        return ids

    # --- reads (any thread) ---------------------------------------------------------------------------

    def recent_calls(self, limit: int = 20) -> list[dict[str, Any]]:
        """The newest calls first, each with its timeline."""
        Call = self.Call
        return self._dicts(Call.select().order_by(Call.started_at.desc(), Call.id.desc()).limit(int(limit)))

    def get_call(self, call_id: int) -> dict[str, Any] | None:
        found = self._dicts(self.Call.select().where(self.Call.id == call_id))
        return found[0] if found else None

    def open_calls(self) -> list[dict[str, Any]]:
        """Calls with no outcome yet, oldest first."""
        Call = self.Call
        return self._dicts(Call.select().where(Call.outcome.is_null()).order_by(Call.started_at, Call.id))

    def count_by_outcome(self) -> dict[str, int]:
        """Closed calls counted by outcome (open calls are not counted; see ``open_calls``)."""
        Call = self.Call
        query = (
            Call.select(Call.outcome, pw.fn.COUNT(Call.id).alias("n"))
            .where(Call.outcome.is_null(False))
            .group_by(Call.outcome)
            .tuples()
        )
        return {outcome: int(n) for outcome, n in query}

    def _dicts(self, query: Iterable[Any]) -> list[dict[str, Any]]:
        CallEvent = self.CallEvent
        with self._db.atomic():  # one snapshot for calls and their events
            rows = list(query)
            events: dict[int, list[dict[str, Any]]] = {r.id: [] for r in rows}
            if rows:
                for ev in (
                    CallEvent.select(CallEvent.call_id, CallEvent.at, CallEvent.kind, CallEvent.detail)
                    .where(CallEvent.call_id.in_(list(events)))
                    .order_by(CallEvent.at, CallEvent.id)
                    .tuples()
                ):
                    events[ev[0]].append({"at": _iso(ev[1]), "kind": ev[2], "detail": ev[3]})
        return [self._as_dict(r, events[r.id]) for r in rows]

    @staticmethod
    def _as_dict(r: Any, events: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": r.id,
            "sip_call_id": r.sip_call_id,
            "caller": r.caller,
            "caller_raw": r.caller_raw,
            "called": r.called,
            "source": r.source,
            "flow": r.flow,
            "outcome": r.outcome,
            "started_at": _iso(r.started_at),
            "answered_at": _iso(r.answered_at),
            "ended_at": _iso(r.ended_at),
            "duration": None if r.ended_at is None else max(0.0, r.ended_at - r.started_at),
            "digits": r.digits,
            "recording": r.recording,
            "end_reason": r.end_reason,
            "events": events,
        }
