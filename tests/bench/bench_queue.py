"""Queue benchmark of `registratura run` over real SIP/RTP on loopback, driven by sipp (a script, not a test).

    python tests/bench/bench_queue.py            # full run: 100 callers waiting, about 4 minutes
    python tests/bench/bench_queue.py --quick    # smoke run: 10 callers, about a minute

Callers go straight into the `reception` queue (a bench-only flow: the recording notice, then the queue); while
they wait they hear music on hold and position announcements, and every call is recorded. Two receptionists
(sipp answering on their own addresses) take the calls in turn, talk for --talk seconds and hang up; sipp places
a new caller for each one answered, so about --callers wait in the queue for the whole measuring window. It
prints box CPU per call-second of queued callers, late/lost frames and the level of what probe callers hear,
memory, calls answered, abandoned calls and callbacks, each against the targets of issue 5. The building blocks
(sipp runs, the RTP probe, the box start and the measuring window) are bench_calls.py's. See
tests/bench/README.md.

Addresses on loopback: 127.0.0.1 the box and sipp's signalling; 127.0.0.2 the callers' media (pcap); 127.0.0.3
the RTP probe; 127.0.0.5 and 127.0.0.6 the receptionists' phones (SIP and media).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from bench_calls import (  # noqa: E402
    AUDIBLE_DBFS,
    BOX_IP,
    CALLER_MEDIA_IP,
    PROBE_IP,
    SOURCE_PCAP,
    Bench,
    RtpProbe,
    Sipp,
    alaw_from_pcap,
    caller_slots,
    count_msg,
    delta,
    fmt_counts,
    fmt_probe,
    fmt_rtp,
    free_port,
    log,
    ok,
    prepare_host,
    rss_mb,
    rtp_delta,
    write_audio_pcap,
)

QUEUE = "reception"
FLOW_NAME = "bench_queue"
FLOW = f"""# Written by tests/bench/bench_queue.py: every caller hears the recording notice and joins the queue.
language: ru
start: {QUEUE}
description: "Benchmark: straight into the queue"
nodes:
  {QUEUE}: {{type: queue, queue: {QUEUE}, prompts: [recording_notice]}}
"""
AGENT_IPS = ("127.0.0.5", "127.0.0.6")
MAX_WAIT_S = 3600  # queue max_wait: nobody is offered a callback while the benchmark runs
TARGETS = {"queued": 100, "cpu_ms_per_call_s": 1.5, "late_pct": 0.5}  # issue 5: 100 callers queued
MUSIC_AUDIBLE_PCT = 50.0  # the probes must hear sound in this share of their frames (speech has quiet frames)...
MUSIC_MAX_SILENCE_MS = 2000.0  # ...and never more than this much dead air at once
# sipp notes every 1 s receive timeout of the waiting loops (uac_queue.xml, uas_agent.xml) in its error log
SIPP_NOISE = ("receive timeout on message", "The following events occurred")


def children_cpu_seconds(pid: int) -> float:
    """CPU of a process's reaped children (cutime + cstime): the box's espeak-ng renders."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")


def metric(scraped: dict[str, float], name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include ``labels``."""
    want = [f'{k}="{v}"' for k, v in labels.items()]
    total = 0.0
    for key, value in scraped.items():
        if key == name or key.startswith(name + "{"):
            if all(w in key for w in want):
                total += value
    return total


def queue_log_counts(db: Path, start: float, end: float) -> dict[str, Any]:
    """Queue log events between two wall-clock times, read straight from the box's store (read-only)."""
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    except sqlite3.Error as exc:
        return {"error": str(exc)}
    try:
        events = dict(con.execute('SELECT event, COUNT(*) FROM "queue_log" WHERE at >= ? AND at < ? GROUP BY event',
                                  (start, end)).fetchall())
        by_agent = dict(con.execute('SELECT agent, COUNT(*) FROM "queue_log" WHERE event = ? AND at >= ? AND at < ? '
                                    'GROUP BY agent', ("CONNECT", start, end)).fetchall())
        waits = [w for (w,) in con.execute('SELECT wait FROM "queue_log" WHERE event = ? AND at >= ? AND at < ?',
                                           ("CONNECT", start, end)) if w is not None]
    except sqlite3.Error as exc:
        return {"error": str(exc)}
    finally:
        con.close()
    return {"events": events, "connect_by_agent": by_agent,
            "connect_mean_wait_s": sum(waits) / len(waits) if waits else None}


class QueueBench(Bench):
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.results["kind"] = "queue"
        self.flows_dir = self.work / "flows"
        self.agent_pcap = self.work / "receptionist-audio.pcap"
        self.agents: list[Sipp] = []
        self.agent_uris: list[str] = []

    # -------------------------------------------------------------------------------- box

    def _box_settings(self, base: Path) -> dict[str, Any]:
        a = self.args
        settings = super()._box_settings(base)
        settings["sip"]["allow_from"] = ["127.0.0.1/32", *(f"{ip}/32" for ip in AGENT_IPS)]
        settings["flows"] = {"dir": str(self.flows_dir), "main": FLOW_NAME}
        settings["queues"] = {QUEUE: {
            "agents": list(self.agent_uris), "strategy": "longest_idle", "max_wait": MAX_WAIT_S,
            "service_level": 20, "ring_timeout": 15, "wrapup": a.wrapup, "announce_every": a.announce_every,
            "max_missed": 3,
        }}
        return settings

    def start_agents(self) -> None:
        """The receptionists' phones: one sipp answerer per address (`uas_agent.xml`)."""
        write_audio_pcap(self.agent_pcap, caller_slots(self.args.talk + 10, alaw_from_pcap(SOURCE_PCAP), dtmf=False))
        for i, ip in enumerate(AGENT_IPS):
            sipp = Sipp(f"receptionist-{101 + i}", self.work, "uas_agent.xml", None, sip_ip=ip, media_ip=ip,
                        keys={"audio_pcap": str(self.agent_pcap), "talk_s": f"{self.args.talk:g}",
                              "ring_ms": str(int(1000 * self.args.answer_after))}, timeout_s=7200)
            self.agents.append(sipp)
            self.agent_uris.append(f"sip:{101 + i}@{ip}:{sipp.sip_port}")
        time.sleep(0.5)
        for s in self.agents:
            if s.proc.poll() is not None:
                raise SystemExit(f"a receptionist's sipp exited at once; see {s.dir / 'sipp.out'}")

    def stop_agents(self) -> None:
        for s in self.agents:
            s.stop()

    # -------------------------------------------------------------------------------- phases

    def run(self) -> None:
        a = self.args
        self.flows_dir.mkdir(parents=True, exist_ok=True)
        (self.flows_dir / f"{FLOW_NAME}.yaml").write_text(FLOW, encoding="utf-8")
        self.start_agents()
        try:
            self.start_box("box")
            self.read_stack()
            time.sleep(2)
            self.results["rss_idle_mb"] = rss_mb(self.box.proc.pid)
            self.results["box_idle_cpu_ms_per_s"] = self.idle_cpu(self.box.proc.pid, a.idle_seconds)
            log(f"stack: {self.results['stack']['log']}; idle RSS {self.results['rss_idle_mb']:.0f} MB, idle CPU "
                f"{self.results['box_idle_cpu_ms_per_s']:.1f} ms/s; receptionists {', '.join(self.agent_uris)}")
            self.phase_queue()
        finally:
            if self.box is not None:
                self.results["box_log"] = self.scan_box_log()
                self.results["box_exit_code"] = self.stop_box()
                self.queue_log_figures()
            self.stop_agents()
            self.results["agents"] = [
                {"uri": uri, "sipp": s.screen_summary(), "invites": count_msg(s.counts(), "INVITE", "Recv"),
                 "answered": count_msg(s.counts(), "200", "Sent", nth=0),
                 "bye_sent": count_msg(s.counts(), "BYE", "Sent"), "bye_received": count_msg(s.counts(), "BYE", "Recv"),
                 "errors": sipp_errors(s, 3)}
                for uri, s in zip(self.agent_uris, self.agents, strict=True)]
        self.report()

    def _plan(self, n: int) -> dict[str, Any]:
        """Callers for ``n`` waiting within the capacity, ramp and times (seconds from the first INVITE)."""
        a = self.args
        agents = len(AGENT_IPS)
        # Every call slot counts: waiting callers, the callers talking to a receptionist and the receptionists'
        # legs. sipp keeps `waiting + agents` caller calls up, so about `waiting` are in the queue.
        waiting = max(1, min(n, self.capacity - 2 * agents))
        calls = min(waiting + agents, self.capacity - agents)
        probes = 0 if a.no_probe else max(1, min(10, waiting // 10))
        probes = min(probes, max(0, calls - 1))
        load = calls - probes
        rate = a.ramp_rate or min(25.0, max(2.0, calls / 10))
        load_ramp = load / rate
        probe_at = load_ramp + 1.0  # probes join behind the first callers: nobody reaches them in the window
        ramp = probe_at + probes / 2.0
        deadline = ramp + a.settle + a.window + 2.0
        answered_max = agents * (math.ceil(deadline / max(1.0, a.talk)) + 1)
        plan = {"requested": n, "waiting_target": waiting, "calls": calls, "probes": probes, "load": load,
                "rate": rate, "probe_at_s": probe_at, "ramp_s": ramp, "window_s": a.window, "deadline_s": deadline,
                "load_calls_max": load + answered_max + 5}
        if waiting < n:
            plan["scaled"] = (f"{n} callers asked for, {waiting} waiting at most: the installed pjsua2 takes "
                              f"{self.capacity} calls, {agents} of them the receptionists' legs and {agents} the "
                              "callers talking to them")
        return plan

    def phase_queue(self) -> None:
        a = self.args
        if not self.box_alive("the queue phase"):
            return
        if self.capacity < len(AGENT_IPS) + 2:
            self.results["skipped"] = f"the installed pjsua2 takes {self.capacity} calls: too few for 2 receptionists"
            return
        plan = self._plan(a.callers)
        self.results["plan"] = plan
        if "scaled" in plan:
            log(f"scaled down: {plan['scaled']}")
        speech = alaw_from_pcap(SOURCE_PCAP)
        write_audio_pcap(self.pcap, caller_slots(plan["deadline_s"] + 10, speech, dtmf=False))
        self.results["caller_audio"] = f"20 ms PCMA speech ({SOURCE_PCAP.name} looped), no keys"
        log(f"queue: {plan['load']} sipp callers (up to {plan['load_calls_max']} placed, {plan['load']} at once) + "
            f"{plan['probes']} probe callers, ramp {plan['rate']:g}/s, window {plan['window_s']:g} s; everybody "
            f"hangs up {plan['deadline_s']:.0f} s after the first call")
        pid = self.box.proc.pid
        target = f"{BOX_IP}:{self.box.sip_port}"
        cache = self.work / "prompt-cache"
        before = self.scrape()
        probe = (RtpProbe(free_port(ip=PROBE_IP), self.work, plan["deadline_s"] + 15, True, energy=True, dtmf=False)
                 if plan["probes"] else None)
        started, started_wall = time.monotonic(), time.time()
        deadline_wall = int(math.ceil(started_wall + plan["deadline_s"]))
        timeout = plan["deadline_s"] + 120
        sipps = [Sipp("callers", self.work, "uac_queue.xml", target, sip_ip=BOX_IP, media_ip=CALLER_MEDIA_IP,
                      keys={"audio_pcap": str(self.pcap), "deadline": str(deadline_wall)}, rate=plan["rate"],
                      calls=plan["load_calls_max"], limit=plan["load"], timeout_s=timeout)]
        samples: dict[str, list[float]] = {"waiting": [], "active": [], "agent_legs": [], "longest_wait": []}
        last: dict[str, Any] = {"t": -1e9, "active": 0.0}

        def active() -> float:
            """Calls in the box (callers); scrapes at most every --scrape-every seconds (a scrape costs the box
            CPU too: the queue metrics are computed from the store)."""
            now = time.monotonic()
            if now - last["t"] >= a.scrape_every:
                s = self.scrape()
                last["t"], last["active"] = now, s.get("registratura_active_calls", 0.0)
                samples["active"].append(last["active"])
                samples["waiting"].append(metric(s, "registratura_queue_waiting_calls", queue=QUEUE))
                samples["longest_wait"].append(metric(s, "registratura_queue_longest_wait_seconds", queue=QUEUE))
                samples["agent_legs"].append(sum(metric(s, "registratura_queue_agents", queue=QUEUE, state=st)
                                                 for st in ("ringing", "busy")))
            return float(last["active"])

        m: dict[str, Any] = {}
        try:
            if probe:
                time.sleep(max(0.0, started + plan["probe_at_s"] - time.monotonic()))
                sipps.append(Sipp("probe-callers", self.work, "uac_queue_probe.xml", target, sip_ip=BOX_IP,
                                  media_ip=CALLER_MEDIA_IP,
                                  keys={"probe_ip": PROBE_IP, "probe_port": str(probe.port),
                                        "deadline": str(deadline_wall)},
                                  rate=2, calls=plan["probes"], limit=plan["probes"], timeout_s=timeout))
            time.sleep(max(0.0, started + plan["ramp_s"] + a.settle - time.monotonic()))
            children0, cached0 = children_cpu_seconds(pid), count_files(cache)
            m = self._measure_window(pid, plan, started, active, self.results["box_idle_cpu_ms_per_s"])
            children1, cached1 = children_cpu_seconds(pid), count_files(cache)
            at_end = self.scrape()
            m["children_cpu_s"] = children1 - children0
            m["new_prompts"] = cached1 - cached0
            m["window_wall"] = (m["window_ns"][0] / 1e9, m["window_ns"][1] / 1e9)
            m["during"] = {"outcomes": delta(before, at_end, "registratura_calls_total"),
                           "callbacks_scheduled": delta(before, at_end, "registratura_callbacks_scheduled_total"),
                           "refused": delta(before, at_end, "registratura_rejected_invites_total")}
            log(f"window: {mean(samples['waiting']):.1f} callers waiting, box CPU {m['cpu_s']:.2f} s "
                f"(+{m['children_cpu_s']:.2f} s children) in {m['window_s']:.0f} s")
            # Everybody hangs up at the deadline (sipp's callers watch the clock); no new callers after it.
            time.sleep(max(0.0, started + plan["deadline_s"] - 0.5 - time.monotonic()))
        finally:
            for s in sipps:
                s.stop()
        self.wait_idle(30)
        after = self.scrape()
        row: dict[str, Any] = {**m, "samples": samples,
                               "outcomes": delta(before, after, "registratura_calls_total"),
                               "refused": delta(before, after, "registratura_rejected_invites_total"),
                               "callbacks_scheduled": delta(before, after, "registratura_callbacks_scheduled_total"),
                               "callbacks": {st: int(metric(after, "registratura_callbacks", state=st))
                                             for st in ("pending", "dialing_agent", "dialing_patient", "done",
                                                        "failed")},
                               "rtp": rtp_delta(before, after),
                               "sipp": {s.dir.name: s.screen_summary() for s in sipps},
                               "sipp_counts": {s.dir.name: caller_counts(s) for s in sipps},
                               "sipp_errors": sum((sipp_errors(s) for s in sipps), [])}
        if probe:
            try:
                row["probe"] = probe.finish(*m["window_ns"]) if m else {}
            finally:
                probe.kill()
        row.pop("window_ns", None)
        row["box_alive_after"] = self.box.proc.poll() is None
        row["run_wall"] = (started_wall, time.time())
        self.results["queue"] = row
        if m:
            log(f"queue: {row['cpu_ms_per_call_s']:.2f} ms CPU per caller call-second, RSS {m['rss_max_mb']:.0f} MB, "
                f"host busy {m['host_busy_pct']:.0f}%")

    def queue_log_figures(self) -> None:
        q = self.results.get("queue") or {}
        if not q:
            return
        if "window_wall" in q:
            q["log_window"] = queue_log_counts(self.box.db_path, *q["window_wall"])
        q["log_run"] = queue_log_counts(self.box.db_path, q["run_wall"][0] - 1, q["run_wall"][1] + 60)

    # -------------------------------------------------------------------------------- report

    def report(self) -> None:  # noqa: C901 - one long printout
        r = self.results
        (self.work / "results.json").write_text(json.dumps(r, indent=2, default=str))
        a, t, p = self.args, TARGETS, print
        p()
        p("=" * 110)
        p("Registratura queue benchmark" + (" (--quick smoke run)" if a.quick else ""))
        p(f"  python {sys.executable}; {os.cpu_count()} CPUs; work dir {self.work}")
        st = r.get("stack") or {}
        p(f"  SIP stack (box log):  {st.get('log', '?')}")
        p(f"  SIP stack (metrics):  registratura_sip_call_capacity {st.get('capacity', '?')}; {st.get('info', '')}")
        plan = r.get("plan") or {}
        if plan.get("scaled"):
            p(f"  SCALED DOWN: {plan['scaled']}.")
        if r.get("skipped"):
            p(f"  skipped: {r['skipped']}")
        p(f"Resident memory (VmRSS) idle: {r.get('rss_idle_mb', 0):.0f} MB; idle box CPU "
          f"{r.get('box_idle_cpu_ms_per_s', float('nan')):.1f} ms per second (queue configured, no call)")
        q = r.get("queue") or {}
        if q and "cpu_s" in q:
            sm = q["samples"]
            waiting, legs = mean(sm["waiting"]), mean(sm["agent_legs"])
            callers = q["mean_calls"]
            win = q["window_s"]
            cpu = q["cpu_s"] + q["children_cpu_s"]
            idle = q["idle_ms_per_s"] * win / 1000
            per_queued = 1000 * cpu / (waiting * win) if waiting else float("nan")
            marg_queued = 1000 * (cpu - idle) / (waiting * win) if waiting else float("nan")
            per_leg = 1000 * cpu / ((callers + legs) * win) if callers + legs else float("nan")
            marg_leg = 1000 * (cpu - idle) / ((callers + legs) * win) if callers + legs else float("nan")
            q.update(cpu_ms_per_queued_caller_s=per_queued, marginal_ms_per_queued_caller_s=marg_queued,
                     cpu_ms_per_call_leg_s=per_leg, marginal_ms_per_call_leg_s=marg_leg)
            (self.work / "results.json").write_text(json.dumps(r, indent=2, default=str))
            p()
            p(f"Setup: callers go straight into queue '{QUEUE}' (bench flow: the recording notice, then the queue); "
              "they hear music on hold")
            p(f"  (voices/moh/calm.wav) and position/expected-wait announcements (every {a.announce_every:g} s, or "
              "when their position changes);")
            p(f"  every call is recorded. Two receptionists (sipp on {' and '.join(AGENT_IPS)}; longest_idle, wrap-up "
              f"{a.wrapup:g} s) answer after")
            p(f"  {a.answer_after:g} s of ringing, talk {a.talk:g} s and hang up; sipp places a new caller for each "
              f"one answered. max_wait {MAX_WAIT_S} s:")
            p(f"  nobody is offered a callback. Callers send {r.get('caller_audio', '?')}.")
            p(f"Window: {win:.0f} s, {a.settle:g} s after a {plan['ramp_s']:.0f} s ramp; metrics scraped every "
              f"{a.scrape_every:g} s:")
            p(f"  callers waiting in the queue: mean {waiting:.1f} (min {min(sm['waiting'], default=0):.0f}, max "
              f"{max(sm['waiting'], default=0):.0f}); callers in the box {callers:.1f}; receptionist legs {legs:.1f};")
            p(f"  longest wait at the end of the window {sm['longest_wait'][-1] if sm['longest_wait'] else 0:.0f} s; "
              f"host busy {q['host_busy_pct']:.0f}%")
            p(f"Box CPU in the window: {cpu:.2f} s = {q['cpu_s']:.2f} s the box process + {q['children_cpu_s']:.2f} s "
              f"its children (espeak-ng rendering {q['new_prompts']} new announcement texts)")
            p(f"  per queued caller-second (all box CPU charged to the waiting callers): {per_queued:.3f} ms, marginal "
              f"over idle {marg_queued:.3f} ms")
            p(f"  per call-second of every leg (waiting + connected callers + receptionist legs): {per_leg:.3f} ms, "
              f"marginal {marg_leg:.3f} ms")
            at_target = waiting >= 0.95 * t["queued"]
            not_measured = (f"not measured: {waiting:.0f} callers waiting, the target is for {t['queued']} "
                            f"(--callers {t['queued']} on a pjsua2 with enough capacity)")
            p(f"  [target <= {t['cpu_ms_per_call_s']:g} ms CPU per call-second for {t['queued']} queued callers: "
              + (f"{ok(per_queued <= t['cpu_ms_per_call_s'])} ({per_queued:.3f} ms per queued caller-second, "
                 f"{marg_queued:.3f} marginal; at {waiting:.0f} waiting)]" if at_target else not_measured + "]"))
            p(f"Resident memory (VmRSS) in the window: max {q['rss_max_mb']:.0f} MB")
            p()
            pr = q.get("probe") or {}
            en = pr.get("energy") or {}
            p("Audio heard by the probe callers (waiting behind the others all window; the bench's own RTP end, "
              "kernel timestamps):")
            p(f"  {fmt_probe(pr)}")
            if en:
                music_ok = en["audible_pct"] >= MUSIC_AUDIBLE_PCT and en["longest_silence_ms"] <= MUSIC_MAX_SILENCE_MS
                p(f"  level: {en['audible_pct']:.1f}% of {en['frames']} frames carry sound (> {AUDIBLE_DBFS:g} dBFS), "
                  f"median {en['median_dbfs']} dBFS, longest silence {en['longest_silence_ms']:.0f} ms   "
                  f"[music on hold heard, never silent (>= {MUSIC_AUDIBLE_PCT:g}% sound, no gap > "
                  f"{MUSIC_MAX_SILENCE_MS / 1000:g} s): {'YES' if music_ok else 'NO'}]")
            p(f"  box RX (pjmedia stats of every call at its end): {fmt_rtp(q['rtp'])}")
            bad_pct = 100 * (pr.get("late", 0) + pr.get("lost", 0)) / max(1, pr.get("expected", 0))
            p(f"  [target < {t['late_pct']:g}% late/lost frames with {t['queued']} queued callers: "
              + (f"{ok(bool(pr) and bad_pct < t['late_pct'])} ({bad_pct:.3f}% heard)]" if at_target
                 else not_measured + "]"))
            p()
            lw, lr = q.get("log_window") or {}, q.get("log_run") or {}
            p("Receptionists (the box's queue log, read from its store after the run):")
            p(f"  answered in the window: {lw.get('events', {}).get('CONNECT', 0)} "
              f"({fmt_counts(lw.get('connect_by_agent', {}))}); in the whole run: "
              f"{lr.get('events', {}).get('CONNECT', 0)}; mean wait of the answered "
              f"{fmt_s(lr.get('connect_mean_wait_s'))}")
            for ag in r.get("agents", []):
                p(f"  {ag['uri']}: rung {ag['invites']} times, answered {ag['answered']} (sipp), hung up "
                  f"{ag['bye_sent']} itself, {ag['bye_received']} by the box; sipp {ag['sipp']}"
                  + (f"; errors: {' | '.join(ag['errors'])[:300]}" if ag["errors"] else ""))
                missed = ag["answered"] - lr.get("connect_by_agent", {}).get(ag["uri"], 0)
                if missed > 0:
                    p(f"  ! {missed} call(s) this receptionist answered were never connected by the box (queue log "
                      "has no CONNECT for them)")
            p(f"  queue log in the window: {fmt_counts(lw.get('events', {}))}")
            p(f"  queue log, whole run: {fmt_counts(lr.get('events', {}))}")
            p("Abandoned calls and callbacks (box metrics):")
            du = q["during"]
            p(f"  in the window: calls ended {fmt_counts(du['outcomes'])}; callbacks scheduled "
              f"{fmt_counts(du['callbacks_scheduled'])}; INVITEs refused {fmt_counts(du['refused'])}")
            p(f"  whole run, including every caller hanging up at the end: calls ended {fmt_counts(q['outcomes'])}; "
              f"callbacks scheduled {fmt_counts(q['callbacks_scheduled'])};")
            p(f"  registratura_callbacks {fmt_counts(q['callbacks'])}; INVITEs refused {fmt_counts(q['refused'])}")
            for name, c in q["sipp_counts"].items():
                p(f"  sipp {name}: {c['invites']} INVITEs, {c['refused']} refused, {c['bye_received']} ended by the "
                  f"box, {c['bye_sent']} hung up; {q['sipp'].get(name)}")
            if q["sipp_errors"]:
                p(f"  sipp errors: {' | '.join(q['sipp_errors'][-3:])[:400]}")
        elif q:
            p("The queue phase did not measure (see the log above).")
        died = r.get("box_died")
        if died:
            p()
            p(f"!! THE BOX DIED (exit code {died['exit_code']}); skipped from '{died['before']}' on. Last log line:")
            p(f"   {died['last_log_line']}")
        bl = r.get("box_log")
        if bl:
            p()
            p(f"Box log: {bl['errors']} error lines, {bl['warnings']} warning lines ({bl['path']}); exit code "
              f"{r.get('box_exit_code')}" + (" (it had died)" if died else " after SIGTERM"))
            for k in bl["error_kinds"]:
                p(f"  E {k}")
            for k in bl["warning_kinds"]:
                p(f"  W {k}")
        p("=" * 110)


def caller_counts(sipp: Sipp) -> dict[str, int]:
    counts = sipp.counts()
    return {"invites": count_msg(counts, "INVITE", "Sent"), "bye_received": count_msg(counts, "BYE", "Recv"),
            "bye_sent": count_msg(counts, "BYE", "Sent"),
            "refused": count_msg(counts, "486", "Recv") + count_msg(counts, "503", "Recv")}


def sipp_errors(sipp: Sipp, n: int = 5) -> list[str]:
    """The last entries of sipp's error log without the waiting loops' timeout notes."""
    entries: list[str] = []
    for f in sipp.dir.glob("*_errors.log"):
        text = f.read_text(errors="replace")
        entries += [e.strip() for e in re.split(r"(?=\d{4}-\d\d-\d\d\t\d\d:\d\d:\d\d\.\d+\t)", text)
                    if e.strip() and not any(x in e for x in SIPP_NOISE)]
    return entries[-n:]


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def fmt_s(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} s"


def count_files(path: Path) -> int:
    return sum(1 for f in path.rglob("*") if f.is_file()) if path.is_dir() else 0


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--callers", type=int, default=None, help="callers waiting in the queue (default 100)")
    ap.add_argument("--window", type=float, default=None, help="measuring window, seconds (default 120)")
    ap.add_argument("--talk", type=float, default=None, help="receptionists' talk time per call, seconds (default 25)")
    ap.add_argument("--wrapup", type=float, default=None, help="queue wrap-up after each call, seconds (default 10)")
    ap.add_argument("--answer-after", type=float, default=1.0,
                    help="receptionists' phones ring this long before they answer, seconds (default 1)")
    ap.add_argument("--announce-every", type=float, default=30, help="queue announce_every, seconds (default 30)")
    ap.add_argument("--settle", type=float, default=None, help="seconds after the ramp before measuring (default 10)")
    ap.add_argument("--ramp-rate", type=float, default=0, help="new callers per second while ramping up")
    ap.add_argument("--scrape-every", type=float, default=5, help="seconds between metric scrapes in the window")
    ap.add_argument("--idle-seconds", type=float, default=None, help="seconds to measure the idle box's CPU")
    ap.add_argument("--max-calls", type=int, default=256, help="sip.max_calls the box asks its stack for")
    ap.add_argument("--no-probe", action="store_true", help="no RTP probe callers")
    ap.add_argument("--box-log-level", choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                    help="the box's log level (DEBUG also turns on pjsip's log; it costs CPU)")
    ap.add_argument("--quick", action="store_true", help="a smoke run: 10 callers, 15 s window")
    ap.add_argument("--workdir", help="keep everything here (default: a new temporary directory)")
    a = ap.parse_args(argv)
    if a.quick:
        a.callers = a.callers or 10
        a.window = a.window or 15
        a.talk = a.talk or 10
        a.settle = 5 if a.settle is None else a.settle
        a.idle_seconds = a.idle_seconds or 4
    a.callers = a.callers or 100
    a.window = a.window or 120
    a.talk = a.talk or 25
    a.wrapup = 10 if a.wrapup is None else a.wrapup
    a.settle = 10 if a.settle is None else a.settle
    a.idle_seconds = a.idle_seconds or 10
    return a


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if not prepare_host():
        return 2
    bench = QueueBench(args)
    try:
        bench.run()
    except KeyboardInterrupt:
        bench.stop_box()
        bench.stop_agents()
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
