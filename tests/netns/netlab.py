"""Network namespaces for tests: the box in one, its peers in others, over veth pairs (root and `ip netns` only)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from typing import Any


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=10)


def unavailable() -> str:
    """Why namespaces cannot be used here ('' when they can): root, `ip netns`, nft and sipp are needed."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "nft", "sipp"):
        if not shutil.which(tool):
            return f"{tool} is not installed (iproute2, nftables, sip-tester)"
    probe = f"rgprobe{os.getpid()}"
    try:
        _ip("netns", "add", probe)
    except (subprocess.CalledProcessError, OSError) as exc:
        return f"`ip netns add` does not work here: {getattr(exc, 'stderr', '') or exc}"
    try:
        subprocess.run(["ip", "netns", "exec", probe, "nft", "add", "table", "inet", "probe"], check=True,
                       capture_output=True, timeout=10)
    except (subprocess.CalledProcessError, OSError) as exc:
        return f"nftables does not work in a namespace here: {getattr(exc, 'stderr', b'') or exc}"
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=10)
    return ""


class NetLab:
    """Namespaces named <prefix><name>; ``close()`` deletes them all (and so their veths)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.names: list[str] = []
        self._links = 0

    def ns(self, name: str) -> str:
        full = f"{self.prefix}{name}"
        _ip("netns", "add", full)
        self.names.append(full)
        _ip("-n", full, "link", "set", "lo", "up")
        return full

    def link(self, a: str, a_cidr: str, b: str, b_cidr: str) -> None:
        """A veth pair between namespaces a and b, addressed and up."""
        self._links += 1
        va, vb = f"{self.prefix[:8]}{self._links}a", f"{self.prefix[:8]}{self._links}b"
        _ip("link", "add", va, "netns", a, "type", "veth", "peer", "name", vb, "netns", b)
        for ns, dev, cidr in ((a, va, a_cidr), (b, vb, b_cidr)):
            _ip("-n", ns, "addr", "add", cidr, "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")

    def route(self, ns: str, dest: str, via: str) -> None:
        _ip("-n", ns, "route", "add", dest, "via", via)

    def run(self, ns: str, cmd: Sequence[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        kw.setdefault("timeout", 60)
        return subprocess.run(["ip", "netns", "exec", ns, *cmd], **kw)

    def popen(self, ns: str, cmd: Sequence[str], **kw: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen(["ip", "netns", "exec", ns, *cmd], **kw)

    def nft_counters(self, ns: str, table: str = "registratura") -> dict[str, int]:
        """Packets per named counter of an inet table."""
        out = self.run(ns, ["nft", "-j", "list", "counters", "table", "inet", table], check=True).stdout
        found = {}
        for item in json.loads(out)["nftables"]:
            counter = item.get("counter")
            if counter:
                found[counter["name"]] = int(counter["packets"])
        return found

    def close(self) -> None:
        for name in reversed(self.names):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
        self.names.clear()
