"""Fixtures for real SIP/RTP tests on 127.0.0.1: a box in a child process and a pjsua2 softphone."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from appliance.boxproc import BoxProcess, demo_settings

T = TypeVar("T")

# Flows see a working Wednesday morning, so opening-hours branches do not depend on when CI runs.
FLOW_TIME = "2026-11-25T10:00:00"


class LoopThread:
    """One asyncio loop in a thread for the whole session: the softphone's pjsua2 endpoint lives on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="test-loop", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture(scope="session")
def loop_thread() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.close()


@pytest.fixture
def phone(session_phone: Any) -> Any:
    """The session's softphone with no incoming calls left over from an earlier test."""
    while not session_phone.offers.empty():
        session_phone.offers.get_nowait()
    return session_phone


@pytest.fixture(scope="session")
def session_phone(loop_thread: LoopThread) -> Iterator[Any]:
    from appliance.telephony.softphone import Softphone

    # It also plays the receptionists' phones (the box dials sip:101@<this softphone>).
    sp = Softphone(number="+79161234567", rtp_base=32000, accept_incoming=True)
    loop_thread.run(sp.__aenter__())
    yield sp
    loop_thread.run(sp.__aexit__(None, None, None))


@pytest.fixture(scope="session")
def prompt_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shared across boxes so prompts render once per test session."""
    return tmp_path_factory.mktemp("prompt-cache")


@pytest.fixture
def make_box(tmp_path: Path, prompt_cache: Path) -> Iterator[Any]:
    boxes: list[BoxProcess] = []

    def make(start: bool = True, base: Path | None = None, flow_time: str = FLOW_TIME, **extra: Any) -> BoxProcess:
        where = base or tmp_path / f"box{len(boxes)}"
        settings = demo_settings(where, rtp_base=30000 + 1000 * len(boxes), **extra)
        settings["voices"]["cache"] = str(prompt_cache)
        box = BoxProcess(where, settings, env={"REGISTRATURA_FLOW_TIME": flow_time})
        boxes.append(box)
        if start:
            box.start()
        return box

    yield make
    for box in boxes:
        box.stop()


@pytest.fixture
def box(make_box: Any) -> BoxProcess:
    return make_box()
