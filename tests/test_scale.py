"""Clients up to 10,000: the split kept as indices, a run that samples a few clients a
round deterministically, and memory that grows with the clients sampled, not all.

The bounds, and why:

- the split (`Partitions`) keeps the 60,000 training indices and one offset a client,
  whatever the number of clients: at 10,000 clients 0.56 MB, and making every client's
  partition once traces under 2 MB more (the earlier list of 10,000 partitions traced
  4.5 MB and took 0.3 s, paid by every ClientApp message);
- the engine at 10,000 clients against the same run at 100 clients (fresh engines, peak
  RSS from the kernel, `VmHWM`): the engine process may grow 64 MB, 6.4 KB a client
  (measured: about 30 MB: Flower's node registration, about 1.5 KB a node, the split,
  the clients' label counts in the results), a worker 32 MB (measured: none; a worker
  sees only the clients it trains). Memory that grew with all clients at 10 KB a client
  (one model's gradient for each, a context with a model in it) would fail it.
"""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

import pytest
import torch

from fedcore.data.mnist import load_mnist
from fedcore.data.partition import ClientPartition, partition_clients, split_indices
from fedcore.experiment.config import ExperimentConfig
from fedcore.experiment.results import ExperimentResult
from fedcore.experiment.specs import ConfigError
from fedcore.learning.baselines import MAX_ISOLATED_CLIENTS, check_isolated, fit_isolated_model
from fedcore.report.figures import run_charts, to_svg

MEGABYTE = 2**20
ENGINE_GROWTH_MB = 64  # the engine process, 10,000 clients against 100
WORKER_GROWTH_MB = 32  # a worker process, the same


def scale_config(mnist_dir: Path, **changes) -> ExperimentConfig:
    """Logistic regression, 1 epoch of batch 10, 10 clients a round (fraction x clients,
    at least 10): a round costs 10 small clients whatever the number of clients."""
    settings = dict(
        data_dir=str(mnist_dir), split="iid", model="logreg", local_epochs=1, batch_size=10,
        learning_rate=0.03, momentum=0.0, min_train_clients=10, num_rounds=2,
    )  # fmt: skip
    return ExperimentConfig(**(settings | changes))


def sampled(result: ExperimentResult) -> list[list[int]]:
    """The clients that trained in each round (1, 2, ...)."""
    return [sorted(map(int, h.client_loss)) for h in result.federated.history[1:]]


# ------------------------------------------------------------------ the split


@pytest.mark.parametrize("split", ["iid", "exclude", "dirichlet:0.5"])
def test_partitions_made_when_asked_equal_the_split(mnist_dir, split):
    """Each client's partition, made on its own, is the split's shard (its excluded
    digits removed), with the digits it has no image of."""
    config = ExperimentConfig(data_dir=str(mnist_dir), num_clients=7, split=split)
    labels = load_mnist(config).train_y
    partitions = partition_clients(labels, config)
    shards = split_indices(labels, config.split_spec, 7, config.seed)
    assert len(partitions) == 7 and [p.client for p in partitions] == list(range(1, 8))
    for partition, shard, excluded in zip(
        partitions, shards, config.excluded_digits or [None] * 7, strict=True
    ):
        if excluded is None:  # any split but exclude: its shard, and what it lacks
            assert torch.equal(partition.indices, shard)
            held = set(labels[shard].tolist())
            assert partition.excluded == tuple(d for d in range(10) if d not in held)
        else:
            kept = shard[~torch.isin(labels[shard], torch.tensor(excluded))]
            assert torch.equal(partition.indices, kept) and partition.excluded == excluded
    assert partitions[-1].client == 7 and [p.client for p in partitions[5:]] == [6, 7]
    with pytest.raises(IndexError):
        partitions[7]


def test_the_split_of_10000_clients_keeps_the_indices_only(mnist_dir):
    labels = load_mnist(str(mnist_dir)).train_y
    config = ExperimentConfig(data_dir=str(mnist_dir), num_clients=10_000, split="exclude")
    start = time.perf_counter()
    tracemalloc.start()
    try:
        partitions = partition_clients(labels, config)
        made = time.perf_counter() - start
        kept = tracemalloc.get_traced_memory()[0]
        seven = partitions[7301]  # what a ClientApp asks for: one client
        sizes = [p.size for p in partitions]  # every client once (the engine's label counts)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert isinstance(seven, ClientPartition) and seven.client == 7302
    assert seven.excluded == config.excluded_digits[7301] and 1 <= seven.size <= 6
    assert sum(sizes) == sum(p.size for p in partition_clients(labels, config))
    assert partitions.nbytes == (60_000 + 10_001) * 8  # the indices and the offsets
    assert kept < 1 * MEGABYTE and peak < 2 * MEGABYTE, (kept, peak)
    assert made < 0.1, made  # the permutation, not 10,000 partitions


def test_the_isolated_baseline_is_refused_beyond_its_clients(mnist_dir):
    fits = ExperimentConfig(data_dir=str(mnist_dir), num_clients=MAX_ISOLATED_CLIENTS, split="iid")
    check_isolated(fits)
    beyond = fits.replace(num_clients=MAX_ISOLATED_CLIENTS + 1)
    with pytest.raises(ConfigError, match=r"up to 100 clients, not 101; run --phase federated"):
        check_isolated(beyond)
    data = load_mnist(beyond)
    with pytest.raises(ConfigError, match="the isolated baseline"):
        fit_isolated_model(data, partition_clients(data.train_y, beyond)[0], beyond)


# ----------------------------------------------------------------- the runs


def test_1000_clients_sample_10_a_round_deterministically(engine, mnist_dir, tmp_path):
    """1,000 clients, 2 rounds, 10 sampled a round from the seed: the same seed samples
    the same clients and gives the same model; another seed samples others."""
    config = scale_config(mnist_dir, num_clients=1000, fraction_train=0.01)
    assert config.clients_per_round == 10
    first = engine.submit(config, "federated", use_cache=False).result()
    again = engine.submit(config, "federated", use_cache=False).result()
    other = engine.submit(config.replace(seed=7), "federated", use_cache=False).result()
    rounds = sampled(first)
    assert [len(r) for r in rounds] == [10, 10] and len({*rounds[0], *rounds[1]}) > 10
    assert all(1 <= c <= 1000 for r in rounds for c in r)
    assert sampled(again) == rounds
    assert again.federated.accuracy == first.federated.accuracy
    assert again.federated.history == first.federated.history
    assert sampled(other) != rounds and [len(r) for r in sampled(other)] == [10, 10]
    assert first.federated.accuracy > 0.5  # 20 clients of 60 images each: it learns
    assert len(first.label_counts) == 1000
    # the results file validates and its charts draw (each client that trained, once)
    loaded = ExperimentResult.load(first.save(tmp_path / "r.json"))
    assert loaded.federated == first.federated
    assert all(to_svg(build()).startswith("<svg") for build in run_charts(loaded).values())


def _peaks(pids: list[int]) -> list[float]:
    """Each process's peak resident memory so far (the kernel's VmHWM), in MB."""
    peaks = []
    for pid in pids:
        status = Path(f"/proc/{pid}/status").read_text()
        line = next(line for line in status.splitlines() if line.startswith("VmHWM:"))
        peaks.append(int(line.split()[1]) / 1024)
    return peaks


def _run_in_a_fresh_engine(config: ExperimentConfig) -> tuple[ExperimentResult, list[float]]:
    from fedcore.engine import Engine

    with Engine() as engine:
        result = engine.submit(config, "federated", use_cache=False).result()
        return result, _peaks(engine.pids)


def test_memory_at_10000_clients_grows_with_the_clients_sampled(mnist_dir, tmp_path):
    """The same run (1 round, 10 clients sampled) at 100 and at 10,000 clients, each in
    a fresh engine: the engine process and its workers may grow by the bounds the
    module's docstring gives, not with the 100x more clients."""
    small, small_peaks = _run_in_a_fresh_engine(
        scale_config(mnist_dir, num_clients=100, fraction_train=0.1, num_rounds=1)
    )
    large, large_peaks = _run_in_a_fresh_engine(
        scale_config(mnist_dir, num_clients=10_000, fraction_train=0.001, num_rounds=1)
    )
    assert [len(r) for r in sampled(small)] == [10] and [len(r) for r in sampled(large)] == [10]
    engine_growth = large_peaks[0] - small_peaks[0]
    worker_growth = max(large_peaks[1:]) - max(small_peaks[1:])
    assert engine_growth < ENGINE_GROWTH_MB, (small_peaks, large_peaks)
    assert worker_growth < WORKER_GROWTH_MB, (small_peaks, large_peaks)
    # a 10,000-client results file validates, and every chart of it draws
    loaded = ExperimentResult.load(large.save(tmp_path / "large.json"))
    assert loaded.config.num_clients == 10_000 and len(loaded.label_counts) == 10_000
    assert all(to_svg(build()).startswith("<svg") for build in run_charts(loaded).values())
