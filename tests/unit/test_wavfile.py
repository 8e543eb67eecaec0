"""WAV repair after a killed recorder, format info and mono 16-bit reading."""

from __future__ import annotations

import struct
import wave
from array import array
from pathlib import Path

import pytest

from appliance.wavfile import read_mono_int16, repair_wav, wav_info

N_FRAMES = 800  # 0.1 s at 8 kHz


def _write_wav(path: Path, *, rate: int = 8000, channels: int = 1, width: int = 2, n: int = N_FRAMES) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(bytes((i * 7) % 251 for i in range(n * channels * width)))
    return path


def _set_sizes(path: Path, riff: int, data: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[4:8] = struct.pack("<I", riff)
    pos = raw.index(b"data")
    raw[pos + 4 : pos + 8] = struct.pack("<I", data)
    path.write_bytes(bytes(raw))


def _frames(path: Path) -> int:
    with wave.open(str(path), "rb") as w:
        return w.getnframes()


def _riff_size(path: Path) -> int:
    return struct.unpack("<I", path.read_bytes()[4:8])[0]


def test_valid_file_is_left_alone(tmp_path: Path) -> None:
    p = _write_wav(tmp_path / "ok.wav")
    before = p.read_bytes()
    assert repair_wav(p) is False
    assert p.read_bytes() == before


@pytest.mark.parametrize(
    ("riff", "data", "tail", "channels", "expected_frames"),
    [
        (0, 0, b"", 1, N_FRAMES),  # killed before the first size update
        (0xFFFFFFF0, 0xFFFFFFF0, b"", 1, N_FRAMES),  # bigger than the file
        (36 + 100, 100, b"", 1, N_FRAMES),  # stale: written when the file was shorter
        (0, 0, b"\x01", 1, N_FRAMES),  # partial trailing frame (1 of 2 bytes)
        (0, 0, b"\x01\x02\x03", 2, N_FRAMES),  # stereo: 3 of 4 bytes of a frame
        (36 + 50 * 4, 50 * 4, b"\x01\x02", 2, N_FRAMES),  # stale and partial
    ],
)
def test_repair_fixes_sizes(
    tmp_path: Path, riff: int, data: int, tail: bytes, channels: int, expected_frames: int
) -> None:
    p = _write_wav(tmp_path / "rec.wav", channels=channels)
    with open(p, "ab") as f:
        f.write(tail)
    _set_sizes(p, riff, data)

    assert repair_wav(p) is True
    assert _frames(p) == expected_frames
    assert _riff_size(p) == p.stat().st_size - 8
    assert p.stat().st_size == 44 + expected_frames * 2 * channels
    assert repair_wav(p) is False  # idempotent
    assert wav_info(p) == (8000, channels, 2, expected_frames)


def test_only_riff_size_wrong(tmp_path: Path) -> None:
    p = _write_wav(tmp_path / "rec.wav")
    _set_sizes(p, 0, N_FRAMES * 2)
    assert repair_wav(p) is True
    assert _riff_size(p) == p.stat().st_size - 8
    assert _frames(p) == N_FRAMES


def test_extra_chunk_before_data(tmp_path: Path) -> None:
    p = _write_wav(tmp_path / "rec.wav")
    raw = p.read_bytes()
    extra = b"LIST" + struct.pack("<I", 5) + b"abcde" + b"\x00"  # odd size: padded
    p.write_bytes(raw[:36] + extra + raw[36:])
    _set_sizes(p, 0, 0)
    assert repair_wav(p) is True
    assert _frames(p) == N_FRAMES


def test_trailing_chunk_after_valid_data_is_kept(tmp_path: Path) -> None:
    p = _write_wav(tmp_path / "rec.wav")
    extra = b"LIST" + struct.pack("<I", 4) + b"INFO"
    with open(p, "ab") as f:
        f.write(extra)
    _set_sizes(p, p.stat().st_size - 8, N_FRAMES * 2)
    assert repair_wav(p) is False
    assert _frames(p) == N_FRAMES
    assert p.read_bytes().endswith(extra)


def test_empty_file_gets_a_header(tmp_path: Path) -> None:
    p = tmp_path / "empty.wav"
    p.write_bytes(b"")
    assert repair_wav(p) is True
    assert wav_info(p) == (8000, 1, 2, 0)
    assert repair_wav(p) is False


@pytest.mark.parametrize(
    "content",
    [
        b"RIF",  # shorter than a header
        b"RIFF\x00\x00\x00\x00WAV",
        b"ID3\x04" + b"\x00" * 100,  # an MP3
        b"RIFF\x00\x00\x00\x00AVI " + b"\x00" * 40,
        b"RIFF\x00\x00\x00\x00WAVE",  # header only, no chunks
        b"RIFF\x00\x00\x00\x00WAVEdata\x00\x00\x00\x00\x01\x02",  # no fmt chunk
    ],
)
def test_not_repairable_raises(tmp_path: Path, content: bytes) -> None:
    p = tmp_path / "bad.wav"
    p.write_bytes(content)
    with pytest.raises(ValueError, match="bad.wav"):
        repair_wav(p)
    assert p.read_bytes() == content  # never touched


def test_wav_info_rejects_non_wav(tmp_path: Path) -> None:
    p = tmp_path / "x.wav"
    p.write_bytes(b"hello world, not a wav file at all" * 3)
    with pytest.raises(ValueError, match="x.wav"):
        wav_info(p)


def test_read_mono_int16(tmp_path: Path) -> None:
    p = tmp_path / "mono.wav"
    samples = array("h", [0, 1000, -1000, 32767, -32768])
    with wave.open(str(p), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(samples.tobytes())
    rate, got = read_mono_int16(p)
    assert rate == 16000
    assert got.typecode == "h"
    assert list(got) == list(samples)


def test_read_mono_int16_downmixes_stereo(tmp_path: Path) -> None:
    p = tmp_path / "stereo.wav"
    frames = array("h", [100, 300, -100, -300, 32767, 32767])
    with wave.open(str(p), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(frames.tobytes())
    rate, got = read_mono_int16(p)
    assert (rate, list(got)) == (8000, [200, -200, 32767])


def test_read_mono_int16_rejects_8bit(tmp_path: Path) -> None:
    p = _write_wav(tmp_path / "u8.wav", width=1)
    with pytest.raises(ValueError, match="16-bit"):
        read_mono_int16(p)


def test_read_after_repair(tmp_path: Path) -> None:
    p = _write_wav(tmp_path / "rec.wav")
    _set_sizes(p, 0, 0)
    with pytest.raises(ValueError, match="rec.wav"):  # RIFF size 0: the wave module gives up
        read_mono_int16(p)
    repair_wav(p)
    assert len(read_mono_int16(p)[1]) == N_FRAMES


def test_merge_stereo_puts_each_side_in_its_channel_and_pads_the_shorter(tmp_path):
    from appliance.wavfile import merge_stereo

    def mono(path, samples):
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(8000)
            w.writeframes(array("h", samples).tobytes())
        return path

    out = tmp_path / "call.wav"
    merge_stereo(mono(tmp_path / "l.wav", [1, 2, 3]), mono(tmp_path / "r.wav", [-1, -2]), out)
    with wave.open(str(out), "rb") as w:
        assert (w.getnchannels(), w.getframerate(), w.getnframes()) == (2, 8000, 3)
        frames = array("h", w.readframes(3))
    assert list(frames) == [1, -1, 2, -2, 3, 0]
    assert (out.stat().st_mode & 0o777) == 0o600 and not (tmp_path / "call.wav.part").exists()
