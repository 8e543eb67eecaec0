"""`registratura report` over a real store filled with a scripted morning of queue events."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime
from zoneinfo import ZoneInfo

import yaml

from appliance.acd.model import QueueEvent as E
from appliance.acd.model import QueueLogRecord as R
from appliance.boxproc import REPO
from appliance.store import Store

TZ = ZoneInfo("Europe/Moscow")


def _t(hh: int, mm: int, ss: int = 0) -> float:
    return datetime(2026, 11, 25, hh, mm, ss, tzinfo=TZ).timestamp()


def test_report_prints_a_real_day(tmp_path):
    data = tmp_path / "data"
    cfg = tmp_path / "registratura.yaml"
    cfg.write_text(yaml.safe_dump({"data_dir": str(data), "queues": {"reception": {"service_level": 20}}}))
    store = Store(data / "registratura.db")
    n1, n2, n3 = "+79161110001", "+79161110002", "+79161110003"
    store.write_acd([
        R("reception", "a", "NONE", E.ENTER, _t(8, 0), position=1, number=n1),
        R("reception", "a", "sip:101@x", E.CONNECT, _t(8, 0, 12), wait=12, position=1, orig_position=1),
        R("reception", "a", "sip:101@x", E.COMPLETECALLER, _t(8, 3), wait=12, talk=168),
        R("reception", "b", "NONE", E.ENTER, _t(8, 1), position=2, number=n2),
        R("reception", "b", "sip:102@x", E.CONNECT, _t(8, 1, 45), wait=45, position=1, orig_position=2),
        R("reception", "c", "NONE", E.ENTER, _t(9, 10), position=1, number=n3),
        R("reception", "c", "NONE", E.ABANDON, _t(9, 11), wait=60, position=1, orig_position=1, number=n3),
        R("reception", "c", "NONE", E.CALLBACK_SCHEDULED, _t(9, 11), number=n3),
    ])
    store.close()
    out = subprocess.run([sys.executable, "-m", "appliance", "--config", str(cfg), "report", "--day", "2026-11-25"],
                         capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "queue reception: offered 3, answered 2, abandoned 1" in text
    assert "service level (answered within 20 s / offered): 33.3%" in text  # only 'a' within 20 s
    assert "abandoned rate: 33.3%" in text
    assert "average speed of answer: 28.5 s" in text  # (12 + 45) / 2
    assert "+7*******03" in text and n3 not in text
    assert "08:00" in text and "09:00" in text
    csv_out = subprocess.run([sys.executable, "-m", "appliance", "--config", str(cfg), "report", "--day",
                              "2026-11-25", "--csv"], capture_output=True, text=True, cwd=REPO, timeout=60).stdout
    assert "reception,08,2,2,1,0" in csv_out
