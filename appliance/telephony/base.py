"""The telephony Protocol: what sessions, the app and the demo may ask of the SIP stack (no pjsua2 here)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from appliance.events import Event


@dataclass(frozen=True, slots=True)
class StackInfo:
    """What the running SIP stack really is: shown at start-up, in `check` and as metrics."""

    library: str  # e.g. "pjsua2 2.15.1"
    build: str  # "pypi" (the capped PyPI wheel) or "appliance" (tools/build_pjsua2.sh)
    capacity: int  # concurrent calls the build really allows
    requested: int  # what the settings asked for


class Telephony(Protocol):
    """All methods are coroutine-safe and may be called from the asyncio loop only."""

    info: StackInfo

    async def start(self, on_event: Callable[[Event], None]) -> None: ...

    async def stop(self) -> None: ...

    async def answer(self, call_id: str) -> None: ...

    async def hangup(self, call_id: str, status_code: int = 0) -> None: ...

    async def play(self, call_id: str, files: Sequence[Path], playback_id: int) -> None: ...

    async def stop_playback(self, call_id: str) -> None: ...

    async def start_recording(self, call_id: str, path: Path, stereo: bool = False) -> None: ...

    async def stop_recording(self, call_id: str) -> None: ...

    async def send_dtmf(self, call_id: str, digits: str, method: str = "rfc2833") -> None: ...

    async def bridge(self, call_a: str, call_b: str) -> None: ...

    def new_call_id(self) -> str: ...

    async def originate(self, uri: str, caller_id: str = "", call_id: str | None = None) -> str: ...


def stereo_parts(path: Path) -> tuple[Path, Path]:
    """The two mono files a stereo recording is made of until the call ends: the caller's side, the box's."""
    return path.with_name(path.stem + ".caller.wav"), path.with_name(path.stem + ".box.wav")
