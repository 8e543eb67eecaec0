"""`registratura check` on a real settings file: flows that promise callbacks need a queue to call back from."""

from __future__ import annotations

import subprocess
import sys

import yaml

from appliance.boxproc import REPO, demo_settings


def _check(tmp_path, settings) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "registratura.yaml"
    config.write_text(yaml.safe_dump(settings, allow_unicode=True), encoding="utf-8")
    return subprocess.run([sys.executable, "-m", "appliance", "--config", str(config), "check"],
                          capture_output=True, text=True, cwd=REPO, timeout=120)


def test_check_warns_when_flows_promise_callbacks_without_a_queue(tmp_path):
    settings = demo_settings(tmp_path, rtp_base=47000)
    settings["flows"]["main"] = "clinic_ru"
    settings.pop("queues", None)
    out = _check(tmp_path, settings)
    assert out.returncode == 0, out.stderr  # a warning, not a refusal: the box still answers
    assert "clinic_ru.yaml" in out.stderr and "no queue is configured to call back from" in out.stderr


def test_check_is_quiet_about_callbacks_with_a_reception_queue(tmp_path):
    settings = demo_settings(tmp_path, rtp_base=47000)
    settings["queues"] = {"reception": {"agents": ["sip:101@127.0.0.1"]}}
    out = _check(tmp_path, settings)
    assert out.returncode == 0, out.stderr
    assert "call back from" not in out.stderr
