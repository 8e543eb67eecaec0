"""Safe mode: a box whose settings or flows cannot be used takes no calls but says why on /healthz.

Why a mode of ``registratura run`` (``--safe-mode``, what the systemd unit runs) and not an ``ExecStartPre=``
check: a unit whose pre-check fails has nothing listening, so ``curl http://BOX:9310/healthz`` gets "connection
refused" and ``Restart=on-failure`` starts the same failing check every few seconds. In safe mode the process
stays up and

- logs every problem (``file:line: ...``) once, to the journal;
- tells systemd ``READY=1`` with ``STATUS=SAFE MODE: ...`` (``systemctl status`` shows the first problem) and
  pings the watchdog, so systemd neither restarts it nor gives up on it: no restart loop;
- serves only ``/healthz``: HTTP 503, ``{"ok": false, "ready": false, "safe_mode": true, "error": ...,
  "firstboot": ...}``; nothing else (no /metrics, no SIP socket, no database opened);
- checks the settings again on SIGHUP (``systemctl reload registratura``) and when the settings file or the flows
  change; once they pass, it exits with ``RESTART_EXIT`` (75) and systemd starts a fresh process in normal mode
  (the unit has ``RestartForceExitStatus=75``). A fresh process rather than a switch in place: the normal start
  then runs exactly the code path of a clean boot, with nothing left over from the safe-mode process.

Where it answers: the settings' own ``metrics`` section when it can be read (a valid file with bad flows, or a
bad file whose ``metrics:`` section is fine on its own), so safe mode is never more exposed than the box itself
would be; otherwise (no file, unreadable YAML, a bad ``metrics:``) ``--safe-listen`` (default
``0.0.0.0:9310``), answering only loopback and the private networks (10/8, 172.16/12, 192.168/16, link-local,
fc00::/7). The image's default firewall rules, loaded when the settings are missing or invalid, open tcp/9310 to
the same private networks only (``registratura firewall render --safe-mode``). /healthz carries no personal
data: the settings' error lines and the first-boot status, which /healthz shows in normal mode too.

The checks are those of ``registratura check``: settings, flows, the main flow, the prompts ``security.withheld:
ask`` needs, and that the SIP stack (pjsua2) is installed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from appliance.errors import RegistraturaError
from appliance.notify import Notifier

_LOGGER = logging.getLogger(__name__)

SAFE_LISTEN = "0.0.0.0:9310"
RESTART_EXIT = 75  # EX_TEMPFAIL: "start me again"; the unit restarts on it (RestartForceExitStatus=75)
POLL_SECONDS = 2.0


def startup_problems(settings: Any) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """The flows, the prompt catalogue and every problem that stops the box from starting (empty: it can start)."""
    from appliance.flow import check_dir, load_prompt_catalog

    catalog = load_prompt_catalog(settings.voices.dir)
    flows, problems = check_dir(settings.flows.dir, {k: set(v) for k, v in catalog.items()})
    problems = list(problems)
    flow_file = settings.flows.dir / f"{settings.flows.main}.yaml"
    if not flow_file.is_file():
        problems.append(f"{flow_file}: main flow '{settings.flows.main}' not found (settings flows.main)")
    if settings.security.withheld == "ask":
        from appliance.security.withheld import GATE_PROMPTS

        language = getattr(flows.get(settings.flows.main), "language", settings.clinic.language)
        missing = [p for p in GATE_PROMPTS if p not in catalog.get(language, {})]
        if missing:
            problems.append(f"security.withheld is 'ask' but voices/{language}/prompts.yaml lacks "
                            f"{', '.join(missing)}; add them or set security.withheld: allow")
    return flows, catalog, problems


def diagnose(path: Path) -> tuple[Any, list[str]]:
    """(settings or None, problems): what ``run`` would refuse to start with; no problems = start normally."""
    from appliance.settings import load_settings

    try:
        settings = load_settings(path)
    except RegistraturaError as exc:
        return None, str(exc).splitlines()
    try:
        problems = startup_problems(settings)[2]
    except (RegistraturaError, OSError) as exc:  # e.g. a flows directory the service user may not read
        problems = str(exc).splitlines()
    if not problems:
        try:
            import appliance.telephony.pjsua  # noqa: F401 - the SIP stack is there (E302 otherwise)
        except RegistraturaError as exc:
            problems = [str(exc)]
    return settings, problems


def safe_endpoint(path: Path, settings: Any, default_listen: str = SAFE_LISTEN) -> Any:
    """Where safe mode answers: the settings' metrics section when it can be read, else ``default_listen``
    open to loopback and the private networks only."""
    from appliance.security.firewall import LAN
    from appliance.settings import MetricsSettings, settings_from_mapping

    if settings is not None:
        return settings.metrics
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8-sig"))
        if isinstance(data, dict):
            return settings_from_mapping({"metrics": data.get("metrics") or {}}, path.parent, str(path)).metrics
    except (OSError, ValueError, yaml.YAMLError, RegistraturaError):
        pass
    return replace(MetricsSettings(), listen=default_listen, allow_from=("127.0.0.0/8", "::1/128", *LAN),
                   basic_auth=None)


class SafeMode:
    """``run()`` until the settings pass (returns RESTART_EXIT) or SIGTERM/SIGINT (returns 0)."""

    def __init__(self, path: Path, settings: Any, problems: list[str], default_listen: str = SAFE_LISTEN) -> None:
        self.path = Path(path)
        self.settings = settings
        self.problems = problems
        self.default_listen = default_listen
        self.since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self._stamp = self._files()
        self._http: Any = None
        self._endpoint: Any = None
        self._notify = Notifier()
        self._done: asyncio.Future[int] | None = None

    # ---------------------------------------------------------------------------- what it says

    def health(self) -> dict[str, Any]:
        from appliance.firstboot import read_status

        return {"ok": False, "ready": False, "safe_mode": True, "stopping": False, "active_calls": 0,
                "settings": str(self.path), "error": "\n".join(self.problems), "errors": list(self.problems),
                "since": self.since, "firstboot": read_status()}

    @staticmethod
    def _firstboot_rejected() -> str:
        """The first line of first boot's complaint when it rejected the boot partition's file, else ''."""
        from appliance.firstboot import read_status

        state = read_status()
        if isinstance(state, dict) and state.get("ok") is False and state.get("error"):
            return str(state["error"]).splitlines()[0]
        return ""

    def _status(self) -> str:
        first = self.problems[0] if self.problems else "?"
        more = f" (+{len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
        rejected = self._firstboot_rejected()
        fb = f"; first boot rejected: {rejected}" if rejected else ""
        return f"SAFE MODE, no calls: {first}{more}{fb}; fix it, then `systemctl reload registratura`"[:1000]

    def _log_problems(self) -> None:
        _LOGGER.error("SAFE MODE: the box takes no calls: %d problem(s) with %s (and its flows):",
                      len(self.problems), self.path)
        for line in self.problems:
            _LOGGER.error("  %s", line)
        rejected = self._firstboot_rejected()
        if rejected:
            _LOGGER.error("first boot rejected the settings on the boot partition: %s "
                          "(journalctl -u registratura-firstboot)", rejected)
        where = f"http://{self._endpoint.listen}/healthz" if self._endpoint is not None else "/healthz (not yet)"
        _LOGGER.error("fix them, then `systemctl reload registratura` (or wait: the files are watched); "
                      "%s says the same", where)

    # ---------------------------------------------------------------------------- running

    def _files(self) -> tuple[Any, ...]:
        """What a fix changes: the settings file and, once known, the flow and prompt files."""
        paths = [self.path]
        if self.settings is not None:
            paths += sorted(Path(self.settings.flows.dir).glob("*.yaml"))
            paths += sorted(Path(self.settings.voices.dir).glob("*/prompts.yaml"))
        out: list[tuple[Any, ...]] = []
        for p in paths:
            try:
                st = p.stat()
                out.append((str(p), st.st_mtime_ns, st.st_size, st.st_ino))
            except OSError:
                out.append((str(p), None))
        return tuple(out)

    def _serve(self) -> None:
        """(Re)bind the /healthz server where the current settings say; a failure is logged and retried."""
        from appliance.web import serve

        endpoint = safe_endpoint(self.path, self.settings, self.default_listen)
        if self._http is not None and self._endpoint is not None and self._endpoint.listen == endpoint.listen \
                and self._endpoint.allow_from == endpoint.allow_from:
            return
        self._close_http()
        try:
            self._http = serve(endpoint, self.health, only_health=True)
        except OSError as exc:
            _LOGGER.error("safe mode: cannot listen on %s for /healthz (%s); trying again", endpoint.listen, exc)
            self._endpoint = None
            return
        self._endpoint = endpoint
        _LOGGER.warning("safe mode: /healthz on %s (HTTP 503 with the problems)", endpoint.listen)

    def _close_http(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None

    def recheck(self, why: str) -> None:
        self._stamp = self._files()
        settings, problems = diagnose(self.path)
        if not problems:
            _LOGGER.warning("safe mode: %s: the settings and flows are valid now; restarting into normal mode", why)
            self._notify(f"STATUS=settings valid now ({why}): restarting into normal mode")
            if self._done is not None and not self._done.done():
                self._done.set_result(RESTART_EXIT)
            return
        changed = problems != self.problems
        self.settings, self.problems = settings, problems
        self._stamp = self._files()  # the settings may name other flow files now
        self._serve()
        if changed:
            self._log_problems()
            self._notify("STATUS=" + self._status())
        else:
            _LOGGER.error("safe mode: %s: still %d problem(s), first: %s", why, len(problems), problems[0])

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(POLL_SECONDS)
            if self._http is None:
                self._serve()
            if self._files() != self._stamp:
                self.recheck("the files changed")

    async def _watchdog(self) -> None:
        usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
        while usec:
            self._notify("WATCHDOG=1")
            await asyncio.sleep(usec / 2_000_000)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self._done = loop.create_future()

        def stop() -> None:
            if not self._done.done():  # type: ignore[union-attr]
                _LOGGER.info("safe mode: stopping")
                self._notify("STOPPING=1")
                self._done.set_result(0)  # type: ignore[union-attr]

        for sig, handler in ((signal.SIGTERM, stop), (signal.SIGINT, stop),
                             (signal.SIGHUP, lambda: self.recheck("SIGHUP"))):
            try:
                loop.add_signal_handler(sig, handler)
            except (NotImplementedError, RuntimeError):  # not the main thread (tests)
                pass
        self._serve()  # after the handlers: a SIGHUP sent once /healthz answers is a re-check, not a kill
        self._log_problems()
        self._notify("READY=1\nSTATUS=" + self._status())
        tasks = [loop.create_task(self._watch()), loop.create_task(self._watchdog())]
        try:
            return await self._done
        finally:
            for task in tasks:
                task.cancel()
            self._close_http()
