"""Split the MNIST training set across clients, then take digits away from each.

The split is Flower Datasets' `IidPartitioner` over a seeded shuffle, exactly
what `FederatedDataset(shuffle=True, seed=...)` gives, as indices into the
in-memory tensors, whichever source the images came from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from fedcore.config import ExperimentConfig

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
    """Indices of the seeded IID partitions of `range(num_samples)`.

    `Dataset.shuffle(seed)` is the permutation `np.random.default_rng(seed)`
    draws, and `IidPartitioner` cuts it into contiguous shards whose sizes
    differ by at most one (`Dataset.shard(contiguous=True)`): the same two
    steps here, in NumPy, equal to flwr-datasets' own result (tested against
    it). Going through `datasets` instead cost every fresh process, each Ray
    worker and SuperNode included, a 2-5 s import.
    """
    permutation = np.random.default_rng(seed).permutation(num_samples)
    return [torch.from_numpy(shard) for shard in np.array_split(permutation, num_partitions)]


def partition_clients(labels: torch.Tensor, config: ExperimentConfig) -> list[ClientPartition]:
    """The IID shards with each client's excluded digits removed."""
    shards = iid_shards(len(labels), config.num_clients, config.seed)
    partitions = []
    for client, (shard, excluded) in enumerate(zip(shards, config.excluded_digits, strict=True), 1):
        keep = ~torch.isin(labels[shard], torch.tensor(excluded, dtype=labels.dtype))
        partitions.append(ClientPartition(client, excluded, shard[keep]))
    return partitions


def label_counts(labels: torch.Tensor, partitions: list[ClientPartition]) -> pd.DataFrame:
    """Long table `client, digit, count, excluded` (every digit, zeros included) for charts."""
    from fedcore.tables import label_counts_table  # pandas: not for every process

    return label_counts_table(
        (part.client, torch.bincount(labels[part.indices], minlength=10).tolist(), part.excluded)
        for part in partitions
    )
