"""The baselines: every client trains a model on its own data only (isolated), and
one model trains on everyone's data pooled (centralized, the upper bound).

An isolated model is, step for step, what the client computes in round 1 of
the federated run: the same initial weights, data, settings and batch order.
So when a run has both phases and every client trains in round 1, the engine
takes the isolated models from round 1 instead of training them twice
(tested equal to `fit_isolated_model`).

The isolated baseline stops at `MAX_ISOLATED_CLIENTS` clients (the federated run
and the centralized baseline go on to 10,000): it is one model per client, each
scored on the whole test set and on every other client's label mix (a clients x
clients matrix in the results) and kept in the cache, so at 10,000 clients it
would be 10,000 models on disk, 10,000 scorings of the test set and 10^8 numbers
in a results file. `check_isolated` refuses it beyond that, in one line.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from fedcore.data.mnist import MnistData
from fedcore.data.partition import ClientPartition
from fedcore.experiment.config import ExperimentConfig
from fedcore.experiment.results import CentralizedResult, ClientResult
from fedcore.experiment.specs import ConfigError
from fedcore.learning.evaluation import evaluate, subset_accuracy
from fedcore.learning.local import ClientEpochCallback, batch_order_seed, train_on_partition
from fedcore.learning.models import build_model
from fedcore.learning.train import train

# Clients up to which the isolated baseline runs: the CLI's limit before it took 10,000
MAX_ISOLATED_CLIENTS = 100


def check_isolated(config: ExperimentConfig) -> None:
    """`ConfigError` (one line, with what to run instead) for an isolated baseline
    beyond `MAX_ISOLATED_CLIENTS` clients."""
    if config.num_clients > MAX_ISOLATED_CLIENTS:
        raise ConfigError(
            f"the isolated baseline (phases isolated, story and all) trains, scores and keeps "
            f"one model per client: up to {MAX_ISOLATED_CLIENTS} clients, not "
            f"{config.num_clients}; run --phase federated or --phase centralized"
        )


def fit_isolated_model(
    data: MnistData,
    partition: ClientPartition,
    config: ExperimentConfig,
    on_epoch: ClientEpochCallback | None = None,
) -> tuple[nn.Module, list[float]]:
    """Train one client's model from the shared initial weights; return it and its
    losses (`ConfigError` beyond `MAX_ISOLATED_CLIENTS` clients: `check_isolated`)."""
    check_isolated(config)
    model = build_model(config.seed, config.model)
    losses = train_on_partition(model, data, partition, config, server_round=1, on_epoch=on_epoch)
    return model, losses


def pooled_indices(partitions: Sequence[ClientPartition]) -> torch.Tensor:
    """Every client's training images together, client 1's first."""
    return torch.cat([partition.indices for partition in partitions])


def fit_centralized_model(
    data: MnistData,
    partitions: Sequence[ClientPartition],
    config: ExperimentConfig,
    on_epoch: Callable[[int, float], None] | None = None,
) -> tuple[nn.Module, list[float]]:
    """The centralized baseline: the shared initial weights trained on the pooled
    data for `config.total_local_epochs` epochs (batch order: its own seed)."""
    model = build_model(config.seed, config.model)
    indices = pooled_indices(partitions)
    losses = train(
        model,
        data.train_x[indices],
        data.train_y[indices],
        epochs=config.total_local_epochs,
        batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        momentum=config.momentum,
        seed=batch_order_seed(config.seed, client=0, server_round=1),
        on_epoch=on_epoch,
    )
    return model, losses


def centralized_result(
    model: nn.Module,
    losses: list[float],
    data: MnistData,
    partitions: Sequence[ClientPartition],
    subsets: Sequence[Sequence[int]],
) -> CentralizedResult:
    report = evaluate(model, data.test_x, data.test_y, subsets)
    return CentralizedResult(
        train_size=sum(p.size for p in partitions),
        epochs=len(losses),
        loss=losses,
        accuracy=report.accuracy,
        subset_accuracy=report.subset_accuracy,
        confusion=report.confusion,
    )


def client_result(
    model: nn.Module,
    losses: list[float],
    data: MnistData,
    partition: ClientPartition,
    subsets: Sequence[Sequence[int]],
) -> ClientResult:
    """Evaluate a client's model on the full test set and every missing-digit subset."""
    report = evaluate(model, data.test_x, data.test_y, subsets)
    return ClientResult(
        client=partition.client,
        excluded=list(partition.excluded),
        train_size=partition.size,
        loss=losses,
        accuracy=report.accuracy,
        missing_accuracy=(
            subset_accuracy(torch.tensor(report.confusion), partition.excluded)
            if partition.excluded
            else None
        ),
        subset_accuracy=report.subset_accuracy,
        confusion=report.confusion,
        label_counts=torch.bincount(data.train_y[partition.indices], minlength=10).tolist(),
    )
