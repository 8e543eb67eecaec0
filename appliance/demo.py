"""`registratura demo`: a box on 127.0.0.1, a real SIP call into it from a built-in softphone, a transcript."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
import time
import wave
from array import array
from pathlib import Path
from typing import Any

from appliance.boxproc import REPO, BoxProcess, demo_settings, free_port

# The demo walks the daytime menu: flows see a Wednesday morning whatever the real time is.
DEMO_FLOW_TIME = "2026-11-25T10:00:00"
CALLER = "+79161234567"


def _speech_segments(path: Path, frame_ms: int = 20, threshold: int = 300) -> list[tuple[float, float]]:
    """Where the caller heard sound: (start, end) seconds, gaps under 0.4 s merged."""
    with wave.open(str(path), "rb") as w:
        rate = w.getframerate()
        samples = array("h", w.readframes(w.getnframes()))
    step = rate * frame_ms // 1000
    segments: list[tuple[float, float]] = []
    for i in range(0, len(samples) - step, step):
        chunk = samples[i:i + step]
        rms = (sum(s * s for s in chunk) / len(chunk)) ** 0.5
        if rms > threshold:
            t = i / rate
            if segments and t - segments[-1][1] < 0.4:
                segments[-1] = (segments[-1][0], t + frame_ms / 1000)
            else:
                segments.append((t, t + frame_ms / 1000))
    return segments


# The first menu answer is spoken when the box runs a recogniser (the bundled ru-commands at least).
SPOKEN = {"1": "запись к врачу", "2": "вызвать врача на дом", "3": "больничный", "4": "прививка", "5": "анализы",
          "6": "платные услуги", "0": "регистратура"}


async def _speak(phone: Any, call: str, box: BoxProcess, words: str, digit: str, base: Path) -> bool:
    """Say ``words`` (espeak-ng) into the call; True once the box notes option ``digit`` chosen by speech."""
    from appliance.speech.prompts import EspeakRenderer
    from appliance.store import Store

    wav = base / "caller-says.wav"
    await asyncio.get_running_loop().run_in_executor(None, EspeakRenderer().render, "ru", words, wav)
    await phone.say(call, wav, playback_id=7)
    deadline = time.monotonic() + 8.0
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)

        def chosen() -> bool:
            store = Store(box.db_path, migrate=False)
            try:
                events = store.recent_calls(limit=1)[0]["events"]
            finally:
                store.close()
            return any(e["kind"] == "choice" and e["detail"].startswith(f"main_menu: {digit} (speech")
                       for e in events)

        if await asyncio.get_running_loop().run_in_executor(None, chosen):
            return True
    return False


async def _call(box: BoxProcess, heard: Path, digits: str, phone_port: int, base: Path,
                spoken: bool = False) -> list[tuple[float, str]]:
    from appliance.speech.prompts import EspeakRenderer
    from appliance.telephony.softphone import Softphone

    lines: list[tuple[float, str]] = []
    # One softphone plays both parts: the patient calling in and the receptionist's phone (sip:101@...).
    async with Softphone(number=CALLER, port=phone_port, rtp_base=31000, accept_incoming=True) as phone:
        t0 = time.monotonic()

        def say(line: str) -> None:
            lines.append((time.monotonic() - t0, line))

        call = await phone.call(box.sip_uri)
        say(f"caller {CALLER} dials {box.sip_uri}")
        await phone.answered(call)
        say("the box answers")
        await phone.record(call, heard)
        await asyncio.sleep(11.0)  # the greeting and recording notice cannot be skipped; then the menu
        for i, digit in enumerate(digits):
            words = SPOKEN.get(digit) if i == 0 and spoken else None
            if words and await _speak(phone, call, box, words, digit, base):
                say(f"caller says «{words}» (the box understood: option {digit})")
            else:
                if words:
                    say(f"caller says «{words}»; not understood, so the caller presses {digit}")
                await phone.press(call, digit)
                say(f"caller presses {digit}")
            if digit == "0" and i == len(digits) - 1:
                break
            await asyncio.sleep(6.0)
        if digits.endswith("0"):  # to the reception: music, then the demo receptionist answers
            ring = await phone.ringing(timeout=30)
            say(f"the receptionist's phone {ring.called} rings; the caller hears music on hold")
            await asyncio.sleep(6.0)
            await phone.answer(ring.call_id)
            await phone.answered(ring.call_id)
            say("the receptionist answers and greets the caller")
            hello = base / "receptionist.wav"
            await asyncio.get_running_loop().run_in_executor(
                None, EspeakRenderer().render, "ru", "Регистратура, здравствуйте! Чем могу помочь?", hello)
            await phone.say(ring.call_id, hello)
            await asyncio.sleep(5.0)
            await phone.hangup(ring.call_id)
            say("the receptionist hangs up; the box ends the call")
            await phone.ended(call, timeout=10)
        else:
            await phone.hangup(call)
            say("caller hangs up")
            await phone.ended(call)
    return lines


def default_prompt_cache() -> Path:
    """Where repeated demos keep their rendered prompts (the first renders them all; later ones start at once)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "registratura" / "prompt-cache"


def run_demo(digits: str = "510", keep: bool = False, prompt_cache: Path | None = None) -> int:
    """Digits default to 5 (test preparation), 1 (blood test), then 0: the reception queue."""
    from appliance.flow import load_prompt_catalog
    from appliance.store import Store

    base = Path(tempfile.mkdtemp(prefix="registratura-demo-"))
    phone_port = free_port()
    cache = prompt_cache or default_prompt_cache()
    settings = demo_settings(base, sip_port=free_port(), voices={"cache": str(cache)}, queues={"reception": {
        "agents": [f"sip:101@127.0.0.1:{phone_port}"], "wrapup": 5, "announce_every": 0}})
    box = BoxProcess(base, settings, env={"REGISTRATURA_FLOW_TIME": DEMO_FLOW_TIME})
    print(f"Starting the box on {settings['sip']['listen']} (data in {base}, prompts cached in {cache}); "
          "the first start renders them...")
    try:
        box.start()
        before = box.scrape()
        heard = base / "caller-heard.wav"
        print(f"Calling it from a softphone on 127.0.0.1 (flows see {DEMO_FLOW_TIME}, a working morning)...")
        spoken = "spoken menu choices enabled" in box.log()
        caller_lines = asyncio.run(_call(box, heard, digits, phone_port, base, spoken))
        time.sleep(0.5)  # let the box write the end of the call
        after = box.scrape()
    finally:
        box.stop()

    store = Store(box.db_path)
    try:
        record = store.recent_calls(limit=1)[0]
    finally:
        store.close()
    catalog = load_prompt_catalog(REPO / "voices")["ru"]
    _print_transcript(record, caller_lines, catalog, heard)
    print("\nCall record (registratura calls --json):")
    shown = {k: v for k, v in record.items() if k != "events"}
    print(json.dumps(shown, ensure_ascii=False, indent=2))
    print("\nMetric lines that changed:")
    for key in sorted(after):
        if after[key] != before.get(key, 0.0) and not key.startswith(("process_", "python_")) \
                and "_created" not in key and "_bucket" not in key:
            print(f"  {key} {before.get(key, 0.0):g} -> {after[key]:g}")
    if keep:
        print(f"\nKept {base} (box.log, registratura.db, recordings/, caller-heard.wav)")
    else:
        shutil.rmtree(base, ignore_errors=True)
    ok = record["outcome"] is not None and record["answered_at"] is not None
    return 0 if ok else 1


def _print_transcript(record: dict, caller_lines: list[tuple[float, str]], catalog: dict[str, str],
                      heard: Path) -> None:
    from datetime import datetime

    start = datetime.fromisoformat(record["started_at"].replace("Z", "+00:00")).timestamp()
    rows: list[tuple[float, str]] = []
    for e in record["events"]:
        t = datetime.fromisoformat(e["at"].replace("Z", "+00:00")).timestamp() - start
        if e["kind"] == "play":
            for pid in e["detail"].split():
                text = catalog.get(pid, pid).replace("{clinic_name}", "Поликлиника №1")
                rows.append((t, f"box plays [{pid}] «{text.strip()}»"))
        elif e["kind"] == "dtmf":
            rows.append((t, f"box hears digit {e['detail']}"))
        elif e["kind"] in ("node", "menu", "choice"):
            rows.append((t, f"flow: {e['kind']} {e['detail']}"))
        else:
            rows.append((t, f"box: {e['kind']} {e['detail']}".rstrip()))
    print("\nTranscript (box side, seconds from the INVITE):")
    for t, line in sorted(rows, key=lambda r: r[0]):
        print(f"  {t:6.2f} s  {line}")
    print("\nCaller side (seconds from dialling):")
    for t, line in caller_lines:
        print(f"  {t:6.2f} s  {line}")
    if heard.exists():
        segs = _speech_segments(heard)
        total = sum(b - a for a, b in segs)
        print(f"  the caller heard {total:.1f} s of speech in {len(segs)} stretch(es): "
              + ", ".join(f"{a:.1f}-{b:.1f}" for a, b in segs[:8]) + (" ..." if len(segs) > 8 else ""))
