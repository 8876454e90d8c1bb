"""The Flower ClientApp: one hospital's side of a round.

The handler only unpacks the message, calls plain functions and packs the
reply. The partition comes from the node config (`partition-id`,
`num-partitions`); every other setting from the run config.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedcore.config import ExperimentConfig
from fedcore.data import MnistData, load_mnist
from fedcore.local_training import train_on_partition
from fedcore.model import build_model
from fedcore.partition import ClientPartition, partition_clients
from fedcore.run_config import experiment_config


class ClientFailure(RuntimeError):
    """Raised by a ClientApp; Flower sends the message back to the server as the reason."""


@functools.lru_cache(maxsize=4)
def _partition(config: ExperimentConfig, partition_id: int) -> tuple[MnistData, ClientPartition]:
    """Data and split once per worker process, not once per message."""
    data = load_mnist(config)
    return data, partition_clients(data.train_y, config)[partition_id]


def node_partition(context: Context, config: ExperimentConfig) -> int:
    partition_id = int(context.node_config["partition-id"])
    num_partitions = int(context.node_config["num-partitions"])
    if num_partitions != config.num_clients:
        raise ClientFailure(
            f"this SuperNode is partition {partition_id} of {num_partitions}, "
            f"but num-clients is {config.num_clients}"
        )
    return partition_id


def train_handler(msg: Message, context: Context) -> Message:
    config = experiment_config(context.run_config)
    if "data-dir" in context.node_config:  # a SuperNode's own data folder wins
        config = config.replace(data_dir=str(context.node_config["data-dir"]))
    partition_id = node_partition(context, config)
    client = partition_id + 1
    server_round = int(msg.content["config"]["server-round"])
    try:
        data, partition = _partition(config, partition_id)
        model = build_model(config.seed, config.model)
        model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        losses = train_on_partition(model, data, partition, config, server_round)
    except Exception as error:
        raise ClientFailure(f"client {client} failed in round {server_round}: {error}") from error
    content = RecordDict(
        {
            "arrays": ArrayRecord(model.state_dict()),
            "metrics": MetricRecord({"num-examples": partition.size, "train-loss": losses[-1]}),
            "client": ConfigRecord({"client": client, "epoch-losses": losses}),
        }
    )
    return Message(content=content, reply_to=msg)


def with_run_config(
    run_config: Mapping[str, Any],
) -> Callable[[Message, Context, Callable[[Message, Context], Message]], Message]:
    """A Flower mod that layers `run_config` over the context's run config."""

    def mod(
        msg: Message, context: Context, call_next: Callable[[Message, Context], Message]
    ) -> Message:
        # Flower forbids changing `context.run_config`; hand on a copy instead
        # (same state object, so anything the handler keeps in state persists).
        fused = Context(
            run_id=context.run_id,
            node_id=context.node_id,
            node_config=context.node_config,
            state=context.state,
            run_config={**context.run_config, **run_config},
        )
        return call_next(msg, fused)

    return mod


def build_client_app(run_config: Mapping[str, Any] | None = None) -> ClientApp:
    """The ClientApp; with `run_config`, for the engine's workers.

    Flower's in-memory runtime (which the engine runs, as Flower's Python
    simulation API does) hands ClientApps an empty run config, so the engine
    passes the experiment's run config here and a mod puts it where
    `flwr run .` would have.
    """
    client_app = ClientApp(mods=[] if run_config is None else [with_run_config(run_config)])
    client_app.train()(train_handler)
    return client_app


app = build_client_app()
