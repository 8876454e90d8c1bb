"""The server side of federated training: FedAvg rounds, central evaluation, history.

`run_federated` is what the ServerApp does, whether it runs under `flwr run`,
in-process from the notebook, or on the deployment engine. It keeps Flower's
own `FedAvg` for sampling and weighted averaging and adds only bookkeeping:
per-client losses, failures, and progress events for a UI.
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from fedcore.config import ExperimentConfig
from fedcore.data import load_mnist
from fedcore.evaluation import Evaluation, evaluate
from fedcore.model import build_model
from fedcore.partition import missing_subsets, partition_clients
from fedcore.progress import FederatedRunError, Progress, ProgressCallback
from fedcore.results import FederatedResult, RoundResult

REPLY_POLL_SECONDS = 0.05
ROUND_TIMEOUT_SECONDS = 3600.0
NODE_WAIT_SECONDS = 120.0  # for the first SuperNode to connect
NODE_SETTLE_SECONDS = 10.0  # no new SuperNode for this long: that is all of them


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


class ReportingGrid:
    """A Grid that reports every reply as it arrives, not only when a round ends.

    It delegates everything to Flower's grid and replaces `send_and_receive`
    with the same push-then-pull loop, calling `on_reply` for each reply.
    """

    def __init__(
        self, grid: Grid, on_reply: Callable[[Message], None], stop: threading.Event
    ) -> None:
        self._grid = grid
        self._on_reply = on_reply
        self._stop = stop
        # an in-memory grid says how often it is worth asking; a remote one is asked less
        self._poll = min(REPLY_POLL_SECONDS, getattr(grid, "pull_interval", REPLY_POLL_SECONDS))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def get_node_ids(self) -> list[int]:
        """Sorted, so that a strategy's seeded sampling does not depend on set order."""
        return sorted(self._grid.get_node_ids())

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> list[Message]:
        pending = set(self._grid.push_messages(messages))
        deadline = None if timeout is None else time.monotonic() + timeout
        replies: list[Message] = []
        while pending and (deadline is None or time.monotonic() < deadline):
            if self._stop.is_set():  # stopped, or the engine is gone: no reply will come
                raise FederatedRunError("the run was stopped during a round")
            for reply in self._grid.pull_messages(pending):
                pending.discard(reply.metadata.reply_to_message_id)
                replies.append(reply)
                self._on_reply(reply)
            if pending:
                time.sleep(self._poll)
        return replies


@dataclass
class RunLog:
    """What the strategy saw, round by round."""

    client_loss: dict[int, dict[str, list[float]]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


class FedcoreFedAvg(FedAvg):
    """Flower's FedAvg, plus a record of each client's losses and of failed clients."""

    def __init__(self, config: ExperimentConfig, log: RunLog) -> None:
        super().__init__(
            fraction_train=config.fraction_train,
            fraction_evaluate=0.0,  # the server evaluates the global model centrally
            min_train_nodes=config.min_train_clients,
            min_available_nodes=config.num_clients,
        )
        self.log = log

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        # Replies arrive in whatever order clients finish; floating-point sums
        # depend on order, so aggregate in client order for reproducible numbers.
        replies = sorted(replies, key=lambda reply: client_of(reply) or 0)
        losses: dict[str, list[float]] = {}
        failures = []
        for reply in replies:
            if reply.has_error():
                failures.append(failure_reason(reply, server_round))
            else:
                client = client_of(reply)
                losses[str(client)] = list(reply.content["client"]["epoch-losses"])
        failures.sort()
        self.log.failures += failures
        self.log.client_loss[server_round] = losses  # in client order, as the replies
        if not losses:
            reasons = "; ".join(dict.fromkeys(failures)) or "no client replied in time"
            raise FederatedRunError(f"round {server_round}: every client failed ({reasons})")
        return super().aggregate_train(server_round, replies)


def wait_for_supernodes(grid: Grid, expected: int, stop: threading.Event) -> None:
    """Wait until `expected` SuperNodes are connected; fail clearly on a mismatch.

    Each SuperNode holds partition `partition-id` of `num-partitions`, so a
    federation of another size would silently train on a different split.
    """
    start = changed = time.monotonic()
    count = 0
    while not stop.is_set():
        now_count = len(list(grid.get_node_ids()))
        now = time.monotonic()
        if now_count != count:
            count, changed = now_count, now
        if count == expected:
            return
        settled = count > 0 and now - changed > NODE_SETTLE_SECONDS
        if count > expected or settled or now - start > NODE_WAIT_SECONDS:
            raise FederatedRunError(
                f"num-clients is {expected} but the federation has {count} SuperNodes; "
                f"run with --federation-config 'num-supernodes={expected}' "
                f"or --run-config 'num-clients={count}' (with matching exclusions)"
            )
        time.sleep(REPLY_POLL_SECONDS)
    raise FederatedRunError("the simulation engine stopped before every SuperNode connected")


class RoundRecorder:
    """The run, round by round: the global model's scores after each round, the
    clients' losses and failures (`log`, kept by the strategy), and progress events."""

    def __init__(self, config: ExperimentConfig, on_progress: ProgressCallback | None) -> None:
        self.config, self.on_progress = config, on_progress
        self.log = RunLog()
        self.history: list[RoundResult] = []
        self.confusions: dict[int, list[list[int]]] = {}

    def report(
        self, kind: str, server_round: int, client: int | None = None, detail: str = ""
    ) -> None:
        if self.on_progress is not None:
            self.on_progress(
                Progress(
                    kind, server_round, self.config.num_rounds, client, detail, tuple(self.history)
                )
            )

    def record_round(self, server_round: int, evaluation: Evaluation) -> None:
        self.history.append(
            RoundResult(
                round=server_round,
                accuracy=evaluation.accuracy,
                loss=evaluation.loss,
                subset_accuracy=evaluation.subset_accuracy,
                client_loss=self.log.client_loss.get(server_round, {}),
            )
        )
        self.confusions[server_round] = evaluation.confusion
        self.report("round-done", server_round)
        if server_round < self.config.num_rounds:
            self.report("round-start", server_round + 1)

    def on_reply(self, reply: Message) -> None:
        """Each client update as it arrives (the round in progress follows the last recorded)."""
        round_now = len(self.history)
        if reply.has_error():
            self.report("client-failed", round_now, detail=failure_reason(reply, round_now))
        else:
            self.report("client-done", round_now, client_of(reply))

    def rounds_to_target(self) -> int | None:
        """The first round after which the global model reached the target accuracy."""
        target = self.config.target_accuracy / 100
        return next((r.round for r in self.history if r.round and r.accuracy >= target), None)

    def result(self) -> FederatedResult:
        final = self.history[-1]
        return FederatedResult(
            history=self.history,
            accuracy=final.accuracy,
            loss=final.loss,
            subset_accuracy=final.subset_accuracy,
            confusion=self.confusions[final.round],
            failures=list(self.log.failures),
            rounds_to_target=self.rounds_to_target(),
        )


class GlobalEvaluation:
    """The strategy's `evaluate_fn`: the global model on the whole test set (and on
    each missing-digit subset) before the first round and after every round."""

    def __init__(self, config: ExperimentConfig, recorder: RoundRecorder) -> None:
        self.config, self.recorder = config, recorder
        self.data = load_mnist(config)
        self.subsets = missing_subsets(partition_clients(self.data.train_y, config))
        self.model = build_model(config.seed, config.model)

    def __call__(self, server_round: int, arrays: ArrayRecord) -> MetricRecord:
        self.model.load_state_dict(arrays.to_torch_state_dict())
        data = self.data
        evaluation = evaluate(self.model, data.test_x, data.test_y, self.subsets)
        self.recorder.record_round(server_round, evaluation)
        return MetricRecord({"accuracy": evaluation.accuracy, "loss": evaluation.loss})


def run_federated(
    grid: Grid,
    config: ExperimentConfig,
    on_progress: ProgressCallback | None = None,
    stop: threading.Event | None = None,
) -> FederatedResult:
    """FedAvg for `config.num_rounds` rounds; evaluate the global model before and after each.

    Setting `stop` makes a round that is waiting for replies give up at once.
    """
    stop = stop or threading.Event()
    wait_for_supernodes(grid, config.num_clients, stop)
    random.seed(config.seed)  # FedAvg samples clients with the `random` module
    recorder = RoundRecorder(config, on_progress)
    evaluation = GlobalEvaluation(config, recorder)
    FedcoreFedAvg(config, recorder.log).start(
        grid=ReportingGrid(grid, recorder.on_reply, stop),
        initial_arrays=ArrayRecord(build_model(config.seed, config.model).state_dict()),
        num_rounds=config.num_rounds,
        timeout=ROUND_TIMEOUT_SECONDS,
        train_config=ConfigRecord(),
        evaluate_fn=evaluation,
    )
    return recorder.result()
