"""WAV files: repair recordings left by a killed recorder, read format info and mono 16-bit samples."""

from __future__ import annotations

import os
import struct
import sys
import wave
from array import array
from pathlib import Path
from typing import BinaryIO

_RIFF_HEADER = 12  # "RIFF" <size> "WAVE"
_CHUNK_HEADER = 8  # <id> <size>
_MAX_RIFF = 0xFFFFFFFF

# A valid, empty 8 kHz 16-bit mono PCM WAV (44 bytes).
_EMPTY_WAV = (
    b"RIFF"
    + struct.pack("<I", 36)
    + b"WAVE"
    + b"fmt "
    + struct.pack("<IHHIIHH", 16, 1, 1, 8000, 16000, 2, 16)
    + b"data"
    + struct.pack("<I", 0)
)


def _chain_ends_at_eof(f: BinaryIO, pos: int, size: int) -> bool:
    """True if the chunks from ``pos`` on are well formed and end exactly at ``size``."""
    while pos + _CHUNK_HEADER <= size:
        f.seek(pos)
        header = f.read(_CHUNK_HEADER)
        cid, csize = header[:4], struct.unpack("<I", header[4:])[0]
        if not all(32 <= b < 127 for b in cid):
            return False
        pos += _CHUNK_HEADER + csize + (csize & 1)
    return pos == size


def repair_wav(path: str | os.PathLike[str]) -> bool:
    """Fix the RIFF and ``data`` sizes of a WAV whose writer died; return True if the file changed.

    The ``data`` chunk is taken to run to the end of the file (a partial trailing frame is cut off),
    unless its declared size is consistent and is followed by well-formed chunks that end at EOF.
    An empty file gets a valid empty 8 kHz 16-bit mono header. Raises ValueError for anything that is
    not RIFF/WAVE or has no ``fmt `` / ``data`` chunk.
    """
    p = Path(path)
    size = p.stat().st_size
    if size == 0:
        with open(p, "wb") as f:
            f.write(_EMPTY_WAV)
            f.flush()
            os.fsync(f.fileno())
        return True
    with open(p, "r+b") as f:
        head = f.read(_RIFF_HEADER)
        if len(head) < _RIFF_HEADER or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            raise ValueError(f"{p}: not a RIFF/WAVE file (starts with {head[:12]!r}); cannot repair it")
        riff_size = struct.unpack("<I", head[4:8])[0]

        block_align = 0
        pos = _RIFF_HEADER
        data_offset = -1
        declared_data = 0
        while pos + _CHUNK_HEADER <= size:
            f.seek(pos)
            header = f.read(_CHUNK_HEADER)
            cid, csize = header[:4], struct.unpack("<I", header[4:])[0]
            if cid == b"data":
                data_offset, declared_data = pos + _CHUNK_HEADER, csize
                break
            if cid == b"fmt ":
                fmt = f.read(min(csize, 16))
                if len(fmt) < 16:
                    raise ValueError(f"{p}: 'fmt ' chunk is truncated ({len(fmt)} of 16 bytes)")
                _tag, channels, _rate, _byte_rate, block_align, bits = struct.unpack("<HHIIHH", fmt)
                if block_align == 0:
                    block_align = max(1, channels * ((bits + 7) // 8))
            pos += _CHUNK_HEADER + csize + (csize & 1)
        if data_offset < 0:
            raise ValueError(f"{p}: no 'data' chunk found in {size} bytes; cannot repair it")
        if block_align == 0:
            raise ValueError(f"{p}: no 'fmt ' chunk before the 'data' chunk; cannot repair it")

        declared_end = data_offset + declared_data + (declared_data & 1)
        if (
            0 < declared_data
            and declared_data % block_align == 0
            and declared_end <= size
            and _chain_ends_at_eof(f, declared_end, size)
        ):
            data_size, new_size = declared_data, size  # sizes are right; maybe only RIFF is off
        else:
            data_size = (size - data_offset) // block_align * block_align
            new_size = data_offset + data_size
        if new_size - 8 > _MAX_RIFF:
            raise ValueError(f"{p}: {new_size} bytes is too big for a RIFF file (4 GiB limit)")

        changed = False
        if new_size != size:
            f.truncate(new_size)
            changed = True
        if riff_size != new_size - 8:
            f.seek(4)
            f.write(struct.pack("<I", new_size - 8))
            changed = True
        if declared_data != data_size:
            f.seek(data_offset - 4)
            f.write(struct.pack("<I", data_size))
            changed = True
        if changed:
            f.flush()
            os.fsync(f.fileno())
        return changed


def _open(path: str | os.PathLike[str]) -> wave.Wave_read:
    try:
        return wave.open(str(path), "rb")
    except (wave.Error, EOFError) as exc:
        raise ValueError(
            f"{path}: cannot read it as PCM WAV ({exc}); if a recorder was killed, repair_wav() it first"
        ) from exc


def wav_info(path: str | os.PathLike[str]) -> tuple[int, int, int, int]:
    """Return ``(sample_rate, channels, sample_width_bytes, n_frames)`` of a PCM WAV file."""
    with _open(path) as w:
        return w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getnframes()


def read_mono_int16(path: str | os.PathLike[str]) -> tuple[int, array]:
    """Read a 16-bit PCM WAV as ``(rate, array('h'))``; several channels are averaged to mono."""
    with _open(path) as w:
        rate, channels, width = w.getframerate(), w.getnchannels(), w.getsampwidth()
        if width != 2:
            raise ValueError(f"{path}: samples are {8 * width}-bit; expected 16-bit PCM")
        raw = w.readframes(w.getnframes())
    samples = array("h")
    samples.frombytes(raw[: len(raw) - len(raw) % 2])
    if sys.byteorder == "big":
        samples.byteswap()
    if channels > 1:
        n = len(samples) // channels
        samples = array("h", (sum(samples[i * channels : (i + 1) * channels]) // channels for i in range(n)))
    return rate, samples


def merge_stereo(left: str | os.PathLike[str], right: str | os.PathLike[str], out: str | os.PathLike[str]) -> None:
    """Write a 16-bit stereo WAV from two mono ones (the shorter is padded with silence), via a temporary file
    renamed into place: ``out`` is either absent or complete. The two inputs are left for the caller to remove."""
    rate_l, a = read_mono_int16(left)
    rate_r, b = read_mono_int16(right)
    if rate_l != rate_r:
        raise ValueError(f"{left} is {rate_l} Hz but {right} is {rate_r} Hz")
    n = max(len(a), len(b))
    a.extend(array("h", bytes(2 * (n - len(a)))))
    b.extend(array("h", bytes(2 * (n - len(b)))))
    both = array("h", bytes(4 * n))
    both[0::2], both[1::2] = a, b
    if sys.byteorder == "big":
        both.byteswap()
    tmp = f"{os.fspath(out)}.part"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f, wave.open(f, "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(rate_l)
        w.writeframes(both.tobytes())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, out)
