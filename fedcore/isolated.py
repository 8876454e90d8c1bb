"""The first half of the experiment: every client trains a model on its own data only.

An isolated model is, step for step, what the client computes in round 1 of
the federated run: the same initial weights, data, settings and batch order.
So when a run has both phases and every client trains in round 1, the engine
takes the isolated models from round 1 instead of training them twice
(tested equal to `fit_isolated_model`).
"""

from __future__ import annotations

import torch
from torch import nn

from fedcore.config import ExperimentConfig, format_digits
from fedcore.data import MnistData
from fedcore.evaluation import evaluate
from fedcore.local_training import ClientEpochCallback, train_on_partition
from fedcore.model import Net, build_model
from fedcore.partition import ClientPartition
from fedcore.results import ClientResult


def fit_isolated_model(
    data: MnistData,
    partition: ClientPartition,
    config: ExperimentConfig,
    on_epoch: ClientEpochCallback | None = None,
) -> tuple[Net, list[float]]:
    """Train one client's model from the shared initial weights; return it and its losses."""
    model = build_model(config.seed)
    losses = train_on_partition(model, data, partition, config, server_round=1, on_epoch=on_epoch)
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
        label_counts=torch.bincount(data.train_y[partition.indices], minlength=10).tolist(),
    )
