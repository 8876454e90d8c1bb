"""Flower's strategies by name, Flower's privacy wrappers, and fedcore's bookkeeping
around whichever of them runs.

The aggregation is Flower's own class (for SCAFFOLD and FedNova, which Flower's
core lacks, Flower's FedAvg extended: `fedcore.flower.scaffold`,
`fedcore.flower.fednova`); `RecordingStrategy` wraps it (as Flower's DP wrappers
wrap a strategy) and only records: each client's losses, failures, how far each
update moved the model and how it lines up with the aggregate, the bytes on the
wire, the privacy spent, and which clients a rule that chooses updates (Krum) kept.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp import strategy as flower
from flwr.serverapp.strategy import Strategy

from fedcore.experiment.config import ExperimentConfig
from fedcore.experiment.progress import FederatedRunError
from fedcore.experiment.specs import CENTRAL_DP
from fedcore.flower.arrays import flat_float64
from fedcore.flower.behind import Behind
from fedcore.flower.fednova import FedNova
from fedcore.flower.scaffold import Scaffold

UNIFORM_WEIGHT = "uniform-weight"  # every client weighs 1: what Flower's DP accountant needs
DROPOUT_REASON = "dropped out"  # in the reason of a client that the dropout setting silenced


def client_of(reply: Message) -> int | None:
    """The 1-based client number a ClientApp put in its reply (None on error replies)."""
    if reply.has_error():
        return None
    return int(reply.content["client"]["client"])


def failure_reason(reply: Message, server_round: int) -> str:
    """A failed reply's reason without Flower's `<class '...'>:<'...'>` wrapping.

    Our ClientApp's errors already say which client and round; others get the round.
    """
    reason = reply.error.reason
    match = re.fullmatch(r"<class '[^']+'>:<'(.*)'>", reason, flags=re.DOTALL)
    if match:
        reason = match.group(1)
    # How Flower's simulation backends wrap a ClientApp's exception.
    reason = re.sub(r"^\s*Exception ClientAppException occurred\. Message: ", "", reason)
    return reason if reason.startswith("client ") else f"round {server_round}: {reason}"


def flower_strategy(config: ExperimentConfig) -> Strategy:
    """The named strategy with the config's parameters (the server evaluates
    centrally, so no federated evaluation)."""
    p = config.strategy_parameters
    common: dict[str, Any] = {
        "fraction_train": config.fraction_train,
        "fraction_evaluate": 0.0,
        "min_train_nodes": config.min_train_clients,
        "min_available_nodes": config.num_clients,
    }
    if config.privacy_kind in CENTRAL_DP:
        common["weighted_by_key"] = UNIFORM_WEIGHT
    name = config.strategy_name
    if name == "fedavg":
        return flower.FedAvg(**common)
    if name == "fedprox":
        return flower.FedProx(**common, proximal_mu=p["mu"])
    if name == "fedavgm":
        return flower.FedAvgM(**common, server_learning_rate=p["lr"], server_momentum=p["momentum"])
    if name in ("fedadam", "fedyogi", "fedadagrad"):
        kind = {
            "fedadam": flower.FedAdam,
            "fedyogi": flower.FedYogi,
            "fedadagrad": flower.FedAdagrad,
        }
        return kind[name](**common, eta=p["eta"], tau=p["tau"])
    if name == "fedmedian":
        return flower.FedMedian(**common)
    if name == "fedtrimmedavg":
        return flower.FedTrimmedAvg(**common, beta=p["beta"])
    if name == "krum":
        return flower.Krum(**common, num_malicious_nodes=int(p["f"]))
    if name == "multikrum":
        return flower.MultiKrum(
            **common, num_malicious_nodes=int(p["f"]), num_nodes_to_select=int(p["m"])
        )
    if name == "scaffold":
        return Scaffold(**common, num_clients=config.num_clients, server_learning_rate=p["lr"])
    if name == "fednova":
        return FedNova(**common, momentum=config.momentum)
    raise ValueError(f"no Flower strategy for {config.strategy}")


def with_privacy(strategy: Strategy, config: ExperimentConfig) -> Strategy:
    """Flower's fixed-clipping DP wrapper around `strategy`, with its RDP accountant
    (no sampling amplification: every round counts in full), for central DP only: local
    DP is the clients' own mod, and SecAgg+ a workflow of its own."""
    if config.privacy_kind not in CENTRAL_DP:
        return strategy
    from flwr.supercore.privacy_accounting import (
        NeighboringRelation,
        PrivacyConfig,
        SamplingMethod,
    )
    from flwr.supercore.privacy_accounting.rdp_accountant import RdpAccountant

    p = config.privacy_parameters
    accountant = RdpAccountant(
        PrivacyConfig(
            target_delta=p["delta"],
            population_size=config.num_clients,
            neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
            sampling_method=SamplingMethod.NO_AMPLIFICATION,
        )
    )
    wrapper = (
        flower.DifferentialPrivacyServerSideFixedClipping
        if config.privacy_kind == "server"
        else flower.DifferentialPrivacyClientSideFixedClipping
    )
    return wrapper(
        strategy,
        noise_multiplier=p["noise"],
        clipping_norm=p["clip"],
        num_sampled_clients=config.clients_per_round,
        accountant=accountant,
    )


@dataclass
class RoundLog:
    """What the strategy saw in one round (client numbers as text: JSON keys)."""

    client_loss: dict[str, list[float]] = field(default_factory=dict)
    update_norm: dict[str, float] = field(default_factory=dict)
    update_cosine: dict[str, float] = field(default_factory=dict)
    messages_sent: int = 0
    bytes_sent: int = 0
    messages_received: int = 0
    bytes_received: int = 0
    epsilon: float | None = None
    kept: list[int] | None = None  # the clients the rule aggregated, where it chooses (Krum)


@dataclass
class RunLog:
    """What the strategy saw, round by round, and every failed client."""

    rounds: dict[int, RoundLog] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


def kept_clients(strategy: Strategy, replies: list[Message]) -> list[int] | None:
    """The clients whose updates the rule aggregates, for the rules that choose whole
    updates (Krum, MultiKrum); None for the others. It asks Flower's own selection
    (`select_multikrum`, the function the strategy calls) which of the replies it picks."""
    if not isinstance(strategy, flower.MultiKrum):  # Krum is a MultiKrum that keeps 1
        return None
    from flwr.serverapp.strategy.multikrum import select_multikrum

    valid = [reply for reply in replies if not reply.has_error()]
    chosen = select_multikrum(
        [reply.content for reply in valid],
        num_malicious_nodes=strategy.num_malicious_nodes,
        num_nodes_to_select=strategy.num_nodes_to_select,
    )
    return sorted(client_of(r) for r in valid if any(r.content is c for c in chosen))


def _size(message: Message) -> int:
    """Bytes of the arrays in a message, every ArrayRecord (the weights, and SCAFFOLD's
    control variates beside them): the arrays' data, not the envelope."""
    records = message.content.array_records.values()
    # from each Array's dtype and shape: turning it back into NumPy reads it whole
    return sum(
        np.dtype(a.dtype).itemsize * math.prod(a.shape)
        for record in records
        for a in record.values()
    )


def measure_updates(
    entry: RoundLog,
    sent: ArrayRecord,
    received: dict[str, list[Array]],
    aggregate: ArrayRecord | None,
) -> None:
    """How far each client's update moved the model (`update_norm`) and how it lines up
    with the aggregate's move (`update_cosine`).

    One client at a time, in one reused float64 buffer: all of a round's updates at
    once were 160 MB at 100 clients of the 2NN, freed and faulted in again every round."""
    start = flat_float64(sent.values())
    moved = None if aggregate is None else flat_float64(aggregate.values()) - start
    moved_norm = None if moved is None else np.linalg.norm(moved)
    update = np.empty_like(start)
    for client, arrays in received.items():
        np.subtract(flat_float64(arrays, out=update), start, out=update)
        norm = np.linalg.norm(update)
        entry.update_norm[client] = float(norm)
        if moved is not None:
            scale = norm * moved_norm
            entry.update_cosine[client] = float(update @ moved / scale) if scale else 0.0


class RecordingStrategy(Strategy):
    """Any Flower strategy (`inner`), plus a record of each round in `log`.

    Replies are handed on in client order: replies arrive in whatever order
    clients finish, and floating-point sums depend on order.
    """

    def __init__(self, inner: Strategy, log: RunLog, behind: Behind) -> None:
        super().__init__()
        self.inner, self.log, self.behind = inner, log, behind
        self._global: dict[int, ArrayRecord] = {}

    def summary(self) -> None:
        self.inner.summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        messages = list(self.inner.configure_train(server_round, arrays, config, grid))
        self._global[server_round] = arrays
        entry = self.log.rounds.setdefault(server_round, RoundLog())
        entry.messages_sent = len(messages)
        entry.bytes_sent = sum(_size(m) for m in messages)
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = sorted(replies, key=lambda reply: client_of(reply) or 0)
        entry = self.log.rounds.setdefault(server_round, RoundLog())
        sent = self._global.pop(server_round)
        # the arrays as sent: a DP wrapper replaces them with clipped ones, FedMedian empties them
        received: dict[str, list[Array]] = {}
        failures, dropped = [], 0
        for reply in replies:
            if reply.has_error():
                reason = failure_reason(reply, server_round)
                failures.append(reason)
                dropped += DROPOUT_REASON in reason
                continue
            client = str(client_of(reply))
            entry.client_loss[client] = list(reply.content["client"]["epoch-losses"])
            received[client] = list(reply.content["arrays"].values())
            entry.messages_received += 1
            entry.bytes_received += _size(reply)
        self.log.failures += sorted(failures)
        if not received:
            if failures and dropped == len(failures):  # all dropped out: the model stays
                return None, None
            reasons = "; ".join(dict.fromkeys(failures)) or "no client replied in time"
            raise FederatedRunError(f"round {server_round}: every client failed ({reasons})")
        arrays, metrics = self.inner.aggregate_train(server_round, replies)
        entry.kept = kept_clients(self.inner, replies)
        self.behind.run(measure_updates, entry, sent, received, arrays)
        spent = getattr(self.inner, "privacy_spent", lambda: None)()
        entry.epsilon = None if spent is None else float(spent.epsilon)
        return arrays, metrics

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return self.inner.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        return self.inner.aggregate_evaluate(server_round, replies)


def build_strategy(config: ExperimentConfig, log: RunLog, behind: Behind) -> RecordingStrategy:
    """The config's strategy, its privacy wrapper, and the bookkeeping around both
    (what need not hold up the next round in `behind`)."""
    return RecordingStrategy(with_privacy(flower_strategy(config), config), log, behind)
