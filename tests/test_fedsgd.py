"""FedSGD as settings (McMahan et al. 2017: E=1, B=inf): a client's round is one
full-batch gradient step, and FedAvg's average of those steps, weighted by the
clients' sizes, is one gradient step on their pooled data."""

from __future__ import annotations

import pytest
import torch
from flwr.app import ArrayRecord, MetricRecord, RecordDict
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords
from torch.nn import functional as F

from fedcore.learning.models import build_model
from fedcore.learning.train import train

FULL_BATCH = 60_000  # the tables' B=inf: more than any partition holds


def images(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(count, 784, generator=generator), torch.randint(
        0, 10, (count,), generator=generator
    )


def gradient_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, lr: float) -> dict:
    """The textbook step: w - lr * grad of the mean cross-entropy over all of (x, y)."""
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    return {name: (p - lr * p.grad).detach() for name, p in model.named_parameters()}


def fedsgd_round(model_kind: str, x: torch.Tensor, y: torch.Tensor, lr: float) -> dict:
    model = build_model(7, model_kind)
    train(model, x, y, epochs=1, batch_size=FULL_BATCH, learning_rate=lr, momentum=0.0, seed=3)
    return {name: p.detach() for name, p in model.named_parameters()}


@pytest.mark.parametrize("model_kind", ["mlp", "lenet"])  # the fast path and the textbook loop
def test_a_fedsgd_round_is_one_full_batch_gradient_step(model_kind):
    x, y = images(50, 1)
    step = gradient_step(build_model(7, model_kind), x, y, lr=0.5)
    trained = fedsgd_round(model_kind, x, y, lr=0.5)
    for name, value in step.items():
        torch.testing.assert_close(trained[name], value, rtol=1e-5, atol=1e-6)
    start = dict(build_model(7, model_kind).named_parameters())
    assert any(not torch.equal(trained[n], start[n].detach()) for n in trained)  # it moved


def test_fedavg_of_fedsgd_steps_is_one_step_on_the_pooled_data():
    (x1, y1), (x2, y2) = images(30, 1), images(90, 2)  # unequal clients
    replies = []
    for x, y in ((x1, y1), (x2, y2)):
        model = build_model(7, "mlp")
        train(model, x, y, epochs=1, batch_size=FULL_BATCH, learning_rate=0.5, momentum=0.0, seed=3)
        replies.append(
            RecordDict(
                {
                    "arrays": ArrayRecord(model.state_dict()),
                    "metrics": MetricRecord({"num-examples": len(x)}),
                }
            )
        )
    averaged = aggregate_arrayrecords(replies, "num-examples").to_torch_state_dict()
    pooled = gradient_step(build_model(7, "mlp"), torch.cat([x1, x2]), torch.cat([y1, y2]), lr=0.5)
    for name, value in pooled.items():
        torch.testing.assert_close(averaged[name], value, rtol=1e-5, atol=1e-6)
