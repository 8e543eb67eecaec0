"""Small file-system helpers shared by the modules that write files atomically."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def fsync_dir(directory: Path | str, *, strict: bool = False) -> None:
    """Make a rename inside ``directory`` durable. Best effort unless ``strict`` (some file systems refuse a
    directory fsync; a caller that must know passes strict=True and gets the OSError)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        if strict:
            raise
        return
    try:
        os.fsync(fd)
    except OSError:
        if strict:
            raise
    finally:
        os.close(fd)


def replace_file(path: Path, data: str | bytes, prepare: Callable[[Path], None] | None = None) -> None:
    """Write ``data`` beside ``path``, fsync it, rename it over ``path``, fsync the directory: a power cut leaves
    the old or the new file, never half of one. ``prepare(tmp)`` runs before the rename (owner and mode); without
    it nothing is chmod-ed, so it also works on a vfat ESP, which refuses owners and modes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        if prepare is not None:
            prepare(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
