"""Helpers shared by the SIP tests: read the box's store, compare audio."""

from __future__ import annotations

import math
import time
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from appliance.store import Store


def calls_in(db: Path) -> list[dict[str, Any]]:
    store = Store(db, migrate=False)
    try:
        return store.recent_calls(limit=50)
    finally:
        store.close()


def wait_for_call_end(db: Path, count: int = 1, timeout: float = 15.0) -> list[dict[str, Any]]:
    """The box writes the end of a call a moment after the BYE; wait until ``count`` calls are closed."""
    deadline = time.monotonic() + timeout
    calls: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        if db.exists():
            calls = calls_in(db)
            if len(calls) >= count and all(c["outcome"] for c in calls[:count]):
                return calls
        time.sleep(0.2)
    import sqlite3

    raw = sqlite3.connect(db).execute('SELECT id, outcome FROM "call"').fetchall()
    raise AssertionError(f"calls not closed within {timeout} s: raw {raw}; {calls}")


def write_tone(path: Path, hz: float = 440.0, seconds: float = 4.0, amplitude: int = 6000) -> Path:
    """A mono 8 kHz sine wave: something a test caller can "say" that is easy to find again."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"".join(int(amplitude * math.sin(2 * math.pi * hz * i / 8000)).to_bytes(2, "little", signed=True)
                               for i in range(int(8000 * seconds))))
    return path


def read_wav(path: Path) -> tuple[int, np.ndarray]:
    with wave.open(str(path), "rb") as w:
        assert w.getsampwidth() == 2 and w.getnchannels() == 1
        return w.getframerate(), np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(float)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x * x))) if len(x) else 0.0


def best_match(haystack: np.ndarray, needle: np.ndarray) -> tuple[float, float]:
    """(normalised correlation, offset in samples) of ``needle`` at its best position in ``haystack``.

    The search is normalised by the energy of each window of the haystack: a raw cross-correlation prefers
    loud passages (speech next to the music) to the place where the needle really is.
    """
    if len(haystack) < len(needle):
        needle = needle[: len(haystack)]
    m = len(needle)
    n = len(haystack) + m
    xc = np.fft.irfft(np.fft.rfft(haystack, n) * np.conj(np.fft.rfft(needle, n)), n)[: len(haystack) - m + 1]
    energy = np.concatenate(([0.0], np.cumsum(haystack * haystack)))
    window = np.sqrt(np.maximum(energy[m:] - energy[:-m], 0.0))
    ref = float(np.linalg.norm(needle))
    if ref == 0.0 or not window.any():
        return 0.0, 0.0
    scores = np.where(window > 1e-9 * ref, xc / np.maximum(window, 1e-12) / ref, 0.0)
    lag = int(np.argmax(scores))
    seg = haystack[lag: lag + m]
    denom = np.linalg.norm(seg) * ref
    return (float(np.dot(seg, needle) / denom) if denom else 0.0), float(lag)


def with_one_slip(haystack: np.ndarray, needle: np.ndarray, lag: int,
                  frames: tuple[int, ...] = (80, 160)) -> tuple[float, int]:
    """(correlation, offset) of ``needle`` near ``lag`` in ``haystack`` if the heard audio lost or gained one
    10 or 20 ms frame somewhere inside it (the offset is where the needle's start is, not its longer side).

    A caller's adaptive jitter buffer drops or inserts a frame when the box's packets come late (a loaded CI
    machine): the prompt is still heard whole, but one straight correlation across the slip falls to ~0.75.
    Each variant of the needle (a frame cut out, or a frame of silence put in, at every 5 ms) is matched within
    25 ms of ``lag``; a prompt that was not played scores low on every variant."""
    start = max(0, lag - 200)
    seg = haystack[start: lag + len(needle) + max(frames) + 200]
    best, best_lag = 0.0, lag
    for f in frames:
        for at in range(40, len(needle) - 40, 40):
            for variant in (np.concatenate((needle[:at], needle[at + f:])),
                            np.concatenate((needle[:at], np.zeros(f), needle[at:]))):
                if len(variant) <= len(seg):
                    corr, at_seg = best_match(seg, variant)
                    if corr > best:
                        best, best_lag = corr, start + int(at_seg)
    return best, best_lag


def heard_match(haystack: np.ndarray, needle: np.ndarray, first: Callable[..., tuple[float, int]] | None = None,
                threshold: float = 0.9) -> tuple[float, int]:
    """(correlation, offset) of ``needle`` in what a caller heard, forgiving one jitter-buffer slip inside it
    (``with_one_slip``); ``first`` finds the place (default ``best_match``, the best one)."""
    corr, lag = (first or best_match)(haystack, needle)
    lag = int(lag)
    if corr <= threshold:
        slipped, at = with_one_slip(haystack, needle, lag)
        if slipped > corr:
            corr, lag = slipped, at
    return corr, lag


class WebhookServer:
    """A clinic's security endpoint on loopback: records each POST (content type and JSON body); ``delay`` and
    ``status`` make it slow or failing (a list: the status of the 1st, 2nd, ... POST, the last one repeating)."""

    def __init__(self, delay: float = 0.0, status: int | list[int] = 200) -> None:
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.received: list[dict[str, Any]] = []
        self.got = threading.Event()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.received.append({"type": self.headers["Content-Type"], "body": json.loads(body)})
                hook.got.set()
                time.sleep(delay)
                answer = status if isinstance(status, int) else status[min(len(hook.received), len(status)) - 1]
                try:
                    self.send_response(answer)
                    self.end_headers()
                except OSError:  # the box gave up waiting
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/threat?token=s3cret"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
