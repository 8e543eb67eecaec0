"""First boot on a directory tree: good files are installed, bad ones are rejected and the box keeps its settings."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest

from appliance import firstboot
from appliance.firstboot import Paths, run, split_firstboot

REPO = Path(__file__).resolve().parents[2]

GOOD = """\
clinic: {name: "Поликлиника №1", region: RU, language: ru}
sip: {listen: "0.0.0.0:5060", allow_from: ["192.168.1.0/24"], codecs: [PCMA, PCMU]}
data_dir: DATA
flows: {dir: ivr_flows, main: clinic_ru}
metrics: {listen: "0.0.0.0:9310"}
"""

FIRSTBOOT = """\
firstboot:
  hostname: reg-clinic1
  network:
    interface: eth0
    address: 192.168.1.50/24
    gateway: 192.168.1.1
    dns: [192.168.1.1]
  ntp: [192.168.1.1, ntp.clinic.local]
  timezone: Europe/Moscow
"""

OLD = "# the box's previous settings\n"


@pytest.fixture
def box(tmp_path: Path) -> dict[str, Path]:
    """An image-like tree: /etc/registratura with the shipped flows and voices, an empty boot partition."""
    root, boot = tmp_path / "root", tmp_path / "boot"
    etc = root / "etc/registratura"
    etc.mkdir(parents=True)
    boot.mkdir()
    (etc / "ivr_flows").symlink_to(REPO / "ivr_flows")
    (etc / "voices").symlink_to(REPO / "voices")
    (etc / "registratura.yaml").write_text(OLD)
    (root / "etc/hosts").write_text("127.0.0.1\tlocalhost\n127.0.1.1\tdebian\n")
    return {"root": root, "boot": boot, "etc": etc, "data": tmp_path / "data", "console": tmp_path / "console"}


def _paths(box: dict[str, Path], group: str | None = "root") -> Paths:
    return Paths(boot=box["boot"], root=box["root"], console=box["console"], group=group)


def _write(box: dict[str, Path], text: str, name: str = "registratura.yaml") -> Path:
    path = box["boot"] / name
    path.write_text(text.replace("DATA", str(box["data"])), encoding="utf-8")
    return path


def _status(box: dict[str, Path]) -> dict:
    return json.loads((box["root"] / "run/registratura/firstboot.json").read_text())


def test_good_settings_with_firstboot_section_are_installed_and_the_service_started(box):
    boot_file = _write(box, GOOD + FIRSTBOOT)
    calls: list[list[str]] = []
    assert run(_paths(box), calls.append) == 0

    installed = box["etc"] / "registratura.yaml"
    text = installed.read_text()
    assert "Поликлиника №1" in text and "firstboot" not in text and "reg-clinic1" not in text
    assert len(text.splitlines()) == len((GOOD + FIRSTBOOT).splitlines())  # line numbers kept for later errors
    st = installed.stat()
    assert stat.S_IMODE(st.st_mode) == 0o640 and st.st_gid == 0
    assert (box["etc"] / "registratura.yaml.previous").read_text() == OLD
    assert not list(box["etc"].glob(".firstboot-*"))  # staging cleaned up

    assert not boot_file.exists() and (box["boot"] / "registratura.yaml.applied").exists()
    root = box["root"]
    assert (root / "etc/hostname").read_text() == "reg-clinic1\n"
    assert (root / "etc/hosts").read_text() == "127.0.0.1\tlocalhost\n127.0.1.1\treg-clinic1\n"
    network = (root / firstboot.NETWORK_FILE).read_text()
    assert "Name=eth0" in network and "Address=192.168.1.50/24" in network and "Gateway=192.168.1.1" in network
    assert "DNS=192.168.1.1" in network and "DHCP" not in network
    assert "NTP=192.168.1.1 ntp.clinic.local" in (root / firstboot.TIMESYNC_FILE).read_text()
    assert os.readlink(root / "etc/localtime") == "/usr/share/zoneinfo/Europe/Moscow"

    state = _status(box)
    assert state["ok"] is True and "error" not in state
    assert state["applied"] == ["firstboot", "registratura.yaml"]
    assert "settings applied" in box["console"].read_text()
    assert ["systemctl", "enable", "registratura.service"] in calls
    assert calls[-1] == ["systemctl", "restart", "--no-block", "registratura.service"]
    assert ["systemctl", "try-restart", "--no-block", "systemd-networkd.service"] in calls


def test_without_the_group_the_settings_are_owner_only(box):
    _write(box, GOOD)
    assert run(_paths(box, group="no-such-group-xyz")) == 0
    assert stat.S_IMODE((box["etc"] / "registratura.yaml").stat().st_mode) == 0o600


def _assert_rejected(box: dict[str, Path], calls: list, needle: str) -> str:
    assert (box["etc"] / "registratura.yaml").read_text() == OLD  # the old settings stay
    assert not (box["etc"] / "registratura.yaml.previous").exists()
    assert not list(box["etc"].glob(".firstboot-*"))
    assert calls == []  # the service is not (re)started
    assert not (box["boot"] / "registratura.yaml").exists()
    assert (box["boot"] / "registratura.yaml.rejected").exists()
    beside = (box["boot"] / "registratura.yaml.rejected.txt").read_text()
    state = _status(box)
    assert state["ok"] is False and needle in state["error"]
    assert needle in beside and needle in box["console"].read_text()
    assert "REJECTED" in box["console"].read_text()
    assert not (box["root"] / "etc/hostname").exists() and not (box["root"] / firstboot.NETWORK_FILE).exists()
    return state["error"]


def test_unknown_key_is_rejected_with_file_and_line(box, capsys):
    boot_file = _write(box, FIRSTBOOT + GOOD.replace("sip: {listen", "sip: {lisen"))
    calls: list = []
    assert run(_paths(box), calls.append) == 1
    error = _assert_rejected(box, calls, f"{boot_file}:11: sip.lisen: unknown key")
    assert "did you mean 'listen'" in error
    assert f"{boot_file}:11:" in capsys.readouterr().err  # the journal


def test_a_fresh_box_says_it_takes_no_calls_when_its_first_file_is_rejected(box):
    (box["etc"] / "registratura.yaml").unlink()  # a fresh box: no settings yet
    _write(box, GOOD.replace("0.0.0.0:5060", "1.2.3:99999"))
    assert run(_paths(box), [].append) == 1
    console = box["console"].read_text()
    assert "SETTINGS REJECTED, the box has no settings: it takes no calls (safe mode" in console
    assert not (box["etc"] / "registratura.yaml").exists()


def test_bad_address_is_rejected(box):
    boot_file = _write(box, GOOD.replace("0.0.0.0:5060", "1.2.3:99999"))
    calls: list = []
    assert run(_paths(box), calls.append) == 1
    _assert_rejected(box, calls, f"{boot_file}:2: sip.listen: '1.2.3:99999' is not host:port")


def test_broken_yaml_is_rejected(box):
    boot_file = _write(box, GOOD + "metrics: {listen: [\n")
    calls: list = []
    assert run(_paths(box), calls.append) == 1
    error = _assert_rejected(box, calls, f"{boot_file}:")
    assert "invalid YAML" in error


def test_bad_static_address_in_firstboot_section_names_the_line(box):
    boot_file = _write(box, GOOD + FIRSTBOOT.replace("192.168.1.50/24", "192.168.1.500/24"))
    calls: list = []
    assert run(_paths(box), calls.append) == 1
    _assert_rejected(box, calls, f"{boot_file}:10: firstboot.network.address: '192.168.1.500/24' is not an address")


def test_gateway_outside_the_subnet_and_unknown_network_key(box):
    text = GOOD + FIRSTBOOT.replace("192.168.1.1\n", "10.0.0.1\n").replace("    dns:", "    dnss:")
    boot_file = _write(box, text)
    calls: list = []
    assert run(_paths(box), calls.append) == 1
    error = _assert_rejected(box, calls, f"{boot_file}:11: firstboot.network.gateway: 10.0.0.1 is outside")
    assert f"{boot_file}:12: firstboot.network.dnss: unknown key" in error


def test_flows_from_the_boot_partition_are_installed(box):
    flows = box["boot"] / "flows"
    flows.mkdir()
    shutil.copy(REPO / "ivr_flows/clinic_ru.yaml", flows / "clinic_ru.yaml")
    (flows / "._clinic_ru.yaml").write_bytes(b"\x00macOS litter")
    _write(box, GOOD.replace("dir: ivr_flows", "dir: flows"))
    assert run(_paths(box), lambda cmd: None) == 0
    installed = box["etc"] / "flows"
    assert sorted(p.name for p in installed.iterdir()) == ["clinic_ru.yaml"]
    assert stat.S_IMODE((installed / "clinic_ru.yaml").stat().st_mode) == 0o640
    assert stat.S_IMODE(installed.stat().st_mode) == 0o750
    assert (box["boot"] / "flows.applied").is_dir()
    assert _status(box)["applied"] == ["registratura.yaml", "flows"]


def test_a_broken_flow_rejects_everything_and_keeps_the_old_flows(box):
    (box["etc"] / "flows").mkdir()
    (box["etc"] / "flows/old.yaml").write_text("# old\n")
    flows = box["boot"] / "flows"
    flows.mkdir()
    (flows / "clinic_ru.yaml").write_text("language: ru\nstart: nowhere\nnodes: {}\n")
    _write(box, GOOD.replace("dir: ivr_flows", "dir: flows"))
    calls: list = []
    assert run(_paths(box), calls.append) == 1
    _assert_rejected(box, calls, str(flows / "clinic_ru.yaml"))
    assert (box["etc"] / "flows/old.yaml").read_text() == "# old\n"
    assert flows.is_dir()  # left for the technician to fix


def test_flows_on_the_boot_partition_but_settings_point_elsewhere(box):
    (box["boot"] / "flows").mkdir()
    shutil.copy(REPO / "ivr_flows/clinic_ru.yaml", box["boot"] / "flows/clinic_ru.yaml")
    _write(box, GOOD)
    calls: list = []
    assert run(_paths(box), calls.append) == 1
    _assert_rejected(box, calls, "set flows: {dir: flows}")


def test_network_yaml_alone_sets_dhcp_and_leaves_the_service_alone(box):
    _write(box, "hostname: reg-2\nnetwork: {dhcp: true}\nntp: pool.clinic.lan\n", "network.yaml")
    calls: list = []
    assert run(_paths(box), calls.append) == 0
    network = (box["root"] / firstboot.NETWORK_FILE).read_text()
    assert "DHCP=yes" in network and "Name=en* eth*" in network
    assert (box["etc"] / "registratura.yaml").read_text() == OLD
    assert (box["boot"] / "network.yaml.applied").exists()
    assert all("registratura.service" not in c for c in calls)
    assert _status(box)["applied"] == ["network.yaml"]


def test_network_in_both_places_is_rejected(box):
    _write(box, GOOD + FIRSTBOOT)
    _write(box, "hostname: reg-2\n", "network.yaml")
    assert run(_paths(box)) == 1
    assert (box["boot"] / "network.yaml.rejected").exists()
    assert "keep one of the two" in _status(box)["error"]


def test_nothing_on_the_boot_partition_does_nothing(box):
    assert run(_paths(box)) == 0
    assert not (box["root"] / "run").exists()


def test_windows_line_endings_and_bom_are_accepted(box):
    _write(box, "\ufeff" + (GOOD + FIRSTBOOT).replace("\n", "\r\n"))
    assert run(_paths(box)) == 0
    assert (box["root"] / "etc/hostname").read_text() == "reg-clinic1\n"


def test_a_fixed_file_after_a_rejection_clears_the_old_error(box):
    _write(box, GOOD.replace("0.0.0.0:5060", "bad"))
    assert run(_paths(box)) == 1
    _write(box, GOOD)
    assert run(_paths(box)) == 0
    assert not (box["boot"] / "registratura.yaml.rejected.txt").exists()
    assert _status(box)["ok"] is True


def test_read_status_for_healthz(box):
    assert firstboot.read_status(box["root"] / "run/registratura/firstboot.json") is None
    _write(box, GOOD.replace("0.0.0.0:5060", "bad"))
    run(_paths(box))
    state = firstboot.read_status(box["root"] / "run/registratura/firstboot.json")
    assert state is not None and state["ok"] is False and "sip.listen" in state["error"]


def test_symlinked_files_of_a_read_only_root_are_written_through(box):
    """The image links /etc/hostname and /etc/systemd/network/... into the data partition."""
    root = box["root"]
    state = root / "var/lib/registratura-etc"
    (state / "network").mkdir(parents=True)
    (root / "etc/hostname").symlink_to("/var/lib/registratura-etc/hostname")
    (root / "etc/systemd/network").mkdir(parents=True)
    (root / firstboot.NETWORK_FILE).symlink_to("/var/lib/registratura-etc/network/10-registratura.network")
    (root / "etc/localtime").symlink_to("/var/lib/registratura-etc/localtime")
    (state / "localtime").symlink_to("/usr/share/zoneinfo/UTC")  # the image's default zone
    _write(box, GOOD + FIRSTBOOT)
    assert run(_paths(box)) == 0
    assert (root / "etc/hostname").is_symlink() and (state / "hostname").read_text() == "reg-clinic1\n"
    assert "Address=192.168.1.50/24" in (state / "network/10-registratura.network").read_text()
    assert os.readlink(state / "localtime") == "/usr/share/zoneinfo/Europe/Moscow"
    assert os.readlink(root / "etc/localtime") == "/var/lib/registratura-etc/localtime"  # the root's link kept


def test_command_line(box):
    _write(box, GOOD)
    args = ["--boot", str(box["boot"]), "--root", str(box["root"]), "--console", str(box["console"])]
    assert firstboot.main(args) == 0
    assert (box["boot"] / "registratura.yaml.applied").exists()


def test_split_firstboot_keeps_other_sections_and_line_numbers():
    text = "a: 1\nfirstboot:\n  hostname: x\n\n  # note\nb: 2\n"
    rest, block = split_firstboot(text)
    assert rest == "a: 1\n#\n#\n#\n#\nb: 2\n"
    assert block == "\nfirstboot:\n  hostname: x\n\n  # note\n\n"
    assert split_firstboot("a: 1\n") == ("a: 1\n", None)


KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGfGq0cC0r6bX1yqfX8m3Tq2kzq8m0b0lZr1H4m4p0sK technician@laptop"


def test_ssh_keys_from_the_firstboot_section_replace_the_boxs_keys(box):
    """The technician's public key lets them log in (scp an update, a backup); a second file replaces the list."""
    keys = box["root"] / firstboot.SSH_KEYS_FILE
    keys.parent.mkdir(parents=True)
    keys.write_text("ssh-rsa AAAAold... previous\n")
    _write(box, GOOD + FIRSTBOOT + f"  ssh_keys:\n    - {KEY}\n")
    assert run(_paths(box), [].append) == 0
    assert keys.read_text() == KEY + "\n"
    assert stat.S_IMODE(keys.stat().st_mode) == 0o644  # sshd refuses group- or world-writable key files


def test_a_private_key_or_a_broken_line_is_rejected_with_its_line(box):
    text = GOOD + FIRSTBOOT + "  ssh_keys:\n    - -----BEGIN OPENSSH PRIVATE KEY-----\n"
    boot_file = _write(box, text)
    calls: list = []
    assert run(_paths(box), calls.append) == 1
    _assert_rejected(box, calls, f"{boot_file}:15: firstboot.ssh_keys: '-----BEGIN OPENSSH PRIVATE KEY-----' is not "
                                 "an SSH public key line")
    assert not (box["root"] / firstboot.SSH_KEYS_FILE).exists()


def test_without_ssh_keys_the_boxs_keys_stay(box):
    keys = box["root"] / firstboot.SSH_KEYS_FILE
    keys.parent.mkdir(parents=True)
    keys.write_text(KEY + "\n")
    _write(box, GOOD + FIRSTBOOT)
    assert run(_paths(box), [].append) == 0
    assert keys.read_text() == KEY + "\n"
