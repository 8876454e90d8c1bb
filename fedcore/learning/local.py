"""One client's local training on its partition: the same in both phases.

A ClientApp runs it in every federated round; an isolated model is round 1 of it.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import torch
from torch import nn

from fedcore.data.mnist import MnistData
from fedcore.data.partition import ClientPartition
from fedcore.experiment.config import ExperimentConfig
from fedcore.learning.attacks import attack_generator, crafted_weights, poisoned_data
from fedcore.learning.train import train

# on_epoch(client, epoch, loss): progress for a UI; client and epoch are 1-based.
ClientEpochCallback = Callable[[int, int, float], None]


def batch_order_seed(seed: int, client: int, server_round: int) -> int:
    """Each client and round shuffles differently, reproducibly (isolated = round 1)."""
    return seed + 1000 * server_round + client


def round_sample(
    size: int, config: ExperimentConfig, client: int, server_round: int
) -> slice | torch.Tensor:
    """Which of the client's `size` images it trains on in this round: all of them, or
    with `local_steps` N, N x batch-size drawn afresh (seeded; a partition smaller than
    that is drawn through more than once)."""
    if not config.local_steps:
        return slice(None)
    wanted = config.local_steps * config.batch_size
    generator = torch.Generator().manual_seed(batch_order_seed(config.seed, client, server_round))
    draws = [torch.randperm(size, generator=generator) for _ in range(-(-wanted // size))]
    return torch.cat(draws)[:wanted]


def local_sgd_steps(size: int, config: ExperimentConfig) -> int:
    """How many SGD steps a client with `size` images takes in a round (SCAFFOLD's K,
    FedNova's tau): `local_steps` batches an epoch, else all its images in batches,
    the last one possibly short."""
    return config.local_epochs * (config.local_steps or -(-size // config.batch_size))


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
    correction: Sequence[torch.Tensor] | None = None,
    attacking: bool = False,
) -> list[float]:
    """Train `model` in place on the client's images; the mean loss of every epoch.
    `proximal_mu`: FedProx's proximal term (the server sends it). `correction`:
    SCAFFOLD's `c - c_i`, one tensor per parameter, applied after every step
    (`fedcore.learning.train.train`). `attacking`: the client is one of the config's
    attackers, and the model ends as the weights its attack sends
    (`fedcore.learning.attacks`)."""
    chosen = round_sample(partition.size, config, partition.client, server_round)
    indices = partition.indices[chosen]
    # index_select copies whole rows; `train_x[indices]` indexes element by element,
    # several times slower for a client's 600 images (docs/benchmarks.md)
    x, y = data.train_x.index_select(0, indices), data.train_y.index_select(0, indices)
    if attacking:
        generator = attack_generator(config, partition.client, server_round)
        start = {key: value.clone() for key, value in model.state_dict().items()}
        x, y = poisoned_data(x, y, config, generator)
    losses = train(
        model,
        x,
        y,
        epochs=config.local_epochs,
        batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        momentum=config.momentum,
        seed=batch_order_seed(config.seed, partition.client, server_round),
        proximal_mu=proximal_mu,
        correction=correction,
        on_epoch=None if on_epoch is None else lambda e, loss: on_epoch(partition.client, e, loss),
    )
    if attacking:
        model.load_state_dict(crafted_weights(start, model.state_dict(), config, generator))
    return losses
