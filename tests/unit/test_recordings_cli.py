"""`registratura recordings ...` and sealing: a real X25519 key pair, sealed files, list/export/prune/hold/open."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from appliance import crypto
from appliance import recordings as rec
from appliance.recordings_cli import add_recordings_parser
from appliance.settings import load_settings
from appliance.store import Store
from tests.unit.test_recordings import add_call

DAY = 86400.0


def cli(config: Path, *argv: str) -> int:
    parser = argparse.ArgumentParser(prog="registratura")
    parser.add_argument("--config")
    sub = parser.add_subparsers(dest="cmd", required=True)
    add_recordings_parser(sub, lambda args: load_settings(args.config))
    args = parser.parse_args(["--config", str(config), *argv])
    return args.func(args)


@pytest.fixture
def box(tmp_path: Path):
    """A box's settings file and database with three recorded calls: old, old but held, recent."""
    data = tmp_path / "data"
    config = tmp_path / "registratura.yaml"
    config.write_text(yaml.safe_dump({"data_dir": "data", "recording": {"retention_days": 30, "min_free_mb": 0}}))
    store = Store(data / "registratura.db")
    now = time.time()
    calls = {"old": add_call(store, data, now - 60 * DAY), "held": add_call(store, data, now - 50 * DAY),
             "new": add_call(store, data, now - DAY, caller="+79031112233")}
    yield config, store, calls
    store.close()


def test_keygen_writes_a_private_key_only_its_owner_reads(tmp_path: Path, capsys) -> None:
    assert cli(tmp_path / "none.yaml", "recordings", "keygen", "--out", str(tmp_path / "keys")) == 0
    private, public = tmp_path / "keys" / "recordings.key", tmp_path / "keys" / "recordings.pub"
    assert private.stat().st_mode & 0o777 == 0o600
    assert private.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert public.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    assert "never on the box" in capsys.readouterr().out
    assert cli(tmp_path / "none.yaml", "recordings", "keygen", "--out", str(tmp_path / "keys")) == 1  # no overwrite
    assert "exists already" in capsys.readouterr().err
    crypto.load_public_key(public)
    crypto.load_private_key(private)


def test_passphrase_protected_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGISTRATURA_KEY_PASSPHRASE", "correct horse")
    assert cli(tmp_path / "none.yaml", "recordings", "keygen", "--out", str(tmp_path), "--passphrase") == 0
    assert "ENCRYPTED" in (tmp_path / "recordings.key").read_text()
    with pytest.raises(crypto.SealError) as info:
        crypto.load_private_key(tmp_path / "recordings.key")
    assert info.value.code == "E601"
    plain = tmp_path / "a.wav"
    plain.write_bytes(b"RIFF....WAVE" * 10)
    sealed = crypto.seal_file(plain, crypto.load_public_key(tmp_path / "recordings.pub"))
    assert cli(tmp_path / "none.yaml", "recordings", "open", str(sealed), "--key", str(tmp_path / "recordings.key"),
               "--out", str(tmp_path / "b.wav")) == 0
    assert (tmp_path / "b.wav").read_bytes() == b"RIFF....WAVE" * 10


@pytest.mark.parametrize("size", [0, 1, crypto.CHUNK - 1, crypto.CHUNK, 3 * crypto.CHUNK + 17])
def test_seal_and_open_round_trip(tmp_path: Path, size: int) -> None:
    private, public = crypto.generate_keypair(tmp_path / "keys")
    data = os.urandom(size)
    plain = tmp_path / "call.wav"
    plain.write_bytes(data)
    sealed = crypto.seal_file(plain, crypto.load_public_key(public))
    assert not plain.exists() and sealed.name == "call.wav.sealed"
    assert sealed.stat().st_mode & 0o777 == 0o600
    assert size < 64 or data[:64] not in sealed.read_bytes()
    crypto.open_file(sealed, tmp_path / "out.wav", crypto.load_private_key(private))
    assert (tmp_path / "out.wav").read_bytes() == data


def test_damaged_truncated_or_foreign_files_are_refused(tmp_path: Path) -> None:
    private, public = crypto.generate_keypair(tmp_path / "k1")
    other, _ = crypto.generate_keypair(tmp_path / "k2")
    src = io.BytesIO(os.urandom(2 * crypto.CHUNK + 5))
    sealed = io.BytesIO()
    crypto.seal_stream(src, sealed, crypto.load_public_key(public))
    blob = sealed.getvalue()
    key = crypto.load_private_key(private)

    def opened(data: bytes, k: Any = key) -> bytes:
        out = io.BytesIO()
        crypto.open_stream(io.BytesIO(data), out, k)
        return out.getvalue()

    assert len(opened(blob)) == 2 * crypto.CHUNK + 5
    with pytest.raises(crypto.SealError, match="another key"):
        opened(blob, crypto.load_private_key(other))
    flipped = bytearray(blob)
    flipped[100] ^= 1
    with pytest.raises(crypto.SealError, match="damaged or truncated at chunk 0"):
        opened(bytes(flipped))
    with pytest.raises(crypto.SealError, match="truncated"):  # a whole chunk cut off at the end
        opened(blob[: crypto._HEADER + 2 * (crypto.CHUNK + 16)])
    with pytest.raises(crypto.SealError, match="not a sealed recording"):
        opened(b"RIFF" + blob[4:])
    out = tmp_path / "never.wav"
    bad = tmp_path / "bad.wav.sealed"
    bad.write_bytes(bytes(flipped))
    with pytest.raises(crypto.SealError):
        crypto.open_file(bad, out, key)
    assert not out.exists() and not (tmp_path / "never.wav.part").exists()


def test_list_hold_prune_release_export(box, tmp_path: Path, capsys) -> None:
    config, store, calls = box
    (old, old_path), (held, held_path), (new, new_path) = calls["old"], calls["held"], calls["new"]

    assert cli(config, "recordings", "hold", str(held), "--reason", "police request 12/345") == 0
    assert "on legal hold" in capsys.readouterr().out
    assert cli(config, "recordings", "list") == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    assert "+7*******67" in lines[0] and "+79161234567" not in "\n".join(lines)
    assert "HOLD" in lines[1] and "HOLD" not in lines[0]
    assert cli(config, "recordings", "list", "--json", "--full-numbers") == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["call_id"], r["held"], r["caller"]) for r in rows] == [
        (old, False, "+79161234567"), (held, True, "+79161234567"), (new, False, "+79031112233")]
    assert all(r["duration"] == 59.0 and r["size"] > 8000 for r in rows)

    assert cli(config, "recordings", "prune", "--dry-run") == 0
    assert f"would delete call {old}: retention" in capsys.readouterr().out and old_path.exists()
    assert cli(config, "recordings", "prune", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert [(d["call_id"], d["reason"]) for d in report["deleted"]] == [(old, "retention")]
    assert not old_path.exists() and held_path.exists() and new_path.exists()
    assert store.get_call(old)["recording"] is None

    assert cli(config, "recordings", "export", str(old), "--out", str(tmp_path / "x.wav")) == 1
    assert "has no recording (deleted: retention)" in capsys.readouterr().err
    assert cli(config, "recordings", "export", str(held), "--out", str(tmp_path / "held.wav")) == 0
    assert (tmp_path / "held.wav").read_bytes() == held_path.read_bytes()

    assert cli(config, "recordings", "release", str(held)) == 0
    assert cli(config, "recordings", "release", str(held)) == 1
    capsys.readouterr()
    assert cli(config, "recordings", "prune") == 0
    assert f"deleted call {held}: retention" in capsys.readouterr().out
    assert not held_path.exists()
    assert cli(config, "recordings", "hold", "999", "--reason", "x") == 1
    assert "no call with id 999" in capsys.readouterr().err


def test_sealed_box_round_trip(box, tmp_path: Path, capsys) -> None:
    """keygen on the manager's computer, the box seals after the call, export and open with the private key."""
    config, store, calls = box
    assert cli(config, "recordings", "keygen", "--out", str(tmp_path / "manager")) == 0
    settings = yaml.safe_load(config.read_text())
    settings["recording"]["seal_public_key"] = str(tmp_path / "manager" / "recordings.pub")
    config.write_text(yaml.safe_dump(settings))
    key = str(tmp_path / "manager" / "recordings.key")
    new, new_path = calls["new"]
    original = new_path.read_bytes()

    class Writer:
        store = box[1]

        async def run(self, func: Any, *args: Any, **kwargs: Any) -> Any:
            return func(*args, **kwargs)

    # The box: a call just ended; its WAV is sealed and the plaintext removed.
    guard = rec.RecordingGuard(load_settings(config), Writer(), interval=3600)

    async def call_ends() -> None:
        guard.started("box-9", new, new_path, None)
        await guard.finished("box-9")
        await guard.stop()

    asyncio.run(call_ends())
    sealed = Path(store.get_call(new)["recording"])
    assert sealed == new_path.with_name(new_path.name + ".sealed") and sealed.exists()
    assert not new_path.exists() and sealed.stat().st_mode & 0o777 == 0o600
    assert store.get_call(new)["events"][-1]["detail"] == "sealed"

    assert cli(config, "recordings", "export", str(new), "--out", str(tmp_path / "e.wav")) == 1
    assert "sealed; pass --key" in capsys.readouterr().err
    assert cli(config, "recordings", "export", str(new), "--out", str(tmp_path / "e.wav"), "--key", key) == 0
    assert (tmp_path / "e.wav").read_bytes() == original
    assert cli(config, "recordings", "open", str(sealed), "--key", key, "--out", str(tmp_path / "o.wav")) == 0
    assert (tmp_path / "o.wav").read_bytes() == original
    assert (tmp_path / "o.wav").stat().st_mode & 0o777 == 0o600

    # prune seals what the box left plain (it stopped mid-way), for calls that ended a while ago.
    held, held_path = calls["held"]
    store.hold_recording(held, "threat", time.time())
    assert cli(config, "recordings", "prune") == 0
    assert "sealed 1 recording(s)" in capsys.readouterr().out
    assert store.get_call(held)["recording"].endswith(".wav.sealed") and not held_path.exists()
    [row] = [r for r in rec.list_recordings(store, load_settings(config).clinic.tz) if r["call_id"] == held]
    assert row["sealed"] and "sealed" in row["path"]


def test_bad_public_key_stops_the_box_with_a_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "registratura.yaml"
    (tmp_path / "bad.pub").write_text("not a key")
    config.write_text(yaml.safe_dump({"data_dir": "data", "recording": {"seal_public_key": "bad.pub"}}))
    with pytest.raises(crypto.SealError, match=r"bad.pub: not a PEM public key"):
        rec.RecordingGuard(load_settings(config), None)


def test_prune_from_another_process_loses_none_of_the_box_writes(box, tmp_path: Path) -> None:
    """The daily prune (another process) closes its connection while the box writes: the box's WAL must survive.
    A second Store opened in the box (the metrics thread does) once dropped the box's SQLite locks."""
    import subprocess
    import sys

    config, store, calls = box
    reader = Store(store.path, migrate=False)  # the box's metrics thread opens its own
    reader.recent_calls()
    done = subprocess.run([sys.executable, "-c", "import sys; from tests.unit.test_recordings_cli import cli; "
                           "sys.exit(cli(sys.argv[1], 'recordings', 'prune'))", str(config)],
                          capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2], timeout=60)
    assert done.returncode == 0, done.stderr
    late = store.call_started(sip_call_id="late", caller="+79161234567", caller_raw="", called="", source="",
                              flow="clinic_ru", started_at=time.time())
    seen = subprocess.run([sys.executable, "-c", "import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute("
                           "'SELECT MAX(id) FROM call').fetchone()[0])", str(store.path)],
                          capture_output=True, text=True, timeout=30)
    assert seen.stdout.strip() == str(late)
    reader.close()
