"""Results cached on disk, keyed by the settings that determine them and by the code.

Entries are written atomically (an interrupted run never leaves an entry that
loads), and every key carries `code_fingerprint()`: a result never outlives the
code or the library versions that computed it. The isolated entries hold a
client's trained weights, not its report: the report also depends on the other
clients' missing digits and is recomputed in a few milliseconds.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import pickle
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch

from fedcore.data.partition import ClientPartition
from fedcore.experiment.config import ExperimentConfig
from fedcore.storage import atomic_write_bytes, cache_dir

FEDCORE_ROOT = Path(__file__).resolve().parent.parent
# Libraries whose versions can change the numbers (kernels, RNGs, aggregation).
NUMERIC_LIBRARIES = ("fedcore", "torch", "numpy", "flwr")


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


class ResultCache:
    """`kind/sha256(key + code fingerprint).pt` files under a folder."""

    def __init__(self, folder: str | Path | None = None) -> None:
        self.folder = Path(folder) if folder is not None else cache_dir() / "results"

    def _path(self, kind: str, key: str) -> Path:
        name = hashlib.sha256(f"{code_fingerprint()}\n{key}".encode()).hexdigest()[:40]
        return self.folder / kind / f"{name}.pt"

    def get(self, kind: str, key: str) -> Any | None:
        try:
            return torch.load(self._path(kind, key), weights_only=True)
        except (OSError, RuntimeError, EOFError, pickle.UnpicklingError):
            return None  # missing or unreadable: recompute

    def put(self, kind: str, key: str, value: Any) -> None:
        buffer = io.BytesIO()
        torch.save(value, buffer)
        atomic_write_bytes(self._path(kind, key), buffer.getvalue())


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
