"""Where fedcore keeps files, and atomic writes so an interrupted run never leaves
a file that later loads as a result.

The one module outside the packages: every layer writes files (results, the data
and split caches, the engine's cache, sweeps, the deployment's keys), so it sits
below all of them and imports nothing of fedcore."""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

CACHE_DIR_ENV = "FEDCORE_CACHE_DIR"


def cache_dir() -> Path:
    """`$FEDCORE_CACHE_DIR`, else `~/.cache/fedcore`."""
    return Path(os.environ.get(CACHE_DIR_ENV) or Path.home() / ".cache" / "fedcore").expanduser()


def _umask() -> int:
    """The process's umask, read without changing it (Linux), else the usual 022."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    return 0o022


@contextmanager
def atomic_file(path: str | Path, *, durable: bool = True) -> Iterator[BinaryIO]:
    """A file to write that appears at `path` only once complete: written beside it,
    then renamed over it. `durable` also flushes it to disk first (results; a
    cache that is checked when read can skip that)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # an ordinary file's mode, not mkstemp's 0600
        with os.fdopen(fd, "wb") as file:
            yield file
            if durable:
                file.flush()
                os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_writable(path: str | Path) -> None:
    """Raise the `OSError` that writing the file `path` would raise, before any work
    goes into what it will hold: its folder is made (as the write would make it)
    and a probe file created and removed there. Asking `os.access` instead would
    say yes to root on a read-only mount, and no to nothing else that matters."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    for folder in path.parents:  # name the file in the way, not the folder under it
        if folder.exists():
            if not folder.is_dir():
                raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(folder))
            break
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=path.parent)
    os.close(fd)
    os.unlink(probe)


def os_error_text(error: OSError) -> str:
    """An `OSError` in a few words for a one-line message: `No space left on device:
    /path`, without the `[Errno 28]` and the quotes."""
    if error.strerror and error.filename:
        return f"{error.strerror}: {error.filename}"
    return error.strerror or str(error) or type(error).__name__


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_file(path) as file:
        file.write(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))
