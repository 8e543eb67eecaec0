"""Backups: one archive of the database (SQLite online backup), settings, flows and optionally recordings.

``create_backup`` writes ``registratura-backup-<host>-<UTC time>.tar.gz`` (0600, directory 0700) under a temp
name and renames it into place, then keeps the newest N of this box; ``restore_backup`` checks an archive
(SQLite integrity_check on its database) before it puts the database, settings and flows back, keeping the
current ones as ``*.before-restore``.
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
import subprocess
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
BEFORE = ".before-restore"
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


@dataclass
class RestoreResult:
    archive: Path
    database: Path
    settings: Path | None = None
    flows: Path | None = None
    recordings: int = 0  # recordings put back (those missing on the box)
    kept: list[Path] = field(default_factory=list)  # the *.before-restore copies


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
            _integrity(target, dst)
        finally:
            target.close()
    finally:
        source.close()


def _integrity(conn: sqlite3.Connection, what: Path | str) -> None:
    rows = [r[0] for r in conn.execute("PRAGMA integrity_check")]
    if rows != ["ok"]:
        raise BackupError(f"{what}: the database fails SQLite's integrity_check ({'; '.join(rows[:3])})",
                          code="E711")


def _os_error(exc: OSError, where: Path, doing: str) -> BackupError:
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


def _files(root: Path) -> list[Path]:
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
            raise _os_error(exc, dest.parent, "making the backup directory") from None
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
        _chown(dest, _owner(data))  # root running it by hand must not leave the timer a directory it cannot use
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
            raise _os_error(exc, data, "copying the database") from None
        except sqlite3.OperationalError as exc:
            if "full" in str(exc):
                raise _os_error(OSError(errno.ENOSPC, str(exc)), data, "copying the database") from None
            raise BackupError(f"{db}: cannot copy the database: {exc}", code="E700") from None
        members: list[tuple[Path, str]] = [(staging / DB_NAME, DB_NAME)]
        source = Path(settings.source)
        if source.is_file():
            members.append((source, f"settings/{source.name}"))
        flows = Path(settings.flows.dir)
        members += [(p, f"flows/{p.relative_to(flows).as_posix()}") for p in _files(flows)] if flows.is_dir() else []
        rec_root = data / "recordings"
        if with_recordings and rec_root.is_dir():
            recs = [(p, f"recordings/{p.relative_to(rec_root).as_posix()}") for p in _files(rec_root)]
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
            _chown(tmp, _owner(dest))
            os.rename(tmp, final)
            fsync_dir(dest)
        except OSError as exc:
            raise _os_error(exc, dest, f"writing {final.name}") from None
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


# ---------------------------------------------------------------------------------------------- restore


def service_running(settings: Any | None, unit: str = "registratura.service") -> str | None:
    """Why we think the box is running (systemd says the unit is active, or its metrics port answers), or None."""
    if Path("/run/systemd/system").is_dir() and shutil.which("systemctl"):
        try:
            if subprocess.run(["systemctl", "is-active", "--quiet", unit], timeout=10).returncode == 0:
                return f"{unit} is active"
        except (OSError, subprocess.SubprocessError):
            pass
    if settings is not None:
        host, port = settings.metrics.host, settings.metrics.port
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return f"something answers on its metrics address {settings.metrics.listen}"
        except OSError:
            pass
    return None


def read_archive(archive: Path, staging: Path) -> dict[str, Any]:
    """Unpack ``archive`` into ``staging`` (safe paths only) and check it; returns its manifest."""
    if not archive.is_file():
        raise BackupError(f"{archive}: no such backup archive", code="E710")
    try:
        with tarfile.open(archive, "r:gz") as tar:
            names = tar.getnames()
            if MANIFEST not in names or DB_NAME not in names:
                raise BackupError(f"{archive}: not a Registratura backup (no {MANIFEST} or {DB_NAME})", code="E710")
            for name in names:
                if name.startswith("/") or ".." in Path(name).parts or not (
                        name in (MANIFEST, DB_NAME) or name.split("/")[0] in ("settings", "flows", "recordings")):
                    raise BackupError(f"{archive}: unexpected member {name!r}; not restoring it", code="E710")
            tar.extractall(staging, filter="data")
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise _os_error(exc, staging, "unpacking the archive") from None
        raise BackupError(f"{archive}: cannot read the archive ({exc}); it is damaged or not a backup",
                          code="E710") from None
    try:
        manifest = json.loads((staging / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BackupError(f"{archive}: its {MANIFEST} is unreadable ({exc})", code="E710") from None
    if manifest.get("format") != FORMAT:
        raise BackupError(f"{archive}: backup format {manifest.get('format')!r}, this release reads {FORMAT}",
                          code="E710")
    from appliance.store.migrations import MIGRATIONS

    try:
        conn = sqlite3.connect(f"file:{staging / DB_NAME}?mode=ro", uri=True)
        try:
            _integrity(conn, f"{archive}: {DB_NAME}")
            row = conn.execute('SELECT COALESCE(MAX("version"), 0) FROM "schema_version"').fetchone()
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{archive}: {DB_NAME} is not a readable database ({exc})", code="E711") from None
    if int(row[0]) > len(MIGRATIONS):
        raise BackupError(f"{archive}: its database has schema version {row[0]}, this software knows up to "
                          f"{len(MIGRATIONS)}; restore it with the release that made it or a newer one", code="E713")
    return manifest


def _owner(ref: Path) -> tuple[int, int] | None:
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


def _chown(path: Path, owner: tuple[int, int] | None) -> None:
    if owner is not None:
        os.chown(path, *owner)


def restore_database(src: Path, live: Path) -> Path | None:
    """Put the checked database ``src`` in place of ``live``; the current one is copied (online backup API:
    its WAL included) to ``live.before-restore`` first. Returns that copy, or None when there was none."""
    if not live.parent.exists():
        live.parent.mkdir(mode=0o700, parents=True)
        _chown(live.parent, _owner(live.parent))
    owner = _owner(live if live.exists() else live.parent)
    kept = None
    if live.exists():
        kept = live.with_name(live.name + BEFORE)
        tmp = kept.with_name(kept.name + ".tmp")
        tmp.unlink(missing_ok=True)
        snapshot_database(live, tmp)
        os.chmod(tmp, 0o600)
        os.replace(tmp, kept)
        _chown(kept, owner)
        source = sqlite3.connect(f"file:{src}?mode=ro", uri=True)
        target = sqlite3.connect(live, timeout=30)
        try:
            source.backup(target)  # through SQLite: the live file's WAL and locks stay right
            target.execute("PRAGMA journal_mode=WAL")
        finally:
            target.close()
            source.close()
    else:
        for suffix in ("-wal", "-shm"):  # leftovers of a deleted database must not be replayed on the new one
            live.with_name(live.name + suffix).unlink(missing_ok=True)
        shutil.copyfile(src, live.with_name(live.name + ".tmp"))
        os.replace(live.with_name(live.name + ".tmp"), live)
    for side in (live, live.with_name(live.name + "-wal"), live.with_name(live.name + "-shm")):
        if side.exists():  # made by root while restoring: the service user must open them
            os.chmod(side, 0o600)
            _chown(side, owner)
    fsync_dir(live.parent)
    return kept


def _restore_file(src: Path, target: Path) -> Path | None:
    """Atomically replace ``target`` with ``src``, keeping the old one as target.before-restore (same mode and
    owner for the new file; 0640 and the directory's group for a new one)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    kept = None
    if target.exists():
        st = target.stat()
        mode, owner = st.st_mode & 0o777, (st.st_uid, st.st_gid)
        kept = target.with_name(target.name + BEFORE)
        shutil.copy2(target, kept)
    else:
        st = target.parent.stat()
        mode, owner = 0o640, (st.st_uid, st.st_gid)
    tmp = target.with_name(f".{target.name}.restore-tmp")
    shutil.copyfile(src, tmp)
    os.chmod(tmp, mode)
    if os.geteuid() == 0:
        os.chown(tmp, *owner)
    os.replace(tmp, target)
    fsync_dir(target.parent)
    return kept


def _restore_tree(src: Path, target: Path) -> Path | None:
    """Replace the directory ``target`` with ``src``; the old one becomes target.before-restore (an older such
    copy is dropped). Modes and owner follow the old directory."""
    st = (target if target.exists() else target.parent).stat()
    dmode = st.st_mode & 0o777 if target.exists() else 0o750
    fmode = dmode & 0o666
    tmp = target.with_name(f".{target.name}.restore-tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    for dirpath, dirnames, filenames in os.walk(tmp):
        os.chmod(dirpath, dmode)
        for name in filenames:
            os.chmod(os.path.join(dirpath, name), fmode)
        if os.geteuid() == 0:
            for name in [*dirnames, *filenames, "."]:
                os.chown(os.path.join(dirpath, name), st.st_uid, st.st_gid)
    kept = None
    if target.exists():
        kept = target.with_name(target.name + BEFORE)
        if kept.is_dir() and not kept.is_symlink():
            shutil.rmtree(kept)
        else:
            kept.unlink(missing_ok=True)
        os.rename(target, kept)
    os.rename(tmp, target)
    fsync_dir(target.parent)
    return kept


def _restore_recordings(src: Path, root: Path, owner: tuple[int, int] | None) -> int:
    """Recordings missing on the box are put back; ones still there are left alone."""
    count = 0
    for p in _files(src):
        dest = root / p.relative_to(src)
        if dest.exists():
            continue
        dest.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        shutil.move(p, dest)
        os.chmod(dest, 0o600)
        _chown(dest, owner)
        count += 1
    return count


def restore_backup(archive: Path | str, settings: Any | None, config: Path | str, *, force: bool = False,
                   running: str | None = None) -> RestoreResult:
    """Check ``archive`` and put its database, settings (as ``config``) and flows back.

    ``settings`` are the box's current ones, or None when they cannot be loaded (a re-flashed box): then the
    archive's own settings say where the data and the flows go. ``running``: why the service seems to run
    (``service_running``); refused unless ``force``."""
    archive, config = Path(archive), Path(config)
    if running and not force:
        raise BackupError(f"the box is running ({running}); stop it first (systemctl stop registratura) or pass "
                          "--force", code="E712")
    work_root = Path(settings.data_dir) if settings is not None else config.parent
    if not work_root.exists():
        work_root.mkdir(mode=0o700, parents=True)
        if settings is not None:
            _chown(work_root, _owner(work_root))
    staging = Path(tempfile.mkdtemp(prefix=".restore-", dir=work_root))
    try:
        read_archive(archive, staging)
        archived_settings = sorted((staging / "settings").glob("*")) if (staging / "settings").is_dir() else []
        if settings is None:
            if not archived_settings:
                raise BackupError(f"{archive}: the box has no valid settings and the archive holds none; put "
                                  f"settings at {config} first", code="E714")
            settings = _settings_at(archived_settings[0], config)
        data = Path(settings.data_dir)
        result = RestoreResult(archive, data / DB_NAME)
        kept_db = restore_database(staging / DB_NAME, data / DB_NAME)
        result.kept += [kept_db] if kept_db else []
        if archived_settings:
            result.settings = config
            kept = _restore_file(archived_settings[0], config)
            result.kept += [kept] if kept else []
        if (staging / "flows").is_dir():
            result.flows = Path(settings.flows.dir)
            kept = _restore_tree(staging / "flows", result.flows)
            result.kept += [kept] if kept else []
        if (staging / "recordings").is_dir():
            root = data / "recordings"
            result.recordings = _restore_recordings(staging / "recordings", root, _owner(data))
        return result
    except OSError as exc:
        raise _os_error(exc, work_root, "restoring") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _settings_at(path: Path, config: Path) -> Any:
    """The archive's settings read as if they were at ``config`` (relative paths resolve from there)."""
    import yaml

    from appliance.errors import ConfigError
    from appliance.settings import settings_from_mapping

    try:
        return settings_from_mapping(yaml.safe_load(path.read_text(encoding="utf-8")) or {}, config.parent,
                                     str(config))
    except (ConfigError, yaml.YAMLError) as exc:
        raise BackupError(f"the box has no valid settings and the archive's are not valid either: {exc}",
                          code="E714") from None
