"""The spec's MLP, built deterministically from a seed."""

from __future__ import annotations

import threading

import torch
from torch import nn

NUM_CLASSES = 10


class Net(nn.Module):
    """`Linear(784, 128) -> ReLU -> Linear(128, 10)` on flattened 28x28 images."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, NUM_CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


_INIT_LOCK = threading.Lock()


def build_model(seed: int) -> Net:
    """Same seed, same initial weights, without touching the global RNG state.

    PyTorch initialises layers from the global generator, so the seeding and
    the construction happen under a lock: clients built in parallel threads
    cannot interleave their draws.
    """
    with _INIT_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Net()
