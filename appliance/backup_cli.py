"""`registratura backup [--to DIR] [--keep N] [--with-recordings]` and `backup restore ARCHIVE [--force]`."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from appliance.errors import ConfigError, RegistraturaError

SettingsLoader = Callable[[argparse.Namespace], Any]


def add_backup_parser(subparsers: Any, load_settings: SettingsLoader, default_config: str) -> argparse.ArgumentParser:
    """Register `backup ...` on the main parser's subparsers; ``func`` takes the parsed args."""
    p = subparsers.add_parser(
        "backup", help="archive the database (online, while the box runs), settings and flows; `backup restore`",
        description="Without a subcommand: write one archive (registratura-backup-HOST-TIME.tar.gz, mode 0600) to "
                    "backup.dir (default <data_dir>/backups) and keep the newest N.")
    p.add_argument("--to", type=Path, help="write here instead (a mounted USB stick or share; it must exist)")
    p.add_argument("--keep", type=int, help="newest archives of this box kept there (default backup.keep, 7)")
    p.add_argument("--with-recordings", action="store_true", default=None,
                   help="put the call recordings (legal holds included) in too (default backup.recordings)")
    sub = p.add_subparsers(dest="backup_cmd")
    re_ = sub.add_parser("restore", help="check an archive and put its database, settings and flows back "
                                         "(the current ones kept as *.before-restore)")
    re_.add_argument("archive", type=Path)
    re_.add_argument("--force", action="store_true", help="restore even though the box seems to be running")
    ls = sub.add_parser("list", help="archives in the backup directory, oldest first")
    ls.add_argument("--to", dest="list_dir", type=Path, help="look here instead")

    def run(args: argparse.Namespace) -> int:
        config = args.config or os.environ.get("REGISTRATURA_CONFIG") or default_config
        return cmd_backup(args, load_settings, Path(config))

    p.set_defaults(func=run)
    return p


def _human(size: int) -> str:
    if size < 1024 * 1024:
        return f"{size / 1024:.0f} KB"
    return f"{size / 1024 / 1024:.1f} MB"


def cmd_backup(args: argparse.Namespace, load_settings: SettingsLoader, config: Path) -> int:
    from appliance import backup

    try:
        os.umask(0o077)
        if args.backup_cmd == "restore":
            return _restore(args, load_settings, config)
        settings = load_settings(args)
        if args.backup_cmd == "list":
            where = args.list_dir or backup.backup_dir(settings, args.to)[0]
            found = backup.archives(where)
            for p in found:
                print(f"{p}  {_human(p.stat().st_size)}")
            if not found:
                print(f"no backups in {where}")
            return 0
        result = backup.create_backup(settings, to=args.to, keep=args.keep, recordings=args.with_recordings)
        recs = f", {result.recordings} recording(s)" if result.recordings else ""
        print(f"backup written: {result.path} ({_human(result.size)}; database, settings, flows{recs})")
        for old in result.pruned:
            print(f"deleted old backup {old.name}")
        return 0
    except RegistraturaError as exc:
        print(str(exc), file=sys.stderr)
        return 1


def _restore(args: argparse.Namespace, load_settings: SettingsLoader, config: Path) -> int:
    from appliance import restore

    try:
        settings = load_settings(args)
    except ConfigError as exc:
        print(f"current settings not usable ({exc.code}); the archive's settings say where things go",
              file=sys.stderr)
        settings = None
    running = restore.service_running(settings)
    result = restore.restore_backup(args.archive, settings, config, force=args.force, running=running)
    print(f"{result.archive}: checked (SQLite integrity_check ok)")
    print(f"database restored: {result.database}")
    if result.settings:
        print(f"settings restored: {result.settings}")
    if result.flows:
        print(f"flows restored: {result.flows}")
    if result.recordings:
        print(f"recordings put back: {result.recordings}")
    for kept in result.kept:
        print(f"previous copy kept: {kept}")
    print("next: registratura check, then systemctl restart registratura")
    return 0
