"""The store on a real SQLite file: migrations, call records, durability, WAL, file modes."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.errors import StoreError
from appliance.store import MIGRATIONS, Store

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "var" / "calls.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[Store]:
    s = Store(db_path)
    yield s
    s.close()


def _start(store: Store, at: float = T0, caller: str = "+79161234567", **kw: object) -> int:
    args: dict[str, object] = {
        "sip_call_id": f"cid-{at}",
        "caller": caller,
        "caller_raw": "89161234567",
        "called": "100",
        "source": "192.0.2.10:5060",
        "flow": "main",
        "started_at": at,
    }
    args.update(kw)
    return store.call_started(**args)  # type: ignore[arg-type]


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_migrate_twice_is_a_noop(db_path: Path) -> None:
    s = Store(db_path, migrate=False)
    try:
        assert s.migrate() == list(range(1, len(MIGRATIONS) + 1))
        assert s.migrate() == []
        assert s.schema_version() == len(MIGRATIONS)
        tables = {r[0] for r in s._db.execute_sql("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"schema_version", "call", "call_event"} <= tables
    finally:
        s.close()
    with Store(db_path) as again:  # constructor migrates: nothing left to do
        assert again.migrate() == []
        rows = again._db.execute_sql("SELECT version FROM schema_version").fetchall()
        assert [r[0] for r in rows] == list(range(1, len(MIGRATIONS) + 1))


def test_database_newer_than_software(db_path: Path) -> None:
    with Store(db_path) as s:
        s._db.execute_sql("INSERT INTO schema_version (version, applied_at) VALUES (99, 0)")
    with pytest.raises(StoreError, match="schema version 99"):
        Store(db_path)


def test_not_a_database(tmp_path: Path) -> None:
    p = tmp_path / "calls.db"
    p.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="calls.db"):
        Store(p)


def test_call_round_trip(store: Store) -> None:
    cid = _start(store)
    assert store.get_call(cid)["outcome"] is None  # type: ignore[index]
    store.call_answered(cid, T0 + 1.5)
    store.call_answered(cid, T0 + 9)  # first answer wins
    for d in "12#":
        store.add_digit(cid, d)
    store.add_digit(cid, "a")
    store.add_event(cid, T0 + 0.25, "play greeting", "welcome.wav")
    store.add_event(cid, T0 + 2, "dtmf 1")
    store.set_recording(cid, Path("/var/lib/registratura/rec/1.wav"))
    assert [c["id"] for c in store.open_calls()] == [cid]

    assert store.call_ended(cid, T0 + 12.5, "completed", "hangup by caller") is True
    assert store.call_ended(cid, T0 + 20, "abandoned", "late") is False  # already closed

    c = store.get_call(cid)
    assert c == {
        "id": cid,
        "sip_call_id": f"cid-{T0}",
        "caller": "+79161234567",
        "caller_raw": "89161234567",
        "called": "100",
        "source": "192.0.2.10:5060",
        "flow": "main",
        "outcome": "completed",
        "started_at": "2023-11-14T22:13:20.000Z",
        "answered_at": "2023-11-14T22:13:21.500Z",
        "ended_at": "2023-11-14T22:13:32.500Z",
        "duration": 12.5,
        "digits": "12#A",
        "recording": "/var/lib/registratura/rec/1.wav",
        "end_reason": "hangup by caller",
        "events": [
            {"at": "2023-11-14T22:13:20.250Z", "kind": "play greeting", "detail": "welcome.wav"},
            {"at": "2023-11-14T22:13:22.000Z", "kind": "dtmf 1", "detail": ""},
        ],
    }
    assert store.open_calls() == []
    assert store.get_call(cid + 100) is None


def test_bad_input(store: Store) -> None:
    cid = _start(store)
    with pytest.raises(ValueError, match="DTMF"):
        store.add_digit(cid, "x")
    with pytest.raises(ValueError, match="DTMF"):
        store.add_digit(cid, "")
    with pytest.raises(ValueError, match="outcome"):
        store.call_ended(cid, T0, "")
    with pytest.raises(StoreError, match="no call with id 999"):
        store.add_event(999, T0, "dtmf 1")
    # Updates of unknown calls change nothing and do not raise.
    store.call_answered(999, T0)
    store.add_digit(999, "1")
    store.set_recording(999, "/x.wav")
    assert store.call_ended(999, T0, "completed") is False


def test_recent_calls_newest_first_and_counts(store: Store) -> None:
    ids = [_start(store, at=T0 + i) for i in range(5)]
    store.call_ended(ids[0], T0 + 10, "completed")
    store.call_ended(ids[1], T0 + 10, "abandoned")
    store.call_ended(ids[2], T0 + 10, "completed")
    recent = store.recent_calls(limit=3)
    assert [c["id"] for c in recent] == [ids[4], ids[3], ids[2]]
    assert recent[0]["duration"] is None and recent[0]["ended_at"] is None
    assert store.count_by_outcome() == {"completed": 2, "abandoned": 1}
    assert [c["id"] for c in store.open_calls()] == [ids[3], ids[4]]


def test_durable_after_reopen_without_close(db_path: Path) -> None:
    first = Store(db_path)
    cid = _start(first)
    first.add_digit(cid, "5")
    # No close(): a new Store (as after a crash) must already see the committed row.
    second = Store(db_path)
    try:
        c = second.get_call(cid)
        assert c is not None and c["digits"] == "5" and c["outcome"] is None
    finally:
        second.close()
        first.close()


def test_close_interrupted(store: Store, db_path: Path) -> None:
    done = _start(store, at=T0)
    store.call_ended(done, T0 + 5, "completed")
    open1 = _start(store, at=T0 + 1)
    open2 = _start(store, at=T0 + 2)
    store.close()

    with Store(db_path) as restarted:
        assert restarted.close_interrupted(T0 + 100) == [open1, open2]
        assert restarted.close_interrupted(T0 + 200) == []
        c = restarted.get_call(open1)
        assert c is not None
        assert (c["outcome"], c["end_reason"], c["duration"]) == ("interrupted", "box restarted", 99.0)
        assert c["events"][-1]["kind"] == "interrupted"
        assert restarted.get_call(done)["outcome"] == "completed"  # type: ignore[index]
        assert restarted.open_calls() == []
        assert restarted.count_by_outcome() == {"completed": 1, "interrupted": 2}


def test_file_modes(tmp_path: Path) -> None:
    db_path = tmp_path / "state" / "calls.db"
    old = os.umask(0)  # modes must not depend on the service's umask
    try:
        with Store(db_path) as s:
            _start(s)
            assert _mode(db_path.parent) == 0o700
            assert _mode(db_path) == 0o600
            for suffix in ("-wal", "-shm"):
                side = db_path.with_name(db_path.name + suffix)
                assert side.exists(), suffix
                assert _mode(side) == 0o600, suffix
    finally:
        os.umask(old)


def test_pragmas(store: Store) -> None:
    def pragma(name: str) -> object:
        return store._db.execute_sql(f"PRAGMA {name}").fetchone()[0]

    assert pragma("journal_mode") == "wal"
    assert pragma("synchronous") == 1  # NORMAL
    assert pragma("foreign_keys") == 1
    assert pragma("busy_timeout") == 5000


_READER = """
import sqlite3, sys
con = sqlite3.connect(sys.argv[1], timeout=0.5)
mode = con.execute("PRAGMA journal_mode").fetchone()[0]
print(mode, con.execute("SELECT count(*) FROM call").fetchone()[0])
"""


def _read_from_other_process(db_path: Path) -> str:
    out = subprocess.run(
        [sys.executable, "-c", _READER, str(db_path)], capture_output=True, text=True, timeout=30, check=True
    )
    return out.stdout.strip()


def test_other_process_reads_while_store_is_open(store: Store, db_path: Path) -> None:
    _start(store)
    assert _read_from_other_process(db_path) == "wal 1"
    # Even while the writer holds an uncommitted write transaction, WAL lets the reader see the last commit.
    with store._db.atomic():
        _start(store, at=T0 + 1)
        assert _read_from_other_process(db_path) == "wal 1"
    assert _read_from_other_process(db_path) == "wal 2"


def test_read_from_another_thread_and_close(store: Store) -> None:
    cid = _start(store)
    seen: list[object] = []
    t = threading.Thread(target=lambda: seen.append(store.get_call(cid)))
    t.start()
    t.join(10)
    assert seen and seen[0]["id"] == cid  # type: ignore[index]
    store.close()  # closes the reader thread's connection too
    assert store._db._conns == set()


def test_two_stores_in_one_process_are_independent(tmp_path: Path) -> None:
    with Store(tmp_path / "a.db") as a, Store(tmp_path / "b.db") as b:
        _start(a)
        _start(a, at=T0 + 1)
        _start(b)
        assert len(a.recent_calls()) == 2
        assert len(b.recent_calls()) == 1
