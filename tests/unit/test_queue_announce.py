"""The queue speaks to each caller in their flow's language: position and expected wait in words."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

from appliance.acd.model import Announce, OfferCallback
from appliance.acd.service import QueueService, _Caller


class _Prompts:
    def __init__(self) -> None:
        self.asked: list[tuple[str, str]] = []

    def path(self, language: str, prompt: str) -> Path:
        self.asked.append((language, prompt))
        return Path(f"/cache/{language}/{len(self.asked)}.wav")


class _Telephony:
    def __init__(self) -> None:
        self.played: list[tuple[str, list[Path]]] = []

    async def play(self, call_id: str, files: list[Path], playback_id: int, loop: bool = False) -> None:
        self.played.append((call_id, files))


def _session(call_id: str, language: str | None) -> SimpleNamespace:
    async def note(kind: str, detail: str) -> None:
        pass

    s = SimpleNamespace(call_id=call_id, caller="+79161234567", note=note)
    if language is not None:
        s.language = language
    return s


def test_announcements_follow_the_callers_flow_language():
    prompts, tel = _Prompts(), _Telephony()
    service = QueueService(SimpleNamespace(queues={}), tel, writer=None, prompts=prompts, language="ru")
    for call_id, lang in (("en-call", "en"), ("ru-call", "ru"), ("old-call", None)):
        service.callers[call_id] = _Caller(_session(call_id, lang), "reception")

    async def run() -> None:
        await service._act("reception", Announce("en-call", 3, 250))
        await service._act("reception", Announce("ru-call", 3, 250))
        await service._act("reception", Announce("old-call", 2, 61))
        await service._act("reception", OfferCallback("en-call"))

    asyncio.run(run())
    assert prompts.asked == [
        ("en", "text:You are number three in line."), ("en", "text:The expected wait is about five minutes."),
        ("ru", "text:Вы третий в очереди."), ("ru", "text:Примерное время ожидания — пять минут."),
        ("ru", "text:Вы второй в очереди."), ("ru", "text:Примерное время ожидания — две минуты."),  # box's language
        ("en", "queue_callback_offer"),
    ]
    assert [c for c, _ in tel.played] == ["en-call", "ru-call", "old-call", "en-call"]
