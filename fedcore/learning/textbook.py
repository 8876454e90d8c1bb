"""The textbook training loop: autograd and `torch.optim.SGD`.

`fedcore.learning.fast_path.fast_train` is the fast version of exactly this loop for the MLPs (its
forward and backward passes written out) and is tested equal to it; other
models (the CNN) are trained by this loop itself. Both draw the same seeded
batch order: one `torch.randperm` per epoch from a generator seeded with
`seed`, batches sliced from the permuted tensors, the last one possibly short.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from fedcore.learning.fast_path import EpochCallback, flush_denormals, use_one_thread


def reference_train(
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
    """Train in place with SGD + momentum on the mean cross-entropy of each batch;
    return the mean training loss of every epoch (`on_epoch(epoch, loss)` after each).

    `proximal_mu` > 0 adds FedProx's proximal term `mu / 2 * ||w - w_start||^2`
    to what is minimized (the reported loss stays the cross-entropy). `correction`
    (one tensor per parameter) is subtracted, times the learning rate, after every
    step, outside the momentum (SCAFFOLD's `c - c_i`, as NIID-Bench applies it)."""
    if len(x) == 0:
        raise ValueError("cannot train on an empty dataset")
    use_one_thread()
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=learning_rate, momentum=momentum)
    start_weights = [p.detach().clone() for p in model.parameters()]
    losses: list[float] = []
    with flush_denormals():
        for epoch in range(1, epochs + 1):
            order = torch.randperm(len(x), generator=generator)
            epoch_x, epoch_y = x[order], y[order]
            total = 0.0
            for start in range(0, len(x), batch_size):
                batch_x = epoch_x[start : start + batch_size]
                batch_y = epoch_y[start : start + batch_size]
                loss = F.cross_entropy(model(batch_x), batch_y)
                proximal = sum(
                    (p - p0).pow(2).sum()
                    for p, p0 in zip(model.parameters(), start_weights, strict=True)
                )
                optimizer.zero_grad()
                (loss + proximal_mu / 2 * proximal if proximal_mu else loss).backward()
                optimizer.step()
                if correction is not None:
                    with torch.no_grad():
                        for p, c in zip(model.parameters(), correction, strict=True):
                            p.sub_(c, alpha=learning_rate)
                total += loss.item() * len(batch_y)
            losses.append(total / len(x))
            if on_epoch is not None:
                on_epoch(epoch, losses[-1])
    return losses
