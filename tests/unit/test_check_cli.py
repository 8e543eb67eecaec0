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
    assert "warning" not in out.stderr  # the shipped flows hand over only to queue reception


def test_check_names_transfer_targets_and_queues_the_settings_lack(tmp_path):
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "main.yaml").write_text(
        "language: ru\nstart: paid\nnodes:\n"
        "  paid: {type: transfer, target: paid_desk, no_answer: q}\n"
        "  q: {type: queue, queue: lab}\n", encoding="utf-8")
    settings = demo_settings(tmp_path, rtp_base=47000, flows_dir=flows, main="main")
    settings["queues"] = {"reception": {"agents": ["sip:101@127.0.0.1"]}}
    out = _check(tmp_path, settings)
    assert out.returncode == 0, out.stderr
    assert f"{flows / 'main.yaml'}:4: node 'paid': transfer target 'paid_desk' is not in the settings " \
           "(transfers): callers go to 'q'; add transfers.paid_desk: <SIP URI>" in out.stderr
    assert "node 'q': queue 'lab' is not in the settings (queues)" in out.stderr
    settings["transfers"] = {"paid_desk": "sip:102@127.0.0.1"}
    settings["queues"]["lab"] = {"agents": ["sip:103@127.0.0.1"]}
    assert "warning" not in _check(tmp_path, settings).stderr


def test_check_refuses_withheld_ask_without_its_prompts(tmp_path):
    import shutil

    voices = tmp_path / "voices"
    shutil.copytree(REPO / "voices", voices, ignore=shutil.ignore_patterns("moh"))
    settings = demo_settings(tmp_path, rtp_base=47000, security={"withheld": "ask"})
    settings["voices"]["dir"] = str(voices)
    assert _check(tmp_path, settings).returncode == 0
    ru = voices / "ru" / "prompts.yaml"
    ru.write_text("".join(line for line in ru.read_text(encoding="utf-8").splitlines(keepends=True)
                          if not line.startswith("withheld_ask:")), encoding="utf-8")
    out = _check(tmp_path, settings)
    assert out.returncode == 1
    assert "security.withheld is 'ask' but voices/ru/prompts.yaml lacks withheld_ask" in out.stderr


def test_check_and_run_say_clearly_when_the_sip_stack_is_missing(tmp_path):
    # An arm64 image built without the box's own pjsua2 wheel: one line with the code and the fix, no traceback.
    config = tmp_path / "registratura.yaml"
    config.write_text(yaml.safe_dump(demo_settings(tmp_path, rtp_base=47000), allow_unicode=True), encoding="utf-8")
    hide = "import sys; sys.modules['pjsua2'] = None; from appliance.cli import main; sys.exit(main(sys.argv[1:]))"
    for command in ("check", "run"):
        out = subprocess.run([sys.executable, "-c", hide, "--config", str(config), command],
                             capture_output=True, text=True, cwd=REPO, timeout=120)
        assert out.returncode == 1, (command, out.stderr)
        assert "E302: the SIP stack pjsua2 is not installed" in out.stderr, (command, out.stderr)
        assert "tools/build_pjsua2.sh" in out.stderr and "Traceback" not in out.stderr, (command, out.stderr)
