"""Receptionists' marks (feature codes, *9 abusive, *0 threat) over a real store, and the threat webhook."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from appliance import metrics
from appliance.security import webhook
from appliance.security.marks import feature_code, mark_call
from appliance.settings import FeatureCodes, settings_from_mapping
from appliance.store import Store
from tests.helpers import WebhookServer

CALLER = "+79161234567"


class _Writer:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def run(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        return func(*args, **kwargs)


class _Session:
    """What mark_call uses of a CallSession: ids, the caller and the timeline."""

    def __init__(self, store: Store, caller: str = CALLER) -> None:
        self.caller, self.call_id, self.store = caller, "sip-1", store
        self.record_id = store.call_started(sip_call_id="sip-1", caller=caller, caller_raw=caller, called="clinic",
                                            source="127.0.0.1", flow="clinic_ru", started_at=time.time())
        self.notes: list[tuple[str, str]] = []

    async def note(self, kind: str, detail: str = "") -> None:
        self.notes.append((kind, detail))
        self.store.add_event(self.record_id, time.time(), kind, detail)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "registratura.db")
    yield s
    s.close()


@pytest.fixture(autouse=True)
def _quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """The webhook tries again after 2 s and 10 s in the box; here after 0.1 s."""
    monkeypatch.setattr(webhook, "RETRY_DELAYS", (0.1, 0.1))


def _security(tmp_path: Path, **security: Any) -> Any:
    return settings_from_mapping({"data_dir": str(tmp_path / "data"), "security": security}, tmp_path).security


def _sample(name: str) -> float:
    return metrics.REGISTRY.get_sample_value(name) or 0.0


# ---------------------------------------------------------------------------------------------- feature codes


def _press(keys: str, codes: FeatureCodes | None = None) -> list[str]:
    buf, marks = "", []
    for digit in keys:
        buf, kind = feature_code(buf, digit, codes)
        if kind:
            marks.append(kind)
    return marks


def test_default_feature_codes() -> None:
    assert _press("*9") == ["abusive"]
    assert _press("12*0") == ["threat"]
    assert _press("9*") == [] and _press("*1*9*0") == ["abusive", "threat"]
    assert _press("*9*9") == ["abusive", "abusive"]  # the buffer restarts after a mark


def test_configured_feature_codes_are_used(tmp_path: Path) -> None:
    codes = _security(tmp_path, feature_codes={"abusive": "#55", "threat": "*911"}).feature_codes
    assert codes == FeatureCodes("#55", "*911")
    assert _press("*9*0", codes) == []  # the defaults mean nothing now
    assert _press("#5#55", codes) == ["abusive"]
    assert _press("1*9*911", codes) == ["threat"]


async def _mark_with_codes(store: Store, security: Any, keys: str) -> _Session:
    """What QueueService/CallSession do with a receptionist's digits: feature_code, then mark_call."""
    session, buf = _Session(store), ""
    for digit in keys:
        buf, kind = feature_code(buf, digit, security.feature_codes)
        if kind:
            await mark_call(_Writer(store), security, session, kind, "sip:101@127.0.0.1")
    return session


def test_a_non_default_threat_code_puts_the_recording_on_hold(store: Store, tmp_path: Path) -> None:
    security = _security(tmp_path, feature_codes={"threat": "#1"})
    session = asyncio.run(_mark_with_codes(store, security, "*0#1"))
    assert store.is_held(session.record_id)
    assert store.mark_times(CALLER, "threat", 0) and not store.mark_times(CALLER, "abusive", 0)


# ----------------------------------------------------------------------------------------------- abuse marks


def test_two_abusive_marks_block_the_number(store: Store, tmp_path: Path) -> None:
    security = _security(tmp_path)
    for _ in range(2):
        asyncio.run(mark_call(_Writer(store), security, _Session(store), "abusive", "sip:101@127.0.0.1"))
    [entry] = store.active_blocks(time.time())
    assert (entry["pattern"], entry["source"]) == (CALLER, "abuse")


def test_abusive_marks_never_block_a_never_block_number(store: Store, tmp_path: Path) -> None:
    security = _security(tmp_path, never_block=["+7916*"])
    before = _sample("registratura_abuse_marks_total")
    sessions = [_Session(store) for _ in range(3)]
    for s in sessions:
        asyncio.run(mark_call(_Writer(store), security, s, "abusive", "sip:101@127.0.0.1"))
    assert store.active_blocks(time.time()) == []  # nothing for `block list` to show
    assert len(store.mark_times(CALLER, "abusive", 0)) == 3  # the marks themselves are kept
    assert _sample("registratura_abuse_marks_total") == before + 3
    assert ("abusive", "not blocked: the number is on security.never_block") in sessions[-1].notes


# ------------------------------------------------------------------------------------------ threat + webhook


async def _threat(store: Store, security: Any) -> tuple[_Session, float]:
    session = _Session(store)
    t0 = time.monotonic()
    await mark_call(_Writer(store), security, session, "threat", "sip:101@127.0.0.1")
    took = time.monotonic() - t0
    await asyncio.gather(*webhook._PENDING)  # let the background report finish before the loop closes
    return session, took


def test_threat_webhook_gets_the_full_number_after_the_store(store: Store, tmp_path: Path) -> None:
    hook = WebhookServer()
    try:
        before = _sample("registratura_threats_total")
        session, _ = asyncio.run(_threat(store, _security(tmp_path, threat_webhook=hook.url)))
    finally:
        hook.close()
    [got] = hook.received
    assert got["type"] == "application/json"
    body = got["body"]
    assert body == {"event": "threat", "call_id": session.record_id, "number": CALLER, "time": body["time"],
                    "at": body["at"], "marked_by": "sip:101@127.0.0.1", "recording_held": True}
    assert abs(body["at"] - time.time()) < 30 and body["time"].endswith("+00:00")
    assert _sample("registratura_threats_total") == before + 1
    assert ("threat", "webhook delivered (HTTP 200)") in session.notes


@pytest.mark.parametrize(("delay", "status", "outcome", "posts"), [
    (0.0, 500, "webhook failed: HTTP Error 500: Internal Server Error (after 3 tries)", 3),
    (3.0, 200, "webhook failed: timed out (after 3 tries)", 3),
    (0.0, 404, "webhook failed: HTTP Error 404: Not Found", 1),  # a wrong address or token: no point retrying
    (0.0, [503, 200], "webhook delivered (HTTP 200) on try 2", 2),  # the endpoint was restarting
])
def test_a_failing_or_slow_webhook_loses_nothing_and_delays_nothing(store: Store, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch, delay: float,
                                                                    status: int | list[int], outcome: str,
                                                                    posts: int) -> None:
    monkeypatch.setattr(webhook, "TIMEOUT", 0.5)
    hook = WebhookServer(delay=delay, status=status)
    try:
        session, took = asyncio.run(_threat(store, _security(tmp_path, threat_webhook=hook.url)))
    finally:
        hook.close()
    assert len(hook.received) == posts
    assert all(r["body"] == hook.received[0]["body"] for r in hook.received)  # the same alert each try
    assert took < 0.3  # the call's event handling never waits for the endpoint
    assert store.is_held(session.record_id)  # stored before the POST: durable first
    [mark_at] = store.mark_times(CALLER, "threat", 0)
    assert abs(mark_at - hook.received[0]["body"]["at"]) < 1e-6
    [(kind, detail)] = [n for n in session.notes if n[1].startswith("webhook")]
    assert kind == "threat" and detail.startswith(outcome)
    events = store.get_call(session.record_id)["events"]
    assert any(e["detail"].startswith(outcome) for e in events)  # the manager sees the guard was not told


def test_unreachable_webhook_is_reported_not_raised(store: Store, tmp_path: Path) -> None:
    security = _security(tmp_path, threat_webhook="http://127.0.0.1:9/nothing-listens")
    session, _ = asyncio.run(_threat(store, security))
    assert store.is_held(session.record_id)
    assert any(d.startswith("webhook failed") for _, d in session.notes)


def test_webhook_post_survives_a_garbage_reply() -> None:
    import socket

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)

    def reply() -> None:
        conn, _ = srv.accept()
        conn.recv(65536)
        conn.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        conn.close()

    threading.Thread(target=reply, daemon=True).start()
    try:
        result = webhook.post(f"http://127.0.0.1:{srv.getsockname()[1]}/", {"event": "threat"}, timeout=2)
    finally:
        srv.close()
    assert result.startswith("failed:")


def test_feature_codes_are_frozen_defaults() -> None:
    codes = FeatureCodes()
    assert codes.by_code() == {"*9": "abusive", "*0": "threat"}
    with pytest.raises(AttributeError):
        codes.abusive = "*1"  # type: ignore[misc]
