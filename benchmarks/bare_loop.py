"""The reference experiment as a bare PyTorch loop: no framework, one thread, clients in turn.

The yardstick of issue #3: the same math as fedcore (same split, model, SGD,
epochs, FedAvg weighted by example count, central evaluation after every
round), written the way a PyTorch tutorial would: a `TensorDataset`, a
`DataLoader` with `shuffle=True`, `torch.optim.SGD`.

Run: python benchmarks/bare_loop.py --data-dir ../shared/data/mnist
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fedcore.data.mnist import load_mnist
from fedcore.data.partition import partition_clients
from fedcore.experiment.config import ExperimentConfig
from fedcore.learning.models import build_model


def train_loop(model: nn.Module, loader: DataLoader, config: ExperimentConfig) -> None:
    optimizer = torch.optim.SGD(
        model.parameters(), lr=config.learning_rate, momentum=config.momentum
    )
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(config.local_epochs):
        for images, labels in loader:
            optimizer.zero_grad()
            loss_fn(model(images), labels).backward()
            optimizer.step()


@torch.no_grad()
def accuracy(model: nn.Module, loader: DataLoader) -> float:
    model.eval()
    correct = total = 0
    for images, labels in loader:
        correct += int((model(images).argmax(1) == labels).sum())
        total += len(labels)
    return correct / total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    start = time.perf_counter()
    torch.set_num_threads(1)
    config = ExperimentConfig(
        data_dir=args.data_dir, local_epochs=args.epochs, num_rounds=args.rounds
    )
    data = load_mnist(config)
    parts = partition_clients(data.train_y, config)
    loaders = [
        DataLoader(
            TensorDataset(data.train_x[p.indices], data.train_y[p.indices]),
            batch_size=64,
            shuffle=True,
        )
        for p in parts
    ]
    test = DataLoader(TensorDataset(data.test_x, data.test_y), batch_size=1000)
    torch.manual_seed(config.seed)

    isolated = []
    for loader in loaders:
        model = build_model(config.seed)
        train_loop(model, loader, config)
        isolated.append(accuracy(model, test))

    global_model = build_model(config.seed)
    history = [accuracy(global_model, test)]
    sizes = torch.tensor([float(p.size) for p in parts])
    for _ in range(config.num_rounds):
        states = []
        for loader in loaders:
            model = build_model(config.seed)
            model.load_state_dict(global_model.state_dict())
            train_loop(model, loader, config)
            states.append(model.state_dict())
        weights = sizes / sizes.sum()
        global_model.load_state_dict(
            {k: sum(w * s[k] for w, s in zip(weights, states, strict=True)) for k in states[0]}
        )
        history.append(accuracy(global_model, test))
    print(
        json.dumps(
            {"isolated": isolated, "history": history, "seconds": time.perf_counter() - start}
        )
    )


if __name__ == "__main__":
    main()
