"""The reference experiment written the straightforward way: the yardstick to beat.

Same math as fedcore (split, model, SGD, epochs, FedAvg weighted by examples,
central evaluation), written as tutorials do: a Dataset that turns every image
into a PIL image and applies torchvision's `ToTensor` + `Normalize`, a
`DataLoader` (batch 64), `torch.optim.SGD`; for the federated phase a Flower
simulation with default resources whose ClientApp reloads its data on every
message, as Flower's templates do.

Run: python benchmarks/naive.py --phase isolated --data-dir ../shared/data/mnist
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from flwr.simulation import run_simulation
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from fedcore.config import ExperimentConfig
from fedcore.data import read_idx_split
from fedcore.model import Net, build_model
from fedcore.partition import flwr_iid_shards

TRANSFORM = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])


class MnistImages(Dataset):
    """Per-image access with torchvision transforms: the usual tutorial dataset."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = TRANSFORM(Image.fromarray(self.images[index], mode="L"))
        return image.view(-1), int(self.labels[index])


def client_loader(config: ExperimentConfig, client: int) -> DataLoader:
    """Read the files, split, filter: from scratch, every time (as the templates do)."""
    images, labels = read_idx_split(Path(config.resolved_data_dir()), "train")
    shard = flwr_iid_shards(len(labels), config.num_clients, config.seed)[client].numpy()
    keep = shard[~np.isin(labels[shard], config.excluded_digits[client])]
    return DataLoader(
        MnistImages(images[keep], labels[keep]), batch_size=config.batch_size, shuffle=True
    )


def test_loader(config: ExperimentConfig) -> DataLoader:
    images, labels = read_idx_split(Path(config.resolved_data_dir()), "test")
    return DataLoader(MnistImages(images, labels), batch_size=config.batch_size)


def train_epochs(model: nn.Module, loader: DataLoader, config: ExperimentConfig) -> None:
    optimizer = torch.optim.SGD(
        model.parameters(), lr=config.learning_rate, momentum=config.momentum
    )
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(config.local_epochs):
        for x, y in loader:
            optimizer.zero_grad()
            loss_fn(model(x), y).backward()
            optimizer.step()


@torch.no_grad()
def accuracy(model: nn.Module, loader: DataLoader) -> float:
    model.eval()
    correct = total = 0
    for x, y in loader:
        correct += int((model(x).argmax(1) == y).sum())
        total += len(y)
    return correct / total


def config_from_env() -> ExperimentConfig:
    return ExperimentConfig(
        data_dir=os.environ["FEDCORE_DATA_DIR"],
        local_epochs=int(os.environ.get("NAIVE_EPOCHS", "10")),
        num_rounds=int(os.environ.get("NAIVE_ROUNDS", "3")),
    )


client_app = ClientApp()


@client_app.train()
def naive_train(msg: Message, context: Context) -> Message:
    config = config_from_env()
    client = int(context.node_config["partition-id"])
    loader = client_loader(config, client)
    model = Net()
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    train_epochs(model, loader, config)
    metrics = MetricRecord({"num-examples": len(loader.dataset)})
    return Message(
        RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": metrics}), reply_to=msg
    )


def naive_federated(config: ExperimentConfig) -> list[float]:
    history: list[float] = []
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        model = build_model(config.seed)

        def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
            model.load_state_dict(arrays.to_torch_state_dict())
            history.append(accuracy(model, test_loader(config)))
            return MetricRecord({"accuracy": history[-1]})

        FedAvg(fraction_evaluate=0.0, min_available_nodes=config.num_clients).start(
            grid=grid,
            initial_arrays=ArrayRecord(model.state_dict()),
            num_rounds=config.num_rounds,
            train_config=ConfigRecord(),
            evaluate_fn=evaluate,
        )

    run_simulation(server_app=server_app, client_app=client_app, num_supernodes=config.num_clients)
    return history


def naive_isolated(config: ExperimentConfig) -> list[float]:
    results = []
    for client in range(config.num_clients):
        model = build_model(config.seed)
        train_epochs(model, client_loader(config, client), config)
        results.append(accuracy(model, test_loader(config)))
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--phase", choices=["isolated", "all"], required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    # The ClientApp runs in Ray workers: settings travel by environment.
    os.environ.update(
        FEDCORE_DATA_DIR=str(Path(args.data_dir).resolve()),
        NAIVE_EPOCHS=str(args.epochs),
        NAIVE_ROUNDS=str(args.rounds),
    )
    start = time.perf_counter()
    config = config_from_env()
    out: dict = {"isolated": naive_isolated(config)}
    if args.phase == "all":
        out["history"] = naive_federated(config)
    out["seconds"] = time.perf_counter() - start
    print(json.dumps(out))


if __name__ == "__main__":
    main()
