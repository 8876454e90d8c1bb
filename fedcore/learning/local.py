"""One client's local training on its partition: the same in both phases.

A ClientApp runs it in every federated round; an isolated model is round 1 of it.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from torch import nn

from fedcore.data.mnist import MnistData
from fedcore.data.partition import ClientPartition
from fedcore.experiment.config import ExperimentConfig
from fedcore.learning.train import train

# on_epoch(client, epoch, loss): progress for a UI; client and epoch are 1-based.
ClientEpochCallback = Callable[[int, int, float], None]


def batch_order_seed(seed: int, client: int, server_round: int) -> int:
    """Each client and round shuffles differently, reproducibly (isolated = round 1)."""
    return seed + 1000 * server_round + client


def drops_out(config: ExperimentConfig, client: int, server_round: int) -> bool:
    """Whether a sampled client fails to answer this round (the dropout setting):
    drawn from the seed, the client and the round, the same in every process."""
    if not config.dropout:
        return False
    return random.Random(f"{config.seed}-{server_round}-{client}").random() < config.dropout


def train_on_partition(
    model: nn.Module,
    data: MnistData,
    partition: ClientPartition,
    config: ExperimentConfig,
    server_round: int,
    on_epoch: ClientEpochCallback | None = None,
    proximal_mu: float = 0.0,
) -> list[float]:
    """Train `model` in place on the client's images; the mean loss of every epoch.
    `proximal_mu`: FedProx's proximal term (the server sends it)."""
    return train(
        model,
        data.train_x[partition.indices],
        data.train_y[partition.indices],
        epochs=config.local_epochs,
        batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        momentum=config.momentum,
        seed=batch_order_seed(config.seed, partition.client, server_round),
        proximal_mu=proximal_mu,
        on_epoch=None if on_epoch is None else lambda e, loss: on_epoch(partition.client, e, loss),
    )
