"""How good a model is: on the full test set and on each missing-digit subset."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from fedcore.config import format_digits
from fedcore.training import use_one_thread


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
def predict(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and predicted digits, in one pass (the whole test set fits in memory)."""
    use_one_thread()
    model.eval()
    logits = model(x)
    return logits, logits.argmax(dim=1)


def confusion_matrix(y_true: torch.Tensor, y_pred: torch.Tensor) -> torch.Tensor:
    return torch.bincount(y_true * 10 + y_pred, minlength=100).reshape(10, 10)


def subset_accuracy(confusion: torch.Tensor, digits: Sequence[int]) -> float:
    """Accuracy on the test images whose true label is in `digits`."""
    rows = confusion[list(digits)]
    total = int(rows.sum())
    return float(rows[range(len(digits)), list(digits)].sum()) / total if total else 0.0


def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, subsets: Sequence[Sequence[int]]
) -> Evaluation:
    logits, predicted = predict(model, x)
    confusion = confusion_matrix(y, predicted)
    return Evaluation(
        accuracy=float((predicted == y).float().mean()),
        loss=float(F.cross_entropy(logits, y)),
        subset_accuracy={format_digits(d): subset_accuracy(confusion, d) for d in subsets},
        confusion=confusion.tolist(),
    )
