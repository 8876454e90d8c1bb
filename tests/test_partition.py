import datasets
import pytest
import torch
from flwr_datasets.partitioner import IidPartitioner

from fedcore.config import ExperimentConfig
from fedcore.data import load_mnist
from fedcore.partition import iid_shards, label_counts, partition_clients


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
