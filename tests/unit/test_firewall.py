"""The nftables rules rendered from the settings, the shipped file, and nft's own check of both."""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.security.firewall import LAN, render, sip_peers, uri_host
from appliance.settings import load_settings, settings_from_mapping

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "image" / "registratura.example.yaml"
SHIPPED = REPO / "image" / "nftables" / "registratura.nft"


def clinic(tmp_path: Path, **extra) -> object:
    data = {
        "sip": {"listen": "0.0.0.0:5062", "allow_from": ["192.168.1.0/24", "10.0.0.5", "2001:db8::/64"],
                "rtp_ports": "30000-30999",
                "registration": {"registrar": "sip:203.0.113.7:5060", "user": "box", "password": "x"},
                "outbound": "sip:{national}@192.168.1.1"},
        "metrics": {"listen": "0.0.0.0:9400", "allow_from": ["192.168.1.0/24"]},
        "queues": {"reception": {"agents": ["sip:101@192.168.1.21", "sip:102@192.168.2.22:5062",
                                            "sip:103@[fd00::23]", "sip:104@pbx.clinic.local"]}},
        "transfers": {"head_doctor": "sip:200@10.0.0.30;transport=udp"},
        "data_dir": str(tmp_path / "data"),
    }
    for key, value in extra.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return settings_from_mapping(data, tmp_path)


@pytest.mark.parametrize(("uri", "host"), [
    ("sip:101@192.168.1.21", "192.168.1.21"),
    ("sip:101@192.168.1.21:5062;transport=udp", "192.168.1.21"),
    ("sips:101@[fd00::1]:5061", "fd00::1"),
    ("sip:192.168.1.1:5060", "192.168.1.1"),
    ("sip:{national}@10.1.1.1", "10.1.1.1"),
    ("sip:200@pbx.local", "pbx.local"),
    ("tel:+74951234567", ""),
])
def test_uri_host(uri, host):
    assert uri_host(uri) == host


def test_peers_are_allow_from_plus_phones_transfers_outbound_and_registrar(tmp_path):
    peers = sip_peers(clinic(tmp_path))
    v4 = {str(n) for n in peers.v4}
    # 192.168.1.21 (a phone) and 192.168.1.1 (outbound) fall inside the allowed /24: nft wants no overlaps
    assert v4 == {"192.168.1.0/24", "10.0.0.5/32", "192.168.2.22/32", "10.0.0.30/32", "203.0.113.7/32"}
    assert {str(n) for n in peers.v6} == {"2001:db8::/64", "fd00::23/128"}
    assert peers.names == ("pbx.clinic.local",)


def test_rules_follow_the_settings(tmp_path):
    text = render(clinic(tmp_path), sip_rate=40, sip_burst=80)
    assert "udp dport 5062 jump sip_in" in text
    assert "udp dport 30000-30999 ip saddr @sip_peers_v4 accept" in text
    assert "limit rate over 40/second burst 80 packets" in text
    assert "elements = { 10.0.0.5, 10.0.0.30, 192.168.1.0/24, 192.168.2.22, 203.0.113.7 }" in text
    assert "elements = { 2001:db8::/64, fd00::23 }" in text
    assert "tcp dport { 9400, 22 } ip saddr @mgmt_v4 accept" in text
    assert "pbx.clinic.local" in text.split("table inet", 1)[0]  # named in the header, not in a rule
    assert "policy drop" in text
    # SIP is matched before conntrack's shortcut, so the rate limit sees every packet of a peer
    assert text.index("jump sip_in") < text.index("ct state established,related accept")


def test_metrics_on_loopback_and_no_ssh(tmp_path):
    settings = clinic(tmp_path, metrics={"listen": "127.0.0.1:9310", "allow_from": []})
    text = render(settings, ssh_port=None)
    assert "dport { " not in text and "9310" not in text.split("table inet", 2)[2]
    assert 'iif "lo" accept' in text


def test_empty_metrics_allow_from_means_the_lan(tmp_path):
    text = render(clinic(tmp_path, metrics={"listen": "0.0.0.0:9310", "allow_from": []}))
    mgmt = text.split("set mgmt_v4 {", 1)[1].split("}", 1)[0]
    for net in LAN:
        if ipaddress.ip_network(net).version == 4:
            assert net in mgmt


def test_shipped_file_is_the_rendering_of_the_example_settings():
    settings = load_settings(EXAMPLE)
    expected = render(settings, source="image/registratura.example.yaml", safe_mode_port=9310)
    assert SHIPPED.read_text(encoding="utf-8") == expected, (
        "image/nftables/registratura.nft is stale: run `registratura --config image/registratura.example.yaml "
        "firewall render --safe-mode -o image/nftables/registratura.nft` from the repository root")
    assert "elements = { 127.0.0.1 }" in expected  # as shipped, SIP reaches the box from nowhere
    # The default rules (no valid settings): safe mode's /healthz on tcp/9310 from the LAN only.
    assert "tcp dport { 9310, 22 } ip saddr @mgmt_v4 accept" in expected
    assert "tcp dport { 9310, 22 } counter name \"mgmt_refused\" drop" in expected
    assert "9310" not in render(settings).split("chain input", 1)[1]  # the example's own metrics are loopback


def test_cli_prints_the_rules(tmp_path):
    out = subprocess.run([sys.executable, "-m", "appliance", "--config", str(EXAMPLE), "firewall", "render",
                          "--sip-rate", "30", "--ssh-port", "0"], capture_output=True, text=True, cwd=REPO,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert "limit rate over 30/second" in out.stdout and "tcp dport" not in out.stdout


def _nft_check(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["nft", "-c", "-f", str(path)], capture_output=True, text=True, timeout=30)


@pytest.mark.skipif(not shutil.which("nft") or os.geteuid() != 0,
                    reason="`nft -c` needs nftables (apt-get install nftables) and root")
def test_nft_accepts_the_shipped_and_a_rendered_ruleset(tmp_path):
    rendered = tmp_path / "clinic.nft"
    rendered.write_text(render(clinic(tmp_path)))
    for path in (SHIPPED, rendered):
        result = _nft_check(path)
        assert result.returncode == 0, f"{path}: {result.stderr}"
