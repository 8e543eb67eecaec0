"""First boot: take registratura.yaml (and flows, network) from the boot partition, validate, install, start."""

from __future__ import annotations

import argparse
import grp
import ipaddress
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from appliance.errors import ConfigError, RegistraturaError, located
from appliance.fsutil import replace_file

SETTINGS_NAME = "registratura.yaml"
NETWORK_NAME = "network.yaml"
FLOWS_NAME = "flows"
BOOT_CANDIDATES = ("/boot/firmware", "/boot/registratura", "/efi/registratura")  # Pi, x86 fstab, x86 ESP
SERVICE = "registratura.service"
STATUS_FILE = "/run/registratura/firstboot.json"
NETWORK_FILE = "etc/systemd/network/10-registratura.network"
TIMESYNC_FILE = "etc/systemd/timesyncd.conf.d/registratura.conf"
# The image links this into /var (the root is read-only) and names it in sshd's AuthorizedKeysFile.
SSH_KEYS_FILE = "etc/ssh/registratura_authorized_keys"
_SSH_KEY = re.compile(r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com|"
                      r"sk-ecdsa-sha2-nistp256@openssh\.com) [A-Za-z0-9+/]{40,}={0,3}( [^\n]*)?$")
_HOSTNAME = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_IFACE = re.compile(r"^[A-Za-z0-9_.:*?-]{1,64}( [A-Za-z0-9_.:*?-]{1,64})*$")
_NTP = re.compile(r"^[A-Za-z0-9.:-]{1,253}$")
_TOP_KEY = re.compile(r"^firstboot\s*:")

Runner = Callable[[Sequence[str]], Any]


class FirstbootError(RegistraturaError):
    """The boot partition's files were rejected; the message names file and line."""

    code = "E600"


@dataclass(frozen=True)
class NetworkPlan:
    """What the ``firstboot:`` section (or network.yaml) asks for; everything optional."""

    source: str = ""
    hostname: str | None = None
    interface: str = "en* eth*"
    dhcp: bool = True
    address: str | None = None  # "192.168.1.50/24"
    gateway: str | None = None
    dns: tuple[str, ...] = ()
    ntp: tuple[str, ...] = ()
    timezone: str | None = None
    ssh_keys: tuple[str, ...] | None = None  # None: leave the box's keys as they are
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def touches_network(self) -> bool:
        return self.address is not None or "network" in self.extras


# ----------------------------------------------------------------------------------------- parsing


def split_firstboot(text: str) -> tuple[str, str | None]:
    """Cut the top-level ``firstboot:`` block out of a settings text, keeping line numbers.

    Returns (settings text with the block blanked as comments, the block's text with the other lines blanked)
    so both halves report the same line numbers as the technician's file.
    """
    lines = text.splitlines(keepends=True)
    start = next((i for i, ln in enumerate(lines) if _TOP_KEY.match(ln)), None)
    if start is None:
        return text, None
    end = start + 1
    while end < len(lines) and (not lines[end].strip() or lines[end][:1] in (" ", "\t", "#")):
        end += 1
    rest = [("#\n" if start <= i < end else ln) for i, ln in enumerate(lines)]
    block = [(ln if start <= i < end else "\n") for i, ln in enumerate(lines)]
    return "".join(rest), "".join(block)


def _lines(node: yaml.Node, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], int]:
    out = {path: node.start_mark.line + 1}
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            out[path + (str(k.value),)] = k.start_mark.line + 1
            out.update({p: n for p, n in _lines(v, path + (str(k.value),)).items() if p != path + (str(k.value),)})
    return out


def parse_network(text: str, source: str, root_key: str | None) -> NetworkPlan:
    """Validate the network/time section; raise FirstbootError with file:line lines for every problem."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise FirstbootError(located(source, mark.line + 1 if mark else None,
                                     f"invalid YAML: {exc.problem or exc.context}; fix the syntax"),
                             code="E102") from None
    lines = _lines(node) if node is not None else {}
    prefix: tuple[str, ...] = (root_key,) if root_key else ()
    if root_key:
        data = (data or {}).get(root_key)
    data = data or {}
    errors: list[tuple[int, str]] = []

    def bad(keys: tuple[str, ...], what: str) -> None:
        full = prefix + keys
        near = full
        while near and near not in lines:
            near = near[:-1]
        line = lines.get(near)
        errors.append((line or 0, located(source, line, f"{'.'.join(full)}: {what}")))

    if not isinstance(data, dict):
        bad((), "must be a mapping of hostname, network, ntp, timezone, ssh_keys")
        data = {}
    allowed = {"hostname", "network", "ntp", "timezone", "ssh_keys"}
    for key in data:
        if key not in allowed:
            bad((str(key),), f"unknown key; allowed: {', '.join(sorted(allowed))}")
    hostname = data.get("hostname")
    if hostname is not None and not (isinstance(hostname, str) and _HOSTNAME.match(hostname)):
        bad(("hostname",), f"{hostname!r} is not a host name; use letters a-z, digits and '-', e.g. reg-clinic1")
    net = data.get("network") or {}
    kwargs: dict[str, Any] = {}
    if not isinstance(net, dict):
        bad(("network",), "must be a mapping: {dhcp: true} or {address: 192.168.1.50/24, gateway: ...}")
        net = {}
    net_allowed = {"interface", "dhcp", "address", "gateway", "dns"}
    for key in net:
        if key not in net_allowed:
            bad(("network", str(key)), f"unknown key; allowed: {', '.join(sorted(net_allowed))}")
    if "interface" in net:
        if isinstance(net["interface"], str) and _IFACE.match(net["interface"]):
            kwargs["interface"] = net["interface"]
        else:
            bad(("network", "interface"), f"{net['interface']!r} is not an interface name or pattern, e.g. eth0")
    address = net.get("address")
    dhcp = net.get("dhcp", address is None)
    if not isinstance(dhcp, bool):
        bad(("network", "dhcp"), f"{dhcp!r} is not true or false")
        dhcp = address is None
    if address is not None:
        try:
            iface = ipaddress.ip_interface(str(address))
            if "/" not in str(address):
                raise ValueError("prefix length missing")
            kwargs["address"] = str(iface)
        except ValueError:
            bad(("network", "address"), f"{address!r} is not an address with prefix; use e.g. 192.168.1.50/24")
            iface = None
        if dhcp:
            bad(("network", "dhcp"), "dhcp: true and a static address together; remove one")
        gateway = net.get("gateway")
        if gateway is not None:
            try:
                gw = ipaddress.ip_address(str(gateway))
                if iface is not None and gw not in iface.network:
                    bad(("network", "gateway"), f"{gateway} is outside {iface.network}; check address and gateway")
                kwargs["gateway"] = str(gw)
            except ValueError:
                bad(("network", "gateway"), f"{gateway!r} is not an IP address; use e.g. 192.168.1.1")
    elif net.get("gateway") is not None:
        bad(("network", "gateway"), "a gateway needs a static address; set network.address or remove it")
    dns = net.get("dns", [])
    if isinstance(dns, str):
        dns = [dns]
    checked_dns = []
    for item in dns if isinstance(dns, list) else [dns]:
        try:
            checked_dns.append(str(ipaddress.ip_address(str(item))))
        except ValueError:
            bad(("network", "dns"), f"{item!r} is not an IP address; list DNS servers as addresses")
    ntp = data.get("ntp", [])
    if isinstance(ntp, str):
        ntp = [ntp]
    checked_ntp = []
    for item in ntp if isinstance(ntp, list) else [ntp]:
        if isinstance(item, str) and _NTP.match(item):
            checked_ntp.append(item)
        else:
            bad(("ntp",), f"{item!r} is not a host name or address of an NTP server")
    tz = data.get("timezone")
    if tz is not None and not (isinstance(tz, str) and re.match(r"^[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*$", tz)):
        bad(("timezone",), f"{tz!r} is not a time zone name; use e.g. Europe/Moscow")
    keys = data.get("ssh_keys")
    checked_keys: tuple[str, ...] | None = None
    if keys is not None:
        if not isinstance(keys, list):
            bad(("ssh_keys",), "must be a list of public keys, one per line: - ssh-ed25519 AAAA... name")
            keys = []
        checked_keys = tuple(str(k).strip() for k in keys)
        for key in checked_keys:
            if not _SSH_KEY.match(key):
                bad(("ssh_keys",), f"{key[:40]!r} is not an SSH public key line (ssh-ed25519 AAAA... name); "
                                   "paste the .pub file's one line, not the private key")
    if errors:
        errors.sort(key=lambda e: e[0])
        raise FirstbootError("\n".join(msg for _, msg in errors), code="E104")
    return NetworkPlan(source=source, hostname=hostname, dhcp=bool(dhcp), dns=tuple(checked_dns),
                       ntp=tuple(checked_ntp), timezone=tz, ssh_keys=checked_keys,
                       extras={"network": True} if net else {}, **kwargs)


# ----------------------------------------------------------------------------------------- rendering


def render_network(plan: NetworkPlan) -> str:
    """A systemd-networkd .network file for the plan."""
    out = ["# Written by registratura-firstboot from the boot partition; edit network.yaml there and reboot.",
           "[Match]", f"Name={plan.interface}", "", "[Network]"]
    if plan.address:
        out.append(f"Address={plan.address}")
        if plan.gateway:
            out.append(f"Gateway={plan.gateway}")
    else:
        out.append("DHCP=yes")
    out += [f"DNS={d}" for d in plan.dns]
    out += ["LinkLocalAddressing=no", "IPv6AcceptRA=no", ""]
    return "\n".join(out)


def render_timesyncd(plan: NetworkPlan) -> str:
    return ("# Written by registratura-firstboot: the clinic's NTP servers (the box is offline otherwise).\n"
            f"[Time]\nNTP={' '.join(plan.ntp)}\n")


# ----------------------------------------------------------------------------------------- files




def write_atomic(path: Path, data: str | bytes, mode: int = 0o644, group: str | None = None) -> None:
    """Write beside, fsync, set owner and mode, rename over: a power cut leaves the old or the new file."""
    replace_file(path, data, prepare=lambda tmp: os.chmod(tmp, _owner(tmp, mode, group)))


def _owner(path: Path, mode: int, group: str | None) -> int:
    """root:group with ``mode`` when possible; without the group, owner-only (0600/0700)."""
    if group is None:
        return mode
    try:
        gid = grp.getgrnam(group).gr_gid
        os.chown(path, 0 if os.geteuid() == 0 else -1, gid)
        return mode
    except (KeyError, PermissionError, OSError):
        return mode & 0o700


def copy_tree(src: Path, dst: Path, group: str | None) -> None:
    """Copy a flows directory: directories 0750 and files 0640 (root:group), or 0700/0600 without the group."""
    dst.mkdir(parents=True, exist_ok=True)
    os.chmod(dst, _owner(dst, 0o750, group))
    for item in sorted(src.iterdir()):
        if item.name.startswith("."):
            continue  # macOS/Windows litter on FAT partitions (._x.yaml, .Trashes)
        if item.is_dir():
            copy_tree(item, dst / item.name, group)
        elif item.is_file():
            target = dst / item.name
            shutil.copyfile(item, target)
            os.chmod(target, _owner(target, 0o640, group))


# ----------------------------------------------------------------------------------------- the run


@dataclass
class Paths:
    boot: Path
    root: Path = Path("/")
    etc: Path | None = None  # default <root>/etc/registratura
    status: Path | None = None  # default <root>/run/registratura/firstboot.json
    console: Path | None = None  # default /dev/console when root is /
    group: str | None = "registratura"

    def __post_init__(self) -> None:
        self.etc = self.etc or self.root / "etc/registratura"
        self.status = self.status or self.root / "run/registratura/firstboot.json"


def _validate_settings(text: str, staged: Path, boot_file: Path, flows_src: Path | None) -> None:
    """The same checks as `registratura check` (settings, flows, main flow, prompts) on the staged copy."""
    from appliance.safemode import startup_problems
    from appliance.settings import load_settings

    staged_yaml = staged / SETTINGS_NAME
    staged_yaml.write_text(text, encoding="utf-8")

    def name_boot(msg: str) -> str:  # errors name the technician's files, not the staging copy
        msg = msg.replace(str(staged_yaml), str(boot_file))
        if flows_src is not None:
            msg = msg.replace(str(staged / FLOWS_NAME), str(flows_src))
        return msg

    try:
        settings = load_settings(staged_yaml)
    except ConfigError as exc:
        raise ConfigError(name_boot(exc.args[0]), code=exc.code) from None
    if flows_src is not None and Path(settings.flows.dir).absolute() != (staged / FLOWS_NAME).absolute():
        raise FirstbootError(located(boot_file, None, f"flows.dir: the boot partition has {flows_src} but the "
                                     f"settings use {name_boot(str(settings.flows.dir))}; set flows: {{dir: flows}}"),
                             code="E104")
    problems = startup_problems(settings)[2]  # what would keep the service in safe mode (appliance/safemode.py)
    if problems:
        raise FirstbootError("\n".join(name_boot(p) for p in problems), code="E200")


def _stage(paths: Paths, flows_src: Path | None) -> Path:
    """A staging directory beside /etc/registratura that resolves relative paths the same way."""
    assert paths.etc is not None
    paths.etc.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=".firstboot-", dir=paths.etc))
    for item in paths.etc.iterdir():
        if item.name.startswith(".") or item.name in (SETTINGS_NAME, FLOWS_NAME):
            continue
        (staged / item.name).symlink_to(item.resolve())
    if flows_src is not None:
        copy_tree(flows_src, staged / FLOWS_NAME, paths.group)
    elif (paths.etc / FLOWS_NAME).exists():
        (staged / FLOWS_NAME).symlink_to((paths.etc / FLOWS_NAME).resolve())
    return staged


def _install(paths: Paths, text: str, staged: Path, flows_src: Path | None) -> None:
    assert paths.etc is not None
    if flows_src is not None:
        new, old = staged / FLOWS_NAME, paths.etc / f".{FLOWS_NAME}.old"
        current = paths.etc / FLOWS_NAME
        shutil.rmtree(old, ignore_errors=True)
        if current.exists():
            os.replace(current, old)
        os.replace(new, current)
        shutil.rmtree(old, ignore_errors=True)
    settings = paths.etc / SETTINGS_NAME
    if settings.exists():
        shutil.copy2(settings, paths.etc / f"{SETTINGS_NAME}.previous")
    write_atomic(settings, text, 0o640, paths.group)


def _real(path: Path, root: Path) -> Path:
    """Follow a symlinked file (the read-only image points /etc/hostname etc. into the data partition)."""
    for _ in range(8):
        if not path.is_symlink():
            return path
        target = Path(os.readlink(path))
        path = root / target.relative_to("/") if target.is_absolute() else path.parent / target
    return path


def _real_step(path: Path, root: Path) -> Path:
    target = Path(os.readlink(path))
    return root / target.relative_to("/") if target.is_absolute() else path.parent / target


def _apply_network(plan: NetworkPlan, paths: Paths, live: bool) -> list[str]:
    """Write hostname, .network, timesyncd drop-in, time zone under root; return the systemd units to restart.

    Files that are symlinks (the image's /etc/hostname -> /var/lib/registratura-etc/hostname) are written
    through, so a read-only root keeps its links and the data partition gets the content.
    """
    restart: list[str] = []
    if plan.hostname:
        write_atomic(_real(paths.root / "etc/hostname", paths.root), plan.hostname + "\n")
        hosts = _real(paths.root / "etc/hosts", paths.root)
        old = hosts.read_text() if hosts.exists() else "127.0.0.1\tlocalhost\n"
        kept = [ln for ln in old.splitlines() if not ln.startswith("127.0.1.1")]
        write_atomic(hosts, "\n".join(kept + [f"127.0.1.1\t{plan.hostname}"]) + "\n")
        if live:
            try:
                socket.sethostname(plan.hostname)
            except OSError:
                pass
    if plan.touches_network:
        write_atomic(_real(paths.root / NETWORK_FILE, paths.root), render_network(plan))
        restart.append("systemd-networkd.service")
    if plan.ntp:
        write_atomic(_real(paths.root / TIMESYNC_FILE, paths.root), render_timesyncd(plan))
        restart.append("systemd-timesyncd.service")
    if plan.timezone:
        zone = Path("/usr/share/zoneinfo") / plan.timezone
        if live and not zone.exists():
            raise FirstbootError(located(plan.source, None, f"timezone: unknown zone {plan.timezone!r}"))
        # Replace the last link of the chain, the one pointing into zoneinfo: /etc/localtime itself on a
        # writable root, /var/lib/registratura-etc/localtime on the image (/etc/localtime links there).
        localtime = paths.root / "etc/localtime"
        while localtime.is_symlink():
            nxt = _real_step(localtime, paths.root)
            if not nxt.is_symlink() or nxt.is_relative_to(paths.root / "usr"):
                break
            localtime = nxt
        localtime.parent.mkdir(parents=True, exist_ok=True)
        tmp = localtime.with_name(".localtime.new")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(zone)
        os.replace(tmp, localtime)
        write_atomic(_real(paths.root / "etc/timezone", paths.root), plan.timezone + "\n")
    if plan.ssh_keys is not None:  # exactly these keys may log in as root (key only: Debian's sshd default)
        keys = _real(paths.root / SSH_KEYS_FILE, paths.root)
        keys.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(keys, "".join(f"{k}\n" for k in plan.ssh_keys), mode=0o644)
    return restart


def report(paths: Paths, ok: bool, message: str, applied: list[str]) -> dict[str, Any]:
    """Status file for /healthz, stderr for the journal, the console for the technician."""
    state = {"ok": ok, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "applied": applied}
    if not ok:
        state["error"] = message
    assert paths.status is not None
    paths.status.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(paths.status, json.dumps(state, ensure_ascii=False, indent=1) + "\n", 0o644)
    kept = "the box keeps its previous settings"
    if not ok and paths.etc is not None and not (paths.etc / SETTINGS_NAME).exists():
        kept = "the box has no settings: it takes no calls (safe mode; http://BOX:9310/healthz says why)"
    head = "registratura-firstboot: " + ("settings applied" if ok else f"SETTINGS REJECTED, {kept}")
    text = head + ("" if ok else "\n" + message + "\nFix the file on the boot partition, rename it back to "
                   f"{SETTINGS_NAME} and reboot.") + "\n"
    print(text, file=sys.stderr, end="", flush=True)
    console = paths.console
    if console is None and paths.root == Path("/"):
        console = Path("/dev/console")
    if console is not None:
        try:
            with open(console, "a", encoding="utf-8") as fh:
                fh.write(text.replace("\n", "\r\n") if str(console).startswith("/dev/") else text)
        except OSError:
            pass
    return state


def read_status(path: Path | str = STATUS_FILE) -> dict[str, Any] | None:
    """The last first-boot result for /healthz, or None when first boot never ran since this boot."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _rename(path: Path, suffix: str) -> None:
    if path.exists():
        os.replace(path, path.with_name(path.name + suffix))


def run(paths: Paths, runner: Runner | None = None) -> int:
    """Apply the boot partition's files. 0 applied (or nothing to do), 1 rejected, leaving the box as it was."""
    boot_file, net_file, flows_dir = paths.boot / SETTINGS_NAME, paths.boot / NETWORK_NAME, paths.boot / FLOWS_NAME
    flows_src = flows_dir if flows_dir.is_dir() else None
    if not boot_file.exists() and not net_file.exists():
        return 0
    live = paths.root == Path("/")
    applied: list[str] = []
    restart: list[str] = []
    text: str | None = None
    staged: Path | None = None
    try:
        plan = NetworkPlan()
        if boot_file.exists():
            try:
                raw = boot_file.read_text(encoding="utf-8-sig")  # Notepad writes a BOM
            except UnicodeDecodeError as exc:
                raise ConfigError(f"{boot_file}: not UTF-8 (byte {exc.start}); save it as UTF-8",
                                  code="E102") from None
            raw = raw.replace("\r\n", "\n")
            text, block = split_firstboot(raw)
            if block is not None:
                plan = parse_network(block, str(boot_file), "firstboot")
        if net_file.exists():
            if plan.source:
                raise FirstbootError(f"{net_file}: network settings are also in {boot_file} (firstboot:); "
                                     "keep one of the two")
            plan = parse_network(net_file.read_text(encoding="utf-8-sig"), str(net_file), None)
        if text is not None:
            staged = _stage(paths, flows_src)
            _validate_settings(text, staged, boot_file, flows_src)
        # Everything is valid: only now touch the box.
        restart = _apply_network(plan, paths, live)
        applied += [NETWORK_NAME if net_file.exists() else "firstboot"] if plan.source else []
        if text is not None and staged is not None:
            _install(paths, text, staged, flows_src)
            applied.append(SETTINGS_NAME)
            if flows_src is not None:
                applied.append(FLOWS_NAME)
    except (RegistraturaError, OSError) as exc:
        message = exc.args[0] if isinstance(exc, RegistraturaError) else f"{exc}"
        if isinstance(exc, OSError):
            message = f"{exc.filename or paths.etc}: {exc.strerror}; check the disk and permissions"
        for bad in (boot_file, net_file):
            if bad.exists():
                write_atomic(bad.with_name(bad.name + ".rejected.txt"), message + "\n")
                _rename(bad, ".rejected")
        report(paths, False, message, applied)
        return 1
    finally:
        if staged is not None:
            shutil.rmtree(staged, ignore_errors=True)
    _rename(boot_file, ".applied")
    _rename(net_file, ".applied")
    for stale in (boot_file.with_name(SETTINGS_NAME + ".rejected.txt"),
                  net_file.with_name(NETWORK_NAME + ".rejected.txt")):
        stale.unlink(missing_ok=True)
    if flows_src is not None:
        _rename(flows_dir, ".applied")
    report(paths, True, "", applied)
    if runner is not None:
        for unit in restart:
            runner(["systemctl", "try-restart", "--no-block", unit])
        if text is not None:
            runner(["systemctl", "enable", SERVICE])
            runner(["systemctl", "restart", "--no-block", SERVICE])
    return 0


def _default_boot() -> Path:
    for candidate in BOOT_CANDIDATES:
        if Path(candidate, SETTINGS_NAME).exists() or Path(candidate, NETWORK_NAME).exists():
            return Path(candidate)
    return Path(BOOT_CANDIDATES[0])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="registratura-firstboot", description=__doc__)
    parser.add_argument("--boot", type=Path, help="boot partition (default: /boot/firmware, /boot/registratura)")
    parser.add_argument("--root", type=Path, default=Path("/"), help="prefix for every file written (tests)")
    parser.add_argument("--etc", type=Path, help="settings directory (default <root>/etc/registratura)")
    parser.add_argument("--status", type=Path, help="status file (default <root>/run/registratura/firstboot.json)")
    parser.add_argument("--console", type=Path, help="console to tell the technician (default /dev/console)")
    parser.add_argument("--group", default="registratura", help="group that may read the settings")
    parser.add_argument("--no-systemctl", action="store_true", help="do not enable/start units")
    args = parser.parse_args(argv)
    paths = Paths(boot=args.boot or _default_boot(), root=args.root, etc=args.etc, status=args.status,
                  console=args.console, group=args.group)

    def systemctl(cmd: Sequence[str]) -> Any:
        return subprocess.run(list(cmd), check=False)

    return run(paths, None if args.no_systemctl or args.root != Path("/") else systemctl)


if __name__ == "__main__":
    sys.exit(main())
