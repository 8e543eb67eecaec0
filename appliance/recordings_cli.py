"""`registratura recordings list|export|prune|hold|release|keygen|open` (wired in by appliance/cli.py)."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from appliance.errors import RegistraturaError

SettingsLoader = Callable[[argparse.Namespace], Any]


def add_recordings_parser(subparsers: Any, load_settings: SettingsLoader) -> argparse.ArgumentParser:
    """Register `recordings ...` on the main parser's subparsers; ``func`` takes the parsed args."""
    p = subparsers.add_parser("recordings", help="call recordings: list, export, prune, legal hold, sealing keys")
    sub = p.add_subparsers(dest="recordings_cmd", required=True)

    ls = sub.add_parser("list", help="recordings on the box: call, time, caller (masked), duration, size, hold")
    ls.add_argument("--day", help="only this clinic-local day, YYYY-MM-DD")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.add_argument("--full-numbers", action="store_true", help="show callers' numbers unmasked")

    ex = sub.add_parser("export", help="copy a call's recording out (a sealed one is decrypted with --key)")
    ex.add_argument("call_id", type=int)
    ex.add_argument("--out", required=True, type=Path, help="the WAV file to write (mode 0600)")
    ex.add_argument("--key", type=Path, help="the clinic's private key (recordings.key), for sealed recordings")

    pr = sub.add_parser("prune", help="delete recordings past retention or over the disk quota (never held ones)")
    pr.add_argument("--dry-run", action="store_true", help="say what would go, delete nothing")
    pr.add_argument("--json", action="store_true")

    ho = sub.add_parser("hold", help="put a call's recording on legal hold: never deleted until released")
    ho.add_argument("call_id", type=int)
    ho.add_argument("--reason", required=True, help="why, for the record (a case number, a request)")

    re_ = sub.add_parser("release", help="lift the legal hold on a call's recording")
    re_.add_argument("call_id", type=int)
    re_.add_argument("--reason", default="", help="why, for the record")

    kg = sub.add_parser("keygen", help="make the sealing key pair: recordings.pub for the box, recordings.key "
                                       "for the manager's computer (not the box)")
    kg.add_argument("--out", required=True, type=Path, help="directory for recordings.key and recordings.pub")
    kg.add_argument("--passphrase", action="store_true", help="protect the private key with a passphrase (asked)")
    kg.add_argument("--force", action="store_true", help="overwrite an existing pair")

    op = sub.add_parser("open", help="decrypt a sealed recording (.wav.sealed) with the private key")
    op.add_argument("file", type=Path)
    op.add_argument("--key", required=True, type=Path, help="the clinic's private key (recordings.key)")
    op.add_argument("--out", required=True, type=Path, help="the WAV file to write (mode 0600)")

    def run(args: argparse.Namespace) -> int:
        return cmd_recordings(args, load_settings)

    p.set_defaults(func=run)
    return p


def cmd_recordings(args: argparse.Namespace, load_settings: SettingsLoader) -> int:
    try:
        if args.recordings_cmd == "keygen":
            return _keygen(args)
        if args.recordings_cmd == "open":
            return _open(args)
        settings = load_settings(args)
        from appliance.store import Store

        data = Path(settings.data_dir)
        db = data / "registratura.db"
        if not db.exists():
            print(f"{db}: no database yet (the box has not run with this data_dir)", file=sys.stderr)
            return 1
        os.umask(0o077)
        store = Store(db)
        try:
            return _COMMANDS[args.recordings_cmd](args, settings, store)
        finally:
            store.close()
    except RegistraturaError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"E611: {exc.filename or ''}: {exc.strerror}", file=sys.stderr)
        return 1


def _list(args: argparse.Namespace, settings: Any, store: Any) -> int:
    from datetime import date

    from appliance.numbers import mask
    from appliance.recordings import list_recordings

    if args.day:
        try:
            date.fromisoformat(args.day)
        except ValueError:
            print(f"E612: --day {args.day!r} is not a date; use YYYY-MM-DD", file=sys.stderr)
            return 1
    rows = list_recordings(store, settings.clinic.tz, args.day)
    if not args.full_numbers:
        for r in rows:
            r["caller"] = mask(r["caller"])
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return 0
    if not rows:
        print("no recordings" + (f" on {args.day}" if args.day else ""))
        return 0
    for r in rows:
        dur = "recording" if r["in_progress"] else ("-" if r["duration"] is None else f"{r['duration']:.0f}s")
        flags = ",".join(f for f, on in (("HOLD", r["held"]), ("sealed", r["sealed"]), ("MISSING", not r["exists"]))
                         if on)
        print(f"{r['call_id']:>6}  {r['time']}  {r['caller']:<16} {dur:>9} {_human(r['size']):>9}  {flags}")
    return 0


def _human(size: int) -> str:
    if size < 1024 * 1024:
        return f"{size / 1024:.0f} KB"
    return f"{size / 1024 / 1024:.1f} MB"


def _export(args: argparse.Namespace, settings: Any, store: Any) -> int:
    from appliance.recordings import export

    key = _private_key(args.key) if args.key else None
    out = export(store, args.call_id, args.out, key)
    print(f"call {args.call_id}: recording written to {out}")
    return 0


def _prune(args: argparse.Namespace, settings: Any, store: Any) -> int:
    from appliance.recordings import MB, prune, seal_pending

    report = prune(store, settings.recording, settings.data_dir, dry_run=args.dry_run)
    if settings.recording.seal_public_key and not args.dry_run:
        from appliance.crypto import load_public_key

        # Plain files the box could not seal (stopped mid-way, disk full); calls ended a while ago only.
        report.sealed = seal_pending(store, load_public_key(settings.recording.seal_public_key), min_age=600)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
        return 0
    verb = "would delete" if args.dry_run else "deleted"
    for d in report.deleted:
        print(f"{verb} call {d.call_id}: {d.reason} ({_human(d.size)})")
    for d in report.skipped:
        print(f"kept call {d.call_id}: held or changed meanwhile")
    if report.sealed:
        print(f"sealed {len(report.sealed)} recording(s) left plain")
    free = "" if report.free_bytes is None else f", {report.free_bytes / MB:.0f} MB free on the data disk"
    print(f"{verb} {len(report.deleted)} recording(s), {report.freed_bytes / MB:.1f} MB; kept {report.kept} "
          f"({report.kept_bytes / MB:.1f} MB){free}")
    return 0


def _hold(args: argparse.Namespace, settings: Any, store: Any) -> int:
    store.hold_recording(args.call_id, args.reason, time.time())
    note = "" if store.get_call(args.call_id)["recording"] else " (it has no recording now; the hold is noted)"
    print(f"call {args.call_id}: recording on legal hold{note}")
    return 0


def _release(args: argparse.Namespace, settings: Any, store: Any) -> int:
    if not store.release_recording(args.call_id, time.time(), args.reason):
        print(f"call {args.call_id}: not on hold", file=sys.stderr)
        return 1
    print(f"call {args.call_id}: hold released; retention applies again")
    return 0


_COMMANDS: dict[str, Callable[[argparse.Namespace, Any, Any], int]] = {
    "list": _list, "export": _export, "prune": _prune, "hold": _hold, "release": _release,
}


def _passphrase(prompt: str) -> bytes:
    env = os.environ.get("REGISTRATURA_KEY_PASSPHRASE")
    if env:
        return env.encode()
    if not sys.stdin.isatty():
        raise RegistraturaError("the private key needs a passphrase: run on a terminal or set "
                                "REGISTRATURA_KEY_PASSPHRASE", code="E601")
    return getpass.getpass(prompt).encode()


def _private_key(path: Path) -> Any:
    from appliance.crypto import SealError, load_private_key

    try:
        return load_private_key(path)
    except SealError as exc:
        if exc.code != "E601":
            raise
    return load_private_key(path, _passphrase(f"passphrase for {path}: "))


def _keygen(args: argparse.Namespace) -> int:
    from appliance.crypto import generate_keypair

    passphrase = None
    if args.passphrase:
        passphrase = _passphrase("new passphrase: ")
        if not os.environ.get("REGISTRATURA_KEY_PASSPHRASE") and passphrase != _passphrase("again: "):
            print("E602: the passphrases differ; nothing written", file=sys.stderr)
            return 1
    private, public = generate_keypair(args.out, passphrase, force=args.force)
    print(f"private key: {private} (mode 0600): keep it on the manager's computer and a backup, never on the box")
    print(f"public key:  {public}: copy it to the box and set recording.seal_public_key to its path")
    return 0


def _open(args: argparse.Namespace) -> int:
    from appliance.crypto import open_file

    open_file(args.file, args.out, _private_key(args.key))
    print(f"{args.file}: opened to {args.out}")
    return 0
