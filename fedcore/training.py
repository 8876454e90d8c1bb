"""Local training: SGD over batches sliced from in-memory tensors.

The loop fits on one screen on purpose. Each epoch draws one seeded permutation
and gathers the epoch's data once; batches are then views (`x[i:i + b]`), so no
per-image Python work and no DataLoader run in the hot path.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

EpochCallback = Callable[[int, float], None]


def use_one_thread() -> None:
    """Make PyTorch use one thread in this process, for training and evaluation.

    Matrix products round differently with different thread counts, and SGD
    amplifies those last bits; one thread everywhere (notebook, CLI, Ray
    workers, SuperNodes) makes the same config give the same numbers. Speed
    comes from training clients in parallel instead. It is process-wide on
    purpose: a per-call setting would race between the isolated phase and
    the federated server thread when they run side by side.
    """
    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)


@torch.no_grad()
def sgd_momentum_step(
    params: list[torch.Tensor],
    grads: tuple[torch.Tensor, ...],
    velocities: list[torch.Tensor],
    learning_rate: float,
    momentum: float,
) -> None:
    """`torch.optim.SGD(lr, momentum)`'s exact update (no dampening, no Nesterov).

    Written out because the first `torch.optim` step imports `torch._dynamo`,
    about 3 s in every fresh process (each Ray worker included), longer than
    a whole epoch here. `v = m * v + g; p -= lr * v`, with `v` starting at 0,
    equals PyTorch's first step `v = g` exactly.
    """
    torch._foreach_mul_(velocities, momentum)
    torch._foreach_add_(velocities, grads)
    torch._foreach_add_(params, velocities, alpha=-learning_rate)


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
    on_epoch: EpochCallback | None = None,
) -> list[float]:
    """Train in place; return the mean training loss of every epoch.

    `on_epoch(epoch, loss)` (1-based epoch) lets a UI show progress.
    """
    if len(x) == 0:
        raise ValueError("cannot train on an empty dataset")
    use_one_thread()
    generator = torch.Generator().manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    velocities = [torch.zeros_like(p) for p in params]
    model.train()
    losses: list[float] = []
    for epoch in range(1, epochs + 1):
        order = torch.randperm(len(x), generator=generator)
        epoch_x, epoch_y = x[order], y[order]
        total = torch.zeros(())
        for start in range(0, len(x), batch_size):
            batch_x, batch_y = (
                epoch_x[start : start + batch_size],
                epoch_y[start : start + batch_size],
            )
            loss = F.cross_entropy(model(batch_x), batch_y)
            grads = torch.autograd.grad(loss, params)
            sgd_momentum_step(params, grads, velocities, learning_rate, momentum)
            total += loss.detach() * len(batch_y)
        losses.append(total.item() / len(x))
        if on_epoch is not None:
            on_epoch(epoch, losses[-1])
    return losses
