"""Every Prometheus metric of the box, declared once, on a registry of our own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

REGISTRY = CollectorRegistry(auto_describe=True)

CALLS = Counter(
    "registratura_calls",
    "Calls finished, by outcome (completed, caller_hangup, silent, transferred, failed, interrupted, ...)",
    ["outcome"],
    registry=REGISTRY,
)
CALLS_STARTED = Counter(
    "registratura_calls_started", "Calls from allowed sources that reached the box", registry=REGISTRY
)
ACTIVE_CALLS = Gauge("registratura_active_calls", "Calls in progress", registry=REGISTRY)
REJECTED_INVITES = Counter(
    "registratura_rejected_invites",
    "INVITEs refused before any flow saw them, by reason (not_allowed, capacity, invalid, shutting_down)",
    ["reason"],
    registry=REGISTRY,
)
CALL_DURATION = Histogram(
    "registratura_call_duration_seconds",
    "Duration of answered calls from answer to hang-up",
    buckets=(5, 10, 20, 30, 45, 60, 90, 120, 180, 300, 600, 1200),
    registry=REGISTRY,
)
TRANSFERS = Counter(
    "registratura_transfers",
    "Flow transfers to configured targets, by target and result (connected, busy, no_answer, failed, not_configured)",
    ["target", "result"],
    registry=REGISTRY,
)
SPEECH_DECODE = Histogram(
    "registratura_speech_decode_seconds",
    "Time from the end of a caller's utterance (VAD) to its transcript",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
    registry=REGISTRY,
)
DTMF_DIGITS = Counter(
    "registratura_dtmf_digits", "DTMF digits received, by method", ["method"], registry=REGISTRY
)
SIP_CALL_CAPACITY = Gauge(
    "registratura_sip_call_capacity",
    "Concurrent calls the installed pjsua2 build really allows (4 on the PyPI wheel)",
    registry=REGISTRY,
)
SIP_REGISTERED = Gauge(
    "registratura_sip_registered",
    "1 while the box is registered with the trunk's registrar (sip.registration), else 0",
    registry=REGISTRY,
)
SIP_REGISTRATION_STATUS = Gauge(
    "registratura_sip_registration_status",
    "SIP status code of the last registration attempt (200 ok, 401/403 bad credentials, 408 no answer)",
    registry=REGISTRY,
)
MEDIA_PORTS = Gauge(
    "registratura_sip_media_ports",
    "Conference bridge ports in use (a call, its prompt player and recorder each take one) and the most there are",
    ["kind"], registry=REGISTRY,
)
STACK_INFO = Info("registratura_sip_stack", "The SIP stack the box runs on", registry=REGISTRY)
INTERRUPTED_CALLS = Counter(
    "registratura_interrupted_calls_recovered",
    "Calls found open at start-up (the box had stopped mid-call) and closed as interrupted",
    registry=REGISTRY,
)
FLOW_RELOADS = Counter(
    "registratura_flow_reloads", "Flow reloads by result (ok, rejected)", ["result"], registry=REGISTRY
)
UP_SINCE = Gauge("registratura_start_time_seconds", "Unix time the service started", registry=REGISTRY)
# Audio quality of ended calls, from pjmedia's stream statistics (read when a call's audio stream ends).
RTP_PACKETS = Counter(
    "registratura_rtp_packets", "RTP packets of ended calls' audio streams, by direction (rx, tx)",
    ["direction"], registry=REGISTRY,
)
RTP_RX_ISSUES = Counter(
    "registratura_rtp_rx_issues",
    "Received RTP packets of ended calls that were lost, discarded, duplicated or reordered (pjmedia RTCP stats)",
    ["kind"], registry=REGISTRY,
)
JITTER_BUFFER_FRAMES = Counter(
    "registratura_jitter_buffer_frames",
    "Jitter buffer events of ended calls, in codec frames: lost (missing at playout), discarded (arrived too late, "
    "overflow, or dropped to shrink the delay), empty (a frame was due and none had arrived, start-up included)",
    ["event"], registry=REGISTRY,
)
SCREENED_CALLS = Counter(
    "registratura_screened_calls",
    "Calls refused by screening before any flow (blocked, auto_block, withheld), each heard a short notice",
    ["reason"], registry=REGISTRY,
)
QUEUE_WAITING = Gauge("registratura_queue_waiting_calls", "Callers waiting in the queue now", ["queue"],
                      registry=REGISTRY)
QUEUE_LONGEST_WAIT = Gauge("registratura_queue_longest_wait_seconds", "How long the first caller in line has waited",
                           ["queue"], registry=REGISTRY)
QUEUE_AGENTS = Gauge("registratura_queue_agents", "Receptionists by state (idle, ringing, busy, wrapup, paused, "
                     "offline)", ["queue", "state"], registry=REGISTRY)
CALLBACKS_SCHEDULED = Counter("registratura_callbacks_scheduled", "Callback requests stored, by reason (offer, "
                              "abandon)", ["reason"], registry=REGISTRY)
THREATS = Counter("registratura_threats", "Calls marked a threat by a receptionist (*0): recording on legal hold",
                  registry=REGISTRY)
ABUSE_MARKS = Counter("registratura_abuse_marks", "Callers marked abusive by a receptionist (*9)", registry=REGISTRY)
RECORDING_DISK_FULL = Gauge("registratura_recording_disk_full", "1 while calls are not recorded because the data disk "
                            "is full (below recording.min_free_mb after deleting old recordings), else 0",
                            registry=REGISTRY)
DATA_FREE_BYTES = Gauge("registratura_data_free_bytes", "Free space on the data disk (database and recordings)",
                        registry=REGISTRY)
