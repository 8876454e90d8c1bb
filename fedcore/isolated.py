"""The first half of the experiment: every client trains a model on its own data only."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from torch import nn

from fedcore.config import ExperimentConfig, format_digits
from fedcore.data import MnistData, load_mnist
from fedcore.evaluation import evaluate
from fedcore.model import Net, build_model
from fedcore.partition import ClientPartition, partition_clients
from fedcore.results import ClientResult
from fedcore.training import train

# on_epoch(client, epoch, loss): progress for a UI; client and epoch are 1-based.
ClientEpochCallback = Callable[[int, int, float], None]


def batch_order_seed(seed: int, client: int, server_round: int) -> int:
    """Each client and round shuffles differently, reproducibly (round 0 = isolated)."""
    return seed + 1000 * server_round + client


def fit_isolated_model(
    data: MnistData,
    partition: ClientPartition,
    config: ExperimentConfig,
    on_epoch: ClientEpochCallback | None = None,
) -> tuple[Net, list[float]]:
    """Train one client's model from the shared initial weights; return it and its losses."""
    model = build_model(config.seed)
    losses = train(
        model,
        data.train_x[partition.indices],
        data.train_y[partition.indices],
        epochs=config.local_epochs,
        batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        momentum=config.momentum,
        seed=batch_order_seed(config.seed, partition.client, 0),
        on_epoch=None if on_epoch is None else lambda e, loss: on_epoch(partition.client, e, loss),
    )
    return model, losses


def client_result(
    model: nn.Module,
    losses: list[float],
    data: MnistData,
    partition: ClientPartition,
    config: ExperimentConfig,
) -> ClientResult:
    """Evaluate a client's model on the full test set and every missing-digit subset."""
    report = evaluate(model, data.test_x, data.test_y, config.missing_subsets)
    own = format_digits(sorted(partition.excluded))
    return ClientResult(
        client=partition.client,
        excluded=list(partition.excluded),
        train_size=partition.size,
        loss=losses,
        accuracy=report.accuracy,
        missing_accuracy=report.subset_accuracy[own] if partition.excluded else None,
        subset_accuracy=report.subset_accuracy,
        confusion=report.confusion,
    )


def run_isolated(
    config: ExperimentConfig,
    data: MnistData | None = None,
    on_epoch: ClientEpochCallback | None = None,
    workers: int | None = None,
) -> list[ClientResult]:
    """One model per client, each trained on its own partition only.

    Clients train in parallel threads (PyTorch releases the GIL inside its
    kernels); each client's numbers do not depend on the others or on timing.
    """
    data = data or load_mnist(config)

    def one(partition: ClientPartition) -> ClientResult:
        model, losses = fit_isolated_model(data, partition, config, on_epoch)
        return client_result(model, losses, data, partition, config)

    partitions = partition_clients(data.train_y, config)
    with ThreadPoolExecutor(max_workers=workers or len(partitions)) as pool:
        return list(pool.map(one, partitions))
