"""Backups: one archive of the database (SQLite online backup), settings, flows and optionally recordings.

``create_backup`` writes ``registratura-backup-<host>-<UTC time>.tar.gz`` (0600, directory 0700) under a temp
name and renames it into place, then keeps the newest N of this box. Restoring is ``appliance.restore``.
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import shutil
import socket
import sqlite3
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance import __version__
from appliance.errors import RegistraturaError
from appliance.fsutil import fsync_dir

FORMAT = 1
PREFIX = "registratura-backup-"
SUFFIX = ".tar.gz"
DB_NAME = "registratura.db"
MANIFEST = "MANIFEST.json"
_STALE_TMP = 3600.0  # a temp archive older than this was left by a backup that died: removed


class BackupError(RegistraturaError):
    """A backup or restore could not be done; the message says why and what to do (codes E700-E719)."""

    code = "E700"


@dataclass
class BackupResult:
    path: Path
    size: int
    files: int  # files in the archive besides the manifest
    recordings: int = 0
    pruned: list[Path] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------- helpers


def host_tag() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "box"


def archive_name(now: float, host: str) -> str:
    return f"{PREFIX}{host}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime(now))}Z{SUFFIX}"


def archives(directory: Path, host: str | None = None) -> list[Path]:
    """Finished archives in ``directory`` (of ``host`` only when given), oldest first (the name holds the time)."""
    who = re.escape(host) if host else ".+"
    pattern = re.compile(rf"^{PREFIX}{who}-(\d{{8}}-\d{{6}})Z(?:-(\d+))?{re.escape(SUFFIX)}$")
    if not directory.is_dir():
        return []
    found = []
    for p in directory.iterdir():
        m = pattern.match(p.name)
        if m and p.is_file():
            found.append(((m[1], int(m[2] or 1), p.name), p))
    return [p for _, p in sorted(found)]


def snapshot_database(src: Path, dst: Path) -> None:
    """A consistent copy of a live WAL database through SQLite's online backup API (one step: a single read
    transaction, so writers go on and the copy is one committed state), checked with integrity_check."""
    source = sqlite3.connect(f"file:{src}?mode=ro", uri=True, timeout=30)
    try:
        target = sqlite3.connect(dst)
        try:
            source.backup(target)
            target.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal beside it
            check_integrity(target, dst)
        finally:
            target.close()
    finally:
        source.close()


def check_integrity(conn: sqlite3.Connection, what: Path | str) -> None:
    rows = [r[0] for r in conn.execute("PRAGMA integrity_check")]
    if rows != ["ok"]:
        raise BackupError(f"{what}: the database fails SQLite's integrity_check ({'; '.join(rows[:3])})",
                          code="E711")


def os_error(exc: OSError, where: Path, doing: str) -> BackupError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        free = ""
        try:
            st = os.statvfs(where)
            free = f" ({st.f_bavail * st.f_frsize / 1024 / 1024:.0f} MB free)"
        except OSError:
            pass
        return BackupError(f"{where}: disk full while {doing}{free}; nothing was kept. Free space, lower "
                           "backup.keep, or back up to another disk with --to DIR", code="E703")
    if exc.errno == errno.EFBIG:
        return BackupError(f"{where}: the archive is too large for that file system while {doing} (a FAT "
                           "stick takes at most 4 GB a file); nothing was kept. Use an exFAT/ext4 disk, or leave "
                           "the recordings out", code="E706")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return BackupError(f"{where}: not writable while {doing} ({exc.strerror}); check the mount and that the "
                           "service user may write there (the backup unit writes only where ReadWritePaths= "
                           "allows)", code="E702")
    return BackupError(f"{exc.filename or where}: {exc.strerror} while {doing}", code="E700")


def _tar_filter(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o700 if info.isdir() else 0o600
    return info


def regular_files(root: Path) -> list[Path]:
    """Regular files under ``root`` (symbolic links and sockets skipped), sorted."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            p = Path(dirpath, name)
            if p.is_file() and not p.is_symlink():
                out.append(p)
    return out


# ---------------------------------------------------------------------------------------------- backup


def backup_dir(settings: Any, to: Path | str | None = None) -> tuple[Path, bool]:
    """Where archives go and whether it is the default (created when missing; a given one must exist)."""
    if to is not None:
        return Path(to), False
    if settings.backup.dir is not None:
        return Path(settings.backup.dir), False
    return Path(settings.data_dir) / "backups", True


def create_backup(settings: Any, *, to: Path | str | None = None, keep: int | None = None,
                  recordings: bool | None = None, now: float | None = None) -> BackupResult:
    """Write one archive and prune older ones of this box; BackupError (nothing partial left) when it cannot."""
    now = time.time() if now is None else now
    keep = settings.backup.keep if keep is None else keep
    with_recordings = settings.backup.recordings if recordings is None else recordings
    if keep < 1:
        raise BackupError(f"--keep {keep}: keep at least 1 archive", code="E705")
    dest, default = backup_dir(settings, to)
    data = Path(settings.data_dir)
    db = data / DB_NAME
    if default and not dest.exists():
        try:
            dest.mkdir(mode=0o700, parents=True)
        except OSError as exc:
            raise os_error(exc, dest.parent, "making the backup directory") from None
    if not dest.is_dir():
        raise BackupError(f"{dest}: the backup directory does not exist; plug in and mount the disk, or create "
                          "the directory, or give another with --to DIR", code="E701")
    if not os.access(dest, os.W_OK | os.X_OK):
        raise BackupError(f"{dest}: the backup directory is not writable by this user; fix its owner or "
                          "permissions, or give another with --to DIR", code="E702")
    if not db.is_file():
        raise BackupError(f"{db}: no database to back up (the box has not run with this data_dir)", code="E704")
    if default:
        os.chmod(dest, 0o700)
        chown_to(dest, owner_for(data))  # root running it by hand must not leave the timer a directory it cannot use
    _remove_stale(dest, time.time())

    host = host_tag()
    final = dest / archive_name(now, host)
    n = 1
    while final.exists():
        n += 1
        final = dest / archive_name(now, host).replace(SUFFIX, f"-{n}{SUFFIX}")
    tmp = dest / f".{final.name}.tmp-{os.getpid()}"
    staging: Path | None = None
    result = BackupResult(final, 0, 0)
    try:
        try:
            staging = Path(tempfile.mkdtemp(prefix=".backup-", dir=data))
            snapshot_database(db, staging / DB_NAME)
        except OSError as exc:
            raise os_error(exc, data, "copying the database") from None
        except sqlite3.OperationalError as exc:
            if "full" in str(exc):
                raise os_error(OSError(errno.ENOSPC, str(exc)), data, "copying the database") from None
            raise BackupError(f"{db}: cannot copy the database: {exc}", code="E700") from None
        members: list[tuple[Path, str]] = [(staging / DB_NAME, DB_NAME)]
        source = Path(settings.source)
        if source.is_file():
            members.append((source, f"settings/{source.name}"))
        flows = Path(settings.flows.dir)
        if flows.is_dir():
            members += [(p, f"flows/{p.relative_to(flows).as_posix()}") for p in regular_files(flows)]
        rec_root = data / "recordings"
        if with_recordings and rec_root.is_dir():
            recs = [(p, f"recordings/{p.relative_to(rec_root).as_posix()}") for p in regular_files(rec_root)]
            result.recordings = sum(1 for p, _ in recs if p.name.endswith((".wav", ".wav.sealed")))
            members += recs
        manifest = {"format": FORMAT, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
                    "host": socket.gethostname(), "version": __version__, "data_dir": str(data),
                    "settings": str(source) if source.is_file() else None, "flows": str(flows),
                    "recordings": with_recordings, "files": [name for _, name in members]}
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as raw:
                with tarfile.open(fileobj=raw, mode="w:gz", compresslevel=6) as tar:
                    blob = json.dumps(manifest, ensure_ascii=False, indent=2).encode()
                    info = _tar_filter(tarfile.TarInfo(MANIFEST))
                    info.size, info.mtime = len(blob), int(now)
                    tar.addfile(info, io.BytesIO(blob))
                    for path, name in members:
                        try:
                            tar.add(path, arcname=name, recursive=False, filter=_tar_filter)
                        except FileNotFoundError:
                            if not name.startswith("recordings/"):  # retention may delete one meanwhile
                                raise
                raw.flush()
                os.fsync(raw.fileno())
            os.chmod(tmp, 0o600)
            if default:  # the data directory; a stick's FAT or a share refuses chown, and is not the timer's
                chown_to(tmp, owner_for(dest))
            os.rename(tmp, final)
            fsync_dir(dest)
        except OSError as exc:
            raise os_error(exc, dest, f"writing {final.name}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    result.size = final.stat().st_size
    result.files = len(members)
    result.pruned = prune(dest, keep, host)
    return result


def prune(directory: Path, keep: int, host: str) -> list[Path]:
    """Delete all but the newest ``keep`` archives of ``host`` in ``directory``; returns what went."""
    gone = []
    for old in archives(directory, host)[:-keep]:
        try:
            old.unlink()
            gone.append(old)
        except OSError:
            pass
    return gone


def _remove_stale(directory: Path, now: float) -> None:
    for p in directory.glob(f".{PREFIX}*.tmp-*"):
        try:
            if now - p.stat().st_mtime > _STALE_TMP:
                p.unlink()
        except OSError:
            pass


# ---------------------------------------------------------------------------------------------- owners


def owner_for(ref: Path) -> tuple[int, int] | None:
    """Data files written by root (a restore, a backup by hand) go to the owner of ``ref`` or, when root owns it
    or it is missing (a re-flashed box), to the service user: the box must open them. None when not root."""
    if os.geteuid() != 0:
        return None
    try:
        st = ref.stat()
        if st.st_uid != 0:
            return st.st_uid, st.st_gid
    except OSError:
        st = None
    import pwd

    try:
        pw = pwd.getpwnam("registratura")
        return pw.pw_uid, pw.pw_gid
    except KeyError:
        return None if st is None else (st.st_uid, st.st_gid)


def chown_to(path: Path, owner: tuple[int, int] | None) -> None:
    if owner is not None:
        os.chown(path, *owner)
