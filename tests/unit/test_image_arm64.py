"""The arm64 / Raspberry Pi image build's fast parts: the plan (--dry-run), the boot files, the mkosi drop-in.

The build itself (mkosi under qemu-user, minutes to an hour) is not run here; see image/README.md.
"""

from __future__ import annotations

import configparser
import re
import subprocess
from pathlib import Path

import pytest

IMAGE = Path(__file__).resolve().parents[2] / "image"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", *args], capture_output=True, text=True, timeout=30, check=False)


def boot_files(text: str) -> tuple[str, str]:
    config = text.split("== config.txt\n", 1)[1].split("== cmdline.txt\n", 1)[0]
    cmdline = text.split("== cmdline.txt\n", 1)[1].split("== ", 1)[0]
    return config, cmdline


def test_config_txt_boots_the_pi4_in_64_bit_with_the_watchdog() -> None:
    res = run(str(IMAGE / "assemble_pi.sh"), "--print-boot-config", "--kernel", "6.1.0-99-arm64",
              "--disk-id", "1a2b3c4d")
    assert res.returncode == 0, res.stderr
    config, _ = boot_files(res.stdout)
    lines = [ln for ln in config.splitlines() if ln and not ln.startswith("#")]
    assert "arm_64bit=1" in lines
    assert "dtparam=watchdog=on" in lines
    assert "upstream_kernel=1" in lines  # Debian's mainline kernel and DTB names
    assert "kernel=vmlinuz-6.1.0-99-arm64" in lines
    assert "initramfs initrd.img-6.1.0-99-arm64 followkernel" in lines


def test_cmdline_txt_is_one_line_with_a_read_only_squashfs_root_by_partuuid() -> None:
    res = run(str(IMAGE / "assemble_pi.sh"), "--print-boot-config", "--kernel", "6.1.0-99-arm64",
              "--disk-id", "1a2b3c4d", "--cmdline", "console=ttyS1,115200")
    assert res.returncode == 0, res.stderr
    _, cmdline = boot_files(res.stdout)
    assert cmdline.count("\n") == 1 and cmdline.endswith("\n")  # the firmware reads the first line only
    words = cmdline.split()
    assert "root=PARTUUID=1a2b3c4d-02" in words  # MBR: <disk id>-<partition number>
    assert {"ro", "rootfstype=squashfs", "rootwait", "console=ttyS1,115200"} <= set(words)
    assert "rw" not in words


def _printed(section: str) -> str:
    res = run(str(IMAGE / "assemble_pi.sh"), "--print-boot-config", "--disk-id", "1a2b3c4d")
    assert res.returncode == 0, res.stderr
    return res.stdout.split(f"== {section}\n", 1)[1].split("\n== ", 1)[0]


def test_var_grows_into_the_card_at_boot_partition_first_then_the_ext4() -> None:
    fstab = [ln.split() for ln in _printed("fstab").splitlines() if ln and not ln.startswith("#")]
    [var] = [f for f in fstab if f[1] == "/var"]
    assert var[0] == "PARTUUID=1a2b3c4d-03"
    options = var[3].split(",")
    assert "x-systemd.growfs" in options  # the ext4, once mounted
    assert "x-systemd.requires=registratura-growvar.service" in options  # the partition, before the mount

    unit = configparser.ConfigParser(interpolation=None, strict=False)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(_printed("registratura-growvar.service"))
    device = r"dev-disk-by\x2dpartuuid-1a2b3c4d\x2d03"  # systemd-escape -p /dev/disk/by-partuuid/1a2b3c4d-03
    assert unit["Unit"]["DefaultDependencies"] == "no"  # runs in early boot, before local-fs
    assert unit["Unit"]["Requires"] == unit["Unit"]["After"] == f"{device}.device"
    assert {"var.mount", f"systemd-fsck@{device}.service"} <= set(unit["Unit"]["Before"].split())
    # "-": a card that cannot be grown still gets its /var mounted at the image's size
    assert unit["Service"]["ExecStart"] == "-/usr/lib/registratura/grow-var /dev/disk/by-partuuid/1a2b3c4d-03"
    assert (IMAGE / "arm64" / "grow-var").stat().st_mode & 0o111
    assert "growpart" in (IMAGE / "arm64" / "grow-var").read_text()


def test_dry_run_prints_the_plan_and_says_pjsua2_is_not_installed(tmp_path: Path) -> None:
    res = run(str(IMAGE / "build_arm64.sh"), "--dry-run", "--out", str(tmp_path / "out"))
    assert res.returncode == 0, res.stderr
    assert "NOT INSTALLED" in res.stdout and "tools/build_pjsua2.sh" in res.stdout
    assert str(tmp_path / "out" / "registratura-arm64.img") in res.stdout
    assert "arm_64bit=1" in res.stdout and "root=PARTUUID=DISKID-02" in res.stdout
    assert not (tmp_path / "out").exists()  # nothing written


def test_dry_run_with_a_wheel_dir_uses_it(tmp_path: Path) -> None:
    res = run(str(IMAGE / "build_arm64.sh"), "--dry-run", "--pjsua2-wheel", str(tmp_path))
    assert res.returncode == 0, res.stderr
    assert f"arm64 wheel from {tmp_path}" in res.stdout
    assert "NOT INSTALLED" not in res.stdout


@pytest.mark.parametrize("args", [("--pjsua2-wheel", "a", "--build-pjsua2", "b"), ("--bogus",), ("--pjsua2-only",)])
def test_bad_arguments_are_refused(args: tuple[str, ...]) -> None:
    res = run(str(IMAGE / "build_arm64.sh"), "--dry-run", *args)
    assert res.returncode == 2
    assert res.stderr


def test_help_is_the_header() -> None:
    res = run(str(IMAGE / "build_arm64.sh"), "--help")
    assert res.returncode == 0
    assert "Usage:" in res.stdout and "--pjsua2-wheel DIR" in res.stdout and "set -eu" not in res.stdout


def test_mkosi_drop_in_swaps_the_kernel_and_boot_loader_for_the_pi() -> None:
    def parse(path: Path) -> configparser.ConfigParser:
        cp = configparser.ConfigParser(interpolation=None, strict=False)
        cp.optionxform = str  # type: ignore[assignment,method-assign]
        cp.read(path)
        return cp

    base, arm = parse(IMAGE / "mkosi" / "mkosi.default"), parse(IMAGE / "arm64" / "mkosi.arm64.conf")
    base_pkgs = base["Content"]["Packages"].split()
    arm_pkgs = arm["Content"]["Packages"].split()
    assert arm["Distribution"]["Architecture"] == "aarch64"
    assert "non-free-firmware" in arm["Distribution"]["Repositories"]  # raspi-firmware lives there
    for removed in ("linux-image-amd64", "systemd-boot-efi"):
        assert removed in base_pkgs and f"!{removed}" in arm_pkgs
    assert {"linux-image-arm64", "raspi-firmware", "cloud-guest-utils"} <= set(arm_pkgs)  # growpart for /var


def test_both_builds_share_the_staging() -> None:
    for script in ("build.sh", "build_arm64.sh"):
        text = (IMAGE / script).read_text()
        assert re.search(r'^\. "\$here/common.sh"$', text, re.M), script
        assert 'stage_mkosi "$repo" "$stage"' in text, script


def _grow_var(tmp_path: Path, growpart_out: str, growpart_rc: int, partition: bool = True):
    """Run image/arm64/grow-var on a made-up disk: sysfs says vda3 is partition 3 of vda; growpart is a stand-in
    that records its arguments and answers as the real one does (cloud-guest-utils: 0 CHANGED, 1 NOCHANGE)."""
    block = tmp_path / "sys" / "devices" / "virtio0" / "block" / "vda"
    (block / "vda3").mkdir(parents=True)
    if partition:
        (block / "vda3" / "partition").write_text("3\n")
    (tmp_path / "sys" / "class" / "block").mkdir(parents=True)
    (tmp_path / "sys" / "class" / "block" / "vda3").symlink_to(block / "vda3")
    (tmp_path / "dev" / "disk" / "by-partuuid").mkdir(parents=True)
    (tmp_path / "dev" / "vda3").write_text("")
    link = tmp_path / "dev" / "disk" / "by-partuuid" / "1a2b3c4d-03"
    link.symlink_to(tmp_path / "dev" / "vda3")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stand_in = f'#!/bin/sh\necho "$@" > {tmp_path}/args\necho "{growpart_out}"\nexit {growpart_rc}\n'
    (bin_dir / "growpart").write_text(stand_in)
    (bin_dir / "growpart").chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "REGISTRATURA_SYSFS": str(tmp_path / "sys")}
    res = subprocess.run(["sh", str(IMAGE / "arm64" / "grow-var"), str(link)], capture_output=True, text=True,
                         timeout=30, env=env, check=False)
    args = (tmp_path / "args").read_text().split() if (tmp_path / "args").exists() else None
    return res, args


def test_grow_var_grows_partition_3_of_the_disk_it_is_on(tmp_path: Path) -> None:
    res, args = _grow_var(tmp_path, "CHANGED: partition=3 start=4720640 old: size=16777216 new: size=20971487", 0)
    assert res.returncode == 0, res.stderr
    assert args == ["/dev/vda", "3"]
    assert res.stdout.startswith("/var partition grown: CHANGED: partition=3")


def test_grow_var_is_quiet_success_once_the_partition_fills_the_disk(tmp_path: Path) -> None:
    res, _ = _grow_var(tmp_path, "NOCHANGE: partition 3 is size 20971487. it cannot be grown", 1)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "/var partition already fills /dev/vda"


def test_grow_var_reports_a_real_failure(tmp_path: Path) -> None:
    res, _ = _grow_var(tmp_path, "FAILED: failed to resize", 2)
    assert res.returncode == 1
    assert "/var partition not grown: FAILED: failed to resize" in res.stderr


def test_grow_var_refuses_a_device_that_is_not_a_partition(tmp_path: Path) -> None:
    res, args = _grow_var(tmp_path, "", 0, partition=False)
    assert res.returncode == 1 and "is not a partition" in res.stderr
    assert args is None  # growpart never ran
