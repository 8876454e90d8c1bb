"""How good a model is: on the full test set and on each missing-digit subset."""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache

import torch
from torch import nn
from torch.nn import functional as F

from fedcore.experiment.specs import format_digits
from fedcore.learning.fast_path import use_one_thread
from fedcore.learning.models import MLP


@dataclass(frozen=True)
class Evaluation:
    """Accuracy (fraction), mean loss, accuracy per subset name, 10x10 confusion counts.

    `confusion[true][predicted]` counts test images.
    """

    accuracy: float
    loss: float
    subset_accuracy: dict[str, float]
    confusion: list[list[int]]


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, parts: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and predicted digits, in one pass (the whole test set fits in memory).

    `parts` > 1 scores an MLP's images in that many slices at once, each on a thread
    of its own, on one core each: a one-client round leaves a core idle while the
    other scores the 10,000 test images (docs/benchmarks.md). oneDNN computes each
    image's logits alone, whatever the batch around it, so the slices give the
    logits of one pass to the bit (tested)."""
    use_one_thread()
    model.eval()
    if not _use_onednn(model):
        logits = model(x)
    elif parts <= 1:
        logits = _mlp_logits(model, x)
    else:
        first, *rest = x.chunk(parts)
        others = [_scoring_threads().submit(_mlp_logits_no_grad, model, part) for part in rest]
        logits = torch.cat([_mlp_logits(model, first), *(done.result() for done in others)])
    return logits, logits.argmax(dim=1)


def scoring_parts() -> int:
    """How many slices the global model's scoring takes: one a core."""
    return os.cpu_count() or 1


@cache
def _scoring_threads() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max(1, scoring_parts() - 1), "fedcore-scoring")


@torch.no_grad()  # autograd's switch is per thread
def _mlp_logits_no_grad(model: MLP, x: torch.Tensor) -> torch.Tensor:
    return _mlp_logits(model, x)


def _use_onednn(model: nn.Module) -> bool:
    return (
        isinstance(model, MLP)
        and torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    )


def _mlp_logits(model: MLP, x: torch.Tensor) -> torch.Tensor:
    """An MLP's logits with each linear layer (and the ReLU after it) computed by
    oneDNN instead of MKL.

    PyTorch's float32 matrix product on x86 is MKL's sgemm, which takes a generic
    path on AMD processors; oneDNN, also inside PyTorch, picks its kernels by
    instruction set, and scores the test set markedly faster there
    (docs/benchmarks.md). `mkldnn._linear_pointwise` is the oneDNN linear layer
    PyTorch's own compiler emits for the CPU: it takes and gives plain tensors (no
    copy into oneDNN's layout and back, as `aten.mkldnn_linear` needs) and applies
    the ReLU to its output in place. The same float32 products, summed in another
    order than MKL's: the logits agree with `model(x)` to within about 1e-6, and a
    given machine always gives the same ones. Scoring the global model after every
    round is most of a one-client round, so this is where it pays.
    """
    linears = model.layers[0::2]  # each but the last followed by a ReLU (`MLP`)
    h = x
    for i, linear in enumerate(linears):
        attr = "relu" if i + 1 < len(linears) else "none"
        h = torch.ops.mkldnn._linear_pointwise(h, linear.weight, linear.bias, attr, [], "")
    return h


def confusion_matrix(y_true: torch.Tensor, y_pred: torch.Tensor) -> torch.Tensor:
    return torch.bincount(y_true * 10 + y_pred, minlength=100).reshape(10, 10)


def subset_accuracy(confusion: torch.Tensor, digits: Sequence[int]) -> float:
    """Accuracy on the test images whose true label is in `digits`."""
    rows = confusion[list(digits)]
    total = int(rows.sum())
    return float(rows[range(len(digits)), list(digits)].sum()) / total if total else 0.0


def digit_accuracy(confusion: Sequence[Sequence[int]]) -> list[float]:
    """Accuracy on the test images of each digit (0 for a digit with no image)."""
    matrix = torch.as_tensor(confusion, dtype=torch.float64)
    totals = matrix.sum(dim=1)
    return (matrix.diagonal() / totals.clamp(min=1)).tolist()


def cross_accuracy(
    confusions: Sequence[Sequence[Sequence[int]]], label_counts: Sequence[Sequence[int]]
) -> list[list[float]]:
    """Model i scored on client j's data (rows i, columns j): its per-digit test
    accuracy weighted by client j's training images per digit, i.e. its accuracy
    on test images drawn with client j's label mix. The diagonal is how a model
    does on the kind of data it was trained on; off the diagonal, on the others'."""
    accuracy = torch.tensor([digit_accuracy(c) for c in confusions], dtype=torch.float64)
    mix = torch.as_tensor(label_counts, dtype=torch.float64)
    mix = mix / mix.sum(dim=1, keepdim=True).clamp(min=1)
    return (accuracy @ mix.T).tolist()


def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    subsets: Sequence[Sequence[int]],
    parts: int = 1,
) -> Evaluation:
    """`parts`: see `predict`."""
    logits, predicted = predict(model, x, parts)
    confusion = confusion_matrix(y, predicted)
    return Evaluation(
        accuracy=float((predicted == y).float().mean()),
        loss=float(F.cross_entropy(logits, y)),
        subset_accuracy={format_digits(d): subset_accuracy(confusion, d) for d in subsets},
        confusion=confusion.tolist(),
    )


def backdoor_success(model: nn.Module, triggered_x: torch.Tensor, target: int) -> float:
    """The share of `triggered_x` (test images of digits other than `target`, the
    backdoor's trigger stamped on them) that the model classifies as `target`."""
    _, predicted = predict(model, triggered_x)
    return float((predicted == target).float().mean())
