"""The hardware guide's templates stay loadable: gateway XML parses, the box's part passes first boot."""

from __future__ import annotations

import shutil
import xml.dom.minidom
from pathlib import Path

import pytest

from appliance.firstboot import NETWORK_FILE, Paths, run

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "hw/templates"


@pytest.mark.parametrize("name", sorted(p.name for p in TEMPLATES.glob("*.xml")))
def test_gateway_xml_is_well_formed(name):
    xml.dom.minidom.parse(str(TEMPLATES / name))


def test_box_template_passes_first_boot(tmp_path):
    etc = tmp_path / "root/etc/registratura"
    etc.mkdir(parents=True)
    (etc / "ivr_flows").symlink_to(REPO / "ivr_flows")
    (etc / "voices").symlink_to(REPO / "voices")
    boot = tmp_path / "boot"
    boot.mkdir()
    text = (TEMPLATES / "registratura-gateway.yaml").read_text()
    (boot / "registratura.yaml").write_text(text + f"data_dir: {tmp_path / 'data'}\n")
    paths = Paths(boot=boot, root=tmp_path / "root", console=tmp_path / "console", group=None)
    assert run(paths) == 0, (tmp_path / "root/run/registratura/firstboot.json").read_text()
    assert "Address=192.168.1.50/24" in (tmp_path / "root" / NETWORK_FILE).read_text()
    shutil.rmtree(tmp_path / "root")
