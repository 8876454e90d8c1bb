"""Split the MNIST training set across clients.

Every split is Flower Datasets' own: the training set shuffled with the seed
(what `FederatedDataset(shuffle=True, seed=...)` does), then one of its
partitioners. The result is indices into the in-memory tensors, whichever
source the images came from.

- `exclude` (the story's): `IidPartitioner`, then each client's excluded digits removed;
- `iid`: `IidPartitioner`;
- `dirichlet:ALPHA`: `DirichletPartitioner` (label skew; NIID-Bench's Dir(alpha));
- `classes:K`: `PathologicalPartitioner` (K digits per client; NIID-Bench's #C=K);
- `shards:K`: `ShardPartitioner` (K label-sorted shards per client; McMahan et al.);
- `sizes:LAW`: `LinearPartitioner`, `SquarePartitioner` or `ExponentialPartitioner`.

The IID split, the default's, is computed here in NumPy (tested equal to the
library): importing `datasets` costs a fresh process 1-5 s, each SuperNode and
worker included. The others go through the library once and their indices are
kept on disk, so the other processes of a run read them instead.

Whatever the split, it is kept as one array of the training images' indices,
client after client, and where each client's begin (`Partitions`): its memory is
that of the 60,000 indices, the same for 3 clients or 10,000, and one client's
partition is made when asked for, from its own images only (a ClientApp that
trains client 7,302 of 10,000 does not make the other 9,999).
"""

from __future__ import annotations

import hashlib
import operator
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from fedcore.experiment.config import ExperimentConfig
from fedcore.experiment.specs import ConfigError, Split
from fedcore.storage import atomic_file, cache_dir

if TYPE_CHECKING:
    from flwr_datasets.partitioner import Partitioner

MAX_REPORTED_SUBSETS = 10  # missing-digit subsets scored every round (the first clients')


@dataclass(frozen=True)
class ClientPartition:
    """One client's training data: indices into `MnistData.train_x`.

    `excluded`: the digits it has no image of (the exclude split: its excluded
    digits; any other: whatever the split left it without).
    """

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
    steps here, in NumPy, equal to flwr-datasets' own result (tested against it).
    """
    indices, offsets = iid_split(num_samples, num_partitions, seed)
    return [torch.from_numpy(indices[a:b]) for a, b in zip(offsets, offsets[1:], strict=False)]


def iid_split(num_samples: int, num_partitions: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`iid_shards` as one array: the seeded permutation, and where each shard begins
    (`num_partitions + 1` offsets, the last `num_samples`); shards as
    `np.array_split` cuts them, the first `num_samples % num_partitions` one longer."""
    permutation = np.random.default_rng(seed).permutation(num_samples)
    size, longer = divmod(num_samples, num_partitions)
    sizes = np.full(num_partitions, size, dtype=np.int64)
    sizes[:longer] += 1
    return permutation, np.concatenate([[0], np.cumsum(sizes)])


def library_partitioner(split: Split, num_partitions: int, seed: int) -> Partitioner:
    """The flwr-datasets partitioner for a split other than exclude / iid."""
    from flwr_datasets import partitioner as fp  # heavy: only for these splits

    kind, value = split.kind, split.value
    if kind == "dirichlet":
        return fp.DirichletPartitioner(
            num_partitions=num_partitions, partition_by="label", alpha=value, seed=seed
        )
    if kind == "classes":
        return fp.PathologicalPartitioner(
            num_partitions=num_partitions,
            partition_by="label",
            num_classes_per_partition=value,
            # NIID-Bench's #C=k: client i's first digit is i mod 10, so every digit is held
            class_assignment_mode="first-deterministic",
            seed=seed,
        )
    if kind == "shards":
        return fp.ShardPartitioner(
            num_partitions=num_partitions,
            partition_by="label",
            num_shards_per_partition=value,
            seed=seed,
        )
    if kind == "sizes":
        laws = {
            "linear": fp.LinearPartitioner,
            "square": fp.SquarePartitioner,
            "exponential": fp.ExponentialPartitioner,
        }
        return laws[value](num_partitions=num_partitions)
    raise ValueError(f"{split} is computed without the library")


def library_split(
    labels: np.ndarray, split: Split, num_partitions: int, seed: int
) -> list[np.ndarray]:
    """Indices of each partition, as flwr-datasets computes them over the shuffled labels."""
    import datasets

    kind, value = split.kind, split.value
    if kind == "shards" and num_partitions * value > len(labels):
        raise ConfigError(
            f"split {split} with {num_partitions} clients cannot be made: "
            f"{num_partitions * value} shards of {len(labels)} images would be empty"
        )
    table = datasets.Dataset.from_dict({"label": labels, "index": np.arange(len(labels))})
    partitioner = library_partitioner(split, num_partitions, seed)
    partitioner.dataset = table.shuffle(seed=seed)
    try:
        with warnings.catch_warnings():  # retries and deprecations: the outcome is what counts
            warnings.simplefilter("ignore")
            return [
                np.asarray(partitioner.load_partition(i)["index"], dtype=np.int64)
                for i in range(num_partitions)
            ]
    except (ValueError, ZeroDivisionError) as error:  # what the library raises for these
        raise ConfigError(
            f"split {split} with {num_partitions} clients cannot be made: {error}"
        ) from None


def _split_cache_path(labels: np.ndarray, split: Split, num_partitions: int, seed: int) -> Path:
    key = hashlib.sha256(labels.tobytes())
    key.update(f"{split}|{num_partitions}|{seed}|{version('flwr-datasets')}".encode())
    key.update(Path(__file__).read_bytes())  # how this module asks the library
    return cache_dir() / "splits" / f"{key.hexdigest()[:24]}.npz"


def split_array(
    labels: torch.Tensor, split: Split, num_partitions: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Every client's indices for `split` (before any digit is excluded) as one array,
    client after client, and the `num_partitions + 1` offsets where each begins."""
    if split.kind in ("exclude", "iid"):
        return iid_split(len(labels), num_partitions, seed)
    array = labels.numpy()
    path = _split_cache_path(array, split, num_partitions, seed)
    try:
        with np.load(path) as stored:
            indices, inner = stored["indices"], stored["offsets"]
        if len(inner) != num_partitions - 1:
            raise ValueError(f"{len(inner) + 1} partitions kept, not {num_partitions}")
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # missing or damaged
        parts = library_split(array, split, num_partitions, seed)
        indices, inner = np.concatenate(parts), np.cumsum([len(p) for p in parts])[:-1]
        try:
            with atomic_file(path, durable=False) as file:
                np.savez(file, indices=indices, offsets=inner)
        except OSError:
            pass  # a read-only disk only costs the next process the library call
    return indices, np.concatenate([[0], inner, [len(indices)]]).astype(np.int64)


def split_indices(
    labels: torch.Tensor, split: Split, num_partitions: int, seed: int
) -> list[torch.Tensor]:
    """Each client's indices for `split` (before any digit is excluded)."""
    indices, offsets = split_array(labels, split, num_partitions, seed)
    return [torch.from_numpy(indices[a:b]) for a, b in zip(offsets, offsets[1:], strict=False)]


class Partitions(Sequence[ClientPartition]):
    """Every client's data, client 1 first, each `ClientPartition` made when asked for.

    Held: the labels (the data's own tensor), the split's indices (one array, client
    after client) and its offsets: the training set's 60,000 indices and one offset a
    client, whatever the number of clients. `partitions[i]` costs client i + 1's own
    images (a slice, and with the exclude split its excluded digits removed); a loop
    over all of them costs the training set once.
    """

    def __init__(
        self,
        labels: torch.Tensor,
        indices: np.ndarray,
        offsets: np.ndarray,
        exclusions: Sequence[tuple[int, ...]] | None,
    ) -> None:
        self._labels, self._indices, self._offsets = labels, indices, offsets
        self._exclusions = exclusions  # the exclude split's; None: what the split left

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, index: int | slice) -> ClientPartition | list[ClientPartition]:
        """One client's partition (`partitions[0]` is client 1's); a slice: a list."""
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        i = operator.index(index)
        i += len(self) if i < 0 else 0
        if not 0 <= i < len(self):
            raise IndexError(f"client index {index} of {len(self)} clients")
        shard = torch.from_numpy(self._indices[self._offsets[i] : self._offsets[i + 1]])
        if self._exclusions is None:
            count = torch.bincount(self._labels[shard], minlength=10)
            return ClientPartition(i + 1, tuple((count == 0).nonzero().flatten().tolist()), shard)
        excluded = self._exclusions[i]
        keep = ~torch.isin(self._labels[shard], torch.tensor(excluded, dtype=self._labels.dtype))
        return ClientPartition(i + 1, excluded, shard[keep])

    def __iter__(self) -> Iterator[ClientPartition]:
        return (self[i] for i in range(len(self)))

    @property
    def nbytes(self) -> int:
        """The bytes this object keeps of its own (the labels are the data's)."""
        return self._indices.nbytes + self._offsets.nbytes


def partition_clients(labels: torch.Tensor, config: ExperimentConfig) -> Partitions:
    """Every client's data; with the exclude split, its excluded digits removed.
    A sequence whose items are made when asked for (`Partitions`)."""
    indices, offsets = split_array(labels, config.split_spec, config.num_clients, config.seed)
    exclusions = config.excluded_digits if config.split_kind == "exclude" else None
    return Partitions(labels, indices, offsets, exclusions)


def missing_subsets(partitions: Sequence[ClientPartition]) -> tuple[tuple[int, ...], ...]:
    """The test subsets scored for every model: the distinct digit sets clients miss,
    sorted, in client order (the first `MAX_REPORTED_SUBSETS` of them)."""
    seen: dict[tuple[int, ...], None] = {}
    for partition in partitions:
        if partition.excluded:
            seen.setdefault(tuple(sorted(partition.excluded)), None)
    return tuple(seen)[:MAX_REPORTED_SUBSETS]


def client_label_counts(
    labels: torch.Tensor, partitions: Sequence[ClientPartition]
) -> list[list[int]]:
    """Images per digit of every client (rows: clients)."""
    return [torch.bincount(labels[p.indices], minlength=10).tolist() for p in partitions]
