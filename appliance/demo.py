"""`registratura demo`: a box on 127.0.0.1, a real SIP call into it from a built-in softphone, a transcript."""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import time
import wave
from array import array
from pathlib import Path

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


async def _call(box: BoxProcess, heard: Path, digits: str) -> list[tuple[float, str]]:
    from appliance.telephony.softphone import Softphone

    lines: list[tuple[float, str]] = []
    async with Softphone(number=CALLER, rtp_base=31000) as phone:
        t0 = time.monotonic()
        call = await phone.call(box.sip_uri)
        lines.append((0.0, f"caller {CALLER} dials {box.sip_uri}"))
        await phone.answered(call)
        lines.append((time.monotonic() - t0, "the box answers"))
        await phone.record(call, heard)
        await asyncio.sleep(11.0)  # the greeting and recording notice cannot be skipped; then the menu
        for digit in digits:
            await phone.press(call, digit)
            lines.append((time.monotonic() - t0, f"caller presses {digit}"))
            await asyncio.sleep(6.0)
        await phone.hangup(call)
        lines.append((time.monotonic() - t0, "caller hangs up"))
        await phone.ended(call)
    return lines


def run_demo(digits: str = "51", keep: bool = False) -> int:
    """Digits default to 5 (test preparation) then 1 (blood test)."""
    from appliance.flow import load_prompt_catalog
    from appliance.store import Store

    base = Path(tempfile.mkdtemp(prefix="registratura-demo-"))
    settings = demo_settings(base, sip_port=free_port())
    box = BoxProcess(base, settings, env={"REGISTRATURA_FLOW_TIME": DEMO_FLOW_TIME})
    print(f"Starting the box on {settings['sip']['listen']} (data in {base}); first start renders prompts...")
    try:
        box.start()
        before = box.scrape()
        heard = base / "caller-heard.wav"
        print(f"Calling it from a softphone on 127.0.0.1 (flows see {DEMO_FLOW_TIME}, a working morning)...")
        caller_lines = asyncio.run(_call(box, heard, digits))
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
