"""`registratura backup` / `backup restore`: real SQLite in WAL mode written meanwhile, real archives and files."""

from __future__ import annotations

import argparse
import io
import os
import shutil
import socket
import sqlite3
import subprocess
import tarfile
import threading
import time
from pathlib import Path

import pytest
import yaml

from appliance import backup
from appliance.backup_cli import add_backup_parser
from appliance.errors import ConfigError
from appliance.settings import load_settings
from appliance.store import Store
from tests.unit.test_recordings import add_call

REPO = Path(__file__).resolve().parents[2]


def cli(config: Path, *argv: str) -> int:
    parser = argparse.ArgumentParser(prog="registratura")
    parser.add_argument("--config")
    sub = parser.add_subparsers(dest="cmd", required=True)
    add_backup_parser(sub, lambda args: load_settings(args.config), str(config))
    args = parser.parse_args(["--config", str(config), *argv])
    return args.func(args)


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def box(tmp_path: Path) -> Path:
    """A box: settings file, a flows directory and a database; returns the settings file."""
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "clinic.yaml").write_text("flow: clinic\n", encoding="utf-8")
    (flows / "sub").mkdir()
    (flows / "sub" / "extra.yaml").write_text("flow: extra\n", encoding="utf-8")
    config = tmp_path / "registratura.yaml"
    config.write_text(yaml.safe_dump({"data_dir": "data", "flows": {"dir": "flows", "main": "clinic"},
                                      "metrics": {"listen": f"127.0.0.1:{free_tcp_port()}"}}), encoding="utf-8")
    os.chmod(config, 0o640)
    Store(tmp_path / "data" / "registratura.db").close()
    return config


def only_archive(directory: Path) -> Path:
    found = list(directory.iterdir())
    assert len(found) == 1 and backup.archives(directory) == found, found
    return found[0]


def db_in(archive: Path, where: Path) -> sqlite3.Connection:
    with tarfile.open(archive) as tar:
        tar.extract(backup.DB_NAME, where, filter="data")
    return sqlite3.connect(where / backup.DB_NAME)


# ------------------------------------------------------------------------------------------ consistency


def test_backup_while_another_connection_writes_restores_the_committed_rows(box: Path, tmp_path: Path,
                                                                            capsys) -> None:
    data = tmp_path / "data"
    db = data / "registratura.db"
    store = Store(db)  # the box's own writer (peewee, WAL) stores calls from another thread meanwhile
    writer = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    writer.execute("PRAGMA wal_autocheckpoint=0")  # the rows stay in the WAL: a raw copy of the file lacks them
    writer.execute("CREATE TABLE probe (id INTEGER PRIMARY KEY, what TEXT)")
    for i in range(300):
        writer.execute("INSERT INTO probe (what) VALUES (?)", (f"committed {i}",))
    assert (data / "registratura.db-wal").stat().st_size > 0
    raw = sqlite3.connect(shutil.copy(db, tmp_path / "raw-copy.db"))
    assert raw.execute("SELECT name FROM sqlite_master WHERE name = 'probe'").fetchall() == []  # why not raw
    raw.close()

    writer.execute("BEGIN")
    writer.execute("INSERT INTO probe (what) VALUES ('never committed')")  # open during the first backup
    try:
        first = backup.create_backup(load_settings(box), to=tmp_path).path
    finally:
        writer.execute("ROLLBACK")
    copy = db_in(first, tmp_path / "first")
    assert copy.execute("SELECT COUNT(*) FROM probe").fetchone()[0] == 300
    assert copy.execute("SELECT COUNT(*) FROM probe WHERE what = 'never committed'").fetchone()[0] == 0
    copy.close()

    stop = threading.Event()
    written: list[int] = []

    def calls() -> None:
        while not stop.is_set():
            written.append(store.call_started(sip_call_id="w", caller="+79161234567", caller_raw="+79161234567",
                                              called="clinic", source="127.0.0.1", flow="clinic",
                                              started_at=time.time()))

    thread = threading.Thread(target=calls)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while len(written) < 20 and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        before = len(written)
        assert before >= 20
        assert cli(box, "backup") == 0  # the second backup: calls are stored all the while
        during = len(written)
    finally:
        stop.set()
        thread.join()
    out = capsys.readouterr().out
    archive = only_archive(data / "backups")
    assert f"backup written: {archive} (" in out and "KB" in out
    assert during > before  # calls were stored while the backup ran

    copy = db_in(archive, tmp_path / "inside")
    assert copy.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert copy.execute("SELECT COUNT(*) FROM probe").fetchone()[0] == 300
    ids = [r[0] for r in copy.execute("SELECT id FROM call ORDER BY id")]
    assert ids and ids == written[:len(ids)]  # one committed state: a prefix of what the writer stored
    copy.close()

    writer.execute("INSERT INTO probe (what) VALUES ('after the backup')")
    writer.close()
    store.close()
    assert cli(box, "backup", "restore", str(archive)) == 0
    out = capsys.readouterr().out
    assert "integrity_check ok" in out and f"database restored: {db}" in out
    live = sqlite3.connect(db)
    assert live.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert live.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert live.execute("SELECT COUNT(*) FROM probe").fetchone()[0] == 300
    assert [r[0] for r in live.execute("SELECT id FROM call ORDER BY id")] == ids
    live.close()
    before = sqlite3.connect(data / "registratura.db.before-restore")
    assert before.execute("SELECT COUNT(*) FROM probe").fetchone()[0] == 301  # the WAL's rows kept too
    assert before.execute("SELECT COUNT(*) FROM call").fetchone()[0] == len(written)
    before.close()
    with Store(db) as again:  # the box opens what was restored
        assert again.schema_version() >= 5


# ------------------------------------------------------------------------------------------ files, modes, pruning


def test_archive_and_directory_are_for_the_owner_only(box: Path, tmp_path: Path) -> None:
    assert cli(box, "backup") == 0
    directory = tmp_path / "data" / "backups"
    archive = only_archive(directory)
    assert directory.stat().st_mode & 0o777 == 0o700
    assert archive.stat().st_mode & 0o777 == 0o600
    assert archive.name.startswith(f"registratura-backup-{backup.host_tag()}-") and archive.name.endswith("Z.tar.gz")
    with tarfile.open(archive) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert set(members) == {"MANIFEST.json", "registratura.db", "settings/registratura.yaml", "flows/clinic.yaml",
                            "flows/sub/extra.yaml"}
    assert all(m.mode == 0o600 and m.uid == 0 and m.uname == "" for m in members.values())
    assert not [p for p in (tmp_path / "data").iterdir() if p.name.startswith(".backup-")]  # staging removed


def test_keeps_the_newest_n_of_this_box(box: Path, tmp_path: Path) -> None:
    settings = load_settings(box)
    directory = tmp_path / "data" / "backups"
    directory.mkdir(mode=0o700)
    other = directory / f"{backup.PREFIX}other-box-20200101-000000Z.tar.gz"  # a second box on the same share
    other.write_bytes(b"x")
    stale = directory / f".{backup.PREFIX}x.tar.gz.tmp-1"  # left by a backup that was killed
    stale.write_bytes(b"x")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    t0 = 1_790_000_000.0
    made = [backup.create_backup(settings, keep=3, now=t0 + i * 86400).path for i in range(5)]
    same_second = backup.create_backup(settings, keep=3, now=t0 + 4 * 86400)
    assert same_second.path.name.endswith("Z-2.tar.gz")
    assert backup.archives(directory, backup.host_tag()) == [made[3], made[4], same_second.path]
    assert same_second.pruned == [made[2]]
    assert other.exists() and not stale.exists()
    assert cli(box, "backup", "--keep", "1") == 0
    assert len(backup.archives(directory, backup.host_tag())) == 1 and other.exists()


def test_settings_choose_directory_keep_and_recordings(box: Path, tmp_path: Path) -> None:
    stick = tmp_path / "stick"
    stick.mkdir()
    text = box.read_text() + f"backup:\n  dir: {stick}\n  keep: 2\n  recordings: true\n"
    box.write_text(text)
    store = Store(tmp_path / "data" / "registratura.db")
    cid, wav = add_call(store, tmp_path / "data", time.time())
    store.hold_recording(cid, "police request", time.time())
    store.close()
    for _ in range(3):
        assert cli(box, "backup") == 0
    found = backup.archives(stick)
    assert len(found) == 2
    with tarfile.open(found[-1]) as tar:
        assert f"recordings/{wav.relative_to(tmp_path / 'data' / 'recordings').as_posix()}" in tar.getnames()

    box.write_text(text.replace("keep: 2", "keep: 0"))
    with pytest.raises(ConfigError) as bad:
        load_settings(box)
    line = text.splitlines().index("  keep: 2") + 1
    assert f"{box}:{line}: backup.keep: 0 is out of range" in str(bad.value)


# ------------------------------------------------------------------------------------------ refusals


def test_missing_directory_is_refused_and_not_created(box: Path, tmp_path: Path, capsys) -> None:
    stick = tmp_path / "media" / "usb"
    assert cli(box, "backup", "--to", str(stick)) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"E701: {stick}: the backup directory does not exist"), err
    assert not stick.exists() and not (tmp_path / "media").exists()


def _mount_tmpfs(where: Path, options: str) -> None:
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root")
    where.mkdir(exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True,
                          text=True)
    if done.returncode:
        pytest.skip(f"mounting a tmpfs is not permitted here: {done.stderr.strip()}")


@pytest.fixture
def mounts():
    made: list[Path] = []
    yield made
    for where in made:
        subprocess.run(["umount", str(where)], check=False)


def test_unwritable_directory_is_refused_with_no_partial_file(box: Path, tmp_path: Path, capsys, mounts) -> None:
    share = tmp_path / "share"
    if os.geteuid() == 0:  # root writes anywhere but on a read-only mount
        _mount_tmpfs(share, "ro,size=1m")
        mounts.append(share)
    else:
        share.mkdir()
        os.chmod(share, 0o500)
    assert cli(box, "backup", "--to", str(share)) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"E702: {share}: the backup directory is not writable"), err
    assert list(share.iterdir()) == []
    assert not [p for p in (tmp_path / "data").iterdir() if p.name.startswith(".backup-")]


def test_full_disk_leaves_no_partial_archive(box: Path, tmp_path: Path, capsys, mounts) -> None:
    share = tmp_path / "small"
    _mount_tmpfs(share, "size=1m,mode=0700")
    mounts.append(share)
    store = Store(tmp_path / "data" / "registratura.db")
    add_call(store, tmp_path / "data", time.time())
    store.close()
    noise = tmp_path / "data" / "recordings" / "2027" / "01" / "15" / "noise.wav"
    noise.write_bytes(os.urandom(3 * 1024 * 1024))  # does not compress: the archive outgrows the disk
    assert cli(box, "backup", "--to", str(share), "--with-recordings") == 1
    err = capsys.readouterr().err
    assert err.startswith(f"E703: {share}: disk full while writing registratura-backup-"), err
    assert list(share.iterdir()) == []
    assert cli(box, "backup", "--to", str(share)) == 0  # without the recordings it fits
    assert len(backup.archives(share)) == 1


# ------------------------------------------------------------------------------------------ restore


def test_restore_round_trip_of_settings_and_flows(box: Path, tmp_path: Path, capsys) -> None:
    assert cli(box, "backup") == 0
    archive = only_archive(tmp_path / "data" / "backups")
    original = box.read_text()
    flows = tmp_path / "flows"
    box.write_text(original + "log: {level: DEBUG}\n")
    (flows / "clinic.yaml").write_text("flow: edited\n")
    (flows / "new.yaml").write_text("flow: new\n")
    shutil.rmtree(flows / "sub")
    capsys.readouterr()

    assert cli(box, "backup", "restore", str(archive)) == 0
    out = capsys.readouterr().out
    assert f"settings restored: {box}" in out and f"flows restored: {flows}" in out
    assert box.read_text() == original and box.stat().st_mode & 0o777 == 0o640
    assert (box.parent / "registratura.yaml.before-restore").read_text().endswith("log: {level: DEBUG}\n")
    assert sorted(p.relative_to(flows).as_posix() for p in flows.rglob("*")) == ["clinic.yaml", "sub",
                                                                                 "sub/extra.yaml"]
    assert (flows / "clinic.yaml").read_text() == "flow: clinic\n"
    kept = tmp_path / "flows.before-restore"
    assert (kept / "clinic.yaml").read_text() == "flow: edited\n" and (kept / "new.yaml").exists()
    assert not [p for p in tmp_path.rglob(".*restore*")]  # no staging or temp copies left


def test_restore_on_a_reflashed_box_takes_the_archives_settings(box: Path, tmp_path: Path) -> None:
    store = Store(tmp_path / "data" / "registratura.db")
    cid, wav = add_call(store, tmp_path / "data", time.time())
    store.hold_recording(cid, "court order", time.time())
    store.close()
    assert cli(box, "backup", "--to", str(tmp_path), "--with-recordings") == 0
    archive = backup.archives(tmp_path)[0]
    fresh = tmp_path / "fresh"  # a new card: no settings, no data, no flows
    fresh.mkdir()
    config = fresh / "registratura.yaml"
    assert cli(config, "backup", "restore", str(archive)) == 0
    assert config.read_text() == box.read_text()
    restored = Store(fresh / "data" / "registratura.db")
    try:
        assert restored.is_held(cid)
        assert restored.get_call(cid)["recording"] == str(wav)
    finally:
        restored.close()
    assert (fresh / "flows" / "sub" / "extra.yaml").read_text() == "flow: extra\n"
    moved = fresh / "data" / "recordings" / wav.relative_to(tmp_path / "data" / "recordings")
    assert moved.read_bytes() == wav.read_bytes() and moved.stat().st_mode & 0o777 == 0o600


def test_restore_refuses_while_the_box_runs_unless_forced(box: Path, tmp_path: Path, capsys) -> None:
    assert cli(box, "backup") == 0
    archive = only_archive(tmp_path / "data" / "backups")
    box_text = box.read_text()
    box.write_text(box_text + "# edited\n")
    port = yaml.safe_load(box_text)["metrics"]["listen"].rsplit(":", 1)[1]
    with socket.socket() as listener:  # the running box's metrics port
        listener.bind(("127.0.0.1", int(port)))
        listener.listen()
        assert cli(box, "backup", "restore", str(archive)) == 1
        err = capsys.readouterr().err
        assert err.startswith("E712: the box is running") and "--force" in err
        assert box.read_text().endswith("# edited\n")
        assert not (tmp_path / "data" / "registratura.db.before-restore").exists()
        assert cli(box, "backup", "restore", str(archive), "--force") == 0
    assert box.read_text() == box_text


def test_a_damaged_archive_changes_nothing(box: Path, tmp_path: Path, capsys) -> None:
    store = Store(tmp_path / "data" / "registratura.db")
    for i in range(50):
        add_call(store, tmp_path / "data", time.time() + i)
    store.close()
    assert cli(box, "backup", "--to", str(tmp_path)) == 0
    good = backup.archives(tmp_path)[0]
    work = tmp_path / "unpacked"
    with tarfile.open(good) as tar:
        tar.extractall(work, filter="data")
    db = bytearray((work / "registratura.db").read_bytes())
    page = 4096
    db[3 * page + 8:4 * page] = os.urandom(page - 8)  # a page of the calls table turned to noise
    (work / "registratura.db").write_bytes(bytes(db))
    bad = tmp_path / "damaged.tar.gz"
    with tarfile.open(bad, "w:gz") as tar:
        for p in sorted(work.rglob("*")):
            tar.add(p, arcname=p.relative_to(work).as_posix(), recursive=False)
    before = (tmp_path / "data" / "registratura.db").read_bytes()
    capsys.readouterr()
    assert cli(box, "backup", "restore", str(bad)) == 1
    assert capsys.readouterr().err.startswith(f"E711: {bad}: ")
    assert (tmp_path / "data" / "registratura.db").read_bytes() == before
    assert not (tmp_path / "data" / "registratura.db.before-restore").exists()

    for evil in ("../escape.yaml", "flows/link"):  # a path out of the staging directory, a symbolic link
        hostile = tmp_path / "hostile.tar.gz"
        with tarfile.open(hostile, "w:gz") as tar:
            with tarfile.open(good) as src:
                for m in src.getmembers():
                    tar.addfile(m, src.extractfile(m))
            info = tarfile.TarInfo(evil)
            if evil == "flows/link":
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info, io.BytesIO(b""))
        assert cli(box, "backup", "restore", str(hostile)) == 1
        assert capsys.readouterr().err.startswith(f"E710: {hostile}: unexpected member '{evil}'")
        assert not (tmp_path / "escape.yaml").exists() and not (tmp_path / "data" / "escape.yaml").exists()
    assert (tmp_path / "data" / "registratura.db").read_bytes() == before

    (tmp_path / "junk.tar.gz").write_bytes(b"not an archive")
    assert cli(box, "backup", "restore", str(tmp_path / "junk.tar.gz")) == 1
    assert capsys.readouterr().err.startswith("E710: ")
    assert cli(box, "backup", "restore", str(tmp_path / "missing.tar.gz")) == 1
    assert "E710" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ units and image


def test_systemd_analyze_accepts_the_backup_units(tmp_path: Path) -> None:
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze not installed")
    for name in ("registratura-backup.service", "registratura-backup.timer"):
        text = (REPO / "systemd" / name).read_text()
        # The app's path exists only in the image; verify wants an executable there.
        (tmp_path / name).write_text(text.replace("/opt/registratura/venv/bin/registratura", "/bin/true"))
    done = subprocess.run(["systemd-analyze", "verify", "--man=no", str(tmp_path / "registratura-backup.timer"),
                           str(tmp_path / "registratura-backup.service")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    unit = (REPO / "systemd" / "registratura-backup.service").read_text()
    for line in ("User=registratura", "IOSchedulingClass=idle", "ProtectSystem=strict",
                 "ReadWritePaths=/var/lib/registratura", "PrivateNetwork=yes", "CapabilityBoundingSet=",
                 "ExecStart=/opt/registratura/venv/bin/registratura --config /etc/registratura/registratura.yaml "
                 "backup"):
        assert line in unit.splitlines()
    timer = (REPO / "systemd" / "registratura-backup.timer").read_text().splitlines()
    assert "Persistent=true" in timer and any(t.startswith("RandomizedDelaySec=") for t in timer)


def test_the_image_enables_the_backup_timer() -> None:
    postinst = (REPO / "image" / "mkosi" / "mkosi.postinst").read_text()
    loop = postinst[postinst.index("for unit in registratura.service"):]
    assert "registratura-backup.timer" in loop[:loop.index("; do")]


def test_root_by_hand_leaves_data_files_to_the_service_user(box: Path, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (a technician's backup or restore by hand)")
    data = tmp_path / "data"
    service = (65534, 65534)  # stands for the registratura user, who owns the data directory
    for p in [data, *data.rglob("*")]:
        os.chown(p, *service)
    assert cli(box, "backup") == 0
    archive = only_archive(data / "backups")
    assert (data / "backups").stat().st_uid == service[0] and archive.stat().st_uid == service[0]
    assert cli(box, "backup", "restore", str(archive)) == 0
    sides = [p for p in data.iterdir() if p.name.startswith("registratura.db")]
    assert {p.name for p in sides} >= {"registratura.db", "registratura.db.before-restore"}
    assert all((p.stat().st_uid, p.stat().st_gid) == service and p.stat().st_mode & 0o777 == 0o600
               for p in sides), [(p.name, p.stat().st_uid, oct(p.stat().st_mode)) for p in sides]


def test_the_registratura_command_has_backup(box: Path, tmp_path: Path, capsys) -> None:
    from appliance.cli import main

    assert main(["--config", str(box), "backup", "list"]) == 0
    assert f"no backups in {tmp_path / 'data' / 'backups'}" in capsys.readouterr().out
    assert main(["--config", str(box), "backup", "--to", str(tmp_path)]) == 0
    assert main(["--config", str(box), "backup", "list", "--to", str(tmp_path)]) == 0
    assert str(backup.archives(tmp_path)[0]) in capsys.readouterr().out


def test_restore_without_tarfile_filters(box: Path, tmp_path: Path, monkeypatch) -> None:
    """Python before 3.11.4 has no extraction filters: the members are checked by hand, the restore works."""
    assert cli(box, "backup", "--to", str(tmp_path)) == 0
    monkeypatch.delattr(tarfile, "data_filter")
    (tmp_path / "flows" / "clinic.yaml").write_text("flow: edited\n")
    assert cli(box, "backup", "restore", str(backup.archives(tmp_path)[0])) == 0
    assert (tmp_path / "flows" / "clinic.yaml").read_text() == "flow: clinic\n"
