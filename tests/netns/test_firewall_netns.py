"""The box as an appliance stands: in its own network namespace behind the rendered nftables rules.

A gateway and a stranger sit in two other namespaces over veth pairs. The stranger floods INVITEs (and
OPTIONS) while the gateway's call completes: nothing of the stranger's reaches the box (the nft counters
move, the box's refused-INVITE metric stays 0), a gateway over its SIP rate is cut to the limit, and metrics
answer the management LAN only. Root only; skipped where namespaces or nftables do not work.
"""

from __future__ import annotations

import audioop  # noqa: PLC0415 - deprecated, still in 3.11: A-law to linear in one line
import csv
import os
import subprocess
import sys
import time
import wave
from pathlib import Path

import numpy as np
import pytest
import yaml

from appliance.boxproc import REPO, demo_settings
from appliance.security.firewall import render
from appliance.settings import load_settings
from tests.bench.bench_calls import alaw_from_pcap
from tests.helpers import best_match, rms, wait_for_call_end
from tests.netns.netlab import NetLab, unavailable

pytestmark = pytest.mark.sip
SCENARIOS = REPO / "tests" / "sip" / "scenarios"
SENT_PCAP = Path("/usr/share/sip-tester/g711a.pcap")  # what uac_call.xml plays
BOX_GW, GW, BOX_ST, ST = "10.77.1.1", "10.77.1.2", "10.77.2.1", "10.77.2.2"
WHY_NOT = unavailable()


def _counts(base: Path, scenario: str) -> dict[str, int]:
    """The last line of sipp's -trace_counts file: messages per scenario step."""
    [path] = base.glob(f"{Path(scenario).stem}_*_counts.csv")
    rows = list(csv.reader(path.open(), delimiter=";"))
    return {k: int(v) for k, v in zip(rows[0], rows[-1], strict=False) if v.isdigit()}


def _received(counts: dict[str, int]) -> dict[str, int]:
    """{'403': n, ...}: responses received, by status code."""
    return {k.split("_")[1]: v for k, v in counts.items() if k.endswith("_Recv") and v}


def _sipp(lab: NetLab, ns: str, local: str, scenario: str, base: Path, *extra: str, timeout: float = 40):
    base.mkdir(exist_ok=True)
    cmd = ["sipp", f"{BOX_GW}:5060", "-sf", str(SCENARIOS / scenario), "-i", local, "-mi", local, "-p", "0",
           "-s", "clinic", "-nostdin", "-trace_counts", *extra]
    return lab.run(ns, cmd, timeout=timeout, cwd=base)


def _caller_channel(path: Path) -> tuple[int, np.ndarray]:
    """The left channel of a stereo recording: what the caller (here the gateway) sent."""
    with wave.open(str(path), "rb") as w:
        assert w.getnchannels() == 2 and w.getsampwidth() == 2, "expected a stereo recording"
        frames = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(float)
        return w.getframerate(), frames[0::2]


def _sent_audio_match(caller: np.ndarray, rate: int) -> float:
    """Median correlation of half-second pieces of the speech sipp sent (uac_call.xml plays its pcap for 3 s
    before the digit) with the recording: one concealed packet spoils a piece, garbled audio spoils them all."""
    sent = np.frombuffer(audioop.alaw2lin(alaw_from_pcap(SENT_PCAP), 2), dtype=np.int16).astype(float)
    half = rate // 2
    pieces = [sent[i: i + half] for i in range(half, 3 * rate - half + 1, half)]
    return float(np.median([best_match(caller, p)[0] for p in pieces if rms(p) > 300]))


def _scrape(lab: NetLab, ns: str, url: str, timeout: float = 3) -> dict[str, float]:
    code = ("import sys, urllib.request; "
            f"sys.stdout.write(urllib.request.urlopen({url!r}, timeout={timeout}).read().decode())")
    out = lab.run(ns, [sys.executable, "-c", code], timeout=timeout + 10)
    if out.returncode:
        raise ConnectionError(out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "no answer")
    values = {}
    for line in out.stdout.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            values[key] = float(value)
    return values


@pytest.mark.skipif(bool(WHY_NOT), reason=WHY_NOT or "-")
def test_stranger_flood_never_reaches_the_box_behind_nftables(tmp_path):
    lab = NetLab(f"rg{os.getpid() % 100000}")
    box_proc = None
    log = tmp_path / "box.log"
    try:
        box_ns, gw_ns, st_ns = lab.ns("box"), lab.ns("gw"), lab.ns("st")
        lab.link(box_ns, f"{BOX_GW}/24", gw_ns, f"{GW}/24")
        lab.link(box_ns, f"{BOX_ST}/24", st_ns, f"{ST}/24")
        lab.route(st_ns, "10.77.1.0/24", BOX_ST)  # the stranger aims at the address the box listens on

        settings = demo_settings(tmp_path, rtp_base=20000, main="clinic_ru")
        settings["sip"].update({"listen": f"{BOX_GW}:5060", "allow_from": [f"{GW}/32"]})
        settings["metrics"] = {"listen": f"{BOX_GW}:9310", "allow_from": ["10.77.1.0/24"]}
        settings["queues"] = {"reception": {"agents": ["sip:101@10.77.1.21"]}}
        settings["recording"] = {**settings.get("recording", {}), "format": "stereo"}  # the caller on the left
        config = tmp_path / "registratura.yaml"
        config.write_text(yaml.safe_dump(settings, allow_unicode=True), encoding="utf-8")
        rules = tmp_path / "registratura.nft"
        rules.write_text(render(load_settings(config)))
        loaded = lab.run(box_ns, ["nft", "-f", str(rules)])
        assert loaded.returncode == 0, loaded.stderr

        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
        env.update(PYTHONUNBUFFERED="1", REGISTRATURA_FLOW_TIME="2026-11-25T10:00:00")
        with log.open("ab") as out:
            box_proc = lab.popen(box_ns, [sys.executable, "-m", "appliance", "--config", str(config), "run"],
                                 stdout=out, stderr=subprocess.STDOUT, env=env, cwd=str(REPO))
        deadline = time.monotonic() + 120
        while " ready: listening" not in log.read_text(errors="replace"):
            assert box_proc.poll() is None, log.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "the box did not start"
            time.sleep(0.1)
        metrics_url = f"http://{BOX_GW}:9310/metrics"

        # The stranger floods INVITEs at 2,000/s for 10 s while the gateway makes a call with audio.
        flood_dir = tmp_path / "flood"
        flood_dir.mkdir()
        flood = lab.popen(st_ns, ["sipp", f"{BOX_GW}:5060", "-sf", str(SCENARIOS / "flood_invite.xml"),
                                  "-i", ST, "-mi", ST, "-p", "0", "-s", "clinic", "-r", "2000", "-m", "20000",
                                  "-l", "100000", "-nr", "-nd", "-recv_timeout", "1000", "-nostdin",
                                  "-trace_counts", "-trace_stat"],
                          cwd=flood_dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)
        call = _sipp(lab, gw_ns, GW, "uac_call.xml", tmp_path, "-m", "1", "-timeout", "30s")
        assert call.returncode == 0, call.stdout[-2000:] + call.stderr[-2000:]
        flood.wait(40)
        sent = _counts(flood_dir, "flood_invite.xml")["0_INVITE_Sent"]
        print(f"stranger sent {sent} INVITEs; answers: {_received(_counts(flood_dir, 'flood_invite.xml'))}")
        assert sent >= 5000, f"sipp sent only {sent} INVITEs"
        assert _received(_counts(flood_dir, "flood_invite.xml")) == {}  # not even a 100 Trying

        # ...and OPTIONS, which pjsua itself would answer 200 to anyone: silence here as well.
        options = _sipp(lab, st_ns, ST, "flood_options.xml", tmp_path / "st_options", "-r", "500", "-m", "500",
                        "-nr", "-nd", "-recv_timeout", "500")
        assert _received(_counts(tmp_path / "st_options", "flood_options.xml")) == {}, options.stdout[-1000:]

        [record] = wait_for_call_end(tmp_path / "data" / "registratura.db")
        assert record["caller"] == "+79161112233" and record["outcome"] == "caller_hangup"
        rate, audio = _caller_channel(Path(record["recording"]))
        assert len(audio) > rate * 4 and rms(audio) > 100  # the gateway's RTP got in
        clean = _sent_audio_match(audio, rate)
        print(f"the gateway's audio as the box recorded it: median correlation {clean:.3f} with what sipp sent")
        assert clean > 0.9, "the gateway's audio reached the box garbled during the flood"

        counters = lab.nft_counters(box_ns)
        print(f"nft counters: {counters}")
        assert counters["sip_refused"] >= sent + 500
        assert counters["sip_rate_limited"] == 0  # the gateway's call stayed far below its limit
        metrics = _scrape(lab, gw_ns, metrics_url)
        assert metrics.get('registratura_rejected_invites_total{reason="not_allowed"}', 0.0) == 0.0
        assert metrics["registratura_calls_started_total"] == 1.0

        # Metrics answer the management LAN only.
        with pytest.raises(ConnectionError):
            _scrape(lab, st_ns, metrics_url, timeout=1)
        assert lab.nft_counters(box_ns)["mgmt_refused"] > 0

        # A peer flooding beyond its SIP rate (50/s, burst 100) is cut to it; only it is hurt.
        gw_flood = _sipp(lab, gw_ns, GW, "flood_options.xml", tmp_path / "gw_options", "-r", "400", "-m", "800",
                         "-nr", "-nd", "-recv_timeout", "500")
        answered = _received(_counts(tmp_path / "gw_options", "flood_options.xml")).get("200", 0)
        limited = lab.nft_counters(box_ns)["sip_rate_limited"]
        print(f"gateway OPTIONS at 400/s for 2 s: {answered} answered, {limited} dropped by the rate limit")
        assert 100 <= answered <= 300, gw_flood.stdout[-1000:]
        assert limited >= 400
        assert box_proc.poll() is None
    finally:
        if box_proc is not None and box_proc.poll() is None:
            box_proc.terminate()
            try:
                box_proc.wait(30)
            except subprocess.TimeoutExpired:
                box_proc.kill()
                box_proc.wait(5)
        lab.close()
