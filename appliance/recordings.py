"""Call recordings: retention, disk quota, legal holds, sealing, listing and export.

Pure decisions (``plan_prune``, ``DiskGate``) take plain values and return plain values; the functions below
them do the file I/O and the store writes. ``RecordingGuard`` is the box's part: it says whether a call may be
recorded (disk space), stops recordings in progress cleanly when the disk fills, and seals finished ones.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from appliance import metrics
from appliance.errors import RegistraturaError

_LOGGER = logging.getLogger(__name__)


def merge_stereo_parts(path: Path) -> bool:
    """A stereo recording's two halves (``telephony.base.stereo_parts``) become the one file ``path``, and the
    halves go. False, with nothing lost, when a half is missing or they cannot be merged (logged)."""
    from appliance.telephony.base import stereo_parts
    from appliance.wavfile import merge_stereo

    parts = stereo_parts(path)
    if not all(p.exists() for p in parts):
        return False
    try:
        merge_stereo(*parts, path)
    except (OSError, ValueError) as exc:
        _LOGGER.warning("stereo recording %s not merged (its two halves stay): %s", path.name, exc)
        return False
    for p in parts:
        p.unlink(missing_ok=True)
    return True

MB = 1024 * 1024
DAY = 86400.0
RETENTION, QUOTA, LOW_DISK = "retention", "quota", "low disk space"
_RESUME_MARGIN = 256 * 1024  # recording resumes only this far above the limit (no flapping on the edge)
_RESERVE_MAX = 16 * MB  # space the box keeps allocated for the database, given up when the disk is full
RESERVE_NAME = ".reserve"
_SUFFIXES = (".wav", ".wav.sealed")


class RecordingError(RegistraturaError):
    """A recording is missing, deleted or cannot be exported: the message says why and what to do."""

    code = "E610"


# ------------------------------------------------------------------------------------------- pure decisions


@dataclass(frozen=True, slots=True)
class Recording:
    call_id: int
    path: str
    started_at: float
    size: int  # bytes on disk; 0 when the file is missing
    held: bool = False
    open: bool = False  # the call is still in progress: its file is being written


@dataclass(frozen=True, slots=True)
class Deletion:
    call_id: int
    path: str
    size: int
    reason: str  # retention | quota | low disk space


def plan_prune(recordings: Iterable[Recording], now: float, *, retention_days: float = 0, max_disk_bytes: int = 0,
               free_bytes: int | None = None, min_free_bytes: int = 0) -> list[Deletion]:
    """Which recordings to delete, oldest first. Held recordings and calls in progress are never chosen.

    First every recording older than ``retention_days`` (0 = no age limit); then, oldest first, as many as it
    takes to bring the rest under ``max_disk_bytes`` (0 = no cap) and the free space up to ``min_free_bytes``
    (``free_bytes`` None = not known, no free-space rule)."""
    ordered = sorted(recordings, key=lambda r: (r.started_at, r.call_id))
    cutoff = now - retention_days * DAY if retention_days > 0 else None
    out: list[Deletion] = []
    kept: list[Recording] = []
    free = free_bytes
    for r in ordered:
        if not r.held and not r.open and cutoff is not None and r.started_at < cutoff:
            out.append(Deletion(r.call_id, r.path, r.size, RETENTION))
            free = None if free is None else free + r.size
        else:
            kept.append(r)
    total = sum(r.size for r in kept)
    for r in kept:
        over = max_disk_bytes > 0 and total > max_disk_bytes
        low = free is not None and free < min_free_bytes
        if not over and not low:
            break
        if r.held or r.open:
            continue
        out.append(Deletion(r.call_id, r.path, r.size, QUOTA if over else LOW_DISK))
        total -= r.size
        free = None if free is None else free + r.size
    return out


@dataclass
class DiskGate:
    """Is the data disk too full to record? Off below ``min_free_bytes`` (or at 0 bytes), on again only with a
    margin above it, so a disk on the edge does not switch recording on and off every second."""

    min_free_bytes: int
    full: bool = False

    @property
    def resume_bytes(self) -> int:
        return self.min_free_bytes + max(self.min_free_bytes // 10, _RESUME_MARGIN)

    def update(self, free_bytes: int) -> bool:
        if self.full:
            self.full = free_bytes < self.resume_bytes
        else:
            self.full = free_bytes <= self.min_free_bytes
        return self.full


# ------------------------------------------------------------------------------------------- file system


def recordings_dir(settings: Any) -> Path:
    return Path(settings.data_dir) / "recordings"


def free_bytes(path: Path | str) -> int:
    """Bytes an unprivileged writer may still use on the file system holding ``path`` (or its parent)."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    st = os.statvfs(p)
    return int(st.f_bavail * st.f_frsize)


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def secure_tree(root: Path) -> int:
    """Recordings are for the clinic's eyes only: files 0600, directories 0700. Returns how many were fixed."""
    fixed = 0
    if not root.is_dir():
        return 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name, mode in [(d, 0o700) for d in dirnames] + [(f, 0o600) for f in filenames]:
            p = os.path.join(dirpath, name)
            try:
                if os.lstat(p).st_mode & 0o777 != mode:
                    os.chmod(p, mode)
                    fixed += 1
            except OSError as exc:
                _LOGGER.warning("cannot set mode %o on %s: %s", mode, p, exc)
    if root.stat().st_mode & 0o777 != 0o700:
        os.chmod(root, 0o700)
        fixed += 1
    return fixed


def _remove_empty_dirs(path: Path, root: Path) -> None:
    """Drop the day/month/year directories a deletion left empty (never ``root`` itself)."""
    parent = path.parent
    while parent != root and root in parent.parents:
        try:
            parent.rmdir()
        except OSError:
            return
        parent = parent.parent


def collect(store: Any) -> list[Recording]:
    return [Recording(r["call_id"], r["path"], r["answered_at"] or r["started_at"], _size(r["path"]), r["held"],
                      r["open"]) for r in store.recordings()]


@dataclass
class PruneReport:
    deleted: list[Deletion] = field(default_factory=list)
    skipped: list[Deletion] = field(default_factory=list)  # held meanwhile, or the file could not be removed
    sealed: list[int] = field(default_factory=list)
    kept: int = 0
    kept_bytes: int = 0
    free_bytes: int | None = None

    @property
    def freed_bytes(self) -> int:
        return sum(d.size for d in self.deleted)

    def as_dict(self) -> dict[str, Any]:
        return {"deleted": [{"call_id": d.call_id, "path": d.path, "size": d.size, "reason": d.reason}
                            for d in self.deleted],
                "skipped": [{"call_id": d.call_id, "path": d.path, "reason": d.reason} for d in self.skipped],
                "sealed": self.sealed, "kept": self.kept, "kept_bytes": self.kept_bytes,
                "freed_bytes": self.freed_bytes, "free_bytes": self.free_bytes}


def prune(store: Any, recording: Any, data_dir: Path | str, now: float | None = None, *,
          dry_run: bool = False, retention: bool = True, min_free_bytes: int | None = None) -> PruneReport:
    """Apply retention and the disk quota. ``recording`` is settings.recording. Run it on the store's writer.

    The call record forgets the path and its timeline says why ("recording: deleted: retention") before the
    file goes, and only if the call is still not held at that moment: a hold placed meanwhile wins."""
    now = time.time() if now is None else now
    root = Path(data_dir) / "recordings"
    recs = collect(store)
    free = free_bytes(root)
    plan = plan_prune(recs, now, retention_days=recording.retention_days if retention else 0,
                      max_disk_bytes=recording.max_disk_mb * MB, free_bytes=free,
                      min_free_bytes=recording.min_free_mb * MB if min_free_bytes is None else min_free_bytes)
    report = PruneReport(free_bytes=free)
    if dry_run:
        report.deleted = plan
    for d in [] if dry_run else plan:
        if not d.path.endswith(_SUFFIXES):
            _LOGGER.warning("call %s: not deleting %s: not a recording file", d.call_id, d.path)
            report.skipped.append(d)
            continue
        if not store.recording_deleted(d.call_id, d.path, now, d.reason):
            report.skipped.append(d)  # held, or the call points at another file by now
            continue
        try:
            os.unlink(d.path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            _LOGGER.error("call %s: recording %s forgotten but not removed: %s", d.call_id, d.path, exc)
        _remove_empty_dirs(Path(d.path), root)
        report.deleted.append(d)
    gone = {d.call_id for d in report.deleted}
    report.kept = sum(1 for r in recs if r.call_id not in gone)
    report.kept_bytes = sum(r.size for r in recs if r.call_id not in gone)
    if report.deleted and not dry_run:
        report.free_bytes = free_bytes(root)
        by: dict[str, int] = {}
        for d in report.deleted:
            by[d.reason] = by.get(d.reason, 0) + 1
        _LOGGER.info("recordings deleted: %s (%.1f MB freed)",
                     ", ".join(f"{n} by {reason}" for reason, n in by.items()), report.freed_bytes / MB)
    return report


def seal_pending(store: Any, public_key: Any, now: float | None = None, min_age: float = 0.0) -> list[int]:
    """Seal the plain WAVs of calls that ended (at least ``min_age`` s ago) but were not sealed (the box
    stopped mid-way, or the disk was full). Returns the call ids sealed."""
    from appliance.crypto import SUFFIX, is_sealed

    now = time.time() if now is None else now
    done = []
    for r in store.recordings():
        if is_sealed(r["path"]):
            # A crash between pointing the record at the sealed file and removing the plaintext.
            Path(r["path"][: -len(SUFFIX)]).unlink(missing_ok=True)
            continue
        if r["open"] or (r["ended_at"] or 0) > now - min_age:
            continue
        if not os.path.exists(r["path"]):
            continue
        try:
            seal_recording(store, r["call_id"], r["path"], public_key)
        except OSError as exc:
            _LOGGER.warning("call %s: recording not sealed yet: %s", r["call_id"], exc)
            continue
        done.append(r["call_id"])
    return done


def seal_recording(store: Any, call_id: int, path: str | Path, public_key: Any) -> Path:
    """Encrypt one finished recording, point the call at the sealed file, remove the plaintext."""
    from appliance.crypto import seal_file

    path = Path(path)
    # The record points at the sealed file before the plaintext goes: a crash in between leaves a plaintext
    # no record knows, never a record without a file.
    sealed = seal_file(path, public_key, keep_plain=True)
    if not store.recording_replaced(call_id, str(path), str(sealed), time.time(), "sealed"):
        sealed.unlink(missing_ok=True)  # the record moved on meanwhile (deleted by retention, say)
    path.unlink(missing_ok=True)
    return sealed


# ------------------------------------------------------------------------------------------- list, export


def list_recordings(store: Any, tz: ZoneInfo, day: str | None = None) -> list[dict[str, Any]]:
    """The recordings the box holds (call id, clinic-local time, caller, duration, size, hold, sealed)."""
    from appliance.crypto import is_sealed

    since = until = None
    if day:
        d = date.fromisoformat(day)
        since = datetime.combine(d, dtime(), tz).timestamp()
        until = datetime.combine(d + timedelta(days=1), dtime(), tz).timestamp()
    out = []
    for r in store.recordings(since, until):
        began = r["answered_at"] or r["started_at"]
        out.append({
            "call_id": r["call_id"],
            "time": datetime.fromtimestamp(began, tz).isoformat(timespec="seconds"),
            "caller": r["caller"],
            "duration": None if r["ended_at"] is None else round(max(0.0, r["ended_at"] - began), 1),
            "size": _size(r["path"]),
            "exists": os.path.exists(r["path"]),
            "held": r["held"],
            "sealed": is_sealed(r["path"]),
            "in_progress": r["open"],
            "path": r["path"],
        })
    return out


def why_gone(store: Any, call_id: int) -> str:
    call = store.get_call(call_id)
    if call is None:
        return f"no call with id {call_id}"
    notes = [e["detail"] for e in call["events"] if e["kind"] == "recording"]
    return f"call {call_id} has no recording" + (f" ({notes[-1]})" if notes else " (it was not recorded)")


def export(store: Any, call_id: int, out: Path, private_key: Any = None) -> Path:
    """Copy a call's recording to ``out`` (mode 0600); a sealed one is decrypted with ``private_key``."""
    from appliance.crypto import is_sealed, open_file

    call = store.get_call(call_id)
    if call is None or not call["recording"]:
        raise RecordingError(why_gone(store, call_id) + "; `registratura recordings list` shows what there is")
    src = Path(call["recording"])
    if not src.exists():
        raise RecordingError(f"call {call_id}: {src} is missing on disk")
    out = Path(out)
    if is_sealed(src):
        if private_key is None:
            raise RecordingError(f"call {call_id}: the recording is sealed; pass --key with the clinic's private "
                                 "key, or copy the .sealed file and use `registratura recordings open`")
        open_file(src, out, private_key)
        return out
    tmp = out.with_name(out.name + ".part")
    with open(src, "rb") as fsrc, open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as fdst:
        shutil.copyfileobj(fsrc, fdst)
    os.replace(tmp, out)
    return out


# ------------------------------------------------------------------------------------------- in the box


@dataclass
class _Active:
    record_id: int
    path: Path
    telephony: Any
    stopped: bool = False
    settled: asyncio.Event = field(default_factory=asyncio.Event)  # set once a stopped WAV is closed and checked


class RecordingGuard:
    """The box's recordings: start-up housekeeping, the disk watch, stopping on a full disk, sealing."""

    def __init__(self, settings: Any, writer: Any, interval: float = 0.5) -> None:
        from appliance.crypto import load_public_key

        self.settings = settings
        self.rec = settings.recording
        self.data_dir = Path(settings.data_dir)
        self.root = self.data_dir / "recordings"
        self.writer = writer
        self.interval = interval
        self.gate = DiskGate(self.rec.min_free_mb * MB)
        # A file of allocated space the database gets when the disk fills (removed then, made again when space
        # is back): a disk filled by anything leaves room for the call records, so calls go on.
        self.reserve = self.data_dir / RESERVE_NAME
        self.reserve_bytes = min(_RESERVE_MAX, self.gate.min_free_bytes // 2)
        self.public_key = load_public_key(self.rec.seal_public_key) if self.rec.seal_public_key else None
        self.active: dict[str, _Active] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._watch: asyncio.Task[None] | None = None
        self._last_space_prune = self._last_quota_prune = float("-inf")
        self._recorded_bytes = 0  # what the recordings took at the last prune, plus finished calls since

    @property
    def store(self) -> Any:
        return self.writer.store

    async def start(self) -> None:
        """At start-up: modes, retention and quota, seal leftovers, the first disk check; then watch."""
        loop = asyncio.get_running_loop()
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        fixed = await loop.run_in_executor(None, secure_tree, self.root)
        if fixed:
            _LOGGER.warning("recordings: set private modes on %d file(s) or directories", fixed)
        await self._prune()
        if self.public_key is not None:
            sealed = await self.writer.run(seal_pending, self.store, self.public_key)
            if sealed:
                _LOGGER.info("recordings: sealed %d left over from before", len(sealed))
        self.check_now()
        self._keep_reserve()
        self._watch = loop.create_task(self._watch_disk())

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=30)

    # --- the disk -------------------------------------------------------------------------------------

    def check_now(self) -> bool:
        """Read the free space, update the gate and the gauges; True if the disk is too full to record."""
        try:
            free = free_bytes(self.root)
        except OSError as exc:
            _LOGGER.error("recordings: cannot read free space of %s: %s", self.root, exc)
            return self.gate.full
        was = self.gate.full
        full = self.gate.update(free)
        if full and not was:
            self._release_reserve()
        metrics.RECORDING_DISK_FULL.set(1 if full else 0)
        metrics.DATA_FREE_BYTES.set(free)
        if full and not was:
            _LOGGER.error("recording off: the data disk has %.1f MB free (min_free_mb %d); calls go on "
                          "unrecorded", free / MB, self.rec.min_free_mb)
        elif was and not full:
            _LOGGER.warning("recording on again: %.1f MB free", free / MB)
        return full

    def may_record(self) -> bool:
        return not self.check_now()

    def _release_reserve(self) -> None:
        try:
            self.reserve.unlink()
            _LOGGER.warning("recordings: released %.1f MB kept for the database", self.reserve_bytes / MB)
        except FileNotFoundError:
            pass
        except OSError as exc:
            _LOGGER.error("recordings: cannot release %s: %s", self.reserve, exc)

    def _keep_reserve(self) -> None:
        """Allocate the reserve again once there is room for it above the limit."""
        if not self.reserve_bytes or self.gate.full or self.reserve.exists():
            return
        try:
            if free_bytes(self.data_dir) < self.gate.resume_bytes + self.reserve_bytes:
                return
            fd = os.open(self.reserve, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.posix_fallocate(fd, 0, self.reserve_bytes)
            finally:
                os.close(fd)
        except OSError as exc:
            self.reserve.unlink(missing_ok=True)
            _LOGGER.warning("recordings: no space kept for the database: %s", exc)

    async def _watch_disk(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.check()
            except Exception:  # noqa: BLE001 - the watch must outlive any one failure
                _LOGGER.exception("recordings: disk check failed")

    async def check(self) -> None:
        if self.check_now() or free_bytes(self.root) < self.gate.resume_bytes:
            # Oldest recordings give way to new ones (rotation), up to the margin above the limit so that
            # recording goes on; at most once a minute, never held ones.
            if time.monotonic() - self._last_space_prune > 60:
                self._last_space_prune = time.monotonic()
                await self._prune(retention=False, min_free_bytes=self.gate.resume_bytes)
                self.check_now()
        if self.gate.full:
            for call_id, a in list(self.active.items()):
                if not a.stopped and call_id in self.active:  # a call may end while another one stops
                    await self._stop(call_id, a)
        else:
            self._keep_reserve()

    async def _prune(self, retention: bool = True, min_free_bytes: int | None = None) -> None:
        try:
            report = await self.writer.run(prune, self.store, self.rec, self.data_dir, retention=retention,
                                           min_free_bytes=min_free_bytes)
        except Exception as exc:  # noqa: BLE001 - a full disk may refuse even the deletion notes
            _LOGGER.error("recordings: prune failed: %s", exc)
            return
        self._recorded_bytes = report.kept_bytes

    async def _stop(self, call_id: str, a: _Active) -> None:
        """Stop a recording in progress: pjmedia closes the WAV, then its sizes are checked against the file."""
        a.stopped = True
        try:
            await self._stop_and_check(call_id, a)
        finally:
            a.settled.set()
        _LOGGER.warning("call %s: recording stopped: disk full", call_id)
        await self._note(a.record_id, "stopped: disk full")

    async def _stop_and_check(self, call_id: str, a: _Active) -> None:
        try:
            await a.telephony.stop_recording(call_id)
        except RegistraturaError as exc:
            _LOGGER.debug("stop_recording %s: %s", call_id, exc)
        await asyncio.sleep(0.15)  # pjmedia removes the port on a later clock tick, then writes the WAV sizes
        await self._check_wav(call_id, a.path)

    @staticmethod
    async def _check_wav(call_id: str, path: Path) -> None:
        from appliance.wavfile import repair_wav

        try:
            if await asyncio.get_running_loop().run_in_executor(None, repair_wav, path):
                _LOGGER.info("call %s: WAV sizes set to the data on disk", call_id)
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as exc:
            _LOGGER.warning("call %s: recording not checked: %s", call_id, exc)

    async def _note(self, record_id: int, detail: str) -> None:
        try:
            await self.writer.run(self.store.add_event, record_id, time.time(), "recording", detail)
        except Exception as exc:  # noqa: BLE001 - a full disk may refuse the note; the call goes on
            _LOGGER.error("cannot note 'recording %s' for call record %s: %s", detail, record_id, exc)

    # --- calls ----------------------------------------------------------------------------------------

    def started(self, call_id: str, record_id: int, path: Path, telephony: Any) -> None:
        self.active[call_id] = _Active(record_id, Path(path), telephony)

    async def finished(self, call_id: str) -> None:
        """The call is over and its WAV complete: seal it (in the background) and keep the quota."""
        a = self.active.pop(call_id, None)
        if a is None:
            return
        if a.stopped:
            await a.settled.wait()
        else:  # had the disk filled before the watch saw it, the WAV sizes would be short of the data
            await self._check_wav(call_id, a.path)
        size = _size(str(a.path))
        self._recorded_bytes += size
        if self.public_key is not None and a.path.exists():
            task = asyncio.get_running_loop().create_task(self._seal(a))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        cap = self.rec.max_disk_mb * MB
        if cap and self._recorded_bytes > cap and time.monotonic() - self._last_quota_prune > 60:
            self._last_quota_prune = time.monotonic()
            await self._prune(retention=False)

    async def _seal(self, a: _Active) -> None:
        # Off the writer thread: encryption of a long call takes a moment and must not hold up call records.
        loop = asyncio.get_running_loop()
        try:
            from appliance.crypto import seal_file

            sealed = await loop.run_in_executor(None, lambda: seal_file(a.path, self.public_key, keep_plain=True))
            moved = await self.writer.run(self.store.recording_replaced, a.record_id, str(a.path), str(sealed),
                                          time.time(), "sealed")
            if not moved:
                sealed.unlink(missing_ok=True)
            a.path.unlink(missing_ok=True)
        except Exception as exc:  # noqa: BLE001 - left plain for now; the next start-up or prune seals it
            _LOGGER.error("recording of call record %s not sealed yet: %s", a.record_id, exc)
