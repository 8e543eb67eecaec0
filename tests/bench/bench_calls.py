"""Benchmark of `registratura run` over real SIP/RTP on loopback, driven by sipp (a script, not a test).

    python tests/bench/bench_calls.py            # full run, 10-20 minutes
    python tests/bench/bench_calls.py --quick    # about a minute: a smoke run

It prints the installed pjsua2's capacity, INVITE->200 OK latency at several call rates, box CPU per
call-minute and audio quality at several concurrency levels (each call hears the default flow's prompts and
is recorded), the same CPU figure for sipp answering the same load itself (the floor), resident memory and
time to ready, each against the targets of issue 2. See tests/bench/README.md.

Addresses on loopback, so that sipp's raw pcap sockets see as little of the other traffic as possible:
127.0.0.1 box (SIP, RTP) and sipp signalling; 127.0.0.2 sipp callers' media (pcap); 127.0.0.3 the RTP probe;
127.0.0.4 the sipp answerer's media (floor).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import resource
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SCENARIOS = HERE / "scenarios"
SOURCE_PCAP = Path("/usr/share/sip-tester/g711a.pcap")
FLOW_TIME = "2026-11-25T10:00:00"  # a working Wednesday morning: the clinic is open, callers reach the menu
BOX_IP, CALLER_MEDIA_IP, PROBE_IP, FLOOR_MEDIA_IP = "127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"
FRAME_MS = 20
LATE_MS = 40.0  # a frame later than this behind its schedule misses a 40 ms jitter buffer
MAX_HOLD_S = 90.0  # default cap of a level's hold time (--hold raises it)
# Callers press 9 ("repeat the menu" in clinic_ru) by RFC 2833 at 10 s and then every 12 s: the box keeps playing
# the main menu prompt, the menu's no-input timer never runs out and the dead-line watch sees a live caller.
DTMF_DIGIT, DTMF_FIRST_S, DTMF_EVERY_S, DTMF_FRAMES, DTMF_PT = 9, 10.0, 12.0, 5, 101
ALAW_SILENCE = b"\xd5"

TARGETS = {
    "concurrent": 200,
    "cpu_ms_per_call_s": 1.5,
    "late_pct": 0.5,
    "p95_ms_at_20": 30.0,
    "rss_mb": 150.0,
    "ready_s": 3.0,
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------- audio / pcap


def alaw_from_pcap(path: Path) -> bytes:
    """The A-law payload of every PCMA RTP packet in a pcap (Ethernet or Linux cooked capture)."""
    data = path.read_bytes()
    magic = struct.unpack("<I", data[:4])[0]
    endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    link_len = {1: 14, 113: 16}.get(linktype)
    if link_len is None:
        raise SystemExit(f"{path}: unsupported pcap link type {linktype}")
    out = bytearray()
    off = 24
    while off + 16 <= len(data):
        incl = struct.unpack(endian + "IIII", data[off:off + 16])[2]
        pkt = data[off + 16:off + 16 + incl]
        off += 16 + incl
        ip = pkt[link_len:]
        if not ip or ip[0] >> 4 != 4 or ip[9] != 17:
            continue
        rtp = ip[(ip[0] & 0x0F) * 4 + 8:]
        if len(rtp) > 12 and rtp[0] >> 6 == 2 and rtp[1] & 0x7F == 8:
            cc = rtp[0] & 0x0F
            out += rtp[12 + 4 * cc:]
    if not out:
        raise SystemExit(f"{path}: no PCMA RTP packets found")
    return bytes(out)


def _ip_checksum(header: bytes) -> int:
    total = sum(struct.unpack("!10H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


Packet = tuple[int, bool, int, int, bytes]  # payload type, marker, seq offset, timestamp offset, payload


def caller_slots(seconds: float, speech: bytes | None, dtmf: bool = True) -> list[list[Packet]]:
    """What a bench caller sends, per 20 ms slot: PCMA (A-law silence, or ``speech`` looped) and, at
    DTMF_FIRST_S and every DTMF_EVERY_S, the digit DTMF_DIGIT as RFC 2833 events (100 ms, end sent 3 times);
    ``dtmf=False``: audio only."""
    size = 8000 * FRAME_MS // 1000
    per_s = 1000 // FRAME_MS
    slots: list[list[Packet]] = []
    seq = ts = 0
    next_dtmf = int(DTMF_FIRST_S * per_s) if dtmf else -1
    while len(slots) < int(math.ceil(seconds * per_s)):
        if len(slots) == next_dtmf:
            for k in range(DTMF_FRAMES):
                end = k == DTMF_FRAMES - 1
                event = struct.pack("!BBH", DTMF_DIGIT, (0x80 if end else 0) | 10, size * (k + 1))
                slots.append([(DTMF_PT, k == 0, seq, ts, event)] * (3 if end else 1))
                seq += 1
            ts += size * DTMF_FRAMES
            next_dtmf += int(DTMF_EVERY_S * per_s)
            continue
        if speech:
            start = (len(slots) * size) % (len(speech) - size)
            payload = speech[start:start + size]
        else:
            payload = ALAW_SILENCE * size
        slots.append([(8, not slots, seq, ts, payload)])
        seq += 1
        ts += size
    return slots


def write_audio_pcap(path: Path, slots: list[list[Packet]]) -> None:
    """The caller's RTP as a pcap for sipp's play_pcap_audio (sipp rewrites addresses and ports)."""
    src, dst = socket.inet_aton(CALLER_MEDIA_IP), socket.inet_aton(BOX_IP)
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    n = 0
    for i, slot in enumerate(slots):
        usec = i * FRAME_MS * 1000
        for pt, marker, seq, ts, payload in slot:
            rtp = struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, (1000 + seq) & 0xFFFF,
                              (8000 + ts) & 0xFFFFFFFF, 0x5EB0CA11) + payload
            udp = struct.pack("!HHHH", 6000, 6000, 8 + len(rtp), 0) + rtp
            ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), n & 0xFFFF, 0, 64, 17, 0, src, dst)
            ip = ip[:10] + struct.pack("!H", _ip_checksum(ip)) + ip[12:]
            frame = b"\x00" * 12 + b"\x08\x00" + ip + udp
            out.append(struct.pack("<IIII", usec // 1_000_000, usec % 1_000_000, len(frame), len(frame)) + frame)
            n += 1
    path.write_bytes(b"".join(out))


# ----------------------------------------------------------------------------------------- the RTP probe
# A child process (this script with --rtp-probe): it is the media end of the probe calls. It sends each call
# 20 ms PCMA frames from the same address the SDP names (so the box never switches its RTP elsewhere), and
# timestamps in the kernel (SO_TIMESTAMPNS) every RTP packet the box sends: what the caller would hear.

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
SO_RXQ_OVFL = 40


@dataclass
class _Stream:
    addr: tuple[str, int]
    ssrc: int
    seq: int = 0  # base sequence number and timestamp of what we send
    ts: int = 0
    slot: int = 0  # next 20 ms slot of caller_slots() to send
    last_rx: float = 0.0
    # (arrival_ns, seq, ts, payload type), plus the payload when the probe measures energy
    rx: list[tuple[Any, ...]] = field(default_factory=list)


def rtp_probe_main(ip: str, port: int, seconds: float, speech_pcap: str, options: frozenset[str] = frozenset()) -> None:
    """``options``: "no-dtmf" (send audio only), "energy" (also report the level of what the box sent)."""
    slots = caller_slots(seconds, alaw_from_pcap(Path(speech_pcap)) if speech_pcap != "-" else None,
                         dtmf="no-dtmf" not in options)
    keep_payload = "energy" in options
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RXQ_OVFL, 1)
    except OSError:
        pass
    sock.bind((ip, port))
    rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # absorbs the box's RTCP (no ICMP back)
    rtcp.bind((ip, port + 1))
    streams: dict[tuple[str, int], _Stream] = {}
    lock = threading.Lock()
    stop = threading.Event()
    overflow = [0]

    def receive() -> None:
        while not stop.is_set():
            r, _, _ = select.select([sock, rtcp], [], [], 0.2)
            if rtcp in r:
                rtcp.recv(2048)
            if sock not in r:
                continue
            data, anc, _flags, addr = sock.recvmsg(2048, socket.CMSG_SPACE(16) + socket.CMSG_SPACE(4))
            now_ns = time.time_ns()
            for level, kind, value in anc:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= 16:
                    sec, nsec = struct.unpack("@qq", value[:16])
                    now_ns = sec * 1_000_000_000 + nsec
                elif level == socket.SOL_SOCKET and kind == SO_RXQ_OVFL and len(value) >= 4:
                    overflow[0] = struct.unpack("@I", value[:4])[0]
            if len(data) < 12 or data[0] >> 6 != 2:
                continue
            seq, ts = struct.unpack("!HI", data[2:8])
            with lock:
                st = streams.get(addr)
                if st is None:
                    st = streams[addr] = _Stream(addr, 0x10000000 + len(streams))
                st.last_rx = time.monotonic()
                if keep_payload:
                    cc = data[0] & 0x0F
                    st.rx.append((now_ns, seq, ts, data[1] & 0x7F, data[12 + 4 * cc:]))
                else:
                    st.rx.append((now_ns, seq, ts, data[1] & 0x7F))

    def send() -> None:
        tick = time.monotonic()
        while not stop.is_set():
            tick += FRAME_MS / 1000
            delay = tick - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            elif delay < -0.2:
                tick = time.monotonic()  # we were starved: do not burst to catch up
            now = time.monotonic()
            with lock:
                live = [s for s in streams.values() if now - s.last_rx < 1.0]
            for st in live:
                if st.slot >= len(slots):
                    continue
                for pt, marker, seq, ts, payload in slots[st.slot]:
                    pkt = struct.pack("!BBHII", 0x80, pt | (0x80 if marker else 0), (st.seq + seq) & 0xFFFF,
                                      (st.ts + ts) & 0xFFFFFFFF, st.ssrc) + payload
                    try:
                        sock.sendto(pkt, st.addr)
                    except OSError:
                        pass
                st.slot += 1

    threads = [threading.Thread(target=receive, daemon=True), threading.Thread(target=send, daemon=True)]
    for t in threads:
        t.start()
    print("ready", flush=True)
    for line in sys.stdin:  # "stop <window start ns> <window end ns>"
        parts = line.split()
        if parts and parts[0] == "stop":
            start_ns, end_ns = int(parts[1]), int(parts[2])
            stop.set()
            for t in threads:
                t.join(2)
            with lock:
                result = analyse_streams([s.rx for s in streams.values()], start_ns, end_ns)
                if keep_payload:
                    result["energy"] = analyse_energy([s.rx for s in streams.values()], start_ns, end_ns)
            result["receiver_overflow_drops"] = overflow[0]
            print(json.dumps(result), flush=True)
            return


def _unwrap(values: list[int], bits: int) -> list[int]:
    out, base, prev, span = [], 0, None, 1 << bits
    for v in values:
        if prev is not None:
            d = v - prev
            if d < -span // 2:
                base += span
            elif d > span // 2:
                base -= span
        out.append(v + base)
        prev = v
    return out


def analyse_streams(streams: list[list[tuple[Any, ...]]], start_ns: int, end_ns: int) -> dict[str, Any]:
    """Frames the box sent to the probe, in the window: lost = sequence gaps; late = arrived more than
    LATE_MS after its RTP-timestamp schedule, measured from the earliest-arriving frame of the preceding
    second (what a receiver with a 40 ms jitter buffer would miss); also inter-arrival gaps > 40 ms."""
    expected = received = lost = dup = late = gaps = 0
    max_late_ms = max_gap_ms = 0.0
    lateness_all: list[float] = []
    used = 0
    for rx in streams:
        audio = [p for p in rx if p[3] != 101]
        if len(audio) < 10:
            continue
        arr = [p[0] for p in audio]
        seqs = _unwrap([p[1] for p in audio], 16)
        tss = _unwrap([p[2] for p in audio], 32)
        idx = [i for i, a in enumerate(arr) if start_ns <= a <= end_ns]
        if len(idx) < 10:
            continue
        used += 1
        win = [seqs[i] for i in idx]
        uniq = set(win)
        expected += max(win) - min(win) + 1
        received += len(uniq)
        dup += len(win) - len(uniq)
        # relative delay of every frame: arrival minus its place on the RTP clock (8 kHz)
        rel = [arr[i] - tss[i] * 125_000 for i in range(len(audio))]
        window: deque[tuple[int, int]] = deque()  # (arrival, rel) with increasing rel: the running minimum
        for i in range(len(audio)):
            while window and window[-1][1] >= rel[i]:
                window.pop()
            window.append((arr[i], rel[i]))
            while window[0][0] < arr[i] - 1_000_000_000:
                window.popleft()
            if start_ns <= arr[i] <= end_ns:
                lateness = (rel[i] - window[0][1]) / 1e6
                lateness_all.append(lateness)
                if lateness > LATE_MS:
                    late += 1
                max_late_ms = max(max_late_ms, lateness)
                if i > 0:
                    gap = (arr[i] - arr[i - 1]) / 1e6
                    max_gap_ms = max(max_gap_ms, gap)
                    if gap > LATE_MS:
                        gaps += 1
        lost += (max(win) - min(win) + 1) - len(uniq)
    lateness_all.sort()
    p99 = lateness_all[int(0.99 * (len(lateness_all) - 1))] if lateness_all else 0.0
    return {"streams": used, "expected": expected, "received": received, "lost": lost, "duplicates": dup,
            "late": late, "gaps_over_40ms": gaps, "max_late_ms": round(max_late_ms, 1),
            "p99_late_ms": round(p99, 1), "max_gap_ms": round(max_gap_ms, 1)}


def _alaw_magnitude(code: int) -> int:
    """|linear| of one G.711 A-law code (16-bit scale)."""
    a = code ^ 0x55
    t = (a & 0x0F) << 4
    seg = (a & 0x70) >> 4
    if seg == 0:
        return t + 8
    return (t + 0x108) << (seg - 1)


_ALAW_SQUARES = [_alaw_magnitude(c) ** 2 for c in range(256)]
AUDIBLE_DBFS = -50.0  # a 20 ms frame louder than this carries sound (A-law silence is -72 dBFS)


def frame_dbfs(alaw: bytes) -> float:
    if not alaw:
        return -120.0
    mean_sq = sum(map(_ALAW_SQUARES.__getitem__, alaw)) / len(alaw)
    return 10 * math.log10(max(mean_sq, 1e-12) / 32768.0 ** 2)


def analyse_energy(streams: list[list[tuple[Any, ...]]], start_ns: int, end_ns: int) -> dict[str, Any]:
    """The level of the PCMA frames the box sent in the window: how many carried sound (> AUDIBLE_DBFS),
    the median level, and the longest run of silent frames in any stream (what a caller hears as dead air)."""
    frames = audible = 0
    levels: list[float] = []
    longest_silence_ms = 0.0
    for rx in streams:
        run = 0
        for p in rx:
            if p[3] != 8 or len(p) < 5 or not start_ns <= p[0] <= end_ns:
                continue
            level = frame_dbfs(p[4])
            frames += 1
            levels.append(level)
            if level > AUDIBLE_DBFS:
                audible += 1
                run = 0
            else:
                run += 1
                longest_silence_ms = max(longest_silence_ms, run * FRAME_MS)
    levels.sort()
    return {"frames": frames, "audible": audible, "audible_pct": round(100 * audible / frames, 2) if frames else 0.0,
            "median_dbfs": round(levels[len(levels) // 2], 1) if levels else None,
            "longest_silence_ms": longest_silence_ms}


class RtpProbe:
    """The probe child process, seen from the benchmark. ``energy``: also report the level of what the box
    sent (analyse_energy); ``dtmf=False``: the probe sends audio only."""

    def __init__(self, port: int, workdir: Path, seconds: float, speech: bool, *, energy: bool = False,
                 dtmf: bool = True) -> None:
        self.port = port
        options = [opt for opt, on in (("energy", energy), ("no-dtmf", not dtmf)) if on]
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--rtp-probe", PROBE_IP, str(port), str(seconds),
             str(SOURCE_PCAP) if speech else "-", *options],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(workdir / "probe.err", "ab"),  # noqa: SIM115
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"the RTP probe did not start: {line!r}")

    def finish(self, start_ns: int, end_ns: int) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"stop {start_ns} {end_ns}\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        self.proc.wait(10)
        return json.loads(line) if line.strip() else {}

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


# ----------------------------------------------------------------------------------------- SIP on the wire


class SipWireTap:
    """INVITE -> 200 OK times of one SIP port as seen on the loopback interface, kernel-timestamped.

    sipp's own rtd uses CLOCK_MONOTONIC_COARSE (one jiffy, 4 ms here) and includes sipp's loop; this reads the
    packets themselves (AF_PACKET on lo with a BPF filter for the port, so no RTP reaches Python)."""

    def __init__(self, port: int) -> None:
        import ctypes

        self.port = port
        self.invites: dict[str, int] = {}
        self.oks: dict[str, int] = {}
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0800))
        prog = [  # IPv4, UDP, not a fragment, source or destination port == port
            (0x30, 0, 0, 9), (0x15, 0, 8, 17), (0x28, 0, 0, 6), (0x45, 6, 0, 0x1FFF), (0xB1, 0, 0, 0),
            (0x48, 0, 0, 0), (0x15, 2, 0, port), (0x48, 0, 0, 2), (0x15, 0, 1, port), (0x06, 0, 0, 65535),
            (0x06, 0, 0, 0),
        ]
        self._filter = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *i) for i in prog))
        fprog = struct.pack("HL", len(prog), ctypes.addressof(self._filter))
        self.sock.setsockopt(socket.SOL_SOCKET, 26, fprog)  # SO_ATTACH_FILTER
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind(("lo", 0x0800))
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            r, _, _ = select.select([self.sock], [], [], 0.2)
            if not r:
                continue
            data, anc, _f, _a = self.sock.recvmsg(65535, socket.CMSG_SPACE(16))
            t = time.time_ns()
            for level, kind, value in anc:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= 16:
                    sec, nsec = struct.unpack("@qq", value[:16])
                    t = sec * 1_000_000_000 + nsec
            if len(data) < 28:
                continue
            payload = data[(data[0] & 0x0F) * 4 + 8:]
            head, _, rest = payload.partition(b"\r\n")
            m = re.search(rb"^(?:Call-ID|i)\s*:\s*(\S+)", rest, re.M | re.I)
            if not m:
                continue
            call_id = m.group(1).decode(errors="replace")
            if head.startswith(b"INVITE "):
                self.invites.setdefault(call_id, t)
            elif head.startswith(b"SIP/2.0 200") and re.search(rb"^CSeq\s*:\s*\d+\s+INVITE", rest, re.M | re.I):
                self.oks.setdefault(call_id, t)

    def close(self) -> list[float]:
        """Stop; the INVITE -> 200 OK latencies in ms."""
        time.sleep(0.3)
        self.stop.set()
        self.thread.join(2)
        self.sock.close()
        return [(t - self.invites[c]) / 1e6 for c, t in self.oks.items() if c in self.invites]


# ----------------------------------------------------------------------------------------- processes


def free_port(kind: int = socket.SOCK_DGRAM, ip: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((ip, 0))
        return int(s.getsockname()[1])


def free_port_pair_range(ip: str, start: int, count: int = 4) -> int:
    """A base port with ``count`` consecutive free UDP ports on ``ip`` (sipp's -mp uses mp and mp+2)."""
    port = start
    while port < 65000:
        try:
            socks = []
            for p in range(port, port + count):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind((ip, p))
            return port
        except OSError:
            port += count
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free media ports")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def host_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole host, from /proc/stat."""
    parts = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = parts[3] + parts[4]
    return float(sum(parts) - idle), float(sum(parts))


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = (len(values) - 1) * pct / 100
    lo, hi = math.floor(k), math.ceil(k)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


class Sipp:
    """One sipp run in its own directory (its trace files land there)."""

    _instances = 0

    def __init__(self, name: str, workdir: Path, scenario: str, target: str | None, *, sip_ip: str, media_ip: str,
                 keys: dict[str, str], rate: float = 0, calls: int = 0, limit: int = 0, hold_ms: int = 0,
                 rtt: bool = False, timeout_s: float = 600) -> None:
        self.dir = workdir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.sip_port = free_port(ip=sip_ip)
        Sipp._instances += 1
        self.media_port = free_port_pair_range(media_ip, 20000 + 40 * (Sipp._instances % 1000))
        cmd = ["sipp"]
        if target:
            cmd.append(target)
        cmd += ["-sf", str(SCENARIOS / scenario), "-i", sip_ip, "-p", str(self.sip_port), "-mi", media_ip,
                "-mp", str(self.media_port), "-s", "clinic", "-nostdin", "-aa", "-trace_err", "-trace_screen",
                "-trace_counts", "-timeout", f"{int(timeout_s)}s", "-max_recv_loops", "10000"]
        for k, v in keys.items():
            cmd += ["-key", k, v]
        if target:
            cmd += ["-r", f"{rate:g}", "-m", str(calls), "-l", str(limit or calls), "-d", str(hold_ms)]
        if rtt:
            cmd += ["-trace_rtt", "-rtt_freq", "1"]
        self.cmd = cmd
        self.out = open(self.dir / "sipp.out", "wb")  # noqa: SIM115
        self.started = time.monotonic()
        self.proc = subprocess.Popen(cmd, cwd=self.dir, stdout=self.out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            return -1

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGUSR1)  # sipp: quit softly, let calls end
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.out.close()

    def rtts(self) -> list[float]:
        out: list[float] = []
        for f in self.dir.glob("*_rtt.csv"):
            for line in f.read_text().splitlines()[1:]:
                parts = line.split(";")
                if len(parts) >= 3 and parts[2].strip() == "1":
                    try:
                        out.append(float(parts[1]))
                    except ValueError:
                        pass
        return out

    def counts(self) -> dict[str, int]:
        """The last line of sipp's message counts (-trace_counts): {'<n>_<msg>_<column>': value}."""
        files = list(self.dir.glob("*_counts.csv"))
        if not files:
            return {}
        lines = [ln for ln in files[0].read_text().splitlines() if ln.strip()]
        if len(lines) < 2:
            return {}
        head, last = lines[0].split(";"), lines[-1].split(";")
        out = {}
        for k, v in zip(head, last, strict=False):
            try:
                out[k] = int(v)
            except ValueError:
                pass
        return out

    def screen_summary(self) -> dict[str, int]:
        """Successful / failed calls from sipp's final screen (-trace_screen)."""
        res: dict[str, int] = {}
        for f in self.dir.glob("*_screen.log"):
            text = f.read_text(errors="replace")
            for key, label in (("ok", "Successful call"), ("failed", "Failed call")):
                m = re.findall(label + r"\s+\|\s+\d+\s+\|\s+(\d+)", text)
                if m:
                    res[key] = int(m[-1])
        return res

    def errors_tail(self, n: int = 5) -> list[str]:
        lines: list[str] = []
        for f in self.dir.glob("*_errors.log"):
            lines += [ln for ln in f.read_text(errors="replace").splitlines() if ln.strip()]
        return lines[-n:]


def count_msg(counts: dict[str, int], what: str, column: str, nth: int | None = None) -> int:
    """sipp counts for message columns like '4_486_Recv': all of them summed, or the ``nth`` (0-based)."""
    keys = [k for k in counts if re.fullmatch(rf"\d+_{re.escape(what)}_{column}", k)]
    keys.sort(key=lambda k: int(k.split("_", 1)[0]))
    if nth is not None:
        return counts[keys[nth]] if nth < len(keys) else 0
    return sum(counts[k] for k in keys)


# ----------------------------------------------------------------------------------------- the benchmark


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = Path(args.workdir or tempfile.mkdtemp(prefix="registratura-bench-"))
        self.work.mkdir(parents=True, exist_ok=True)
        self.results: dict[str, Any] = {"quick": args.quick, "python": sys.executable}
        self.box: Any = None
        self.capacity = 0
        self.pcap = self.work / "caller-audio.pcap"

    # -------------------------------------------------------------------------------- box

    def _box_settings(self, base: Path) -> dict[str, Any]:
        from appliance.boxproc import demo_settings

        rtp_base = 40000
        ports = max(1000, 4 * self.args.max_calls)
        settings = demo_settings(base, rtp_base=rtp_base, sip={"max_calls": self.args.max_calls,
                                                               "rtp_ports": f"{rtp_base}-{rtp_base + ports}"})
        settings["voices"]["cache"] = str(self.work / "prompt-cache")
        if self.args.box_log_level:
            settings["log"] = {"level": self.args.box_log_level}
        return settings

    def start_box(self, name: str) -> tuple[float, float]:
        """Start a box; return (seconds from spawn to its ready line, the box's own 'after start' figure)."""
        from appliance.boxproc import BoxProcess

        base = self.work / name
        box = BoxProcess(base, self._box_settings(base), env={"REGISTRATURA_FLOW_TIME": FLOW_TIME})
        spawned = time.time()
        box.start(timeout=120)
        self.box = box
        text = box.log()
        m = re.search(r"^(\S+ \S+) .* ready: .*\((\d+(?:\.\d+)?) s after start\)", text, re.M)
        if not m:
            return float("nan"), float("nan")
        stamp = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        return stamp - spawned, float(m.group(2))

    def stop_box(self) -> int:
        if self.box is None or self.box.proc is None:
            return 0
        return self.box.stop()

    def scrape(self) -> dict[str, float]:
        try:
            return self.box.scrape()
        except OSError:
            return {}

    # -------------------------------------------------------------------------------- phases

    def run(self) -> None:
        a = self.args
        speech = alaw_from_pcap(SOURCE_PCAP) if a.caller_audio == "speech" else None
        longest = max(MAX_HOLD_S, a.hold or 0) + 5
        write_audio_pcap(self.pcap, caller_slots(longest, speech))
        self.results["caller_audio"] = (
            f"20 ms PCMA {'speech from ' + str(SOURCE_PCAP) if speech else 'silence'}, digit {DTMF_DIGIT} by "
            f"RFC 2833 at {DTMF_FIRST_S:g} s and every {DTMF_EVERY_S:g} s")
        log(f"work dir {self.work}; caller audio ({self.pcap.name}): {self.results['caller_audio']}")
        self.phase_start()
        try:
            if "latency" in a.phases:
                self.phase_latency()
            if "levels" in a.phases:
                self.phase_levels()
            if "overload" in a.phases:
                self.phase_overload()
        finally:
            self.results["box_log"] = self.scan_box_log()
            code = self.stop_box()
            self.results["box_exit_code"] = code
        if "floor" in a.phases:
            self.phase_floor()
        self.report()

    def read_stack(self) -> None:
        """The running box's SIP stack and call capacity (its log line and metrics) into results["stack"]."""
        s = self.scrape()
        text = self.box.log()
        stack = re.search(r"SIP stack: (.*)$", text, re.M)
        self.capacity = int(s.get("registratura_sip_call_capacity", 0))
        info = next((k for k in s if k.startswith("registratura_sip_stack_info")), "")
        self.results["stack"] = {"capacity": self.capacity, "info": info,
                                 "log": stack.group(1).strip() if stack else "?"}

    def phase_start(self) -> None:
        cold, cold_own = self.start_box("box-cold")
        self.read_stack()
        self.stop_box()
        warm, warm_own = self.start_box("box")  # prompts cached now, as on a box that has run before
        time.sleep(3)
        self.results["ready"] = {"cold_spawn_s": cold, "cold_box_s": cold_own,
                                 "warm_spawn_s": warm, "warm_box_s": warm_own}
        self.results["rss_idle_mb"] = rss_mb(self.box.proc.pid)
        self.results["box_idle_cpu_ms_per_s"] = self.idle_cpu(self.box.proc.pid, self.args.idle_seconds)
        log(f"stack: {self.results['stack']['log']}; ready {warm:.2f} s (cold {cold:.2f} s); "
            f"idle RSS {self.results['rss_idle_mb']:.0f} MB")

    def phase_latency(self) -> None:
        a = self.args
        out = []
        for rate in a.rates:
            if not self.box_alive(f"latency {rate:g}/s"):
                break
            hold = min(a.latency_hold, 0.75 * self.capacity / rate - 0.1)
            if hold < 0.5:
                out.append({"rate": rate, "skipped": f"capacity {self.capacity}: even a 0.5 s call at {rate:g}/s "
                                                    f"would need {math.ceil(rate * 0.6)} calls at once"})
                continue
            calls = max(10, int(rate * a.latency_seconds))
            before = self.scrape()
            try:
                wire: SipWireTap | None = SipWireTap(self.box.sip_port)
            except (OSError, PermissionError) as exc:  # AF_PACKET needs CAP_NET_RAW
                log(f"no wire-level SIP timing: {exc}")
                wire = None
            t0 = time.monotonic()
            sipp = Sipp(f"latency-{rate:g}", self.work, "uac_load.xml", f"{BOX_IP}:{self.box.sip_port}",
                        sip_ip=BOX_IP, media_ip=CALLER_MEDIA_IP, keys={"audio_pcap": str(self.pcap)},
                        rate=rate, calls=calls, limit=self.capacity, hold_ms=int(hold * 1000), rtt=True,
                        timeout_s=calls / rate + hold + 120)
            code = sipp.wait(calls / rate + hold + 150)
            elapsed = time.monotonic() - t0
            self.wait_idle()
            after = self.scrape()
            rtts = sipp.rtts()
            wire_ms = wire.close() if wire else []
            counts = sipp.counts()
            row = {"rate": rate, "hold_s": round(hold, 2), "calls": calls, "concurrency": round(rate * hold, 1),
                   "answered": len(rtts), "p50_ms": percentile(rtts, 50), "p95_ms": percentile(rtts, 95),
                   "p99_ms": percentile(rtts, 99), "max_ms": max(rtts) if rtts else float("nan"),
                   "wire_n": len(wire_ms), "wire_p50_ms": percentile(wire_ms, 50),
                   "wire_p95_ms": percentile(wire_ms, 95), "wire_p99_ms": percentile(wire_ms, 99),
                   "wire_max_ms": max(wire_ms) if wire_ms else float("nan"),
                   "achieved_rate": round(calls / max(elapsed - hold, 0.1), 1),
                   "refused": count_msg(counts, "486", "Recv") + count_msg(counts, "503", "Recv"),
                   "sipp_exit": code, "sipp": sipp.screen_summary(), "sipp_errors": sipp.errors_tail(),
                   "outcomes": delta(before, after, "registratura_calls_total")}
            row["box_alive_after"] = self.box.proc.poll() is None
            out.append(row)
            log(f"latency {rate:g}/s: hold {hold:.2f} s, {len(rtts)}/{calls} answered, p50 {row['p50_ms']:.1f} ms "
                f"p95 {row['p95_ms']:.1f} ms (sipp); wire p50 {row['wire_p50_ms']:.2f} ms "
                f"p95 {row['wire_p95_ms']:.2f} ms")
        self.results["latency"] = out

    def _levels(self) -> tuple[list[int], list[dict[str, Any]]]:
        run, skipped = [], []
        for n in self.args.levels:
            if n <= self.capacity:
                run.append(n)
            else:
                skipped.append({"level": n, "why": f"above the installed pjsua2's capacity ({self.capacity})"})
        if not run and self.capacity > 0:
            run.append(self.capacity)  # show at least the figures the installed stack can give
        return run, skipped

    def _plan(self, n: int) -> dict[str, Any]:
        a = self.args
        probes = 0 if a.no_probe else max(1, min(10, n // 10))
        rate = a.ramp_rate or min(25.0, max(2.0, n / 10))
        ramp = n / rate
        hold = ramp + a.settle + a.window + 3
        if a.hold:
            hold = max(hold, a.hold)
        hold = min(hold, max(MAX_HOLD_S, a.hold or 0))
        return {"n": n, "probes": probes, "rate": rate, "ramp_s": ramp, "hold_s": hold,
                "window_s": min(a.window, hold - ramp - a.settle - 2)}

    def _measure_window(self, pid: int, plan: dict[str, Any], started: float, active: Any,
                        idle_ms_per_s: float) -> dict[str, Any]:
        begin = started + plan["ramp_s"] + self.args.settle
        time.sleep(max(0.0, begin - time.monotonic()))
        c0, t0, h0, w0 = cpu_seconds(pid), time.monotonic(), host_busy(), time.time_ns()
        samples, rss = [], []
        end = t0 + plan["window_s"]
        while time.monotonic() < end:
            samples.append(active())
            rss.append(rss_mb(pid))
            time.sleep(min(1.0, max(0.0, end - time.monotonic())))
        c1, t1, h1, w1 = cpu_seconds(pid), time.monotonic(), host_busy(), time.time_ns()
        mean_calls = sum(samples) / len(samples) if samples else 0
        call_s = mean_calls * (t1 - t0)
        cpu = c1 - c0
        return {"cpu_s": cpu, "window_s": t1 - t0, "mean_calls": mean_calls, "min_calls": min(samples or [0]),
                "cpu_ms_per_call_s": 1000 * cpu / call_s if call_s else float("nan"),
                "cpu_s_per_call_min": 60 * cpu / call_s if call_s else float("nan"),
                "idle_ms_per_s": idle_ms_per_s,
                "marginal_ms_per_call_s": (1000 * cpu - idle_ms_per_s * (t1 - t0)) / call_s if call_s else float("nan"),
                "rss_max_mb": max(rss or [0]),
                "host_busy_pct": 100 * (h1[0] - h0[0]) / max(1.0, h1[1] - h0[1]),
                "window_ns": (w0, w1)}

    def phase_levels(self) -> None:
        run, skipped = self._levels()
        self.results["levels_skipped"] = skipped
        out = []
        for n in run:
            if not self.box_alive(f"level {n}"):
                break
            plan = self._plan(n)
            log(f"level {n}: {plan['n'] - plan['probes']} sipp callers + {plan['probes']} probe callers, "
                f"ramp {plan['rate']:g}/s, hold {plan['hold_s']:.0f} s, window {plan['window_s']:.0f} s")
            before = self.scrape()
            probe = (RtpProbe(free_port(ip=PROBE_IP), self.work, plan["hold_s"] + 5,
                              self.args.caller_audio == "speech") if plan["probes"] else None)
            target = f"{BOX_IP}:{self.box.sip_port}"
            hold_ms = int(plan["hold_s"] * 1000)
            timeout = plan["hold_s"] + plan["ramp_s"] + 120
            started = time.monotonic()
            load = Sipp(f"level-{n}", self.work, "uac_load.xml", target, sip_ip=BOX_IP, media_ip=CALLER_MEDIA_IP,
                        keys={"audio_pcap": str(self.pcap)}, rate=plan["rate"] * (n - plan["probes"]) / n,
                        calls=n - plan["probes"], hold_ms=hold_ms, timeout_s=timeout)
            sipps = [load]
            if probe:
                sipps.append(Sipp(f"level-{n}-probe", self.work, "uac_probe.xml", target, sip_ip=BOX_IP,
                                  media_ip=CALLER_MEDIA_IP, keys={"probe_ip": PROBE_IP, "probe_port": str(probe.port)},
                                  rate=plan["rate"] * plan["probes"] / n, calls=plan["probes"], hold_ms=hold_ms,
                                  timeout_s=timeout))

            def active() -> float:
                return self.scrape().get("registratura_active_calls", 0.0)

            try:
                m = self._measure_window(self.box.proc.pid, plan, started, active,
                                         self.results["box_idle_cpu_ms_per_s"])
                for s in sipps:
                    s.wait(timeout + 30)
            finally:
                for s in sipps:
                    s.stop()
            self.wait_idle()
            after = self.scrape()
            row = {**plan, **m, "outcomes": delta(before, after, "registratura_calls_total"),
                   "refused": delta(before, after, "registratura_rejected_invites_total"),
                   "sipp": [s.screen_summary() for s in sipps],
                   "sipp_errors": sum((s.errors_tail() for s in sipps), []),
                   "rtp": rtp_delta(before, after)}
            if probe:
                try:
                    row["probe"] = probe.finish(*m["window_ns"])
                finally:
                    probe.kill()
            row.pop("window_ns")
            row["box_alive_after"] = self.box.proc.poll() is None
            out.append(row)
            log(f"level {n}: {m['mean_calls']:.1f} calls in the window, {m['cpu_ms_per_call_s']:.2f} ms CPU per "
                f"call-second, RSS {m['rss_max_mb']:.0f} MB, host busy {m['host_busy_pct']:.0f}%")
        self.results["levels"] = out

    def phase_overload(self) -> None:
        """Capacity + a few calls at once: the extra INVITEs must get a clean busy and be counted."""
        extra = 8
        if not self.box_alive("overload"):
            return
        if self.args.quick and self.capacity > 32:
            self.results["overload_skipped"] = (f"--quick: {self.capacity + extra} calls take a minute; run "
                                                "--phases overload (or the full benchmark)")
            return
        n = self.capacity + extra
        rate = min(25.0, max(2.0, n / 10))
        hold = n / rate + 4
        before = self.scrape()
        log(f"overload: {n} calls at {rate:g}/s held {hold:.0f} s against capacity {self.capacity}")
        sipp = Sipp("overload", self.work, "uac_load.xml", f"{BOX_IP}:{self.box.sip_port}", sip_ip=BOX_IP,
                    media_ip=CALLER_MEDIA_IP, keys={"audio_pcap": str(self.pcap)}, rate=rate, calls=n,
                    hold_ms=int(hold * 1000), timeout_s=hold + n / rate + 90)
        code = sipp.wait(hold + n / rate + 120)
        sipp.stop()
        self.wait_idle()
        after = self.scrape()
        counts = sipp.counts()
        self.results["overload"] = {
            "calls": n, "capacity": self.capacity, "rate": rate, "hold_s": hold, "sipp_exit": code,
            "answered_200": count_msg(counts, "200", "Recv", nth=0), "busy_486": count_msg(counts, "486", "Recv"),
            "unavailable_503": count_msg(counts, "503", "Recv"),
            "rejected_metric": delta(before, after, "registratura_rejected_invites_total"),
            "outcomes": delta(before, after, "registratura_calls_total"), "sipp": sipp.screen_summary(),
            "sipp_errors": sipp.errors_tail(), "box_alive": self.box.proc.poll() is None,
        }
        if not self.results["overload"]["box_alive"]:
            self.box_alive("nothing: it died during the overload check")

    def phase_floor(self) -> None:
        run, _ = self._levels()
        out = []
        for n in run:
            plan = self._plan(n)
            plan["probes"] = 0
            log(f"floor {n}: sipp answers {n} calls itself, hold {plan['hold_s']:.0f} s")
            timeout = plan["hold_s"] + plan["ramp_s"] + 120
            uas = Sipp(f"floor-{n}-uas", self.work, "uas_answer.xml", None, sip_ip=FLOOR_MEDIA_IP,
                       media_ip=FLOOR_MEDIA_IP, keys={"audio_pcap": str(self.pcap)}, timeout_s=timeout + 60)
            time.sleep(0.5)
            uas_idle = self.idle_cpu(uas.pid, min(5.0, self.args.idle_seconds))
            started = time.monotonic()
            uac = Sipp(f"floor-{n}-uac", self.work, "uac_load.xml", f"{FLOOR_MEDIA_IP}:{uas.sip_port}",
                       sip_ip=FLOOR_MEDIA_IP, media_ip=CALLER_MEDIA_IP, keys={"audio_pcap": str(self.pcap)},
                       rate=plan["rate"], calls=n, hold_ms=int(plan["hold_s"] * 1000), timeout_s=timeout)
            try:
                m = self._measure_window(uas.pid, plan, started, lambda n=n: float(n), uas_idle)
                uac.wait(timeout + 30)
            finally:
                uac.stop()
                uas.stop()
            m.pop("window_ns")
            out.append({**plan, **m, "sipp": uac.screen_summary(), "sipp_errors": uac.errors_tail()})
            log(f"floor {n}: {m['cpu_ms_per_call_s']:.3f} ms CPU per call-second")
        self.results["floor"] = out

    # -------------------------------------------------------------------------------- helpers

    def box_alive(self, before: str) -> bool:
        """False (and the reason noted once) if the box process has died."""
        if self.box is None or self.box.proc is None or self.box.proc.poll() is None:
            return True
        if "box_died" not in self.results:
            last = [ln for ln in self.box.log().splitlines() if ln.strip()][-1:]
            self.results["box_died"] = {"before": before, "exit_code": self.box.proc.returncode,
                                        "last_log_line": last[0] if last else ""}
            log(f"the box has died (exit code {self.box.proc.returncode}); skipping {before} and the rest: "
                f"{last[0] if last else ''}")
        return False

    @staticmethod
    def idle_cpu(pid: int, seconds: float) -> float:
        """CPU ms per second of a process doing nothing (its fixed cost: clocks, polling)."""
        c0, t0 = cpu_seconds(pid), time.monotonic()
        time.sleep(seconds)
        return 1000 * (cpu_seconds(pid) - c0) / (time.monotonic() - t0)

    def wait_idle(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.scrape().get("registratura_active_calls", 0.0) == 0:
                time.sleep(0.3)  # the last counters move a moment after the call ends
                return
            time.sleep(0.3)

    def scan_box_log(self) -> dict[str, Any]:
        text = self.box.log() if self.box else ""
        lines = text.splitlines()
        errors = [ln for ln in lines if " ERROR " in ln or "Traceback" in ln or " CRITICAL " in ln]
        warnings = [ln for ln in lines if " WARNING " in ln]

        def distinct(items: list[str]) -> list[str]:
            seen: dict[str, int] = {}
            for ln in items:
                key = re.sub(r"\d+", "N", ln.split(" ", 3)[-1])[:160]
                seen[key] = seen.get(key, 0) + 1
            return [f"{v}x {k}" for k, v in sorted(seen.items(), key=lambda kv: -kv[1])[:8]]

        return {"errors": len(errors), "warnings": len(warnings), "error_kinds": distinct(errors),
                "warning_kinds": distinct(warnings), "path": str(self.box.log_path) if self.box else ""}

    # -------------------------------------------------------------------------------- report

    def report(self) -> None:
        r = self.results
        (self.work / "results.json").write_text(json.dumps(r, indent=2, default=str))
        t = TARGETS
        p = print
        p()
        p("=" * 110)
        p("Registratura benchmark" + (" (--quick smoke run)" if self.args.quick else ""))
        p(f"  python {sys.executable}; {os.cpu_count()} CPUs; work dir {self.work}")
        st = r["stack"]
        p(f"  SIP stack (box log):  {st['log']}")
        p(f"  SIP stack (metrics):  registratura_sip_call_capacity {st['capacity']}; {st['info']}")
        p()
        rd = r["ready"]
        p(f"Ready to take calls: {rd['warm_spawn_s']:.2f} s from process spawn to the 'ready' log line "
          f"(the box's own figure: {rd['warm_box_s']:.2f} s after start), prompts cached   "
          f"[target <= {t['ready_s']:g} s: {ok(rd['warm_spawn_s'] <= t['ready_s'])}]")
        p(f"  first start ever, rendering all prompts: {rd['cold_spawn_s']:.2f} s (box's own {rd['cold_box_s']:.2f} s)")
        tops = r.get("levels") or []
        line = f"Resident memory (VmRSS): idle {r['rss_idle_mb']:.0f} MB"
        measured = [x for x in tops if x["mean_calls"] > 0]
        if measured:
            top_rss = max(x["rss_max_mb"] for x in measured)
            line += (f", at {measured[-1]['n']} calls {measured[-1]['rss_max_mb']:.0f} MB (max {top_rss:.0f} MB)   "
                     f"[target <= {t['rss_mb']:g} MB without speech models: {ok(top_rss <= t['rss_mb'])}]")
        p(line)
        p(f"Idle box CPU: {r['box_idle_cpu_ms_per_s']:.1f} ms per second (clocks and polling with no call)")
        if "latency" in r:
            p()
            p("INVITE -> 200 OK latency (calls play the prompts and are recorded; caller audio from pcap)")
            p("  sipp: rtd 1 from sipp's trace_rtt (CLOCK_MONOTONIC_COARSE: 4 ms steps, sipp's own loop included)")
            p("  wire: INVITE and its 200 OK on lo, kernel timestamps (AF_PACKET, first copy of each)")
            p(f"  {'rate/s':>6} {'hold s':>6} {'~conc':>5} {'calls':>5} {'200OK':>5} | {'sipp p50':>8} {'p95':>5} "
              f"{'p99':>5} {'max':>5} | {'wire p50':>8} {'p95':>6} {'p99':>6} {'max':>6} | {'refused':>7} outcomes")
            for row in r["latency"]:
                if "skipped" in row:
                    p(f"  {row['rate']:>6g} skipped: {row['skipped']}")
                    continue
                p(f"  {row['rate']:>6g} {row['hold_s']:>6.2f} {row['concurrency']:>5.0f} {row['calls']:>5} "
                  f"{row['answered']:>5} | {row['p50_ms']:>8.0f} {row['p95_ms']:>5.0f} {row['p99_ms']:>5.0f} "
                  f"{row['max_ms']:>5.0f} | {row['wire_p50_ms']:>8.2f} {row['wire_p95_ms']:>6.2f} "
                  f"{row['wire_p99_ms']:>6.2f} {row['wire_max_ms']:>6.2f} | {row['refused']:>7} "
                  f"{fmt_counts(row['outcomes'])}{'' if row.get('box_alive_after', True) else '  BOX DIED'}")
            at20 = next((x for x in r["latency"] if x["rate"] == 20 and "skipped" not in x), None)
            if at20:
                worst = max(at20["p95_ms"], at20["wire_p95_ms"] if at20["wire_n"] else 0)
                p(f"  [target p95 <= {t['p95_ms_at_20']:g} ms at 20 calls/s: {ok(worst <= t['p95_ms_at_20'])}]")
            else:
                p("  [target p95 <= 30 ms at 20 calls/s: not measured]")
        if tops or r.get("levels_skipped"):
            p()
            p("Concurrent calls: each hears the default clinic_ru flow (greeting, recording notice, main menu) and "
              "is recorded;")
            p(f"  callers send (pcap): {r['caller_audio']}.")
            p("  CPU = utime+stime from /proc/<pid>/stat over a steady window after the ramp,")
            p("  per call-second (active calls sampled every second); 'marginal' subtracts the idle CPU. Floor = "
              "sipp answering")
            p("  the same calls itself and playing the pcap back (uas_answer.xml), same window.")
            p(f"  {'calls':>5} {'in win':>6} {'win s':>5} {'CPU s':>6} {'ms/call-s':>9} {'marginal':>8} "
              f"{'s/call-min':>10} | {'floor':>6} {'marginal':>8} | {'ratio':>5} {'marg.':>5} | {'RSS MB':>6} "
              f"{'host%':>5}")
            floors = {x["n"]: x for x in r.get("floor", [])}
            for row in tops:
                fl = floors.get(row["n"])
                f_ms = fl["cpu_ms_per_call_s"] if fl else float("nan")
                f_mg = fl["marginal_ms_per_call_s"] if fl else float("nan")
                p(f"  {row['n']:>5} {row['mean_calls']:>6.1f} {row['window_s']:>5.0f} {row['cpu_s']:>6.2f} "
                  f"{row['cpu_ms_per_call_s']:>9.3f} {row['marginal_ms_per_call_s']:>8.3f} "
                  f"{row['cpu_s_per_call_min']:>10.4f} | {f_ms:>6.3f} {f_mg:>8.3f} | "
                  f"{safe_div(row['cpu_ms_per_call_s'], f_ms):>5.1f} "
                  f"{safe_div(row['marginal_ms_per_call_s'], f_mg):>5.1f}"
                  f" | {row['rss_max_mb']:>6.0f} {row['host_busy_pct']:>5.0f}"
                  f"{'' if row.get('box_alive_after', True) else '  BOX DIED'}")
            for sk in r.get("levels_skipped", []):
                p(f"  {sk['level']:>5} skipped: {sk['why']}")
            p()
            p("  Audio: 'heard' = RTP the box sent to the probe calls (bench's own RTP end, kernel timestamps); "
              "lost = sequence")
            p(f"  gaps; late = more than {LATE_MS:g} ms behind its RTP-timestamp schedule, counted from the earliest "
              "frame of the")
            p("  preceding second (a 40 ms jitter buffer would have played a gap); gaps = inter-arrival > 40 ms.")
            p("  'box RX' = pjmedia stream stats of every call at its end (registratura_rtp_*, "
              "registratura_jitter_buffer_frames_total):")
            p("  RTP lost/discarded of packets received; jitter buffer lost/discarded/empty in codec frames "
              "('empty' includes")
            p("  start-up and the 100 ms of every key press, when callers send events instead of audio).")
            for row in tops:
                p(f"  {row['n']:>5} heard:  {fmt_probe(row.get('probe'))}")
                p(f"  {'':>5} box RX: {fmt_rtp(row['rtp'])}")
            for row in tops:
                bad = {k: v for k, v in row["outcomes"].items() if k != "caller_hangup"}
                fails = [x.get("failed", 0) for x in row["sipp"]]
                if bad or any(fails) or row["refused"] or row["sipp_errors"]:
                    errs = " | ".join(row["sipp_errors"][-2:])
                    p(f"  ! level {row['n']}: outcomes {fmt_counts(row['outcomes'])}; refused "
                      f"{fmt_counts(row['refused'])}; sipp failed calls {fails}; sipp errors: {errs[:300]}")
            big = [x for x in tops if x["n"] >= t["concurrent"]]
            if big:
                b = big[-1]
                pr = b.get("probe") or {}
                bad_pct = 100 * (pr.get("late", 0) + pr.get("lost", 0)) / max(1, pr.get("expected", 0))
                cpu_ok = b["cpu_ms_per_call_s"] <= t["cpu_ms_per_call_s"] and b["mean_calls"] >= 0.98 * t["concurrent"]
                p(f"  [target >= {t['concurrent']} calls at <= {t['cpu_ms_per_call_s']:g} ms CPU per call-second: "
                  f"{ok(cpu_ok)} ({b['cpu_ms_per_call_s']:.3f} ms, {b['marginal_ms_per_call_s']:.3f} marginal, at "
                  f"{b['mean_calls']:.0f} calls)]")
                p(f"  [target < {t['late_pct']:g}% late/lost frames at {b['n']} calls: "
                  f"{ok(bool(pr) and bad_pct < t['late_pct'])} ({bad_pct:.3f}% heard)]")
            else:
                p(f"  [targets at >= {t['concurrent']} concurrent calls: not measured (capacity {self.capacity})]")
        if r.get("floor") and not tops:
            p()
            p("Floor only (no box level was measured): sipp answering the calls itself, CPU per call-second")
            for fl in r["floor"]:
                p(f"  {fl['n']:>5} calls: {fl['cpu_ms_per_call_s']:.3f} ms "
                  f"({fl['marginal_ms_per_call_s']:.3f} marginal)")
        ov = r.get("overload")
        if r.get("overload_skipped"):
            p()
            p(f"Over capacity: skipped ({r['overload_skipped']})")
        if ov:
            p()
            p(f"Over capacity: {ov['calls']} calls against capacity {ov['capacity']} ({ov['rate']:g}/s, each held "
              f"{ov['hold_s']:.0f} s): {ov['answered_200']} answered, {ov['busy_486']} got 486 Busy, "
              f"{ov['unavailable_503']} got 503;")
            p(f"  the box counted rejected INVITEs: {fmt_counts(ov['rejected_metric'])}; outcomes "
              f"{fmt_counts(ov['outcomes'])}; sipp {ov['sipp']}; box still running after it: {ov['box_alive']}")
        bl = r["box_log"]
        died = r.get("box_died")
        if died:
            p()
            p(f"!! THE BOX DIED (exit code {died['exit_code']}); skipped from '{died['before']}' on. Last log line:")
            p(f"   {died['last_log_line']}")
        p()
        p(f"Box log: {bl['errors']} error lines, {bl['warnings']} warning lines ({bl['path']}); exit code "
          f"{r['box_exit_code']}" + (" (it had died)" if died else " after SIGTERM"))
        for k in bl["error_kinds"]:
            p(f"  E {k}")
        for k in bl["warning_kinds"]:
            p(f"  W {k}")
        p("=" * 110)


def delta(before: dict[str, float], after: dict[str, float], prefix: str) -> dict[str, int]:
    out = {}
    for k, v in after.items():
        if k.startswith(prefix + "{"):
            d = v - before.get(k, 0.0)
            if d:
                label = re.search(r'="([^"]*)"', k)
                out[label.group(1) if label else k] = int(d)
    return out


def rtp_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, int]:
    out = {}
    for prefix, name in (("registratura_rtp_packets_total", "pkt"), ("registratura_rtp_rx_issues_total", "rx"),
                         ("registratura_jitter_buffer_frames_total", "jb")):
        for k, v in delta(before, after, prefix).items():
            out[f"{name}_{k}"] = v
    return out


def safe_div(a: float, b: float) -> float:
    return a / b if b > 0 and not math.isnan(a) else float("nan")  # an idle-sized floor says nothing


def ok(flag: bool) -> str:
    return "MET" if flag else "NOT MET"


def fmt_counts(d: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(d.items())) or "-"


def fmt_probe(pr: dict[str, Any] | None) -> str:
    if not pr:
        return "no probe"
    exp = max(1, pr.get("expected", 0))
    return (f"{pr['streams']} calls, {pr['expected']} frames: late {pr['late']} ({100 * pr['late'] / exp:.3f}%), "
            f"lost {pr['lost']} ({100 * pr['lost'] / exp:.3f}%), gaps>40ms {pr['gaps_over_40ms']}, "
            f"max gap {pr['max_gap_ms']:.0f} ms, p99 lateness {pr['p99_late_ms']:.1f} ms")


def fmt_rtp(d: dict[str, int]) -> str:
    if not d:
        return "no RTP stats (the box died, or it has no registratura_rtp_* metrics)"
    rx = max(1, d.get("pkt_rx", 0))
    return (f"rx {d.get('pkt_rx', 0)} pkts: lost {d.get('rx_lost', 0)} ({100 * d.get('rx_lost', 0) / rx:.3f}%), "
            f"discarded {d.get('rx_discarded', 0)}; jbuf lost {d.get('jb_lost', 0)}, discarded "
            f"{d.get('jb_discarded', 0)}, empty {d.get('jb_empty', 0)}")


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--levels", type=lambda s: [int(x) for x in s.split(",")], default=None,
                    help="concurrent-call levels (default 10,50,100,150,200)")
    ap.add_argument("--rates", type=lambda s: [float(x) for x in s.split(",")], default=None,
                    help="call rates for INVITE->200 latency (default 5,20,50)")
    ap.add_argument("--hold", type=float, default=0, help="minimum hold time of the level calls, seconds")
    ap.add_argument("--quick", action="store_true", help="a ~1 minute smoke run")
    ap.add_argument("--window", type=float, default=None, help="steady measuring window per level, seconds")
    ap.add_argument("--settle", type=float, default=None, help="seconds after the ramp before measuring")
    ap.add_argument("--ramp-rate", type=float, default=0, help="calls/s while ramping a level up")
    ap.add_argument("--latency-seconds", type=float, default=None, help="seconds of calls per latency rate")
    ap.add_argument("--latency-hold", type=float, default=3.0, help="hold time of the latency calls, seconds")
    ap.add_argument("--caller-audio", choices=("silence", "speech"), default="silence",
                    help="what callers say between their key presses (speech makes the box's VAD barge in)")
    ap.add_argument("--max-calls", type=int, default=256, help="sip.max_calls the box asks its stack for")
    ap.add_argument("--phases", type=lambda s: set(s.split(",")), default={"latency", "levels", "overload", "floor"},
                    help="which phases to run (default latency,levels,overload,floor)")
    ap.add_argument("--idle-seconds", type=float, default=None, help="seconds to measure the idle box's CPU")
    ap.add_argument("--no-probe", action="store_true", help="no RTP probe calls")
    ap.add_argument("--box-log-level", choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                    help="the box's log level (DEBUG also turns on pjsip's log; it costs CPU)")
    ap.add_argument("--workdir", help="keep everything here (default: a new temporary directory)")
    a = ap.parse_args(argv)
    if a.quick:
        a.levels = a.levels or [10]
        a.rates = a.rates or [5, 20]
        a.window = a.window or 5
        a.settle = 1 if a.settle is None else a.settle
        a.latency_seconds = a.latency_seconds or 5
        a.idle_seconds = a.idle_seconds or 4
    a.levels = a.levels or [10, 50, 100, 150, 200]
    a.rates = a.rates or [5, 20, 50]
    a.window = a.window or 30
    a.settle = 5 if a.settle is None else a.settle
    a.latency_seconds = a.latency_seconds or 20
    a.idle_seconds = a.idle_seconds or 10
    return a


def prepare_host() -> bool:
    """sipp and its pcap present (else say so), and enough file descriptors for hundreds of calls."""
    if not shutil.which("sipp"):
        print("sipp (Debian sip-tester) is not installed", file=sys.stderr)
        return False
    if not SOURCE_PCAP.exists():
        print(f"{SOURCE_PCAP} is missing (Debian sip-tester ships it)", file=sys.stderr)
        return False
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 65536) if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return True


def main(argv: list[str]) -> int:
    if argv[:1] == ["--rtp-probe"]:
        rtp_probe_main(argv[1], int(argv[2]), float(argv[3]), argv[4], frozenset(argv[5:]))
        return 0
    args = parse_args(argv)
    if not prepare_host():
        return 2
    bench = Bench(args)
    try:
        bench.run()
    except KeyboardInterrupt:
        bench.stop_box()
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
