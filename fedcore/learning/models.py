"""The lab's models, chosen by name and built deterministically from a seed.

- "mlp": the spec's MLP, 784-128-10 (the default).
- "2nn": McMahan et al. 2017's 2NN, 784-200-200-10.
- "cnn": McMahan et al. 2017's CNN for MNIST (1,663,370 parameters).
- "lenet": NIID-Bench's simple CNN (Li et al. 2022), LeNet-5's shape: 44,426 parameters.
- "logreg": logistic regression, 784-10 (7,850 parameters), the linear model of
  FLUTE's (Microsoft's FL simulator, Dimitriadis et al. 2022) many-client runs: an
  `MLP` with no hidden layer, so the fast path trains it like the other MLPs.

All five take flattened (n, 784) images. There is no `Net` class any more:
the architecture is a setting, so callers build models with
`build_model(seed, kind)`. An `MLP()` with its default hidden layer has the
old `Net`'s state_dict (same keys, same shapes).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

NUM_CLASSES = 10
MODELS = ("mlp", "2nn", "cnn", "lenet", "logreg")


class MLP(nn.Module):
    """`Linear(784, h1) -> ReLU -> ... -> Linear(hk, 10)` on flattened 28x28 images;
    with no hidden layer (`hidden=()`), the one `Linear(784, 10)` of logistic regression.

    The linear layers sit at the even indices of `self.layers`; `training.train`
    relies on that layout for its written-out passes.
    """

    def __init__(self, hidden: Sequence[int] = (128,)) -> None:
        super().__init__()
        widths = [28 * 28, *hidden, NUM_CLASSES]
        layers: list[nn.Module] = []
        for fan_in, fan_out in zip(widths, widths[1:], strict=False):
            layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
        self.layers = nn.Sequential(*layers[:-1])  # no ReLU on the logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class CNN(nn.Module):
    """McMahan et al. 2017's CNN: two 5x5 convolutions (32, then 64 channels),
    each followed by ReLU and 2x2 max pooling, then a 512-unit ReLU layer and
    the 10 logits. It takes flattened images like the MLPs."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(1, 32, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(7 * 7 * 64, 512),
            nn.ReLU(),
            nn.Linear(512, NUM_CLASSES),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x.reshape(-1, 1, 28, 28))


class LeNet(nn.Module):
    """NIID-Bench's `SimpleCNNMNIST` (Li et al. 2022, the model of its MNIST rows):
    5x5 convolutions of 6 and 16 channels without padding, each followed by ReLU and
    2x2 max pooling, then 256-120-84-10 fully connected with ReLU between."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(1, 6, kernel_size=5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, kernel_size=5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(16 * 4 * 4, 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, NUM_CLASSES),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x.reshape(-1, 1, 28, 28))


_CONSTRUCTORS: dict[str, Callable[[], nn.Module]] = {
    "mlp": MLP,
    "2nn": lambda: MLP(hidden=(200, 200)),
    "cnn": CNN,
    "lenet": LeNet,
    "logreg": lambda: MLP(hidden=()),
}

_INIT_LOCK = threading.Lock()


def build_model(seed: int, kind: str = "mlp") -> nn.Module:
    """Same seed and kind, same initial weights, without touching the global RNG state.

    PyTorch initialises layers from the global generator, so the seeding and
    the construction happen under a lock: clients built in parallel threads
    cannot interleave their draws.
    """
    if kind not in _CONSTRUCTORS:
        raise ValueError(f"unknown model {kind!r}: choose one of {', '.join(MODELS)}")
    with _INIT_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _CONSTRUCTORS[kind]()


_REUSED = threading.local()  # per thread: {kind: model}


def model_with_weights(kind: str, weights: Mapping[str, torch.Tensor]) -> nn.Module:
    """A `kind` model holding `weights`, all of them (loaded strictly): a client's
    model for what the server sent. One model per kind and thread is built once and
    reloaded every time, since a fresh one would draw a seeded initialisation that
    the weights then overwrite, for every client of every round. The model is the
    caller's until its thread asks for another of the same kind."""
    models = _REUSED.__dict__
    if kind not in models:
        models[kind] = build_model(0, kind)
    model = models[kind]
    model.load_state_dict(weights)
    return model
