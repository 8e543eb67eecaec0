"""A scriptable softphone on a second pjsua2 endpoint: the demo's caller and the tests' pjsua2 peer."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from appliance import events as ev
from appliance.telephony.pjsua import PjsuaTelephony, StackConfig


class Softphone:
    """Places calls, records what it hears, presses digits, plays WAVs. One per process (pjsua2 rule)."""

    def __init__(self, number: str = "+79161234567", port: int = 0, rtp_base: int = 31000,
                 host: str = "127.0.0.1", max_calls: int = 4, accept_incoming: bool = False) -> None:
        from appliance.boxproc import free_port

        self.host = host
        self.port = port or free_port()  # known, so receptionists' URIs can point here
        self.tel = PjsuaTelephony(
            StackConfig(host=host, port=self.port, rtp_port_min=rtp_base, rtp_port_max=rtp_base + 400,
                        accept_incoming=accept_incoming, user=number, max_calls=max_calls, codecs=("PCMA", "PCMU"))
        )
        self.events: dict[str, asyncio.Queue[ev.Event]] = {}
        self.offers: asyncio.Queue[ev.CallOffered] = asyncio.Queue()  # incoming calls (receptionist role)
        self.log: list[tuple[float, str, ev.Event]] = []  # (monotonic, call_id, event)

    async def __aenter__(self) -> Softphone:
        await self.tel.start(self._on_event)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.tel.stop()

    def _on_event(self, event: ev.Event) -> None:
        call_id = getattr(event, "call_id", "")
        self.log.append((time.monotonic(), call_id, event))
        if isinstance(event, ev.CallOffered):
            self.offers.put_nowait(event)
        self.events.setdefault(call_id, asyncio.Queue()).put_nowait(event)

    async def call(self, uri: str, caller_id: str = "") -> str:
        """``caller_id`` is sent as P-Asserted-Identity (``anonymous``: a caller who hides the number)."""
        call_id = await self.tel.originate(uri, caller_id=caller_id)
        self.events.setdefault(call_id, asyncio.Queue())
        return call_id

    async def wait_for(self, call_id: str, kind: type, timeout: float = 10.0) -> ev.Event:
        """Wait for the next event of a kind on a call; CallEnded while waiting for something else raises."""
        q = self.events.setdefault(call_id, asyncio.Queue())
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {kind.__name__} on {call_id} within {timeout} s")
            event = await asyncio.wait_for(q.get(), timeout=left)
            if isinstance(event, kind):
                return event
            if isinstance(event, ev.CallEnded):
                raise ConnectionError(f"call {call_id} ended ({event.status_code} {event.reason}) "
                                      f"while waiting for {kind.__name__}")

    async def answered(self, call_id: str, timeout: float = 10.0) -> None:
        await self.wait_for(call_id, ev.CallAnswered, timeout)

    async def ended(self, call_id: str, timeout: float = 30.0) -> ev.CallEnded:
        return await self.wait_for(call_id, ev.CallEnded, timeout)  # type: ignore[return-value]

    async def record(self, call_id: str, path: Path) -> None:
        await self.tel.start_recording(call_id, path)

    async def press(self, call_id: str, digits: str, method: str = "rfc2833") -> None:
        await self.tel.send_dtmf(call_id, digits, method)

    async def say(self, call_id: str, wav: Path, playback_id: int = 1) -> None:
        await self.tel.play(call_id, [wav], playback_id)

    def uri(self, user: str) -> str:
        """A SIP URI that reaches this softphone (a receptionist's phone in tests and the demo)."""
        return f"sip:{user}@{self.host}:{self.port}"

    async def ringing(self, timeout: float = 15.0) -> ev.CallOffered:
        """The next incoming call (the box ringing a receptionist)."""
        return await asyncio.wait_for(self.offers.get(), timeout)

    async def answer(self, call_id: str) -> None:
        await self.tel.answer(call_id)

    async def hangup(self, call_id: str) -> None:
        await self.tel.hangup(call_id)
