"""The Flower ClientApp: one hospital's side of a round.

The handler only unpacks the message, calls plain functions and packs the
reply. The partition comes from the node config (`partition-id`,
`num-partitions`); every other setting from the run config. Every reply says how
many SGD steps the client took (FedNova reads it); under SCAFFOLD the client's
control variate lives in its node state (`context.state`) between rounds. A query
message asks only which partition the SuperNode holds (`query_handler`); the
privacy mods pass it through untouched.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp
from flwr.clientapp.mod import LocalDpMod
from flwr.clientapp.typing import ClientAppCallable, Mod

from fedcore.data.mnist import MnistData, load_mnist
from fedcore.data.partition import ClientPartition, Partitions, partition_clients
from fedcore.experiment.config import ExperimentConfig
from fedcore.flower.arrays import torch_record, torch_state
from fedcore.flower.fednova import LOCAL_STEPS
from fedcore.flower.run_config import experiment_config
from fedcore.flower.scaffold import CONTROL_CHANGE, ClientControl
from fedcore.flower.secure_aggregation import secagg_mod
from fedcore.flower.strategies import DROPOUT_REASON, UNIFORM_WEIGHT
from fedcore.learning.attacks import is_attacker
from fedcore.learning.local import drops_out, local_sgd_steps, train_on_partition
from fedcore.learning.models import model_with_weights


class ClientFailure(RuntimeError):
    """Raised by a ClientApp; Flower sends the message back to the server as the reason."""


@functools.lru_cache(maxsize=4)
def _split(config: ExperimentConfig) -> tuple[MnistData, Partitions]:
    """Data and split once per worker process and config, not once per message (a
    cache keyed by the partition too would split afresh for every client of a run
    with more clients than it holds). The split keeps the training set's indices
    (`Partitions`: the same memory for 3 clients or 10,000), and `_partition` makes
    one client's partition from its own images only."""
    data = load_mnist(config)
    return data, partition_clients(data.train_y, config)


def _partition(config: ExperimentConfig, partition_id: int) -> tuple[MnistData, ClientPartition]:
    data, partitions = _split(config)
    return data, partitions[partition_id]


def node_partition(context: Context, config: ExperimentConfig) -> int:
    partition_id = int(context.node_config["partition-id"])
    num_partitions = int(context.node_config["num-partitions"])
    if num_partitions != config.num_clients:
        raise ClientFailure(
            f"this SuperNode is partition {partition_id} of {num_partitions}, "
            f"but num-clients is {config.num_clients}"
        )
    return partition_id


_ABSOLUTE_PATH = re.compile(r"(?<![\w.~:/])(?:/[^\s/:'\"]+)+/?")


def without_local_paths(reason: str, data_dir: str) -> str:
    """The reason with this machine's paths left out (the server and its operator
    need what failed, not where the data holder keeps its files): the data folder
    reads `data-dir`, any other absolute path its last part."""
    if data_dir:
        for folder in {str(Path(data_dir).expanduser().resolve()), str(Path(data_dir))}:
            if folder.rstrip("/"):
                reason = reason.replace(folder.rstrip("/"), "data-dir")
    return _ABSOLUTE_PATH.sub(lambda m: ".../" + m.group(0).rstrip("/").split("/")[-1], reason)


def train_handler(msg: Message, context: Context) -> Message:
    config = experiment_config(context.run_config)
    if "data-dir" in context.node_config:  # a SuperNode's own data folder wins
        config = config.replace(data_dir=str(context.node_config["data-dir"]))
    partition_id = node_partition(context, config)
    client = partition_id + 1
    server_round = int(msg.content["config"]["server-round"])
    if drops_out(config, client, server_round):
        raise ClientFailure(
            f"client {client} {DROPOUT_REASON} in round {server_round} (dropout {config.dropout:g})"
        )
    proximal_mu = float(msg.content["config"].get("proximal-mu", 0.0))  # FedProx sends it
    control = ClientControl.of(msg, context)  # SCAFFOLD's c and c_i
    try:
        data, partition = _partition(config, partition_id)
        sent = torch_state(msg.content["arrays"])
        model = model_with_weights(config.model, sent)
        losses = train_on_partition(
            model,
            data,
            partition,
            config,
            server_round,
            proximal_mu=proximal_mu,
            correction=None if control is None else control.correction(model),
            attacking=is_attacker(config, client),
        )
        steps = local_sgd_steps(partition.size, config)
        scaffold: dict[str, ArrayRecord] = {}
        if control is not None:  # c_i+ into the node state, c_i+ - c_i into the reply
            trained, lr = model.state_dict(), config.learning_rate
            scaffold[CONTROL_CHANGE] = control.update(sent, trained, steps, lr, context)
    except Exception as error:
        reason = without_local_paths(str(error), config.data_dir)
        raise ClientFailure(f"client {client} failed in round {server_round}: {reason}") from error
    metrics = {
        "num-examples": partition.size,
        "train-loss": losses[-1],
        UNIFORM_WEIGHT: 1,
        LOCAL_STEPS: steps,
    }
    content = RecordDict(
        {
            "arrays": torch_record(model.state_dict()),
            "metrics": MetricRecord(metrics),
            "client": ConfigRecord({"client": client, "epoch-losses": losses}),
            **scaffold,
        }
    )
    return Message(content=content, reply_to=msg)


PARTITION_RECORD = "partition"  # the query reply's record: {"partition-id": int}


def query_handler(msg: Message, context: Context) -> Message:
    """Which partition this SuperNode holds: its `partition-id`.

    Flower's strategies sample with the seeded `random` module from the node ids,
    which are random under `flwr run .` (simulation or deployment) and do not
    follow the partitions, so the server asks each node once and samples from the
    nodes in partition order: the seed alone decides which partitions train
    (`fedcore.flower.rounds.partition_order`). A node of another federation size
    fails here, as it would in training.
    """
    partition_id = node_partition(context, experiment_config(context.run_config))
    record = ConfigRecord({"partition-id": partition_id})
    return Message(RecordDict({PARTITION_RECORD: record}), reply_to=msg)


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


def clipping_mod(
    msg: Message, context: Context, call_next: Callable[[Message, Context], Message]
) -> Message:
    """Flower's `fixedclipping_mod` when the server asks for client-side clipping
    (its DP wrapper sends a clipping norm); the message untouched otherwise."""
    from flwr.clientapp.mod import fixedclipping_mod
    from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM

    if KEY_CLIPPING_NORM in msg.content["config"]:
        return fixedclipping_mod(msg, context, call_next)
    return call_next(msg, context)


def local_dp_mod(
    msg: Message, context: Context, call_next: Callable[[Message, Context], Message]
) -> Message:
    """Flower's `LocalDpMod` when the run's privacy is `local:epsilon=E,clip=C,delta=D`;
    the message untouched otherwise. The mod is built per message because the run
    config comes with each message (the ClientApp is built before it is known).
    Its noise std is the classical Gaussian mechanism's, which Dwork and Roth prove
    (epsilon, delta)-DP for epsilon < 1 only."""
    config = experiment_config(context.run_config)
    if config.privacy_kind != "local":
        return call_next(msg, context)
    p = config.privacy_parameters
    # LocalDpMod clips the update to L2 norm C, so any update it releases lies in a
    # ball of radius C, and two of them, from any two data sets of this client, differ
    # by at most 2C: that is the sensitivity. (C is that of a sum that gains or loses
    # one client's update, central DP's case; here nothing is summed yet.)
    dp = LocalDpMod(
        clipping_norm=p["clip"], sensitivity=2 * p["clip"], epsilon=p["epsilon"], delta=p["delta"]
    )
    # LocalDpMod draws its noise from NumPy's global generator. The engine's workers
    # are forked with one state of it, so two clients would add the same noise, and
    # a seeded one the server could draw again: fresh OS entropy for every message.
    np.random.seed()
    return dp(msg, context, call_next)


def training_only(mod: Mod) -> Mod:
    """`mod` on training messages; any other (the partition query) straight through.
    The privacy mods read a training message's records: `secagg_mod`'s legacy step
    wants `fitins.*`, `clipping_mod` a config record, LocalDpMod one model."""

    def only(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        if msg.metadata.message_type != MessageType.TRAIN:
            return call_next(msg, context)
        return mod(msg, context, call_next)

    return only


def build_client_app(run_config: Mapping[str, Any] | None = None) -> ClientApp:
    """The ClientApp; with `run_config`, for the engine's workers.

    Flower's in-memory runtime (which the engine runs, as Flower's Python
    simulation API does) hands ClientApps an empty run config, so the engine
    passes the experiment's run config here and a mod puts it where
    `flwr run .` would have. `secagg_mod` comes first: under SecAgg+ it turns the
    legacy records into the plain message the other mods and the handler read.
    The privacy mods see training messages only: a query (`query_handler`) passes
    them untouched.
    """
    privacy = [training_only(m) for m in (secagg_mod, clipping_mod, local_dp_mod)]
    mods = privacy if run_config is None else [with_run_config(run_config), *privacy]
    client_app = ClientApp(mods=mods)
    client_app.train()(train_handler)
    client_app.query()(query_handler)
    return client_app


app = build_client_app()
