"""Results cached in memory and on disk, keyed by the settings that determine them.

The app uses it so that going back to a setting already computed is instant,
even after a restart, and so that in the isolated phase only the clients
whose own settings changed retrain. It is our own (not `mo.persistent_cache`)
for two reasons: entries must be written atomically (an interrupted run never
leaves an entry that loads), and the isolated entries hold a client's trained
weights, not its report, because the report also depends on the other
clients' missing digits and is recomputed in a few milliseconds.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from fedcore.config import ExperimentConfig
from fedcore.data import MnistData
from fedcore.isolated import client_result, fit_isolated_model
from fedcore.local_training import ClientEpochCallback
from fedcore.model import build_model
from fedcore.partition import ClientPartition
from fedcore.progress import ProgressCallback
from fedcore.results import ClientResult, FederatedResult
from fedcore.storage import atomic_write_bytes, cache_dir


class ResultCache:
    """`kind/sha256(key).pt` files under a folder, with an in-memory layer in front."""

    def __init__(self, folder: str | Path | None = None) -> None:
        self.folder = Path(folder) if folder is not None else cache_dir() / "results"
        self._memory: dict[tuple[str, str], Any] = {}

    def _path(self, kind: str, key: str) -> Path:
        return self.folder / kind / f"{hashlib.sha256(key.encode()).hexdigest()[:40]}.pt"

    def get(self, kind: str, key: str) -> Any | None:
        if (kind, key) in self._memory:
            return self._memory[(kind, key)]
        try:
            value = torch.load(self._path(kind, key), weights_only=True)
        except (OSError, RuntimeError, EOFError, pickle.UnpicklingError):
            return None  # missing or unreadable: recompute
        self._memory[(kind, key)] = value
        return value

    def put(self, kind: str, key: str, value: Any) -> None:
        buffer = io.BytesIO()
        torch.save(value, buffer)
        atomic_write_bytes(self._path(kind, key), buffer.getvalue())
        self._memory[(kind, key)] = value

    def get_or_compute(self, kind: str, key: str, compute: Callable[[], Any]) -> tuple[Any, bool]:
        """The cached value, else `compute()` stored; and whether it was cached."""
        value = self.get(kind, key)
        if value is not None:
            return value, True
        value = compute()
        self.put(kind, key, value)
        return value, False


def isolated_client_key(config: ExperimentConfig, partition: ClientPartition) -> str:
    """What one isolated model depends on: its own data and the training settings."""
    return json.dumps(
        {
            "data_dir": config.resolved_data_dir(),
            "num_clients": config.num_clients,
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


def cached_isolated_client(
    cache: ResultCache,
    data: MnistData,
    partition: ClientPartition,
    config: ExperimentConfig,
    on_epoch: ClientEpochCallback | None = None,
) -> tuple[ClientResult, bool]:
    """One isolated client's result, training only if its own settings are new."""

    def fit() -> dict[str, Any]:
        model, losses = fit_isolated_model(data, partition, config, on_epoch)
        return {"weights": model.state_dict(), "losses": losses}

    entry, hit = cache.get_or_compute("isolated", isolated_client_key(config, partition), fit)
    model = build_model(config.seed)
    model.load_state_dict(entry["weights"])
    return client_result(model, entry["losses"], data, partition, config), hit


def cached_federated(
    cache: ResultCache, config: ExperimentConfig, on_progress: ProgressCallback | None = None
) -> tuple[FederatedResult, bool]:
    """The federated result for this exact config, simulating only if it is new."""
    from fedcore.simulation import simulate  # imports Ray; only when needed

    entry, hit = cache.get_or_compute(
        "federated", config.cache_key(), lambda: simulate(config, on_progress).to_dict()
    )
    return FederatedResult.from_dict(entry), hit
