"""Split the MNIST training set across clients, then take digits away from each.

The split itself is Flower Datasets' `IidPartitioner` over a seeded shuffle,
exactly what `FederatedDataset(shuffle=True, seed=...)` does; we run it on a
tiny table of (index, label) rows so that the result is a set of indices into
the in-memory tensors, whichever source the images came from.
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from fedcore.config import ExperimentConfig
from fedcore.storage import atomic_write_bytes, cache_dir

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class ClientPartition:
    """One client's training data: indices into `MnistData.train_x`."""

    client: int  # 1-based, as users count
    excluded: tuple[int, ...]
    indices: torch.Tensor

    @property
    def size(self) -> int:
        return len(self.indices)


def iid_shards(num_samples: int, num_partitions: int, seed: int) -> list[torch.Tensor]:
    """Indices of the seeded IID partitions of `range(num_samples)`, cached on disk.

    The cache spares every Ray worker and SuperNode the 2 s import of
    `datasets` when the split was computed before on this machine.
    """
    path = cache_dir() / "partitions" / f"iid-{num_samples}-{num_partitions}-{seed}.pt"
    try:
        shards = torch.load(path)
        if len(shards) == num_partitions and sum(len(s) for s in shards) == num_samples:
            return shards
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError):
        pass  # not computed yet (or unreadable): compute and cache it
    shards = flwr_iid_shards(num_samples, num_partitions, seed)
    buffer = io.BytesIO()
    torch.save(shards, buffer)
    atomic_write_bytes(path, buffer.getvalue())
    return shards


def flwr_iid_shards(num_samples: int, num_partitions: int, seed: int) -> list[torch.Tensor]:
    """What `FederatedDataset(shuffle=True, seed=seed)` + `IidPartitioner` give."""
    import datasets
    from flwr_datasets.partitioner import IidPartitioner

    table = datasets.Dataset.from_dict({"index": list(range(num_samples))})
    partitioner = IidPartitioner(num_partitions=num_partitions)
    partitioner.dataset = table.shuffle(seed=seed)
    return [
        torch.from_numpy(partitioner.load_partition(i).with_format("numpy")[:]["index"])
        for i in range(num_partitions)
    ]


def partition_clients(labels: torch.Tensor, config: ExperimentConfig) -> list[ClientPartition]:
    """The IID shards with each client's excluded digits removed."""
    shards = iid_shards(len(labels), config.num_clients, config.seed)
    partitions = []
    for client, (shard, excluded) in enumerate(zip(shards, config.excluded_digits, strict=True), 1):
        keep = ~torch.isin(labels[shard], torch.tensor(excluded, dtype=labels.dtype))
        partitions.append(ClientPartition(client, excluded, shard[keep]))
    return partitions


def label_counts(labels: torch.Tensor, partitions: list[ClientPartition]) -> pd.DataFrame:
    """Long table `client, digit, count` (every digit, zeros included) for charts."""
    import pandas as pd  # not at the top: Ray workers import this module and need no pandas

    rows = []
    for part in partitions:
        counts = torch.bincount(labels[part.indices], minlength=10).tolist()
        rows += [
            {
                "client": part.client,
                "digit": digit,
                "count": count,
                "excluded": digit in part.excluded,
            }
            for digit, count in enumerate(counts)
        ]
    return pd.DataFrame(rows)
