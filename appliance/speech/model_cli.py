"""`registratura models list|verify|fetch`: the model manager's command line (wired in by appliance/cli.py)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from appliance.errors import ConfigError, RegistraturaError
from appliance.speech import models

DEFAULT_CONFIG = "/etc/registratura/registratura.yaml"

SettingsLoader = Callable[[argparse.Namespace], Any]  # returns an object with ``data_dir``


def add_models_parser(subparsers: Any, settings_loader: SettingsLoader | None = None) -> argparse.ArgumentParser:
    """Register `models list|verify|fetch` on the main parser's subparsers; ``func`` takes the parsed args."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--models-dir", type=Path, help="models directory (default <data_dir>/models)")
    common.add_argument("--manifest", type=Path, help="model manifest (default models/manifest.yaml)")

    p = subparsers.add_parser("models", help="list, verify and fetch speech models")
    sub = p.add_subparsers(dest="models_cmd", required=True)
    ls = sub.add_parser("list", parents=[common], help="the models the box knows and which are installed")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ver = sub.add_parser("verify", parents=[common], help="hash installed models; exit 1 with one line a problem")
    ver.add_argument("name", nargs="?", help="only this model")
    fe = sub.add_parser("fetch", parents=[common], help="download, check and install a model")
    fe.add_argument("name")
    fe.add_argument("--url", help="download from this address (a mirror) instead of the manifest's")
    fe.add_argument("--allow-unpinned", action="store_true",
                    help="install even though the manifest pins no sha256 for the archive")

    def run(args: argparse.Namespace) -> int:
        return cmd_models(args, settings_loader)

    p.set_defaults(func=run)
    return p


def models_dir(args: argparse.Namespace, settings_loader: SettingsLoader | None = None) -> Path:
    if getattr(args, "models_dir", None):
        return Path(args.models_dir)
    if settings_loader is not None:
        settings = settings_loader(args)
    else:
        from appliance.settings import load_settings

        path = getattr(args, "config", None) or os.environ.get("REGISTRATURA_CONFIG") or DEFAULT_CONFIG
        try:
            settings = load_settings(path)
        except RegistraturaError as exc:
            raise ConfigError(f"{exc.args[0]} (or pass --models-dir)", code=exc.code) from None
    return Path(settings.data_dir) / "models"


def cmd_models(args: argparse.Namespace, settings_loader: SettingsLoader | None = None) -> int:
    try:
        manifest = models.load_manifest(getattr(args, "manifest", None))
        where = models_dir(args, settings_loader)
        if args.models_cmd == "list":
            return _list(manifest, where, args.json)
        if args.models_cmd == "verify":
            return _verify(manifest, where, args.name)
        return _fetch(manifest, where, args.name, args.url, args.allow_unpinned)
    except RegistraturaError as exc:
        print(str(exc), file=sys.stderr)
        return 1


def rows(manifest: models.Manifest, where: Path) -> list[dict[str, Any]]:
    have = {m.name: m for m in models.installed(where, manifest)}
    out = []
    for e in manifest.entries.values():
        m = have.get(e.name)
        if m:
            state = "bundled" if e.bundled else "yes"
        else:
            state = "not built yet" if e.bundled else "no"
        out.append({"name": e.name, "kind": e.kind, "family": e.family, "language": e.language,
                    "sample_rate": e.sample_rate, "installed": m is not None, "state": state,
                    "size_bytes": m.size_bytes if m else None, "download_mb": e.size_mb, "license": e.license,
                    "default": e.default, "rank": e.rank, "streaming": e.streaming, "bundled": e.bundled,
                    "pinned": bool(e.sha256), "path": str(m.path) if m else None, "url": e.url})
    return out


def _size(n: int | None, mb: float | None) -> str:
    if n is None:
        return f"~{mb:g} MB" if mb else "-"
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.0f} kB"


def _list(manifest: models.Manifest, where: Path, as_json: bool) -> int:
    table = rows(manifest, where)
    if as_json:
        print(json.dumps({"models_dir": str(where), "manifest": str(manifest.path), "models": table},
                         ensure_ascii=False, indent=2))
        return 0
    print(f"{'NAME':<26}{'KIND':<6}{'LANG':<7}{'INSTALLED':<15}{'SIZE':>10}  LICENSE")
    for r in table:
        name = r["name"] + (" *" if r["default"] else "")
        print(f"{name:<26}{r['kind']:<6}{r['language']:<7}{r['state']:<15}"
              f"{_size(r['size_bytes'], r['download_mb']):>10}  {r['license']}")
    print(f"* = default for production boxes; models directory {where}")
    return 0


def _verify(manifest: models.Manifest, where: Path, name: str | None) -> int:
    problems = models.verify(where, name, manifest)
    errors = [p for p in problems if p.severity == "error"]
    for p in problems:
        print(("note: " if p.severity != "error" else "") + str(p), file=sys.stderr if p in errors else sys.stdout)
    if errors:
        print(f"{len(errors)} problem(s)", file=sys.stderr)
        return 1
    checked = [m.name for m in models.installed(where, manifest) if not name or m.name == name]
    print(f"models: {', '.join(checked) or 'none installed'}: ok")
    return 0


class _Bar:
    """A byte progress bar on stderr: tqdm when installed, otherwise a plain one-line bar."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.bar: Any = None
        self.total: int | None = None
        self.tqdm: Any = None
        try:
            from tqdm import tqdm
        except ImportError:
            pass
        else:
            self.tqdm = tqdm

    def __call__(self, done: int, total: int | None) -> None:
        if self.tqdm is not None:
            if self.bar is None or total != self.total:
                if self.bar is not None:
                    self.bar.close()
                self.bar = self.tqdm(total=total, initial=done, unit="B", unit_scale=True, unit_divisor=1024,
                                     desc=self.name, file=sys.stderr, mininterval=0.5)
                self.total = total
            self.bar.update(done - self.bar.n)
            return
        pct = f"{100 * done / total:5.1f}%" if total else ""
        print(f"\r{self.name}: {done / 1e6:8.1f} MB {pct}", end="", file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.tqdm is None:
            print(file=sys.stderr)


def _fetch(manifest: models.Manifest, where: Path, name: str, url: str | None, allow_unpinned: bool) -> int:
    bar = _Bar(name)
    try:
        res = models.fetch(name, where, url, bar, allow_unpinned=allow_unpinned, manifest=manifest)
    finally:
        bar.close()
    e = res.model.entry
    print(f"{name}: installed in {res.model.path} ({res.model.size_bytes / 1e6:.1f} MB, {e.license})")
    if not res.pinned:
        print(f"{name}: archive sha256 {res.archive_sha256} is NOT pinned in {manifest.path}; pin it once you "
              "have checked it with the publisher", file=sys.stderr)
    return 0
