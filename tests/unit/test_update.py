"""A/B updates (appliance/update.py) on a box-shaped tree: the ESP, the two root slots as files, /proc/cmdline.

The boot side (systemd-boot counting tries, systemd-bless-boot, the fallback) runs in image/test_update.sh under
qemu; here: which slot is written, what the boot entries say, and that a bad bundle changes nothing that boots.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import tarfile
import threading
from pathlib import Path

import pytest

from appliance import update
from appliance.update import Box, UpdateError

SLOT_BYTES = 1 << 20


def _box(tmp_path: Path, slot: str = "a", version: str = "2026.01.01.0000-aaaaaaa") -> Box:
    esp, dev = tmp_path / "efi", tmp_path / "dev"
    (esp / "loader/entries").mkdir(parents=True)
    dev.mkdir()
    for s in update.SLOTS:
        (dev / f"registratura-root-{s}").write_bytes((s.encode() * SLOT_BYTES)[:SLOT_BYTES])
    os_dir = esp / "registratura-os" / version
    os_dir.mkdir(parents=True)
    (os_dir / "vmlinuz").write_bytes(b"old kernel")
    (esp / f"loader/entries/registratura-{version}.conf").write_text(
        f"title Registratura {version}\nversion {version}\nlinux /registratura-os/{version}/vmlinuz\n"
        f"options root=PARTLABEL=registratura-root-{slot} rootfstype=squashfs ro panic=10\n")
    (tmp_path / "cmdline").write_text(f"root=PARTLABEL=registratura-root-{slot} rootfstype=squashfs ro quiet\n")
    (tmp_path / "IMAGE-INFO.json").write_text(json.dumps({"image_version": version}))
    (tmp_path / "machine-id").write_text("0123456789abcdef0123456789abcdef\n")
    return Box(esp=esp, dev=dev, cmdline=tmp_path / "cmdline", boot_count_var=tmp_path / "LoaderBootCountPath",
               entry_selected_var=tmp_path / "LoaderEntrySelected", image_info=tmp_path / "IMAGE-INFO.json",
               machine_id=tmp_path / "machine-id")


def _efi(path: Path, text: str) -> None:
    """An EFI variable as efivarfs shows it: attributes, then a NUL-terminated UTF-16 string."""
    path.write_bytes(b"\x06\x00\x00\x00" + (text + "\0").encode("utf-16-le"))


def _bundle(path: Path, version: str = "2026.02.01.0000-bbbbbbb", root: bytes = b"new root " * 1000,
            damage: str = "", cmdline: str = "console=ttyS0,115200") -> Path:
    files = {"VERSION": f"{version}\n".encode(), "root.img": root, "vmlinuz": b"new kernel",
             "initrd.img": b"new initrd", "cmdline": f"{cmdline}\n".encode()}
    sums = "".join(f"{hashlib.sha256(data).hexdigest()}  {name}\n" for name, data in files.items())
    if damage:
        files[damage] = files[damage] + b"!"  # a copy damaged after the sums were made
    files["SHA256SUMS"] = sums.encode()
    with tarfile.open(path, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_apply_writes_the_other_slot_and_a_trial_entry(tmp_path):
    box = _box(tmp_path)
    said: list[str] = []
    entry = update.apply(_bundle(tmp_path / "u.tar"), box, said.append)
    assert entry.path.name == "registratura-2026.02.01.0000-bbbbbbb+3.conf"
    assert (entry.slot, entry.tries_left, entry.state) == ("b", 3, "on trial (3 tries left)")
    text = entry.path.read_text()
    assert "options root=PARTLABEL=registratura-root-b rootfstype=squashfs ro panic=10 console=ttyS0,115200" in text
    assert "linux /registratura-os/2026.02.01.0000-bbbbbbb/vmlinuz" in text and "sort-key registratura" in text
    new_os = box.esp / "registratura-os/2026.02.01.0000-bbbbbbb"
    assert (new_os / "vmlinuz").read_bytes() == b"new kernel" and (new_os / "initrd.img").read_bytes() == b"new initrd"
    b = (box.dev / "registratura-root-b").read_bytes()
    assert b.startswith(b"new root " * 1000) and len(b) == SLOT_BYTES  # a partition: written in place
    assert (box.dev / "registratura-root-a").read_bytes() == b"a" * SLOT_BYTES  # the running slot untouched
    states = {e["version"]: e["state"] for e in update.status(box)["entries"]}
    assert states == {"2026.01.01.0000-aaaaaaa": "good", "2026.02.01.0000-bbbbbbb": "on trial (3 tries left)"}
    assert any("reboot to try it" in s for s in said)


def test_the_next_update_from_slot_b_replaces_the_old_version_in_slot_a(tmp_path):
    box = _box(tmp_path, slot="b", version="2026.02.01.0000-bbbbbbb")
    (box.entries / "registratura-2026.01.01.0000-aaaaaaa+0-3.conf").write_text(  # a version that fell back
        "options root=PARTLABEL=registratura-root-a ro\n")
    (box.esp / "registratura-os/2026.01.01.0000-aaaaaaa").mkdir(parents=True)
    update.apply(_bundle(tmp_path / "u.tar", version="2026.03.01.0000-ccccccc"), box, lambda _: None)
    names = sorted(p.name for p in box.entries.iterdir())
    assert names == ["registratura-2026.02.01.0000-bbbbbbb.conf", "registratura-2026.03.01.0000-ccccccc+3.conf"]
    assert not (box.esp / "registratura-os/2026.01.01.0000-aaaaaaa").exists()
    assert (box.dev / "registratura-root-a").read_bytes().startswith(b"new root")


def test_a_version_on_trial_installs_nothing_until_it_is_blessed(tmp_path):
    box = _box(tmp_path)
    trial = box.entries / "registratura-2026.01.01.0000-aaaaaaa+2-1.conf"
    (box.entries / "registratura-2026.01.01.0000-aaaaaaa.conf").rename(trial)
    _efi(box.boot_count_var, "\\loader\\entries\\registratura-2026.01.01.0000-aaaaaaa+2-1.conf")
    assert update.running(box)["on_trial"] is True
    with pytest.raises(UpdateError, match="on trial") as err:
        update.apply(_bundle(tmp_path / "u.tar"), box, lambda _: None)
    assert err.value.code == "E803"
    assert (box.dev / "registratura-root-b").read_bytes() == b"b" * SLOT_BYTES
    # systemd-bless-boot renames the entry once /healthz answered; the variable keeps the boot-time path.
    trial.rename(box.entries / "registratura-2026.01.01.0000-aaaaaaa.conf")
    assert update.running(box)["on_trial"] is False
    update.apply(_bundle(tmp_path / "u.tar"), box, lambda _: None)


def test_the_running_version_is_the_booted_entrys(tmp_path):
    """A bundle's VERSION names its entry; the box reports the entry systemd-boot started (counter stripped)."""
    box = _box(tmp_path, slot="b")
    _efi(box.entry_selected_var, "registratura-9000.0-good.conf")
    assert update.running(box)["version"] == "9000.0-good"
    with pytest.raises(UpdateError, match="is the one running"):
        update.apply(_bundle(tmp_path / "u.tar", version="9000.0-good"), box, lambda _: None)


@pytest.mark.parametrize("damage", ["root.img", "vmlinuz", "cmdline"])
def test_a_damaged_bundle_leaves_nothing_that_boots_it(tmp_path, damage):
    box = _box(tmp_path)
    before = sorted(p.name for p in box.entries.iterdir())
    with pytest.raises(UpdateError, match="does not match") as err:
        update.apply(_bundle(tmp_path / "u.tar", damage=damage), box, lambda _: None)
    assert err.value.code == "E805"
    assert sorted(p.name for p in box.entries.iterdir()) == before  # only the running version boots
    assert not (box.esp / "registratura-os/2026.02.01.0000-bbbbbbb").exists()


def test_bundles_that_are_not_bundles_or_do_not_fit(tmp_path):
    box = _box(tmp_path)
    (tmp_path / "x.tar").write_bytes(b"not a tar at all" * 100)
    with pytest.raises(UpdateError, match="not an update bundle") as err:
        update.apply(tmp_path / "x.tar", box, lambda _: None)
    assert err.value.code == "E801"
    with pytest.raises(UpdateError, match="larger than") as err:
        update.apply(_bundle(tmp_path / "big.tar", root=b"x" * (SLOT_BYTES + 1)), box, lambda _: None)
    assert err.value.code == "E806"
    with pytest.raises(UpdateError, match="may not name the root"):
        update.apply(_bundle(tmp_path / "r.tar", cmdline="root=/dev/sda1"), box, lambda _: None)
    with pytest.raises(UpdateError, match="is the one running"):
        update.apply(_bundle(tmp_path / "same.tar", version="2026.01.01.0000-aaaaaaa"), box, lambda _: None)
    (box.cmdline).write_text("root=/dev/vda2 ro\n")
    with pytest.raises(UpdateError, match="not booted from an A/B root"):
        update.apply(_bundle(tmp_path / "u.tar"), box, lambda _: None)
    assert (box.dev / "registratura-root-b").read_bytes() == b"b" * SLOT_BYTES


def test_running_reports_version_slot_and_trial(tmp_path):
    box = _box(tmp_path, slot="b")
    assert update.running(box) == {"version": "2026.01.01.0000-aaaaaaa", "slot": "b", "on_trial": False}
    assert update.running(Box(cmdline=tmp_path / "none", image_info=tmp_path / "none"))["slot"] is None


class _Health(http.server.BaseHTTPRequestHandler):
    codes: list[int] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        code = self.codes.pop(0) if len(self.codes) > 1 else self.codes[0]
        self.send_response(code)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize(("codes", "healthy"), [([503, 503, 200], True), ([503], False)])
def test_check_waits_for_healthz_200(codes, healthy):
    _Health.codes = list(codes)
    server = http.server.HTTPServer(("127.0.0.1", 0), _Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/healthz"
        assert update.check(url, timeout=0.6, say=lambda _: None, poll=0.05) is healthy
    finally:
        server.shutdown()


def test_the_service_user_cannot_read_the_esp_and_health_still_answers(tmp_path, monkeypatch):
    """/efi is root's (0700): as the service user the trial state is unknown (None), never an exception, which
    would turn /healthz into a 500 and roll a good version back; `apply` (root) refuses while it is unknown."""
    box = _box(tmp_path)
    _efi(box.boot_count_var, "\\loader\\entries\\registratura-2026.01.01.0000-aaaaaaa+2-1.conf")
    real_exists = Path.exists

    def exists(self: Path) -> bool:
        if box.esp in self.parents:
            raise PermissionError(13, "Permission denied", str(self))
        return real_exists(self)

    monkeypatch.setattr(Path, "exists", exists)
    assert update.running(box)["on_trial"] is None
    with pytest.raises(UpdateError, match="on trial"):
        update.apply(_bundle(tmp_path / "u.tar"), box, lambda _: None)


def test_the_first_boots_machine_id_is_kept_on_every_entry_and_carried_to_updates(tmp_path):
    """A read-only root gets a new machine id every boot (new journal directory, new DHCP client id) unless the
    kernel command line names one: every entry gets this boot's, once; an update's entry gets the running one."""
    box = _box(tmp_path)
    trial = box.entries / "registratura-2026.02.01.0000-bbbbbbb+2-1.conf"
    trial.write_text("title x\noptions root=PARTLABEL=registratura-root-b ro panic=10\n")
    changed = update.pin_machine_id(box, lambda _: None)
    assert sorted(p.name for p in changed) == ["registratura-2026.01.01.0000-aaaaaaa.conf", trial.name]
    assert trial.read_text() == ("title x\noptions root=PARTLABEL=registratura-root-b ro panic=10 "
                                 "systemd.machine_id=0123456789abcdef0123456789abcdef\n")
    assert update.pin_machine_id(box, lambda _: None) == []  # once
    (box.machine_id).write_text("not an id\n")
    with pytest.raises(UpdateError, match="not a machine id"):
        update.pin_machine_id(box, lambda _: None)

    trial.unlink()
    # Installed during that first boot (its command line has no id yet): the new entry gets the running id too.
    box.machine_id.write_text("0123456789abcdef0123456789abcdef\n")
    entry = update.apply(_bundle(tmp_path / "u.tar"), box, lambda _: None)
    assert entry.path.read_text().rstrip().endswith(
        "console=ttyS0,115200 systemd.machine_id=0123456789abcdef0123456789abcdef")


def test_the_update_units_are_valid_and_enabled_in_the_image(tmp_path):
    import shutil
    import subprocess

    repo = Path(__file__).resolve().parents[2]
    names = ("registratura-update-check.service", "registratura-machine-id.service")
    for name in names:
        unit = (repo / "systemd" / name).read_text()
        assert "ExecStart=/opt/registratura/venv/bin/registratura " in unit
        (tmp_path / name).write_text(unit.replace("/opt/registratura/venv/bin/registratura", "/bin/true"))
    check = (repo / "systemd" / names[0]).read_text().splitlines()
    # Only a trial boot is checked, a failed check reboots (systemd-boot counts the try), success lets
    # systemd-bless-boot mark the entry good.
    assert f"ConditionPathExists={update.BOOT_COUNT_VAR}" in check
    assert {"FailureAction=reboot", "Before=boot-complete.target", "RequiredBy=boot-complete.target"} <= set(check)
    if shutil.which("systemd-analyze"):
        done = subprocess.run(["systemd-analyze", "verify", "--man=no", *(str(tmp_path / n) for n in names)],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    postinst = (repo / "image" / "mkosi" / "mkosi.postinst").read_text()
    loop = postinst[postinst.index("for unit in registratura.service"):]
    assert all(n in loop[:loop.index("; do")] for n in names)
    assert "systemd-boot\n" in (repo / "image" / "mkosi" / "mkosi.default").read_text()  # systemd-bless-boot
