"""Small file-system helpers shared by the modules that write files atomically."""

from __future__ import annotations

import os
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
