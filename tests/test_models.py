"""The three architectures, and the fast training path against the textbook loop."""

import copy
import math

import pytest
import torch
from torch import nn

from fedcore.learning.models import CNN, MLP, MODELS, LeNet, build_model, model_with_weights
from fedcore.learning.textbook import reference_train
from fedcore.learning.train import train


def tiny_data(n: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.rand(n, 784, generator=generator), torch.randint(0, 10, (n,), generator=generator)


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


@pytest.mark.parametrize("kind", ["2nn", "lenet"])
def test_a_reused_model_trains_as_a_fresh_one_would(kind):
    """The client's model is reused between messages: whatever the last one left in it
    (trained weights, the textbook loop's gradients), the next trains from what was sent."""
    x, y = tiny_data()
    settings = dict(epochs=1, batch_size=32, learning_rate=0.05, momentum=0.9, seed=0)
    sent = {k: v.clone() for k, v in build_model(3, kind).state_dict().items()}
    fresh = build_model(3, kind)
    expected = train(fresh, x, y, **settings)
    reused = model_with_weights(kind, build_model(4, kind).state_dict())
    train(reused, x, y, **settings)  # what an earlier message left in it
    assert model_with_weights(kind, sent) is reused
    assert train(reused, x, y, **settings) == expected and same_weights(reused, fresh)
    with pytest.raises(RuntimeError, match="Missing key"):  # strict: every weight is sent
        model_with_weights(kind, dict(list(sent.items())[1:]))


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_the_model_names():
    assert MODELS == ("mlp", "2nn", "cnn", "lenet", "logreg")
    assert type(build_model(0, "mlp")) is MLP and type(build_model(0, "2nn")) is MLP
    assert type(build_model(0, "logreg")) is MLP  # so the fast path trains it
    assert type(build_model(0, "cnn")) is CNN and type(build_model(0, "lenet")) is LeNet


@pytest.mark.parametrize("kind", MODELS)
def test_each_model_builds_from_its_seed_and_trains(kind):
    torch.manual_seed(123)
    expected_draw = torch.rand(1)
    torch.manual_seed(123)
    model, twin = build_model(7, kind), build_model(7, kind)
    assert torch.rand(1) == expected_draw  # the global RNG was left alone
    assert same_weights(model, twin)
    other = build_model(8, kind).parameters()
    assert not any(torch.equal(p, q) for p, q in zip(model.parameters(), other, strict=True))

    x, y = tiny_data()
    before = [p.detach().clone() for p in model.parameters()]
    settings = dict(epochs=1, batch_size=32, learning_rate=0.05, momentum=0.9, seed=0)
    losses = train(model, x, y, **settings)
    assert len(losses) == 1 and math.isfinite(losses[0])
    assert 1.0 < losses[0] < 10.0  # about ln(10) = 2.3 on random labels
    assert not any(torch.equal(p, q) for p, q in zip(before, model.parameters(), strict=True))
    assert model(x[:3]).shape == (3, 10)
    assert train(twin, x, y, **settings) == losses and same_weights(model, twin)


def test_parameter_counts():
    assert parameter_count(build_model(0, "mlp")) == 784 * 128 + 128 + 128 * 10 + 10
    assert parameter_count(build_model(0, "2nn")) == 199_210  # McMahan et al. 2017
    assert parameter_count(build_model(0, "cnn")) == 1_663_370  # McMahan et al. 2017
    # NIID-Bench's SimpleCNNMNIST: conv 6 and 16 (5x5), then 256-120-84-10
    assert parameter_count(build_model(0, "lenet")) == (
        6 * 25 + 6 + 16 * 6 * 25 + 16 + 256 * 120 + 120 + 120 * 84 + 84 + 84 * 10 + 10
    )


def test_default_mlp_is_the_former_net():
    """Same state_dict keys and shapes as the former `Net`, and the same initial
    weights for the same seed, so saved models and results stay valid."""
    shapes = {name: tuple(t.shape) for name, t in MLP(hidden=(128,)).state_dict().items()}
    assert shapes == {
        "layers.0.weight": (128, 784),
        "layers.0.bias": (128,),
        "layers.2.weight": (10, 128),
        "layers.2.bias": (10,),
    }
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        former = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
    assert same_weights(build_model(5), former)
    assert same_weights(build_model(5, "mlp"), former)


def test_logreg_is_one_linear_layer():
    """FLUTE's logistic regression: 784 -> 10, no hidden layer and no ReLU."""
    model = build_model(0, "logreg")
    assert [type(layer) for layer in model.layers] == [nn.Linear]
    assert [tuple(p.shape) for p in model.parameters()] == [(10, 784), (10,)]
    assert parameter_count(model) == 7_850


def test_2nn_layers():
    shapes = [tuple(p.shape) for p in build_model(0, "2nn").parameters()]
    assert shapes == [(200, 784), (200,), (200, 200), (200,), (10, 200), (10,)]


def test_unknown_model_is_refused_with_the_choices():
    with pytest.raises(ValueError, match=r"'resnet'.*mlp, 2nn, cnn"):
        build_model(0, "resnet")


@pytest.mark.parametrize(
    "make",
    [
        lambda: build_model(3, "mlp"),
        lambda: build_model(3, "2nn"),
        lambda: MLP(hidden=()),
        lambda: MLP(hidden=(64, 32, 16)),
    ],
    ids=["mlp", "2nn", "no-hidden", "3-hidden"],
)
def test_fast_path_equals_reference_loop(make):
    """Same weights and losses as autograd + torch.optim.SGD with momentum, batches
    in the same seeded order, the last one short (200 = 6 * 32 + 8)."""
    x, y = tiny_data()
    fast = make()
    reference = copy.deepcopy(fast)
    settings = dict(epochs=2, batch_size=32, learning_rate=0.05, momentum=0.9, seed=4)
    losses = train(fast, x, y, **settings)
    expected = reference_train(reference, x, y, **settings)
    assert len(losses) == 2 and losses == pytest.approx(expected, rel=1e-5)
    for p, q in zip(fast.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-5)


def test_cnn_trains_with_the_reference_loop():
    x, y = tiny_data(64)
    model, reference = build_model(0, "cnn"), build_model(0, "cnn")
    settings = dict(epochs=1, batch_size=10, learning_rate=0.05, momentum=0.9, seed=1)
    seen = []
    losses = train(model, x, y, **settings, on_epoch=lambda *args: seen.append(args))
    assert losses == reference_train(reference, x, y, **settings)
    assert seen == [(1, losses[0])]
    assert same_weights(model, reference)


@pytest.mark.parametrize("kind", MODELS)
def test_training_on_no_data_is_refused(kind):
    settings = dict(epochs=1, batch_size=8, learning_rate=0.1, momentum=0.0, seed=0)
    with pytest.raises(ValueError, match="empty"):
        train(
            build_model(0, kind), torch.empty(0, 784), torch.empty(0, dtype=torch.long), **settings
        )
