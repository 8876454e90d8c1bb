import datasets
import numpy as np
import pytest
import torch
from flwr_datasets.partitioner import IidPartitioner

from fedcore.data.mnist import load_mnist
from fedcore.data.partition import (
    iid_shards,
    library_partitioner,
    missing_subsets,
    partition_clients,
    split_indices,
)
from fedcore.experiment.config import ExperimentConfig
from fedcore.experiment.specs import ConfigError, Split
from fedcore.report.tables import label_counts
from fedcore.storage import cache_dir


def test_reference_split(small_config):
    data = load_mnist(small_config)
    shards = iid_shards(60_000, 3, small_config.seed)
    assert [len(s) for s in shards] == [20_000, 20_000, 20_000]
    assert len(torch.unique(torch.cat(shards))) == 60_000  # disjoint, covers everything
    parts = partition_clients(data.train_y, small_config)
    for part, shard, excluded in zip(parts, shards, small_config.excluded_digits, strict=True):
        labels = data.train_y[part.indices]
        assert not torch.isin(labels, torch.tensor(excluded)).any()
        expected = int((~torch.isin(data.train_y[shard], torch.tensor(excluded))).sum())
        assert part.size == expected
        assert 13_000 < part.size < 15_000
    assert [p.client for p in parts] == [1, 2, 3]


def test_split_is_seeded():
    assert all(
        torch.equal(a, b) for a, b in zip(iid_shards(600, 3, 1), iid_shards(600, 3, 1), strict=True)
    )
    assert not torch.equal(iid_shards(600, 3, 1)[0], iid_shards(600, 3, 2)[0])


@pytest.mark.parametrize(
    ("num_samples", "num_partitions", "seed"),
    [(900, 4, 5), (1003, 3, 42), (60_000, 3, 42), (10, 10, 0)],
)
def test_split_equals_flower_datasets_iid_partitioner(num_samples, num_partitions, seed):
    """What `FederatedDataset(shuffle=True, seed=seed)` + `IidPartitioner` give."""
    table = datasets.Dataset.from_dict({"index": list(range(num_samples))})
    partitioner = IidPartitioner(num_partitions=num_partitions)
    partitioner.dataset = table.shuffle(seed=seed)
    expected = [partitioner.load_partition(i)["index"] for i in range(num_partitions)]
    ours = iid_shards(num_samples, num_partitions, seed)
    assert [shard.tolist() for shard in ours] == expected


def test_label_counts_table(small_config):
    data = load_mnist(small_config)
    parts = partition_clients(data.train_y, small_config)
    table = label_counts(data.train_y, parts)
    assert list(table.columns) == ["client", "digit", "count", "excluded"]
    assert len(table) == 30
    assert table["count"].sum() == sum(p.size for p in parts)
    client1 = table[table.client == 1].set_index("digit")
    assert client1.loc[[1, 3, 7], "count"].tolist() == [0, 0, 0]
    assert client1.loc[[1, 3, 7], "excluded"].all() and not client1.loc[0, "excluded"]


def test_client_without_exclusions_keeps_its_whole_shard(small_config):
    config = ExperimentConfig(data_dir=small_config.data_dir, excluded_digits=((), (1,), (2,)))
    data = load_mnist(config)
    assert partition_clients(data.train_y, config)[0].size == 20_000


# ---------------------------------------------------------------- other splits

TINY_LABELS = torch.from_numpy(np.random.default_rng(0).integers(0, 10, size=1000))


def library_labels(split: str, num_partitions: int, seed: int) -> list[list[int]]:
    """What `FederatedDataset(shuffle=True, seed=seed)` with the library's partitioner
    gives each client: the labels, in order."""
    partitioner = library_partitioner(Split.parse(split), num_partitions, seed)
    partitioner.dataset = datasets.Dataset.from_dict({"label": TINY_LABELS.tolist()}).shuffle(
        seed=seed
    )
    return [partitioner.load_partition(i)["label"] for i in range(num_partitions)]


@pytest.mark.parametrize(
    "split", ["dirichlet:0.1", "dirichlet:1", "classes:2", "shards:2", "sizes:linear",
              "sizes:exponential"],
)  # fmt: skip
def test_each_split_equals_the_librarys_partitioner(split):
    ours = split_indices(TINY_LABELS, Split.parse(split), 5, seed=3)
    assert [TINY_LABELS[part].tolist() for part in ours] == library_labels(split, 5, 3)
    everything = torch.cat(ours)
    assert len(torch.unique(everything)) == len(everything)  # disjoint


def test_which_client_gets_which_labels():
    def digits(split: str, clients: int = 5) -> list[set[int]]:
        return [
            set(TINY_LABELS[p].tolist())
            for p in split_indices(TINY_LABELS, Split.parse(split), clients, 3)
        ]

    assert all(len(d) == 2 for d in digits("classes:2"))  # NIID-Bench #C=2
    assert all(len(d) == 1 for d in digits("classes:1"))
    assert set().union(*digits("classes:2", 10)) == set(range(10))  # client i holds digit i
    shards = split_indices(TINY_LABELS, Split.parse("shards:2"), 5, 3)
    assert [len(p) for p in shards] == [200] * 5  # 10 shards of 100 label-sorted images
    assert all(len(d) <= 4 for d in digits("shards:2"))  # 2 shards, each across <= 2 digits
    sizes = [len(p) for p in split_indices(TINY_LABELS, Split.parse("sizes:linear"), 4, 3)]
    assert sizes == [100, 200, 300, 400]  # proportional to 1, 2, 3, 4
    assert all(len(d) == 10 for d in digits("iid"))
    skewed = [max(torch.bincount(TINY_LABELS[p], minlength=10)) / len(p)
              for p in split_indices(TINY_LABELS, Split.parse("dirichlet:0.1"), 5, 3)]  # fmt: skip
    assert np.mean(skewed) > 0.4  # each client is dominated by a few digits


def test_library_splits_are_seeded_and_kept_on_disk():
    first = split_indices(TINY_LABELS, Split.parse("dirichlet:0.5"), 4, seed=1)
    files = list((cache_dir() / "splits").glob("*.npz"))
    assert files
    again = split_indices(TINY_LABELS, Split.parse("dirichlet:0.5"), 4, seed=1)  # from the file
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    other = split_indices(TINY_LABELS, Split.parse("dirichlet:0.5"), 4, seed=2)
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))


def test_clients_of_other_splits_miss_the_digits_they_have_no_image_of(small_config):
    config = small_config.replace(split="classes:3", excluded_digits=(), num_clients=4)
    data = load_mnist(config)
    for part in partition_clients(data.train_y, config):
        present = set(data.train_y[part.indices].tolist())
        assert len(present) == 3
        assert set(part.excluded) == set(range(10)) - present
    subsets = missing_subsets(partition_clients(data.train_y, config))
    assert all(len(s) == 7 for s in subsets) and len(subsets) <= 4


def test_a_split_that_cannot_be_made_says_so():
    with pytest.raises(ConfigError, match="split shards:20 with 100 clients cannot be made"):
        split_indices(TINY_LABELS, Split.parse("shards:20"), 100, seed=0)
