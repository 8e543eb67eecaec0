"""Blocklist decisions (pure) and the `registratura block` CLI over a real SQLite store."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from appliance.boxproc import REPO
from appliance.security.blocklist import (
    BlockEntry,
    abuse_block_due,
    auto_block_minutes,
    find_block,
    matches,
    normalise_pattern,
    too_many_calls,
)


def test_exact_and_prefix_matching():
    assert matches("+79161234567", "+79161234567")
    assert not matches("+79161234567", "+79161234568")
    assert matches("+7495*", "+74951234567")
    assert not matches("+7495*", "+74991234567")
    assert not matches("+7*", "anonymous")  # withheld callers are handled by the withheld policy


def test_find_block_respects_expiry_and_never_block():
    now = 1000.0
    entries = [
        BlockEntry("+7495*", "sales", "manual", 0.0),
        BlockEntry("+74951234567", "abuse", "abuse", 0.0),
        BlockEntry("+79160000000", "old", "auto_rate", 0.0, expires_at=900.0),
    ]
    hit = find_block("+74951234567", entries, now)
    assert hit is not None and hit.reason == "abuse"  # the exact entry explains it best
    assert find_block("+74950000000", entries, now).reason == "sales"
    assert find_block("+79160000000", entries, now) is None  # expired
    assert find_block("+74951234567", entries, now, never_block=["+74951234567"]) is None


def test_rate_and_abuse_rules():
    now = 10_000.0
    calls = [now - 60 * m for m in (0, 1, 2, 3, 20)]
    assert too_many_calls(calls, now, calls=4, minutes=10)
    assert not too_many_calls(calls, now, calls=5, minutes=10)
    assert not too_many_calls(calls, now, calls=0, minutes=10)  # off
    assert [auto_block_minutes(60, n) for n in range(3)] == [60, 120, 240]
    assert auto_block_minutes(60, 20) == 7 * 24 * 60
    day = 86400
    assert abuse_block_due([now - 29 * day, now - 1], now, marks=2, days=30)
    assert not abuse_block_due([now - 31 * day, now - 1], now, marks=2, days=30)


@pytest.mark.parametrize(("raw", "stored"), [
    ("8 (916) 123-45-67", "+79161234567"),
    ("+7 495*", "+7495*"),
    ("8495*", "+7495*"),
])
def test_patterns_are_normalised(raw, stored):
    assert normalise_pattern(raw) == stored


@pytest.mark.parametrize("raw", ["hello", "101"])
def test_bad_patterns_are_refused(raw):
    with pytest.raises(ValueError, match="phone number"):
        normalise_pattern(raw)


def _cli(cfg, *args):
    return subprocess.run([sys.executable, "-m", "appliance", "--config", str(cfg), "block", *args],
                          capture_output=True, text=True, cwd=REPO, timeout=60)


def test_block_cli_round_trip(tmp_path):
    cfg = tmp_path / "registratura.yaml"
    cfg.write_text(yaml.safe_dump({"data_dir": str(tmp_path / "data")}))
    assert _cli(cfg, "add", "8 916 123-45-67", "--reason", "abusive caller").returncode == 0
    assert _cli(cfg, "add", "+7495*", "--days", "1").returncode == 0
    listed = json.loads(_cli(cfg, "list", "--json").stdout)
    assert [(r["pattern"], r["reason"]) for r in listed] == [
        ("+79161234567", "abusive caller"), ("+7495*", "blocked by staff")]
    assert listed[1]["expires_at"] is not None
    assert _cli(cfg, "remove", "+79161234567").returncode == 0
    assert _cli(cfg, "remove", "+79161234567").returncode == 1  # nothing left to lift
    assert [r["pattern"] for r in json.loads(_cli(cfg, "list", "--json").stdout)] == ["+7495*"]
    bad = _cli(cfg, "add", "hello")
    assert bad.returncode == 1 and "not a phone number" in bad.stderr


def test_never_block_overlaps():
    from appliance.security.blocklist import overlaps_never_block

    keep = ["+79160000103", "+7495*"]
    assert overlaps_never_block("+79160000103", keep) == ["+79160000103"]
    assert overlaps_never_block("+74951234567", keep) == ["+7495*"]
    assert overlaps_never_block("+7916*", keep) == ["+79160000103"]
    assert overlaps_never_block("+749*", keep) == ["+7495*"]
    assert overlaps_never_block("+74951*", keep) == ["+7495*"]
    assert overlaps_never_block("+79161234567", keep) == [] and overlaps_never_block("+7812*", keep) == []


def test_block_add_refuses_a_never_block_number_and_notes_a_prefix_over_one(tmp_path):
    cfg = tmp_path / "registratura.yaml"
    cfg.write_text(yaml.safe_dump({"data_dir": str(tmp_path / "data"),
                                   "security": {"never_block": ["+79160000103"]}}))
    refused = _cli(cfg, "add", "8 916 000-01-03")
    assert refused.returncode == 1 and "E111: +79160000103 is on the never-block list" in refused.stderr
    assert json.loads(_cli(cfg, "list", "--json").stdout) == []  # nothing stored
    wide = _cli(cfg, "add", "+7916*")
    assert wide.returncode == 0 and "+79160000103 are on the never-block list and still get through" in wide.stderr
    assert [r["pattern"] for r in json.loads(_cli(cfg, "list", "--json").stdout)] == ["+7916*"]
