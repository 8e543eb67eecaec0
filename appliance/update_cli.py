"""`registratura update status|apply BUNDLE|check`: A/B updates of the image (see appliance/update.py)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from appliance import update

SettingsLoader = Callable[[argparse.Namespace], Any]


def add_update_parser(subparsers: Any, load_settings: SettingsLoader) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "update", help="install a new image version beside the running one; the box falls back if it fails",
        description="A/B updates: `apply` writes an update bundle into the root slot the box is not running "
                    "from and adds a boot entry with 3 tries; reboot to try it. The new version is kept only "
                    "once its /healthz answers 200 (`check`, run by registratura-update-check.service).")
    sub = p.add_subparsers(dest="update_cmd", required=True)
    st = sub.add_parser("status", help="the running version and slot, and every installed version")
    st.add_argument("--json", action="store_true")
    ap = sub.add_parser("apply", help="install BUNDLE (registratura-x86_64-VERSION.update.tar) into the other slot")
    ap.add_argument("bundle", type=Path)
    sub.add_parser("pin-machine-id", help="keep this boot's machine id on every boot entry's kernel command line "
                                          "(registratura-machine-id.service)")
    ck = sub.add_parser("check", help="wait until /healthz answers 200 (exit 1 after --timeout seconds)")
    ck.add_argument("--url", help="default: the settings' metrics.listen, else http://127.0.0.1:9310/healthz")
    ck.add_argument("--timeout", type=float, default=300.0)

    def run(args: argparse.Namespace) -> int:
        if args.update_cmd == "status":
            state = update.status(update.Box())
            if args.json:
                print(json.dumps(state, indent=1))
                return 0
            print(f"running: {state['version']} from slot {state['slot'] or '- (not an A/B image)'}"
                  f"{', ON TRIAL (not yet marked good)' if state['on_trial'] else ''}")
            for e in state["entries"]:
                print(f"  {e['version']:<24} slot {e['slot'] or '?'}  {e['state']}  ({e['file']})")
            return 0
        if args.update_cmd == "apply":
            update.apply(args.bundle)
            return 0
        if args.update_cmd == "pin-machine-id":
            update.pin_machine_id()
            return 0
        return 0 if update.check(args.url or _health_url(args, load_settings), args.timeout) else 1

    p.set_defaults(func=run)
    return p


def _health_url(args: argparse.Namespace, load_settings: SettingsLoader) -> str:
    try:
        metrics = load_settings(args).metrics
        host, port = metrics.host, metrics.port
    except Exception:  # noqa: BLE001 - unusable settings: safe mode listens on the default port
        host, port = "127.0.0.1", 9310
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}/healthz"
