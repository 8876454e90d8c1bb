"""Results cached on disk, keyed by the settings that determine them and by the code.

Every key carries `code_fingerprint()`: a result never outlives the code or the
library versions that computed it. The isolated entries hold a client's trained
weights, not its report: the report also depends on the other clients' missing
digits and is recomputed in a few milliseconds.

The cache only ever saves time, so it never costs a result: a write that fails
(a full disk, a folder that cannot be written) is logged in one line and the run
goes on; an entry that cannot be read for any reason (emptied, truncated,
garbage, the wrong shape) is deleted with one line and computed again. That is
also why entries are written atomically but not flushed to disk: a crash leaves
at worst an entry that fails its read. The folder is kept under
`$FEDCORE_CACHE_MAX_GB` by deleting the least recently used entries (a read
marks its entry used).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import logging
import math
import os
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any, TypeVar

import torch

from fedcore.data.partition import ClientPartition
from fedcore.experiment.config import ExperimentConfig
from fedcore.storage import atomic_file, cache_dir, os_error_text

FEDCORE_ROOT = Path(__file__).resolve().parent.parent
# Libraries whose versions can change the numbers (kernels, RNGs, aggregation).
NUMERIC_LIBRARIES = ("fedcore", "torch", "numpy", "flwr")
MAX_GB_ENV = "FEDCORE_CACHE_MAX_GB"
DEFAULT_MAX_GB = 5.0
# A scan for eviction costs a stat per entry, so it runs each time a hundredth of
# the cap has been written (and at the first write): the cap may be passed by that
# much, times the processes writing at once.
SCANS_PER_CAP = 100
STALE_TEMP_SECONDS = 3600  # a temp file this old was left by a killed writer

log = logging.getLogger("fedcore.cache")
T = TypeVar("T")


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """A hash of fedcore's source and of the versions of the libraries that compute."""
    digest = hashlib.sha256()
    for name in NUMERIC_LIBRARIES:
        digest.update(f"{name}=={version(name)}\n".encode())
    for path in sorted(FEDCORE_ROOT.rglob("*.py")):
        digest.update(path.relative_to(FEDCORE_ROOT).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def max_cache_bytes() -> int:
    """`$FEDCORE_CACHE_MAX_GB` in bytes (0 keeps nothing); a value that is not a
    size is logged in one line and the default used."""
    text = os.environ.get(MAX_GB_ENV, "").strip()
    if not text:
        return int(DEFAULT_MAX_GB * 1e9)
    try:
        gigabytes = float(text)
        if not math.isfinite(gigabytes) or gigabytes < 0:
            raise ValueError
    except ValueError:
        log.warning(
            "fedcore: cache: %s=%r is not a size in GB; using %g GB",
            MAX_GB_ENV,
            text,
            DEFAULT_MAX_GB,
        )
        return int(DEFAULT_MAX_GB * 1e9)
    return int(gigabytes * 1e9)


def _why(error: BaseException) -> str:
    """An exception in one short line (PyTorch's load errors run to paragraphs)."""
    words = " ".join(str(error).split())
    text = f"{type(error).__name__}: {words}" if words else type(error).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def _identity(value: Any) -> Any:
    return value


class ResultCache:
    """`kind/sha256(key + code fingerprint).pt` files under a folder, at most
    `max_bytes` of them (default: `$FEDCORE_CACHE_MAX_GB`)."""

    def __init__(self, folder: str | Path | None = None, max_bytes: int | None = None) -> None:
        self.folder = Path(folder) if folder is not None else cache_dir() / "results"
        self.max_bytes = max_cache_bytes() if max_bytes is None else max_bytes
        self._written_since_scan = self.max_bytes  # the first write scans
        self._failing: str | None = None  # the write error logged, until a write works again

    def _path(self, kind: str, key: str) -> Path:
        name = hashlib.sha256(f"{code_fingerprint()}\n{key}".encode()).hexdigest()[:40]
        return self.folder / kind / f"{name}.pt"

    def get(self, kind: str, key: str, read: Callable[[Any], T] = _identity) -> T | None:
        """The entry as `read` makes it, or None when there is none. `read` checks the
        entry is what the caller needs (raising if not): an entry that fails
        that or the load itself is deleted, with one line, to be computed again."""
        path = self._path(kind, key)
        try:
            value = read(torch.load(path, weights_only=True))
        except (FileNotFoundError, NotADirectoryError):
            return None  # not cached (or no folder to cache in: the write says so)
        except Exception as error:  # a damaged entry fails in as many ways as it can be damaged
            try:
                path.unlink(missing_ok=True)
                done = "deleted; computing it again"
            except OSError as unlink_error:
                done = f"could not delete it ({os_error_text(unlink_error)}); computing it again"
            log.warning("fedcore: cache: %s could not be read (%s); %s", path, _why(error), done)
            return None
        # Used now: the last to be evicted (unless evicted meanwhile, or the folder is
        # read-only: the entry is read all the same).
        with contextlib.suppress(OSError):
            os.utime(path)
        return value

    def put(self, kind: str, key: str, value: Any) -> None:
        """Best effort: a result that cannot be cached is still the run's result. A
        failing folder is logged once, not once per entry, until a write works again."""
        buffer = io.BytesIO()
        torch.save(value, buffer)
        path = self._path(kind, key)
        try:
            with atomic_file(path, durable=False) as file:
                file.write(buffer.getvalue())
        except OSError as error:
            why = error.strerror or type(error).__name__  # the same, whatever the entry
            if why != self._failing:
                log.warning(
                    "fedcore: cache: cannot write to %s (%s); results are not cached "
                    "until it can be written, the runs go on",
                    self.folder,
                    os_error_text(error),
                )
            self._failing = why
            return
        self._failing = None
        self._written_since_scan += buffer.tell()
        if self._written_since_scan * SCANS_PER_CAP >= self.max_bytes:
            self._written_since_scan = 0
            with contextlib.suppress(OSError):  # a folder it cannot list: no eviction this time
                self.evict()

    def evict(self) -> None:
        """Delete the least recently used entries until the rest fit in `max_bytes`
        (and the temp files of killed writers). A process reading an entry deleted
        here keeps its open file (POSIX); one that opens it later misses and
        computes it again."""
        entries: list[tuple[int, int, Path]] = []  # (last used, size, path)
        total = 0
        stale = time.time() - STALE_TEMP_SECONDS
        for path in self.folder.glob("*/*"):
            try:
                stat = path.stat()
                if path.name.endswith(".tmp"):
                    if stat.st_mtime < stale:
                        path.unlink()
                    continue
            except OSError:
                continue  # gone meanwhile
            if path.suffix == ".pt":
                entries.append((stat.st_mtime_ns, stat.st_size, path))
                total += stat.st_size
        for _, size, path in sorted(entries):
            if total <= self.max_bytes:
                break
            try:
                path.unlink(missing_ok=True)
            except OSError:
                continue  # not ours to delete: it stays counted
            total -= size


def model_entry_reader(model: torch.nn.Module) -> Callable[[Any], dict[str, Any]]:
    """A `ResultCache.get` reader for entries that hold a model: weights that
    `model` (of the entry's settings) takes, PyTorch checking names and shapes,
    and a loss per epoch."""

    def read(entry: Any) -> dict[str, Any]:
        model.load_state_dict(entry["weights"])
        return {"weights": entry["weights"], "losses": [float(loss) for loss in entry["losses"]]}

    return read


def isolated_client_key(config: ExperimentConfig, partition: ClientPartition) -> str:
    """What one isolated model depends on: its own data and the training settings."""
    return json.dumps(
        {
            "data_dir": config.resolved_data_dir(),
            "num_clients": config.num_clients,
            "split": config.split,
            "model": config.model,
            "seed": config.seed,
            "client": partition.client,
            "excluded": list(partition.excluded),
            "epochs": config.local_epochs,
            "batch_size": config.batch_size,
            "learning_rate": config.learning_rate,
            "momentum": config.momentum,
        },
        sort_keys=True,
    )
