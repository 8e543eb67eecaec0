"""A/B updates of the x86-64 image that cannot brick the box: systemd-boot boot counting picks the fallback.

The disk has two read-only root partitions (GPT names ``registratura-root-a`` / ``-b``), an ESP mounted at
``/efi`` and ``/var``. Each installed version is one boot loader entry (Boot Loader Specification type #1) on
the ESP: ``loader/entries/registratura-<version>.conf`` naming its kernel and initrd under
``registratura-os/<version>/`` and its root by partition name. ``apply`` writes a bundle's root into the slot the
box is *not* running from and adds the new entry with a boot counter (``registratura-<version>+3.conf``):
systemd-boot boots the newest entry that still has tries left, counting each try down in the file name. On the
new version ``registratura-update-check.service`` waits for ``/healthz`` to answer 200; only then
``boot-complete.target`` is reached and ``systemd-bless-boot`` drops the counter (the entry is good). A version
that does not come up reboots (kernel ``panic=10``, the health check's ``FailureAction=reboot``, the hardware
watchdog); after three tries its entry is sorted last and the old entry, untouched, boots again.

A bundle (``image/build.sh`` writes ``registratura-x86_64-<version>.update.tar``) is a plain tar of
``VERSION``, ``root.img`` (squashfs), ``vmlinuz``, ``initrd.img``, ``cmdline`` (extra kernel options) and
``SHA256SUMS`` for all of them. Nothing about the box is decided in the bundle: the slot, the entry and its
options are written here, on the box.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tarfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from appliance.errors import RegistraturaError
from appliance.fsutil import fsync_dir, replace_file

SLOTS = ("a", "b")
PART_PREFIX = "registratura-root-"
ENTRY_PREFIX = "registratura-"
OS_DIR = "registratura-os"
TRIES = 3
BUNDLE_FILES = ("VERSION", "root.img", "vmlinuz", "initrd.img", "cmdline")
IMAGE_INFO = Path("/opt/registratura/IMAGE-INFO.json")
# systemd-boot's EFI variables: the entry it booted, and (only when that entry had a boot counter: a trial) the
# entry file's path on the ESP as it was at boot. systemd-bless-boot renames the file when the trial succeeds.
_LOADER_VARS = Path("/sys/firmware/efi/efivars")
_LOADER_GUID = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"
BOOT_COUNT_VAR = _LOADER_VARS / f"LoaderBootCountPath-{_LOADER_GUID}"
ENTRY_SELECTED_VAR = _LOADER_VARS / f"LoaderEntrySelected-{_LOADER_GUID}"
_VERSION = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._~^-]{0,63}$")
_ENTRY = re.compile(rf"^{ENTRY_PREFIX}(?P<version>.+?)(\+(?P<left>\d+)(-(?P<done>\d+))?)?\.conf$")
_CHUNK = 4 << 20
_ROOT_SLOT = re.compile(rf"\broot=PARTLABEL={PART_PREFIX}([ab])\b")
_MACHINE_ID = re.compile(r"\bsystemd\.machine_id=([0-9a-f]{32})\b")
_MACHINE_ID_VALUE = re.compile(r"[0-9a-f]{32}")


class UpdateError(RegistraturaError):
    code = "E800"


@dataclass(frozen=True)
class Box:
    """Where the box keeps what an update touches (tests point these at a temporary tree)."""

    esp: Path = Path("/efi")
    dev: Path = Path("/dev/disk/by-partlabel")
    cmdline: Path = Path("/proc/cmdline")
    machine_id: Path = Path("/etc/machine-id")
    boot_count_var: Path = BOOT_COUNT_VAR
    entry_selected_var: Path = ENTRY_SELECTED_VAR
    image_info: Path = IMAGE_INFO

    @property
    def entries(self) -> Path:
        return self.esp / "loader" / "entries"


@dataclass(frozen=True)
class Entry:
    path: Path
    version: str
    slot: str | None  # the root partition its options name
    tries_left: int | None  # None: no counter (good); 0: failed every try (bad)
    tries_done: int

    @property
    def state(self) -> str:
        if self.tries_left is None:
            return "good"
        return "bad (fell back)" if self.tries_left == 0 else f"on trial ({self.tries_left} tries left)"


def running_slot(box: Box) -> str | None:
    """The slot the running system's root is in, from the kernel command line (None off an A/B image)."""
    try:
        cmdline = box.cmdline.read_text()
    except OSError:
        return None
    m = _ROOT_SLOT.search(cmdline)
    return m.group(1) if m else None


def entries(box: Box) -> list[Entry]:
    out = []
    for path in sorted(box.entries.glob(f"{ENTRY_PREFIX}*.conf")):
        m = _ENTRY.match(path.name)
        if not m:
            continue
        text = path.read_text(errors="replace")
        slot = _ROOT_SLOT.search(text)
        out.append(Entry(path, m["version"], slot.group(1) if slot else None,
                         int(m["left"]) if m["left"] is not None else None, int(m["done"] or 0)))
    return out


def efi_string(path: Path) -> str | None:
    """An EFI variable holding a UTF-16 string (efivarfs: 4 bytes of attributes first), or None."""
    try:
        raw = path.read_bytes()[4:]
    except OSError:
        return None
    return raw.decode("utf-16-le", errors="replace").split("\0", 1)[0] or None


def on_trial(box: Box) -> bool | None:
    """The running version booted from an entry with a boot counter that has not been blessed (renamed) yet;
    None when the ESP cannot be read (the service's own user: the ESP is root's, mode 0700)."""
    counted = efi_string(box.boot_count_var)  # "\loader\entries\registratura-V+2-1.conf"
    if not counted:
        return False
    try:
        return (box.esp / counted.replace("\\", "/").lstrip("/")).exists()
    except PermissionError:
        return None


def image_version(box: Box) -> str:
    """The version of the boot entry systemd-boot started, else the image's own (IMAGE-INFO.json)."""
    selected = efi_string(box.entry_selected_var)  # the entry's id: "registratura-V.conf", counter stripped
    m = _ENTRY.match(selected) if selected else None
    if m:
        return m["version"]
    try:
        return str(json.loads(box.image_info.read_text()).get("image_version", "unknown"))
    except (OSError, ValueError):
        return "unknown"


def running(box: Box = Box()) -> dict[str, object]:
    """For /healthz: the image version, its root slot (None off an A/B image) and whether it is on trial."""
    return {"version": image_version(box), "slot": running_slot(box), "on_trial": on_trial(box)}


def status(box: Box) -> dict[str, object]:
    """For ``registratura update status`` and /healthz: what runs, from where, what else is installed."""
    return {"version": image_version(box), "slot": running_slot(box), "on_trial": on_trial(box),
            "entries": [{"version": e.version, "slot": e.slot, "state": e.state, "file": e.path.name}
                        for e in entries(box)]}


def _members(bundle: Path) -> tuple[tarfile.TarFile, dict[str, tarfile.TarInfo]]:
    try:
        tar = tarfile.open(bundle, "r:")
    except (OSError, tarfile.TarError) as exc:
        raise UpdateError(f"{bundle}: not an update bundle (an uncompressed tar): {exc}", code="E801") from None
    members = {m.name.removeprefix("./"): m for m in tar.getmembers() if m.isfile()}
    missing = [n for n in (*BUNDLE_FILES, "SHA256SUMS") if n not in members]
    if missing:
        tar.close()
        raise UpdateError(f"{bundle}: not an update bundle: {', '.join(missing)} missing", code="E801")
    return tar, members


def _read(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    f = tar.extractfile(member)
    assert f is not None
    return f.read()


def _copy_hashed(tar: tarfile.TarFile, member: tarfile.TarInfo, dest: Path, *, device: bool) -> str:
    """Copy a bundle member to ``dest`` (a partition: overwritten in place), return its sha256."""
    src = tar.extractfile(member)
    assert src is not None
    h = hashlib.sha256()
    with dest.open("r+b" if device else "wb") as out:
        while chunk := src.read(_CHUNK):
            h.update(chunk)
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    return h.hexdigest()


def _partition_size(path: Path) -> int:
    with path.open("rb") as f:
        return f.seek(0, os.SEEK_END)


def apply(bundle: Path, box: Box = Box(), say: Callable[[str], None] = print, tries: int = TRIES) -> Entry:
    """Install ``bundle`` into the other slot as a trial entry; the running system is not touched."""
    current = running_slot(box)
    if current is None:
        raise UpdateError("this system was not booted from an A/B root (no root=PARTLABEL=registratura-root-a|b "
                          "on the kernel command line): re-flash it with an A/B image", code="E802")
    if on_trial(box) is not False:
        raise UpdateError("the running version is itself on trial (not yet marked good): wait until `registratura "
                          "update status` says good, or reboot to fall back, before installing another",
                          code="E803")
    target = SLOTS[1 - SLOTS.index(current)]
    part = box.dev / f"{PART_PREFIX}{target}"
    if not part.exists():
        raise UpdateError(f"{part}: the other root partition is missing", code="E802")
    tar, members = _members(bundle)
    with tar:
        sums = {}
        for line in _read(tar, members["SHA256SUMS"]).decode().splitlines():
            if line.strip():
                digest, name = line.split(maxsplit=1)
                sums[name.lstrip("*").removeprefix("./")] = digest
        version = _read(tar, members["VERSION"]).decode().strip()
        if not _VERSION.match(version):
            raise UpdateError(f"{bundle}: VERSION {version!r} is not a version (letters, digits, . _ ~ ^ -)",
                              code="E801")
        if version == image_version(box):
            raise UpdateError(f"version {version} is the one running", code="E804")
        for name in BUNDLE_FILES:
            if name not in sums:
                raise UpdateError(f"{bundle}: SHA256SUMS has no line for {name}", code="E801")
        for name in ("VERSION", "cmdline"):
            if hashlib.sha256(_read(tar, members[name])).hexdigest() != sums[name]:
                raise UpdateError(f"{bundle}: {name} does not match its SHA256SUMS line: a damaged copy",
                                  code="E805")
        extra = _read(tar, members["cmdline"]).decode().strip()
        if "root=" in extra or "machine_id=" in extra or "\n" in extra:
            raise UpdateError(f"{bundle}: cmdline may not name the root (the box picks the slot)", code="E801")
        if members["root.img"].size > _partition_size(part):
            raise UpdateError(f"root.img ({members['root.img'].size} bytes) is larger than {part}", code="E806")

        # Nothing may boot the slot while it is rewritten: its old entries (and their kernels) go first.
        box.entries.mkdir(parents=True, exist_ok=True)
        for e in entries(box):
            if e.slot == target:
                say(f"removing {e.path.name} (version {e.version}, slot {target}: about to be overwritten)")
                e.path.unlink()
                shutil.rmtree(box.esp / OS_DIR / e.version, ignore_errors=True)
        fsync_dir(box.entries)
        say(f"writing root {version} ({members['root.img'].size / 1e6:.0f} MB) to {part} (slot {target}) ...")
        started = time.monotonic()
        if _copy_hashed(tar, members["root.img"], part, device=True) != sums["root.img"]:
            raise UpdateError(f"{bundle}: root.img does not match SHA256SUMS (a damaged copy); slot {target} holds "
                              "no bootable system now, the running one is untouched: copy the bundle again",
                              code="E805")
        say(f"  done in {time.monotonic() - started:.0f} s, checksum good")
        kernel_dir = box.esp / OS_DIR / version
        part_dir = kernel_dir.with_name(f".{version}.part")
        shutil.rmtree(part_dir, ignore_errors=True)
        part_dir.mkdir(parents=True)
        for name in ("vmlinuz", "initrd.img"):
            if _copy_hashed(tar, members[name], part_dir / name, device=False) != sums[name]:
                shutil.rmtree(part_dir, ignore_errors=True)
                raise UpdateError(f"{bundle}: {name} does not match SHA256SUMS (a damaged copy)", code="E805")
        shutil.rmtree(kernel_dir, ignore_errors=True)
        os.replace(part_dir, kernel_dir)
        fsync_dir(kernel_dir.parent)
    entry = box.entries / f"{ENTRY_PREFIX}{version}+{tries}.conf"
    text = (f"title Registratura {version}\nsort-key registratura\nversion {version}\n"
            f"linux /{OS_DIR}/{version}/vmlinuz\ninitrd /{OS_DIR}/{version}/initrd.img\n"
            f"options root=PARTLABEL={PART_PREFIX}{target} rootfstype=squashfs ro panic=10 {extra}"
            f"{_machine_id_option(box)}\n")
    replace_file(entry, text)
    say(f"installed {version} in slot {target} as {entry.name}: reboot to try it. It has {tries} tries to answer "
        "/healthz; otherwise the box boots the current version again.")
    return next(e for e in entries(box) if e.path == entry)


def check(url: str, timeout: float, say: Callable[[str], None] = print, poll: float = 2.0) -> bool:
    """Wait until ``url`` (the box's /healthz) answers 200; False after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                if resp.status == 200:
                    say(f"{url}: 200: this version is good")
                    return True
                last = f"HTTP {resp.status}"
        except OSError as exc:  # URLError, HTTPError (503 in safe mode), refused, timeout
            last = str(getattr(exc, "reason", exc))
        if time.monotonic() >= deadline:
            say(f"{url}: not healthy after {timeout:.0f} s ({last}): this version is not marked good")
            return False
        time.sleep(poll)


# ------------------------------------------------------------------------------------------ machine id
# The root is read-only, so systemd makes up a new /etc/machine-id at every boot: the journal starts a new
# directory (`journalctl -b -1` finds nothing) and networkd's DHCP client id changes (a new lease, maybe a new
# address). The box keeps the id of its first boot on the kernel command line instead: every boot entry gets
# `systemd.machine_id=` (registratura-machine-id.service on a boot without it; `apply` copies it to new entries).


def _machine_id_option(box: Box) -> str:
    """This boot's machine id for a new entry: the one systemd runs with (pinned or, on the first boot, the one
    registratura-machine-id.service is pinning on the other entries)."""
    try:
        machine_id = box.machine_id.read_text().strip()
    except OSError:
        return ""
    return f" systemd.machine_id={machine_id}" if _MACHINE_ID_VALUE.fullmatch(machine_id) else ""


def pin_machine_id(box: Box = Box(), say: Callable[[str], None] = print) -> list[Path]:
    """Add ``systemd.machine_id=<this boot's id>`` to every boot entry without one; the entries changed."""
    machine_id = box.machine_id.read_text().strip()
    if not _MACHINE_ID_VALUE.fullmatch(machine_id):
        raise UpdateError(f"{box.machine_id}: {machine_id!r} is not a machine id", code="E807")
    changed = []
    for e in entries(box):
        text = e.path.read_text()
        if _MACHINE_ID.search(text):
            continue
        lines = [f"{ln} systemd.machine_id={machine_id}" if ln.startswith("options ") else ln
                 for ln in text.splitlines()]
        # same name: a boot counter in it stays as systemd-boot left it
        replace_file(e.path, "\n".join(lines) + "\n")
        changed.append(e.path)
    if changed:
        say(f"machine id {machine_id} kept on the kernel command line of {len(changed)} boot entr"
            f"{'y' if len(changed) == 1 else 'ies'}: the journal and the DHCP client id survive reboots")
    return changed
