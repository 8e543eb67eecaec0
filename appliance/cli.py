"""The `registratura` command: thin subcommands over the settings, the store and the app."""

from __future__ import annotations

import argparse
import json
import logging
import logging.config
import os
import sys
from pathlib import Path

from appliance import __version__
from appliance.errors import ConfigError, RegistraturaError

DEFAULT_CONFIG = "/etc/registratura/registratura.yaml"
_LOGGER = logging.getLogger("appliance")


class _CallIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        from appliance.session import CALL_ID

        record.call_id = CALL_ID.get()
        return True


def setup_logging(level: str = "INFO") -> None:
    """One dictConfig. Under systemd journald adds the time; on a terminal we add it ourselves."""
    under_journal = bool(os.environ.get("JOURNAL_STREAM"))
    fmt = "%(levelname)s %(name)s [%(call_id)s] %(message)s"
    if not under_journal:
        fmt = "%(asctime)s " + fmt
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "filters": {"call_id": {"()": _CallIdFilter}},
            "formatters": {"plain": {"format": fmt}},
            "handlers": {
                "stderr": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["call_id"]}
            },
            "root": {"level": level, "handlers": ["stderr"]},
        }
    )


def _settings(args: argparse.Namespace):  # noqa: ANN202 - Settings, imported lazily
    from appliance.settings import load_settings

    path = args.config or os.environ.get("REGISTRATURA_CONFIG") or DEFAULT_CONFIG
    return load_settings(path)


# ------------------------------------------------------------------------------------------ commands


def cmd_run(args: argparse.Namespace) -> int:
    import asyncio
    import faulthandler

    from appliance.app import App

    faulthandler.enable()  # a crash in native code leaves every thread's Python stack in the journal

    path = Path(args.config or os.environ.get("REGISTRATURA_CONFIG") or DEFAULT_CONFIG)
    if not args.safe_mode:  # at a terminal: the errors and exit 1
        settings = _settings(args)
        setup_logging(settings.log.level)
        _LOGGER.info("registratura %s starting with %s", __version__, path)
        return asyncio.run(App(settings).run())
    # The appliance: unusable settings or flows keep the process up without calls, saying why (safemode.py).
    from appliance.safemode import SafeMode, diagnose
    from appliance.settings import split_host_port

    try:
        split_host_port(args.safe_listen)
    except ValueError:
        raise ConfigError(f"--safe-listen {args.safe_listen!r} is not IP:port; use e.g. 0.0.0.0:9310") from None
    settings, problems = diagnose(path)
    setup_logging(settings.log.level if settings is not None else "INFO")
    _LOGGER.info("registratura %s starting with %s", __version__, path)
    if problems:
        return asyncio.run(SafeMode(path, settings, problems, args.safe_listen).run())
    return asyncio.run(App(settings).run())


def cmd_check(args: argparse.Namespace) -> int:
    from appliance.flow.model import CallbackNode, QueueNode, TransferNode
    from appliance.safemode import startup_problems

    try:
        settings = _settings(args)
    except RegistraturaError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    flows, catalog, problems = startup_problems(settings)  # the same checks as `run --safe-mode`
    from appliance.telephony.pjsua import probe_capacity

    cap = probe_capacity(settings.sip.max_calls)
    print(f"settings: {args.config or DEFAULT_CONFIG}: ok")
    print(f"SIP stack: {cap}")
    asking = sorted(f"{name}.yaml" for name, flow in flows.items()
                    if any(isinstance(node, CallbackNode) for node in flow.nodes.values()))
    if asking and not settings.queues:
        print(f"warning: {', '.join(asking)} promise callbacks (request_callback) but no queue is configured to "
              "call back from: the requests are not stored; add queues.reception with the receptionists' phones",
              file=sys.stderr)
    for flow in flows.values():
        for node in flow.nodes.values():
            if isinstance(node, TransferNode) and node.target not in settings.transfers:
                then = f"callers go to '{node.no_answer}'" if node.no_answer else "callers hear 'transfer_failed'"
                print(f"warning: {flow.path}:{node.line}: node '{node.id}': transfer target '{node.target}' is not "
                      f"in the settings (transfers): {then}; add transfers.{node.target}: <SIP URI>", file=sys.stderr)
            if isinstance(node, QueueNode) and node.queue not in settings.queues:
                print(f"warning: {flow.path}:{node.line}: node '{node.id}': queue '{node.queue}' is not in the "
                      f"settings (queues): callers hear 'transfer_failed' and are hung up; add queues.{node.queue}",
                      file=sys.stderr)
    for line in problems:
        print(line, file=sys.stderr)
    if problems:
        print(f"{len(problems)} problem(s)", file=sys.stderr)
        return 1
    print(f"flows: {settings.flows.dir}: ok")
    return 0


def cmd_calls(args: argparse.Namespace) -> int:
    from appliance.store import Store

    db = Path(args.db) if args.db else Path(_settings(args).data_dir) / "registratura.db"
    if not db.exists():
        print(f"{db}: no database yet (the box has not run with this data_dir)", file=sys.stderr)
        return 1
    store = Store(db)
    try:
        calls = store.recent_calls(limit=args.limit)
    finally:
        store.close()
    if args.json:
        print(json.dumps(calls, ensure_ascii=False, indent=2))
        return 0
    from appliance.numbers import mask

    for c in calls:
        dur = f"{c['duration']:.1f}s" if c.get("duration") is not None else "-"
        caller = c["caller"] if args.full_numbers else mask(c["caller"])
        print(f"{c['id']:>6}  {c['started_at']}  {caller:<16} {c['outcome'] or 'in progress':<14} "
              f"{dur:>8}  digits={c['digits'] or '-'}")
    return 0


def cmd_flows(args: argparse.Namespace) -> int:
    from appliance.flow import graph, load_flow, load_prompt_catalog, validate_dir

    voices = Path(args.voices)
    catalog = load_prompt_catalog(voices)
    ids = {k: set(v) for k, v in catalog.items()}
    if args.flows_cmd == "validate":
        problems = validate_dir(Path(args.dir), ids)
        for line in problems:
            print(line, file=sys.stderr)
        if problems:
            print(f"{len(problems)} problem(s)", file=sys.stderr)
            return 1
        print(f"{args.dir}: all flows ok")
        return 0
    path = Path(args.flow)
    if not path.suffix:
        path = Path(args.dir) / f"{args.flow}.yaml"
    print(graph(load_flow(path, ids), fmt=args.format))
    return 0


def cmd_prompts(args: argparse.Namespace) -> int:
    from appliance.flow import load_prompt_catalog
    from appliance.speech.prompts import PromptLibrary

    settings = _settings(args) if (args.config or os.environ.get("REGISTRATURA_CONFIG")) else None
    voices = Path(args.voices) if args.voices else (settings.voices.dir if settings else Path("voices"))
    cache = Path(args.cache) if args.cache else (
        (settings.voices.cache or Path(settings.data_dir) / "prompt-cache") if settings
        else Path("var/prompt-cache"))
    name = settings.clinic.name if settings else args.clinic_name
    lib = PromptLibrary(load_prompt_catalog(voices), voices, cache, variables={"clinic_name": name})
    # The voices the box itself would pick for each prompt language, so the box finds the cache warm.
    models_dir = Path(args.models_dir) if args.models_dir else (
        Path(settings.data_dir) / "models" if settings else None)
    if lib.catalog:
        from appliance.speech.engines import load_engines

        eng = load_engines(models_dir, sorted(lib.catalog)[0], kinds=("tts",), tts_languages=sorted(lib.catalog))
        for line in eng.lines:
            print(line, file=sys.stderr)
        lib.renderers = eng.prompt_renderers()

    def progress(n: int, total: int, what: str) -> None:
        width = 30
        done = int(width * n / total) if total else width
        print(f"\r[{'#' * done}{'.' * (width - done)}] {n}/{total} {what:<40}", end="", file=sys.stderr)

    from appliance.speech.phrases import queue_phrases

    rendered, cached = lib.render_all(progress)
    print(file=sys.stderr)
    print(f"prompts: {rendered} rendered, {cached} unchanged (cache {cache})")
    # The queue's announcements too, so a neural voice never renders one while a caller waits for it.
    rendered, cached = lib.render_texts({lang: queue_phrases(lang) for lang in lib.catalog}, progress)
    print(file=sys.stderr)
    print(f"queue phrases: {rendered} rendered, {cached} unchanged")
    return 0


def _open_store(args: argparse.Namespace):  # noqa: ANN202 - Store, imported lazily
    from appliance.store import Store

    settings = _settings(args)
    data = Path(settings.data_dir)
    data.mkdir(parents=True, exist_ok=True, mode=0o700)
    return settings, Store(data / "registratura.db")


def cmd_block(args: argparse.Namespace) -> int:
    import time

    from appliance.security.blocklist import normalise_pattern, overlaps_never_block

    settings, store = _open_store(args)
    now = time.time()
    try:
        if args.block_cmd == "list":
            rows = store.active_blocks(now)
            if args.json:
                print(json.dumps(rows, ensure_ascii=False, indent=2))
            for r in [] if args.json else rows:
                until = "until removed" if r["expires_at"] is None else "until " + time.strftime(
                    "%Y-%m-%d %H:%M", time.localtime(r["expires_at"]))
                print(f"{r['pattern']:<16} {r['source']:<9} {until:<22} {r['reason']}")
            if not rows and not args.json:
                print("no numbers are blocked")
            return 0
        try:
            pattern = normalise_pattern(args.number, settings.clinic.region)
        except ValueError as exc:
            print(f"E110: {exc}", file=sys.stderr)
            return 1
        if args.block_cmd == "add":
            kept = overlaps_never_block(pattern, settings.security.never_block)
            if kept and not pattern.endswith("*"):
                print(f"E111: {pattern} is on the never-block list ({', '.join(kept)}: security.never_block in "
                      f"{args.config or 'the settings'}); it would never be blocked. Take it off that list first.",
                      file=sys.stderr)
                return 1
            if kept:
                print(f"note: numbers under {', '.join(kept)} are on the never-block list and still get through",
                      file=sys.stderr)
            expires = now + args.days * 86400 if args.days else None
            store.add_block(pattern, args.reason, "manual", now, expires)
            print(f"blocked {pattern}" + (f" for {args.days:g} day(s)" if args.days else ""))
        else:
            lifted = store.remove_block(pattern, now)
            if not lifted:
                print(f"{pattern} is not blocked", file=sys.stderr)
                return 1
            print(f"unblocked {pattern}")
        return 0
    finally:
        store.close()


def cmd_agents(args: argparse.Namespace) -> int:
    import time

    settings, store = _open_store(args)
    try:
        if args.agents_cmd == "list":
            rows = store.agent_states()
            if args.json:
                print(json.dumps(rows, indent=2))
            elif not rows:
                print("no receptionists published yet (is the box running with queues configured?)")
            for r in [] if args.json else rows:
                print(f"{r['queue']:<12} {r['uri']:<32} {r['state']:<8} calls {r['calls_taken']:<4} "
                      f"missed in a row {r['missed']}")
            return 0
        from appliance.settings import check_sip_uri

        try:
            uri = check_sip_uri(args.uri)
        except ConfigError as bad:
            print(bad, file=sys.stderr)
            return 1
        if args.queue not in settings.queues:
            print(f"E131: no queue '{args.queue}' in the settings; queues: {', '.join(settings.queues) or 'none'}",
                  file=sys.stderr)
            return 1
        command = store.add_agent_command(args.queue, args.agents_cmd, uri, time.time())
        deadline = time.monotonic() + args.wait
        while time.monotonic() < deadline:
            result = store.agent_command_result(command)
            if result is not None:
                if result != "ok":
                    print(f"E132: {result}", file=sys.stderr)
                    return 1
                print(f"{args.agents_cmd} {uri} in {args.queue}: done")
                return 0
            time.sleep(0.2)
        print(f"queued: {args.agents_cmd} {uri} in {args.queue} (the box applies it when it runs)")
        return 0
    finally:
        store.close()


def cmd_firewall(args: argparse.Namespace) -> int:
    from appliance.security.firewall import render

    settings = _settings(args)
    text = render(settings, sip_rate=args.sip_rate, sip_burst=args.sip_burst, ssh_port=args.ssh_port or None,
                  source=settings.source, safe_mode_port=9310 if args.safe_mode else None)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from datetime import date
    from zoneinfo import ZoneInfo

    from appliance import report

    try:
        day = date.fromisoformat(args.day) if args.day else date.today()
    except ValueError:
        print(f"E120: --day {args.day!r} is not a date; use YYYY-MM-DD", file=sys.stderr)
        return 1
    settings, store = _open_store(args)
    try:
        data = report.build(store, settings, day)
    finally:
        store.close()
    tz = ZoneInfo(settings.clinic.timezone)
    out = report.as_csv if args.csv else report.as_text
    print(out(data, tz, args.full_numbers))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from appliance.demo import run_demo

    return run_demo(digits=args.digits, keep=args.keep, prompt_cache=args.prompt_cache)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="registratura", description="Offline voice IVR appliance for clinics")
    p.add_argument("--config", help=f"settings file (default {DEFAULT_CONFIG} or $REGISTRATURA_CONFIG)")
    p.add_argument("--version", action="version", version=f"registratura {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True)

    run = sub.add_parser("run", help="run the service")
    run.add_argument("--safe-mode", action="store_true",
                     help="unusable settings or flows: stay up without taking calls, answer /healthz 503 with the "
                          "errors, restart (exit 75) once they are fixed (the systemd unit uses this)")
    run.add_argument("--safe-listen", default="0.0.0.0:9310", metavar="IP:PORT",
                     help="safe mode's /healthz when the settings name no readable metrics.listen "
                          "(default 0.0.0.0:9310, private networks only)")
    run.set_defaults(func=cmd_run)
    sub.add_parser("check", help="validate settings and flows; exit 1 with the errors").set_defaults(
        func=cmd_check)

    calls = sub.add_parser("calls", help="recent call records")
    calls.add_argument("--json", action="store_true")
    calls.add_argument("--limit", type=int, default=20)
    calls.add_argument("--db", help="database file (default: <data_dir>/registratura.db)")
    calls.add_argument("--full-numbers", action="store_true", help="show numbers unmasked")
    calls.set_defaults(func=cmd_calls)

    flows = sub.add_parser("flows", help="validate flows or draw a flow's menu tree")
    fsub = flows.add_subparsers(dest="flows_cmd", required=True)
    val = fsub.add_parser("validate")
    val.add_argument("dir", nargs="?", default="ivr_flows")
    val.add_argument("--voices", default="voices")
    gr = fsub.add_parser("graph")
    gr.add_argument("flow", help="flow name or file")
    gr.add_argument("--dir", default="ivr_flows")
    gr.add_argument("--voices", default="voices")
    gr.add_argument("--format", choices=["mermaid", "dot"], default="mermaid")
    flows.set_defaults(func=cmd_flows)

    prompts = sub.add_parser("prompts", help="render prompt audio")
    psub = prompts.add_subparsers(dest="prompts_cmd", required=True)
    render = psub.add_parser("render")
    render.add_argument("--voices")
    render.add_argument("--cache")
    render.add_argument("--clinic-name", default="Поликлиника №1")
    render.add_argument("--models-dir", help="where the box's models are (default <data_dir>/models with a "
                        "settings file; without one only pip-packaged voices); each language is rendered with "
                        "the voice the box would pick for it")
    prompts.set_defaults(func=cmd_prompts)

    block = sub.add_parser("block", help="block or unblock callers by number or prefix")
    bsub = block.add_subparsers(dest="block_cmd", required=True)
    badd = bsub.add_parser("add", help="block a number (+79161234567) or a prefix (+7495*)")
    badd.add_argument("number")
    badd.add_argument("--reason", default="blocked by staff")
    badd.add_argument("--days", type=float, default=0, help="expire after this many days (default: never)")
    brm = bsub.add_parser("remove", help="lift a block")
    brm.add_argument("number")
    blist = bsub.add_parser("list", help="numbers blocked now")
    blist.add_argument("--json", action="store_true")
    block.set_defaults(func=cmd_block)

    agents = sub.add_parser("agents", help="receptionists at run time: list, add, remove, pause, resume")
    asub = agents.add_subparsers(dest="agents_cmd", required=True)
    alist = asub.add_parser("list")
    alist.add_argument("--json", action="store_true")
    for name in ("add", "remove", "pause", "resume"):
        a = asub.add_parser(name)
        a.add_argument("queue")
        a.add_argument("uri", help="the receptionist's phone, e.g. sip:101@192.168.1.21")
        a.add_argument("--wait", type=float, default=5.0, help="seconds to wait for the running box")
    agents.set_defaults(func=cmd_agents)

    fw = sub.add_parser("firewall", help="the box's nftables rules, from the settings")
    fwsub = fw.add_subparsers(dest="firewall_cmd", required=True)
    fwr = fwsub.add_parser("render", help="print the rules; load them with nft -f")
    fwr.add_argument("--output", "-o", help="write to this file instead of stdout")
    fwr.add_argument("--sip-rate", type=int, default=50, help="SIP packets a second per peer (default 50)")
    fwr.add_argument("--sip-burst", type=int, default=100, help="burst above the rate (default 100 packets)")
    fwr.add_argument("--ssh-port", type=int, default=22, help="SSH from the management networks; 0 = closed")
    fwr.add_argument("--safe-mode", action="store_true", help="also open tcp/9310 (safe mode's /healthz) to the "
                     "management networks: the image's default rules for a box without valid settings")
    fw.set_defaults(func=cmd_firewall)

    rep = sub.add_parser("report", help="a day's service level, abandoned calls and callbacks")
    rep.add_argument("--day", help="YYYY-MM-DD (default: today)")
    rep.add_argument("--csv", action="store_true")
    rep.add_argument("--full-numbers", action="store_true")
    rep.set_defaults(func=cmd_report)

    from appliance.backup_cli import add_backup_parser
    from appliance.recordings_cli import add_recordings_parser
    from appliance.speech.model_cli import add_models_parser
    from appliance.update_cli import add_update_parser

    add_models_parser(sub, _settings)
    add_recordings_parser(sub, _settings)
    add_backup_parser(sub, _settings, DEFAULT_CONFIG)
    add_update_parser(sub, _settings)

    demo = sub.add_parser("demo", help="start a box on 127.0.0.1 and call it from a built-in softphone")
    demo.add_argument("--digits", default="510",
                      help="digits the demo caller presses (a final 0 goes to the reception queue)")
    demo.add_argument("--keep", action="store_true", help="keep the demo's data directory")
    demo.add_argument("--prompt-cache", type=Path, default=None,
                      help="rendered prompts, kept between demos (default ~/.cache/registratura/prompt-cache)")
    demo.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except RegistraturaError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
