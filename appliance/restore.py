"""Restoring a backup: check the archive (SQLite integrity_check, schema) before anything changes, then put the
database, settings and flows back, keeping the current ones as ``*.before-restore``."""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.backup import (
    DB_NAME,
    FORMAT,
    MANIFEST,
    BackupError,
    check_integrity,
    chown_to,
    os_error,
    owner_for,
    regular_files,
    snapshot_database,
)
from appliance.fsutil import fsync_dir

BEFORE = ".before-restore"


@dataclass
class RestoreResult:
    archive: Path
    database: Path
    settings: Path | None = None
    flows: Path | None = None
    recordings: int = 0  # recordings put back (those missing on the box)
    kept: list[Path] = field(default_factory=list)  # the *.before-restore copies


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
            members = tar.getmembers()
            names = [m.name for m in members]
            if MANIFEST not in names or DB_NAME not in names:
                raise BackupError(f"{archive}: not a Registratura backup (no {MANIFEST} or {DB_NAME})", code="E710")
            for m in members:  # only plain files and directories where a backup puts them
                if m.name.startswith("/") or ".." in Path(m.name).parts or not (m.isfile() or m.isdir()) or not (
                        m.name in (MANIFEST, DB_NAME) or m.name.split("/")[0] in ("settings", "flows", "recordings")):
                    raise BackupError(f"{archive}: unexpected member {m.name!r}; not restoring it", code="E710")
            if hasattr(tarfile, "data_filter"):  # Python 3.11.4+ (and Debian's backport)
                tar.extractall(staging, filter="data")
            else:
                tar.extractall(staging)  # members checked above
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise os_error(exc, staging, "unpacking the archive") from None
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
            check_integrity(conn, f"{archive}: {DB_NAME}")
            row = conn.execute('SELECT COALESCE(MAX("version"), 0) FROM "schema_version"').fetchone()
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{archive}: {DB_NAME} is not a readable database ({exc})", code="E711") from None
    if int(row[0]) > len(MIGRATIONS):
        raise BackupError(f"{archive}: its database has schema version {row[0]}, this software knows up to "
                          f"{len(MIGRATIONS)}; restore it with the release that made it or a newer one", code="E713")
    return manifest


def restore_database(src: Path, live: Path) -> Path | None:
    """Put the checked database ``src`` in place of ``live``; the current one is copied (online backup API:
    its WAL included) to ``live.before-restore`` first. Returns that copy, or None when there was none."""
    if not live.parent.exists():
        live.parent.mkdir(mode=0o700, parents=True)
        chown_to(live.parent, owner_for(live.parent))
    owner = owner_for(live if live.exists() else live.parent)
    kept = None
    if live.exists():
        kept = live.with_name(live.name + BEFORE)
        tmp = kept.with_name(kept.name + ".tmp")
        tmp.unlink(missing_ok=True)
        snapshot_database(live, tmp)
        os.chmod(tmp, 0o600)
        os.replace(tmp, kept)
        chown_to(kept, owner)
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
            chown_to(side, owner)
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
    for p in regular_files(src):
        dest = root / p.relative_to(src)
        if dest.exists():
            continue
        dest.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        shutil.move(p, dest)
        os.chmod(dest, 0o600)
        chown_to(dest, owner)
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
            chown_to(work_root, owner_for(work_root))
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
            result.recordings = _restore_recordings(staging / "recordings", root, owner_for(data))
        return result
    except OSError as exc:
        raise os_error(exc, work_root, "restoring") from None
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
