"""Where fedcore keeps files, and atomic writes so an interrupted run never leaves
a file that later loads as a result."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

CACHE_DIR_ENV = "FEDCORE_CACHE_DIR"


def cache_dir() -> Path:
    """`$FEDCORE_CACHE_DIR`, else `~/.cache/fedcore`."""
    return Path(os.environ.get(CACHE_DIR_ENV) or Path.home() / ".cache" / "fedcore").expanduser()


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write to a temporary file beside `path`, flush it to disk, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))
