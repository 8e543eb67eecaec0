"""Recording over real SIP when the data disk fills: a small tmpfs as the box's data directory."""

from __future__ import annotations

import asyncio
import errno
import os
import subprocess
import time
import wave
from pathlib import Path

import pytest

from tests.helpers import calls_in, read_wav, rms, wait_for_call_end

pytestmark = pytest.mark.sip


def _mount_tmpfs(where: Path, size: str) -> None:
    where.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
                              capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot run mount for the small tmpfs data disk: {exc}")
    if done.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here (needs root or CAP_SYS_ADMIN): {done.stderr.strip()}")


def _fill(path: Path) -> int:
    """Write zeros until the file system says it is full; returns the bytes written."""
    written = 0
    chunk = b"\0" * 65536
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            try:
                n = os.write(fd, chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                if len(chunk) == 512:
                    return written
                chunk = chunk[: len(chunk) // 2]  # fill the last blocks too
                continue
            written += n
    finally:
        os.close(fd)


def _gauge(box) -> float:
    return box.scrape()["registratura_recording_disk_full"]


def _wait_gauge(box, value: float, timeout: float = 8.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _gauge(box) == value:
            return
        time.sleep(0.2)
    raise AssertionError(f"registratura_recording_disk_full stayed {_gauge(box)}, expected {value}")


def _notes(call: dict) -> list[str]:
    return [e["detail"] for e in call["events"] if e["kind"] == "recording"]


def test_full_disk_stops_recording_cleanly_while_calls_go_on(make_box, phone, loop_thread, tmp_path):
    base = tmp_path / "box0"
    data = base / "data"  # demo_settings puts the data directory here
    _mount_tmpfs(data, "4m")
    box = None
    try:
        box = make_box(base=base, recording={"min_free_mb": 1})
        assert _gauge(box) == 0.0
        filler = data / "filler.bin"

        async def call_through_full_disk() -> None:
            first = await phone.call(box.sip_uri)
            await phone.answered(first)
            await asyncio.sleep(2.5)  # recorded normally
            await asyncio.get_running_loop().run_in_executor(None, _fill, filler)
            await asyncio.sleep(2.5)  # the box notices within a second or so and stops the recording
            # The first call goes on: a digit still reaches the box, and a second call is answered and heard.
            await phone.press(first, "1")
            second = await phone.call(box.sip_uri)
            await phone.answered(second)
            await phone.record(second, tmp_path / "heard.wav")
            await asyncio.sleep(3.0)
            await phone.hangup(second)
            await phone.ended(second)
            await phone.hangup(first)
            await phone.ended(first)

        loop_thread.run(call_through_full_disk(), timeout=40)
        assert _gauge(box) == 1.0
        second, first = wait_for_call_end(box.db_path, count=2)

        # The call in progress: recording stopped, the WAV closed cleanly and readable, the call went on.
        assert first["outcome"] == "caller_hangup" and "1" in first["digits"]
        assert "stopped: disk full" in _notes(first)
        wav = Path(first["recording"])
        assert wav.stat().st_mode & 0o777 == 0o600
        with wave.open(str(wav)) as w:
            frames, rate = w.getnframes(), w.getframerate()
        assert (wav.stat().st_size - 44) == frames * 2, "the WAV header does not match its data"
        assert 2.0 <= frames / rate <= 6.0, frames / rate
        _, recorded = read_wav(wav)
        assert rms(recorded) > 100, "the recording before the disk filled holds no audio"
        # The new call during the full disk: answered, heard, not recorded, and the timeline says why.
        assert second["outcome"] == "caller_hangup"
        assert second["recording"] is None and _notes(second) == ["off: disk full"]
        _, heard = read_wav(tmp_path / "heard.wav")
        assert rms(heard) > 300, "the caller heard nothing while the disk was full"

        # Space comes back: the gauge drops and calls are recorded again.
        filler.unlink()
        _wait_gauge(box, 0.0)

        async def short_call() -> None:
            call = await phone.call(box.sip_uri)
            await phone.answered(call)
            await asyncio.sleep(1.5)
            await phone.hangup(call)
            await phone.ended(call)

        loop_thread.run(short_call(), timeout=20)
        third = wait_for_call_end(box.db_path, count=3)[0]
        assert third["recording"] and Path(third["recording"]).stat().st_size > 8000
        assert _notes(third) == []
        assert len(calls_in(box.db_path)) == 3
    finally:
        if box is not None:
            box.stop()
        subprocess.run(["umount", str(data)], capture_output=True, timeout=10)


def test_stereo_recording_keeps_the_caller_and_the_box_apart(make_box, phone, loop_thread, tmp_path):
    import numpy as np

    from tests.helpers import best_match, write_tone
    from tests.sip.test_call_path import _prompt_file

    box = make_box(recording={"format": "stereo"})
    tone = write_tone(tmp_path / "tone.wav", seconds=3.0, amplitude=8000)  # the caller, while the greeting plays

    async def scenario() -> None:
        call = await phone.call(box.sip_uri)
        await phone.answered(call)
        await asyncio.sleep(1.0)
        await phone.say(call, tone)
        await asyncio.sleep(4.0)
        await phone.hangup(call)
        await phone.ended(call)

    loop_thread.run(scenario(), timeout=40)
    [call] = wait_for_call_end(box.db_path)
    rec = Path(call["recording"])
    time.sleep(0.5)  # merged by the session right after the call ended
    assert rec.is_file() and (rec.stat().st_mode & 0o777) == 0o600
    assert not list(rec.parent.glob(rec.stem + ".*.wav")), "the two halves were left behind"
    with wave.open(str(rec), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (2, 2, 8000)
        both = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(float).reshape(-1, 2)
    caller, boxside = both[:, 0], both[:, 1]
    first_play = next(e["detail"].split()[0] for e in call["events"] if e["kind"] == "play")
    _, prompt = read_wav(_prompt_file(box, first_play))
    corr_box, _ = best_match(boxside[: 8000 * 4], prompt[: 8000 * 2])
    corr_caller, _ = best_match(caller[: 8000 * 4], prompt[: 8000 * 2])
    assert corr_box > 0.9, f"the box side does not hold the greeting (corr {corr_box:.2f})"
    assert corr_caller < 0.3, f"the greeting leaked into the caller side (corr {corr_caller:.2f})"
    spectrum = np.abs(np.fft.rfft(caller))
    peak_hz = np.argmax(spectrum) * 8000 / len(caller)
    assert abs(peak_hz - 440) < 5 and rms(caller) > 300, (peak_hz, rms(caller))
