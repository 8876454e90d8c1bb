"""The reference experiment written the straightforward way: the yardstick to beat.

Same math as fedcore (split, model, SGD, epochs, FedAvg weighted by examples,
central evaluation), written as Flower's quickstart-pytorch template does it:
MNIST as a Hugging Face dataset (images stored as PNG, as on the Hub), the
client's partition from Flower Datasets' `IidPartitioner`, torchvision's
`ToTensor` + `Normalize` applied per image through `with_transform`, a
`DataLoader` (batch 64), `torch.optim.SGD`; a ClientApp that loads its data
on every message; the Flower simulation with default resources.

The Hub copy is rebuilt once from the local IDX files (our stand-in for the
download, which cannot happen offline) and is not timed.

Run: python benchmarks/naive.py --phase isolated --data-dir ../shared/data/mnist
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import datasets
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from flwr.simulation import run_simulation
from flwr_datasets.partitioner import IidPartitioner
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader
from torchvision import transforms

from fedcore.data.mnist import read_idx_split
from fedcore.experiment.config import ExperimentConfig
from fedcore.learning.models import MLP, build_model

TRANSFORM = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])


def build_hub_copy(data_dir: Path, target: Path) -> None:
    """MNIST as `ylecun/mnist` stores it (PNG images, int labels), saved like the Hub cache."""
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=10)}
    )
    for split in ("train", "test"):
        images, labels = read_idx_split(data_dir, split)
        table = datasets.Dataset.from_dict(
            {"image": [Image.fromarray(i) for i in images], "label": labels.tolist()},
            features=features,
        )
        table.save_to_disk(str(target / split))


def apply_transforms(batch: dict) -> dict:
    """The template's transform: every image through PIL -> tensor -> normalize."""
    batch["image"] = [TRANSFORM(image).view(-1) for image in batch["image"]]
    return batch


def client_loader(config: ExperimentConfig, client: int) -> DataLoader:
    """Load, shuffle, partition, filter: from the cached copy, on every call."""
    train = datasets.load_from_disk(os.environ["NAIVE_HUB_COPY"] + "/train")
    partitioner = IidPartitioner(num_partitions=config.num_clients)
    partitioner.dataset = train.shuffle(seed=config.seed)
    excluded = set(config.excluded_digits[client])
    partition = partitioner.load_partition(client).filter(lambda row: row["label"] not in excluded)
    return DataLoader(
        partition.with_transform(apply_transforms),
        batch_size=config.batch_size,
        shuffle=True,
    )


def test_loader(config: ExperimentConfig) -> DataLoader:
    test = datasets.load_from_disk(os.environ["NAIVE_HUB_COPY"] + "/test")
    return DataLoader(test.with_transform(apply_transforms), batch_size=config.batch_size)


def train_epochs(model: nn.Module, loader: DataLoader, config: ExperimentConfig) -> None:
    optimizer = torch.optim.SGD(
        model.parameters(), lr=config.learning_rate, momentum=config.momentum
    )
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(config.local_epochs):
        for batch in loader:  # default collate: a dict of stacked tensors, as in the template
            optimizer.zero_grad()
            loss_fn(model(batch["image"]), batch["label"]).backward()
            optimizer.step()


@torch.no_grad()
def accuracy(model: nn.Module, loader: DataLoader) -> float:
    model.eval()
    correct = total = 0
    for batch in loader:
        correct += int((model(batch["image"]).argmax(1) == batch["label"]).sum())
        total += len(batch["label"])
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
    model = MLP()
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
    with tempfile.TemporaryDirectory() as hub_copy:
        build_hub_copy(Path(args.data_dir), Path(hub_copy))
        # The ClientApp runs in Ray workers: settings travel by environment.
        os.environ.update(
            FEDCORE_DATA_DIR=str(Path(args.data_dir).resolve()),
            NAIVE_HUB_COPY=hub_copy,
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
