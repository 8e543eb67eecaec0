"""Run `registratura run` as a child process on loopback (the demo, the tests and the benchmarks use it)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def demo_settings(base: Path, *, sip_port: int | None = None, metrics_port: int | None = None,
                  rtp_base: int = 30000, main: str = "clinic_ru", flows_dir: Path | None = None,
                  **extra: Any) -> dict[str, Any]:
    """A built-in settings mapping for a box on 127.0.0.1 with its data under ``base``."""
    data: dict[str, Any] = {
        "clinic": {"name": "Поликлиника №1", "region": "RU", "language": "ru", "timezone": "Europe/Moscow"},
        "sip": {
            "listen": f"127.0.0.1:{sip_port or free_port()}",
            "allow_from": ["127.0.0.1/32"],
            "codecs": ["PCMA", "PCMU", "G722"],
            "rtp_ports": f"{rtp_base}-{rtp_base + 998}",
        },
        "data_dir": str(base / "data"),
        "flows": {"dir": str(flows_dir or REPO / "ivr_flows"), "main": main},
        "voices": {"dir": str(REPO / "voices")},
        "metrics": {"listen": f"127.0.0.1:{metrics_port or free_port(socket.SOCK_STREAM)}"},
    }
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key].update(value)
        else:
            data[key] = value
    return data


class BoxProcess:
    """A box in a child process. ``start()`` waits until it logs that it is ready."""

    def __init__(self, base: Path, settings: dict[str, Any], env: dict[str, str] | None = None) -> None:
        self.base = base
        self.settings = settings
        self.config = base / "registratura.yaml"
        self.log_path = base / "box.log"
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        base.mkdir(parents=True, exist_ok=True)
        self.config.write_text(yaml.safe_dump(settings, allow_unicode=True), encoding="utf-8")

    @property
    def sip_uri(self) -> str:
        return f"sip:clinic@{self.settings['sip']['listen']}"

    @property
    def sip_port(self) -> int:
        return int(self.settings["sip"]["listen"].rsplit(":", 1)[1])

    @property
    def metrics_url(self) -> str:
        return f"http://{self.settings['metrics']['listen']}/metrics"

    @property
    def db_path(self) -> Path:
        return Path(self.settings["data_dir"]) / "registratura.db"

    def start(self, timeout: float = 120.0) -> BoxProcess:
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
        env.update({"PYTHONUNBUFFERED": "1", **self.env})
        offset = len(self.log())  # a restarted box appends to the same log
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it for its lifetime
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "appliance", "--config", str(self.config), "run"],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(REPO),
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the box exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            if " ready: listening" in self.log()[offset:]:
                return self
            time.sleep(0.1)
        raise TimeoutError(f"the box was not ready within {timeout} s:\n{self.log()[-3000:]}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def scrape(self) -> dict[str, float]:
        """The box's metrics as {'name{labels}': value} (comments dropped)."""
        with urllib.request.urlopen(self.metrics_url, timeout=5) as resp:
            text = resp.read().decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                try:
                    out[key] = float(value)
                except ValueError:
                    pass
        return out

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        code = self.proc.returncode
        self.proc = None
        return code

    def kill(self) -> None:
        self.stop(signal.SIGKILL)
