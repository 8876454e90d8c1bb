"""Local training: SGD over batches sliced from in-memory tensors.

The loop fits on one screen on purpose. Each epoch draws one seeded permutation
and gathers the epoch's data once; batches are then views (`x[i:i + b]`), so no
per-image Python work and no DataLoader run in the hot path.

Forward and backward passes of the spec's MLP are written out. At this size
(batch 64, 784-128-10) the matrix products take about half of an autograd step
and autograd's bookkeeping the other half; written out, with the weights, their
gradients and velocities each in one flat buffer (two ops for the whole SGD
update), 10 epochs of a 13,579-image client take 1.05 s instead of 2.0 s on one
core (with `flush_denormals` and the reused epoch buffer below). The
gradients equal autograd's up to float rounding, and the update is
`torch.optim.SGD(lr, momentum)`'s (both tested). It also keeps `torch.optim`
out of the process: its first step imports `torch._dynamo`, about 3 s in
every fresh process, each Ray worker included.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch.nn import functional as F

from fedcore.model import NUM_CLASSES, Net

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


@contextmanager
def flush_denormals() -> Iterator[None]:
    """Treat subnormal floats as zero in this thread while training.

    The velocities of weights that stop getting gradients (dead ReLU units)
    decay by `momentum` every step into the subnormal range, where every
    multiply is many times slower: from the fourth epoch on, epochs took twice
    as long. Flushing them to zero changes results only below 1e-38, the same
    way on every machine and thread (the setting is per thread).
    """
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def _transposed_weights(model: Net) -> list[torch.Tensor]:
    """The model's parameters as the products use them: (in, out) weights, then biases."""
    first, second = model.layers[0], model.layers[2]
    return [first.weight.t(), first.bias, second.weight.t(), second.bias]


def _views(buffer: torch.Tensor, shapes_of: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    parts = buffer.split([t.numel() for t in shapes_of])
    return [part.view(t.shape) for part, t in zip(parts, shapes_of, strict=True)]


@torch.no_grad()
def train(
    model: Net,
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
    """Train in place with SGD + momentum on the mean cross-entropy of each batch;
    return the mean training loss of every epoch.

    `on_epoch(epoch, loss)` (1-based epoch) lets a UI show progress.
    """
    if len(x) == 0:
        raise ValueError("cannot train on an empty dataset")
    use_one_thread()
    generator = torch.Generator().manual_seed(seed)
    originals = _transposed_weights(model)
    weights = torch.cat([t.reshape(-1) for t in originals])
    grads, velocity = torch.empty_like(weights), torch.zeros_like(weights)
    w1, b1, w2, b2 = _views(weights, originals)
    grad_w1, grad_b1, grad_w2, grad_b2 = _views(grads, originals)
    epoch_x = torch.empty_like(x)  # reused: a fresh 40 MB buffer per epoch costs page faults
    losses: list[float] = []
    with flush_denormals():
        for epoch in range(1, epochs + 1):
            order = torch.randperm(len(x), generator=generator)
            torch.index_select(x, 0, order, out=epoch_x)
            epoch_targets = F.one_hot(y[order], NUM_CLASSES).to(x.dtype)
            total = torch.zeros(())
            for start in range(0, len(x), batch_size):
                batch_x = epoch_x[start : start + batch_size]
                targets = epoch_targets[start : start + batch_size]
                hidden = torch.addmm(b1, batch_x, w1).clamp_(min=0)
                log_probs = torch.log_softmax(torch.addmm(b2, hidden, w2), dim=1)
                total -= log_probs.view(-1).dot(targets.view(-1))  # the batch's summed loss
                grad_logits = log_probs.exp_().sub_(targets).div_(len(batch_x))
                torch.mm(hidden.t(), grad_logits, out=grad_w2)
                torch.sum(grad_logits, dim=0, out=grad_b2)
                grad_hidden = torch.ops.aten.threshold_backward(grad_logits @ w2.t(), hidden, 0)
                torch.mm(batch_x.t(), grad_hidden, out=grad_w1)
                torch.sum(grad_hidden, dim=0, out=grad_b1)
                velocity.mul_(momentum).add_(grads)  # v = m * v + g (v starts at 0: v = g)
                weights.sub_(velocity, alpha=learning_rate)
            losses.append(total.item() / len(x))
            if on_epoch is not None:
                on_epoch(epoch, losses[-1])
    for original, trained in zip(originals, _views(weights, originals), strict=True):
        original.copy_(trained)
    return losses
