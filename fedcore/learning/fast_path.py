"""Local training: SGD over batches sliced from in-memory tensors.

The loop fits on one screen on purpose. Each epoch draws one seeded permutation
and gathers the epoch's data once; batches are then views (`x[i:i + b]`), so no
per-image Python work and no DataLoader run in the hot path.

Forward and backward passes of the MLPs (any number of hidden layers: the
spec's MLP and the 2NN) are written out. For the spec's MLP (batch 64,
784-128-10) the matrix products take about half of an autograd step and
autograd's bookkeeping the other half; written out, with the weights, their
gradients and velocities each in one flat buffer (two ops for the whole SGD
update), 10 epochs of a 13,579-image client take 1.05 s instead of 2.0 s on one
core (with `flush_denormals` and the reused epoch buffer below). The gradients
equal autograd's up to float rounding, and the update is
`torch.optim.SGD(lr, momentum)`'s: `fedcore.learning.textbook.reference_train` is this
loop written the textbook way, and the tests check both give the same weights.
It also keeps `torch.optim` out of the process: its first step imports
`torch._dynamo`, about 3 s in every fresh process, each Ray worker included.
Other models (the CNN) are trained by `reference_train` itself (`fedcore.learning.train`
chooses).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn import functional as F

from fedcore.learning.models import MLP, NUM_CLASSES

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


def _linear_layers(model: MLP) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each layer's parameters as the products use them, (in, out) weight and bias:
    views that share the parameters' memory, outside autograd."""
    linears = [layer for layer in model.layers if isinstance(layer, nn.Linear)]
    return [(linear.weight.detach().t(), linear.bias.detach()) for linear in linears]


def _views(buffer: torch.Tensor, shapes_of: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    parts = buffer.split([t.numel() for t in shapes_of])
    return [part.view(t.shape) for part, t in zip(parts, shapes_of, strict=True)]


def _pairs(tensors: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(zip(tensors[0::2], tensors[1::2], strict=True))


def _backprop(
    layers: list[tuple[torch.Tensor, torch.Tensor]],
    layer_grads: list[tuple[torch.Tensor, torch.Tensor]],
    batch_x: torch.Tensor,
    targets: torch.Tensor,
) -> torch.Tensor:
    """Write the gradients of the batch's mean cross-entropy into `layer_grads`;
    return the batch's summed loss. `targets` are one-hot."""
    inputs = [batch_x]  # each layer's input
    for w, b in layers[:-1]:
        inputs.append(torch.addmm(b, inputs[-1], w).clamp_(min=0))
    w, b = layers[-1]
    log_probs = torch.log_softmax(torch.addmm(b, inputs[-1], w), dim=1)
    summed_loss = -log_probs.view(-1).dot(targets.view(-1))
    grad_out = log_probs.exp_().sub_(targets).div_(len(batch_x))  # d loss / d logits
    for i in reversed(range(len(layers))):
        (grad_w, grad_b), (w, _) = layer_grads[i], layers[i]
        torch.mm(inputs[i].t(), grad_out, out=grad_w)
        torch.sum(grad_out, dim=0, out=grad_b)
        if i > 0:  # back through the ReLU whose output is this layer's input
            grad_out = torch.ops.aten.threshold_backward(grad_out @ w.t(), inputs[i], 0)
    return summed_loss


def fast_train(
    model: MLP,
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
    return the mean training loss of every epoch. `proximal_mu` > 0 adds FedProx's
    proximal term `mu / 2 * ||w - w_start||^2` (its gradient: `mu * (w - w_start)`).
    `correction` (one tensor per parameter, in `model.parameters()` order) is
    subtracted, times the learning rate, after every step (SCAFFOLD's `c - c_i`).

    `on_epoch(epoch, loss)` (1-based epoch) lets a UI show progress. It equals
    `fedcore.learning.textbook.reference_train` for the same MLP (tested).
    """
    if len(x) == 0:
        raise ValueError("cannot train on an empty dataset")
    use_one_thread()
    generator = torch.Generator().manual_seed(seed)
    originals = [t for layer in _linear_layers(model) for t in layer]
    weights = torch.cat([t.reshape(-1) for t in originals])
    grads = torch.empty_like(weights)
    velocity = torch.zeros_like(weights) if momentum else None
    layers, layer_grads = _pairs(_views(weights, originals)), _pairs(_views(grads, originals))
    start_weights = weights.clone() if proximal_mu else None
    flat_correction = None
    if correction is not None:  # laid out as `weights`: each weight transposed (`_linear_layers`)
        flat_correction = torch.cat([(c.t() if c.dim() == 2 else c).flatten() for c in correction])
    epoch_x = torch.empty_like(x)  # reused: a fresh 40 MB buffer per epoch costs page faults
    losses: list[float] = []
    with torch.no_grad(), flush_denormals():
        for epoch in range(1, epochs + 1):
            order = torch.randperm(len(x), generator=generator)
            torch.index_select(x, 0, order, out=epoch_x)
            epoch_targets = F.one_hot(y[order], NUM_CLASSES).to(x.dtype)
            total = torch.zeros(())
            for start in range(0, len(x), batch_size):
                batch_x = epoch_x[start : start + batch_size]
                targets = epoch_targets[start : start + batch_size]
                total += _backprop(layers, layer_grads, batch_x, targets)
                if start_weights is not None:  # FedProx: + mu * (w - w_start)
                    grads.add_(weights, alpha=proximal_mu).sub_(start_weights, alpha=proximal_mu)
                if velocity is not None:
                    velocity.mul_(momentum).add_(grads)  # v = m * v + g (v starts at 0: v = g)
                    weights.sub_(velocity, alpha=learning_rate)
                else:  # v = 0 * v + g is g: two passes over the weights fewer a step
                    weights.sub_(grads, alpha=learning_rate)
                if flat_correction is not None:  # outside the momentum, as NIID-Bench applies it
                    weights.sub_(flat_correction, alpha=learning_rate)
            losses.append(total.item() / len(x))
            if on_epoch is not None:
                on_epoch(epoch, losses[-1])
    for original, trained in zip(originals, _views(weights, originals), strict=True):
        original.copy_(trained)
    return losses
