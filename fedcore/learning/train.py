"""One `train()` for every model: the fast path for the MLPs, the textbook loop otherwise.

Both loops draw the same seeded batch order and give the same weights for the
same MLP (tested), so which one ran never shows in the numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fedcore.learning.fast_path import EpochCallback, fast_train
from fedcore.learning.models import MLP
from fedcore.learning.textbook import reference_train


def train(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    momentum: float,
    seed: int,
    proximal_mu: float = 0.0,
    correction: Sequence[torch.Tensor] | None = None,
    on_epoch: EpochCallback | None = None,
) -> list[float]:
    """Train in place with SGD + momentum (FedProx's proximal term if `proximal_mu` > 0);
    return the mean training loss of every epoch. `correction`, one tensor per
    parameter in `model.parameters()` order, is subtracted times the learning rate
    after every step (SCAFFOLD's `c - c_i`). `on_epoch(epoch, loss)` (1-based)
    lets a UI show progress."""
    loop = fast_train if isinstance(model, MLP) else reference_train
    return loop(
        model,
        x,
        y,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        momentum=momentum,
        seed=seed,
        proximal_mu=proximal_mu,
        correction=correction,
        on_epoch=on_epoch,
    )
