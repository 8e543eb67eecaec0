"""Recordings: retention and quota decisions, legal holds, pruning files and records, the box's disk guard."""

from __future__ import annotations

import asyncio
import os
import time
import wave
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from appliance import metrics
from appliance import recordings as rec
from appliance.recordings import (
    LOW_DISK,
    MB,
    QUOTA,
    RETENTION,
    DiskGate,
    Recording,
    RecordingError,
    plan_prune,
)
from appliance.settings import RecordingSettings, settings_from_mapping
from appliance.store import Store

DAY = 86400.0
NOW = 1_800_000_000.0


def r(call_id: int, age_days: float, size: int = 100, held: bool = False, open_: bool = False) -> Recording:
    return Recording(call_id, f"/rec/{call_id}.wav", NOW - age_days * DAY, size, held, open_)


def ids(plan: list[rec.Deletion]) -> list[tuple[int, str]]:
    return [(d.call_id, d.reason) for d in plan]


# ------------------------------------------------------------------------------------------- decisions


def test_retention_deletes_only_old_recordings_without_hold() -> None:
    recs = [r(1, 120), r(2, 91), r(3, 89), r(4, 200, held=True), r(5, 1)]
    assert ids(plan_prune(recs, NOW, retention_days=90)) == [(1, RETENTION), (2, RETENTION)]


def test_retention_zero_keeps_everything() -> None:
    assert plan_prune([r(1, 5000)], NOW, retention_days=0) == []


def test_quota_deletes_oldest_first_and_never_held_or_open() -> None:
    recs = [r(5, 1, 300), r(1, 10, 300, held=True), r(2, 9, 300), r(3, 8, 300), r(4, 7, 300, open_=True)]
    # 1500 bytes, cap 700: 2 and 3 go (oldest unheld), 1 (held) and 4 (in progress) stay.
    plan = plan_prune(recs, NOW, retention_days=90, max_disk_bytes=700)
    assert ids(plan) == [(2, QUOTA), (3, QUOTA), (5, QUOTA)]
    assert ids(plan_prune(recs, NOW, max_disk_bytes=900)) == [(2, QUOTA), (3, QUOTA)]


def test_quota_cannot_touch_held_recordings_even_if_still_over() -> None:
    recs = [r(1, 3, 500, held=True), r(2, 2, 500, held=True)]
    assert plan_prune(recs, NOW, max_disk_bytes=100) == []


def test_low_free_space_deletes_oldest_until_enough_is_free() -> None:
    recs = [r(1, 3, 400), r(2, 2, 400), r(3, 1, 400)]
    plan = plan_prune(recs, NOW, free_bytes=100, min_free_bytes=800)
    assert ids(plan) == [(1, LOW_DISK), (2, LOW_DISK)]
    assert plan_prune(recs, NOW, free_bytes=None, min_free_bytes=800) == []  # free space unknown: no rule


def test_retention_counts_towards_free_space_first() -> None:
    recs = [r(1, 100, 400), r(2, 2, 400), r(3, 1, 400)]
    plan = plan_prune(recs, NOW, retention_days=90, free_bytes=500, min_free_bytes=800)
    assert ids(plan) == [(1, RETENTION)]  # 900 free after retention: enough


def test_disk_gate_has_hysteresis() -> None:
    gate = DiskGate(10 * MB)
    assert gate.update(20 * MB) is False
    assert gate.update(10 * MB) is True  # at the limit: off
    assert gate.update(10 * MB + 1) is True  # not on again just above it
    assert gate.update(gate.resume_bytes) is False
    zero = DiskGate(0)
    assert zero.update(0) is True  # a truly full disk is full even without a limit
    assert zero.update(100 * 1024) is True
    assert zero.update(300 * 1024) is False


# ------------------------------------------------------------------------------------------- store


@pytest.fixture
def store(tmp_path: Path):
    s = Store(tmp_path / "data" / "registratura.db")
    yield s
    s.close()


def write_wav(path: Path, seconds: float = 0.5) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x01\x02" * int(8000 * seconds))
    os.chmod(path, 0o600)
    return path


def add_call(store: Store, data: Path, started_at: float, *, ended: bool = True, seconds: float = 0.5,
             caller: str = "+79161234567") -> tuple[int, Path]:
    cid = store.call_started(sip_call_id="x", caller=caller, caller_raw=caller, called="clinic", source="127.0.0.1",
                             flow="clinic_ru", started_at=started_at)
    store.call_answered(cid, started_at + 1)
    path = write_wav(data / "recordings" / "2027" / "01" / "15" / f"x-call{cid}.wav", seconds)
    store.set_recording(cid, path)
    if ended:
        store.call_ended(cid, started_at + 60, "completed")
    return cid, path


def test_hold_and_release(store: Store, tmp_path: Path) -> None:
    cid, _ = add_call(store, tmp_path / "data", NOW)
    assert store.is_held(cid) is False
    store.hold_recording(cid, "threat marked by receptionist", NOW)
    store.hold_recording(cid, "police request 12/345", NOW + 1)
    assert store.is_held(cid) is True
    assert [h["reason"] for h in store.holds(cid)] == ["threat marked by receptionist", "police request 12/345"]
    assert store.release_recording(cid, NOW + 2, "case closed") == 2
    assert store.is_held(cid) is False
    assert store.release_recording(cid, NOW + 3) == 0
    assert [h["released_at"] for h in store.holds(cid, active_only=False)] == [NOW + 2, NOW + 2]
    notes = [e["detail"] for e in store.get_call(cid)["events"] if e["kind"] == "recording"]
    assert notes == ["legal hold: threat marked by receptionist", "legal hold: police request 12/345",
                     "hold released: case closed"]


def test_hold_of_an_unknown_call_is_refused(store: Store) -> None:
    from appliance.errors import StoreError

    with pytest.raises(StoreError, match="no call with id 42"):
        store.hold_recording(42, "x", NOW)


def test_prune_deletes_old_files_notes_why_and_keeps_held(store: Store, tmp_path: Path) -> None:
    data = tmp_path / "data"
    old, old_path = add_call(store, data, NOW - 100 * DAY)
    held, held_path = add_call(store, data, NOW - 100 * DAY + 5)
    new, new_path = add_call(store, data, NOW - 5 * DAY)
    store.hold_recording(held, "threat", NOW - 99 * DAY)
    settings = RecordingSettings(retention_days=90, min_free_mb=0)

    dry = rec.prune(store, settings, data, NOW, dry_run=True)
    assert [d.call_id for d in dry.deleted] == [old] and old_path.exists()

    report = rec.prune(store, settings, data, NOW)
    assert [(d.call_id, d.reason) for d in report.deleted] == [(old, RETENTION)]
    assert not old_path.exists() and held_path.exists() and new_path.exists()
    call = store.get_call(old)
    assert call["recording"] is None
    assert call["events"][-1]["kind"] == "recording" and call["events"][-1]["detail"] == "deleted: retention"
    assert report.kept == 2
    # Released, the held one goes at the next run.
    store.release_recording(held, NOW)
    assert [d.call_id for d in rec.prune(store, settings, data, NOW).deleted] == [held]
    assert not held_path.exists() and store.get_call(held)["recording"] is None


def test_prune_never_deletes_a_recording_held_after_the_decision(store: Store, tmp_path: Path) -> None:
    cid, path = add_call(store, tmp_path / "data", NOW - 100 * DAY)
    store.hold_recording(cid, "threat", NOW)
    assert store.recording_deleted(cid, str(path), NOW, RETENTION) is False
    assert store.get_call(cid)["recording"] == str(path)


def test_prune_by_quota_removes_oldest_and_empty_directories(store: Store, tmp_path: Path) -> None:
    data = tmp_path / "data"
    a, a_path = add_call(store, data, NOW - 3 * DAY, seconds=40)  # ~640 KB each
    a_path.rename(a_path.with_name("moved.wav"))  # put it in a day directory of its own
    day = data / "recordings" / "2027" / "01" / "14"
    day.mkdir(parents=True)
    (day / a_path.name).write_bytes(a_path.with_name("moved.wav").read_bytes())
    a_path.with_name("moved.wav").unlink()
    store.set_recording(a, day / a_path.name)
    b, b_path = add_call(store, data, NOW - 2 * DAY, seconds=40)
    c, c_path = add_call(store, data, NOW - 1 * DAY, seconds=40, ended=False)  # in progress
    settings = RecordingSettings(retention_days=90, max_disk_mb=1, min_free_mb=0)
    report = rec.prune(store, settings, data, NOW)
    assert [(d.call_id, d.reason) for d in report.deleted] == [(a, QUOTA), (b, QUOTA)]
    assert not day.exists() and (data / "recordings" / "2027" / "01").is_dir()
    assert c_path.exists()
    assert store.get_call(b)["events"][-1]["detail"] == "deleted: quota"


def test_prune_when_the_disk_is_low(store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    a, _ = add_call(store, data, NOW - 3 * DAY)
    b, _ = add_call(store, data, NOW - 2 * DAY)
    monkeypatch.setattr(rec, "free_bytes", lambda _p: 10)
    settings = RecordingSettings(min_free_mb=1)
    report = rec.prune(store, settings, data, NOW)
    assert [(d.call_id, d.reason) for d in report.deleted] == [(a, LOW_DISK), (b, LOW_DISK)]
    assert store.get_call(a)["events"][-1]["detail"] == "deleted: low disk space"


def test_list_and_export(store: Store, tmp_path: Path) -> None:
    from zoneinfo import ZoneInfo

    data = tmp_path / "data"
    cid, path = add_call(store, data, 1_800_000_000.0)  # 2027-01-15 11:00 in Moscow
    store.hold_recording(cid, "threat", NOW)
    tz = ZoneInfo("Europe/Moscow")
    [row] = rec.list_recordings(store, tz)
    assert row["call_id"] == cid and row["held"] is True and row["sealed"] is False
    assert row["time"].startswith("2027-01-15T11:00:01") and row["duration"] == 59.0
    assert row["size"] == path.stat().st_size
    assert rec.list_recordings(store, tz, "2027-01-15") and not rec.list_recordings(store, tz, "2027-01-16")
    out = rec.export(store, cid, tmp_path / "out.wav")
    assert out.read_bytes() == path.read_bytes() and out.stat().st_mode & 0o777 == 0o600
    store.release_recording(cid, NOW)
    rec.prune(store, RecordingSettings(retention_days=1, min_free_mb=0), data, NOW + 10 * DAY)
    with pytest.raises(RecordingError, match=r"has no recording \(deleted: retention\)"):
        rec.export(store, cid, tmp_path / "again.wav")


def test_secure_tree_makes_recordings_private(tmp_path: Path) -> None:
    root = tmp_path / "recordings"
    f = write_wav(root / "2027" / "01" / "x.wav")
    os.chmod(f, 0o644)
    os.chmod(root / "2027", 0o755)
    assert rec.secure_tree(root) >= 2
    assert f.stat().st_mode & 0o777 == 0o600 and (root / "2027").stat().st_mode & 0o777 == 0o700


# ------------------------------------------------------------------------------------------- the box's guard


class _Writer:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def run(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        return func(*args, **kwargs)


class _Telephony:
    def __init__(self) -> None:
        self.stopped: list[str] = []

    async def stop_recording(self, call_id: str) -> None:
        self.stopped.append(call_id)


def _settings(tmp_path: Path, **recording: Any) -> Any:
    return settings_from_mapping({"data_dir": str(tmp_path / "data"), "recording": recording}, tmp_path)


def test_guard_stops_recording_when_the_disk_fills_and_resumes(store: Store, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    cid, path = add_call(store, data, NOW, ended=False)
    free = {"bytes": 500 * MB}
    monkeypatch.setattr(rec, "free_bytes", lambda _p: free["bytes"])
    guard = rec.RecordingGuard(_settings(tmp_path, min_free_mb=100), _Writer(store), interval=3600)
    tel = _Telephony()

    async def scenario() -> None:
        await guard.start()
        assert guard.may_record() and metrics.RECORDING_DISK_FULL._value.get() == 0
        guard.started("box-1", cid, path, tel)
        free["bytes"] = 50 * MB
        await guard.check()
        assert tel.stopped == ["box-1"] and guard.active["box-1"].stopped
        assert not guard.may_record() and metrics.RECORDING_DISK_FULL._value.get() == 1
        await guard.check()
        assert tel.stopped == ["box-1"]  # once
        free["bytes"] = 500 * MB
        assert guard.may_record() and metrics.RECORDING_DISK_FULL._value.get() == 0
        await guard.finished("box-1")
        await guard.stop()

    asyncio.run(scenario())
    assert [e["detail"] for e in store.get_call(cid)["events"] if e["kind"] == "recording"] == ["stopped: disk full"]
    with wave.open(str(path)) as w:
        assert w.getnframes() == 4000


def test_guard_frees_space_by_deleting_oldest_before_stopping(store: Store, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    old, old_path = add_call(store, data, NOW - 5 * DAY)
    held, held_path = add_call(store, data, NOW - 6 * DAY)
    store.hold_recording(held, "threat", NOW)
    free = {"bytes": 500 * MB}

    def fake_free(_p: Any) -> int:
        return free["bytes"] + (0 if old_path.exists() else 200 * MB)

    monkeypatch.setattr(rec, "free_bytes", fake_free)
    guard = rec.RecordingGuard(_settings(tmp_path, min_free_mb=100, retention_days=0), _Writer(store),
                               interval=3600)

    async def scenario() -> None:
        await guard.start()
        free["bytes"] = 50 * MB
        await guard.check()
        await guard.stop()

    asyncio.run(scenario())
    assert not old_path.exists() and held_path.exists()
    assert guard.may_record()
    assert store.get_call(old)["events"][-1]["detail"] == "deleted: low disk space"


def test_guard_runs_retention_at_start_up(store: Store, tmp_path: Path) -> None:
    data = tmp_path / "data"
    old, old_path = add_call(store, data, time.time() - 400 * DAY)
    settings = _settings(tmp_path, retention_days=30, min_free_mb=0)
    guard = rec.RecordingGuard(replace(settings), _Writer(store), interval=3600)

    async def scenario() -> None:
        await guard.start()
        await guard.stop()

    asyncio.run(scenario())
    assert not old_path.exists() and store.get_call(old)["recording"] is None


def test_guard_keeps_room_for_the_database_and_gives_it_up_when_the_disk_fills(
        store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    free = {"bytes": 500 * MB}
    monkeypatch.setattr(rec, "free_bytes", lambda _p: free["bytes"])
    guard = rec.RecordingGuard(_settings(tmp_path, min_free_mb=1), _Writer(store), interval=3600)
    reserve = tmp_path / "data" / ".reserve"

    async def scenario() -> None:
        await guard.start()
        assert reserve.stat().st_size == 512 * 1024 and reserve.stat().st_mode & 0o777 == 0o600
        free["bytes"] = 0  # filled by something else: the database gets the reserve
        await guard.check()
        assert not reserve.exists() and metrics.RECORDING_DISK_FULL._value.get() == 1
        free["bytes"] = 1400 * 1024  # above the limit, but without room for the reserve too
        await guard.check()
        assert guard.may_record() and not reserve.exists()
        free["bytes"] = 100 * MB
        await guard.check()
        assert reserve.exists()
        await guard.stop()

    asyncio.run(scenario())
