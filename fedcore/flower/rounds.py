"""The server side of federated training: the strategy's rounds, central evaluation,
history.

`run_federated` is what the ServerApp does, whether it runs under `flwr run`,
in-process from the notebook, or on the deployment engine. Sampling and
aggregation are Flower's own strategy (`fedcore.flower.strategies`); this module adds
the global model's evaluation after every round, the history, and progress
events for a UI.

A run that samples clients samples partitions, not node ids: the strategies draw
from `ReportingGrid.get_node_ids()` with the seeded `random` module, and it lists
the nodes in the order of their partitions (`partition_order`), so one seed trains
the same clients in every run, under `flwr run .` as in fedcore's engine.
"""

from __future__ import annotations

import dataclasses
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Error,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp import Grid

from fedcore.data.mnist import load_mnist
from fedcore.data.partition import missing_subsets, partition_clients
from fedcore.experiment.config import ExperimentConfig
from fedcore.experiment.progress import FederatedRunError, Progress, ProgressCallback
from fedcore.experiment.results import FederatedResult, RoundResult
from fedcore.flower.arrays import torch_state
from fedcore.flower.behind import Behind
from fedcore.flower.client_app import PARTITION_RECORD
from fedcore.flower.secure_aggregation import run_secure_aggregation, training_replies
from fedcore.flower.strategies import RoundLog, RunLog, build_strategy, client_of, failure_reason
from fedcore.learning.attacks import stamp_trigger
from fedcore.learning.evaluation import (
    Evaluation,
    backdoor_success,
    digit_accuracy,
    evaluate,
    scoring_parts,
)
from fedcore.learning.models import build_model
from fedcore.privacy.curious_server import CuriousServer

REPLY_POLL_SECONDS = 0.05
ROUND_TIMEOUT_SECONDS = 3600.0
NODE_WAIT_SECONDS = 120.0  # for the first SuperNode to connect
NODE_SETTLE_SECONDS = 10.0  # no new SuperNode for this long: that is all of them
PARTITION_QUERY_SECONDS = 300.0  # for every SuperNode to say its partition (Ray starts first)


class ReportingGrid:
    """A Grid that reports every reply as it arrives, not only when a round ends.

    It delegates everything to Flower's grid and replaces `send_and_receive`
    with the same push-then-pull loop, calling `on_reply` for each reply.
    `partitions` (node id -> partition id, `partition_order`) orders the node ids
    the strategies sample from.
    """

    def __init__(
        self,
        grid: Grid,
        on_reply: Callable[[Message], None],
        stop: threading.Event,
        observe: Callable[[Message, Message], None] | None = None,
        partitions: Mapping[int, int] | None = None,
    ) -> None:
        self._grid = grid
        self._on_reply = on_reply
        self._stop = stop
        self._observe = observe  # (the message sent, its reply): what the server sees
        self._partitions = dict(partitions or {})
        # the engine's grid says when a reply has come; others are asked every so often
        self._arrived: threading.Event | None = getattr(grid, "replies_arrived", None)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def get_node_ids(self) -> list[int]:
        """In the order of their partitions where they were asked (`partition_order`),
        else sorted (the engine's grid: its partitions follow the sorted node ids), so
        that a strategy's seeded sampling picks the same partitions in every run. A node
        not asked (none should be) comes after those that were."""
        known = self._partitions
        return sorted(self._grid.get_node_ids(), key=lambda n: (n not in known, known.get(n), n))

    def _node_names(self) -> dict[int, str]:
        """SuperNodes as a failure names them: the name each was registered under
        (`flwr supernode register --name`, deployment only) and the node id."""
        nodes = self._grid.get_nodes()
        return {n.node_id: f"{n.name} (node {n.node_id})" if n.name else "" for n in nodes}

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> list[Message]:
        messages = list(messages)
        sent = list(self._grid.push_messages(messages))
        # the engine's virtual SuperNodes have no names, and 10,000 of them took longer
        # to list than a round
        names = {} if self._arrived is not None else self._node_names()
        by_id = dict(zip(sent, messages, strict=False))
        to = {i: names.get(m.metadata.dst_node_id) for i, m in by_id.items()}
        pending = set(sent)
        deadline = None if timeout is None else time.monotonic() + timeout
        replies: list[Message] = []
        while pending and (deadline is None or time.monotonic() < deadline):
            if self._stop.is_set():  # stopped, or the engine is gone: no reply will come
                raise FederatedRunError("the run was stopped during a round")
            if self._arrived is not None:
                self._arrived.clear()  # before pulling: a reply stored after it sets it again
            for reply in self._grid.pull_messages(pending):
                pending.discard(reply.metadata.reply_to_message_id)
                name_the_node(reply, to.get(reply.metadata.reply_to_message_id) or "")
                replies.append(reply)
                self._on_reply(reply)
                if self._observe is not None and not reply.has_error():
                    self._observe(by_id[reply.metadata.reply_to_message_id], reply)
            if pending and self._arrived is not None:
                self._arrived.wait(REPLY_POLL_SECONDS)
            elif pending:
                time.sleep(REPLY_POLL_SECONDS)
        return replies


def name_the_node(reply: Message, node: str) -> None:
    """Put the SuperNode's name into a failed reply's reason where the reason does
    not say which client failed (the SuperLink's "node unavailable" reply for a
    SuperNode that went silent, a crash outside our ClientApp)."""
    if node and reply.has_error() and not failure_reason(reply, 0).startswith("client "):
        reply.error = Error(code=reply.error.code, reason=f"SuperNode {node}: {reply.error.reason}")


def lists_partitions_in_order(grid: Grid) -> bool:
    """Whether the grid's sorted node ids are already in partition order: the engine's
    grid (`fedcore.engine.flower_runtime.PushingGrid`, the one with `replies_arrived`)
    registers its virtual nodes so. Under `flwr run .`, Flower's simulation and its
    deployment engine, node ids are random and partitions follow registration."""
    return getattr(grid, "replies_arrived", None) is not None


def partition_order(grid: Grid, stop: threading.Event) -> dict[int, int]:
    """Node id -> partition id, asked of every SuperNode once (one query message each,
    `fedcore.flower.client_app.query_handler`). Sent before round 1 and outside the
    strategy, it is no round's traffic (`RoundLog`), no client's progress, and nothing
    `observe` or the curious server sees. Nodes that do not answer in
    PARTITION_QUERY_SECONDS, or answer with an error, fail the run, named in one line."""
    quiet = ReportingGrid(grid, lambda reply: None, stop)
    nodes = quiet.get_node_ids()
    asked = [Message(RecordDict(), dst_node_id=n, message_type=MessageType.QUERY) for n in nodes]
    replies = quiet.send_and_receive(asked, timeout=PARTITION_QUERY_SECONDS)
    # by the message answered: the SuperLink's own error replies come from node 0
    to = {m.metadata.message_id: m.metadata.dst_node_id for m in asked}
    partitions: dict[int, int] = {}
    failed: dict[int, str] = {}
    for reply in replies:
        node = to.get(reply.metadata.reply_to_message_id, reply.metadata.src_node_id)
        if reply.has_error():
            failed[node] = failure_reason(reply, 0).removeprefix("round 0: ")
        else:
            partitions[node] = int(reply.content[PARTITION_RECORD]["partition-id"])
    for node in nodes:
        if node not in partitions and node not in failed:
            failed[node] = f"no answer in {PARTITION_QUERY_SECONDS:g} s"
    if failed:
        names = quiet._node_names()  # "name (node id)" under deployment, else ""
        said = "; ".join(
            why if why.startswith("SuperNode ") else f"SuperNode {names.get(n) or n}: {why}"
            for n, why in sorted(failed.items())
        )
        raise FederatedRunError(
            f"{len(failed)} of {len(nodes)} SuperNodes did not say which partition they hold: "
            + said
        )
    return partitions


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


class TargetReached(Exception):
    """Raised after the round that reached the target, under `stop_at_target`: Flower's
    strategies run every round they were given, so ending early means leaving their
    loop (between rounds, with no message outstanding)."""


class RoundRecorder:
    """The run, round by round: the global model's scores after each round, the
    clients' losses and failures (`log`, kept by the strategy), and progress events."""

    def __init__(self, config: ExperimentConfig, on_progress: ProgressCallback | None) -> None:
        self.config, self.on_progress = config, on_progress
        self.log = RunLog()
        self.history: list[RoundResult] = []
        self.confusions: dict[int, list[list[int]]] = {}
        self.current_round = 0  # the round being trained (0: none yet)

    def report(
        self, kind: str, server_round: int, client: int | None = None, detail: str = ""
    ) -> None:
        if self.on_progress is not None:
            self.on_progress(
                Progress(
                    kind, server_round, self.config.num_rounds, client, detail, tuple(self.history)
                )
            )

    def record_round(
        self, server_round: int, evaluation: Evaluation, attack_success: float | None = None
    ) -> None:
        seen = self.log.rounds.get(server_round, RoundLog())
        self.history.append(
            RoundResult(
                round=server_round,
                accuracy=evaluation.accuracy,
                loss=evaluation.loss,
                subset_accuracy=evaluation.subset_accuracy,
                client_loss=seen.client_loss,
                digit_accuracy=digit_accuracy(evaluation.confusion),
                update_norm=seen.update_norm,
                update_cosine=seen.update_cosine,
                messages_sent=seen.messages_sent,
                bytes_sent=seen.bytes_sent,
                messages_received=seen.messages_received,
                bytes_received=seen.bytes_received,
                epsilon=seen.epsilon,
                kept_clients=seen.kept,
                attack_success=attack_success,
            )
        )
        self.confusions[server_round] = evaluation.confusion
        self.report("round-done", server_round)
        if self.stops_here(server_round):
            raise TargetReached

    def start_round(self, server_round: int) -> None:
        """The strategy goes on to `server_round` (none after the last)."""
        if server_round <= self.config.num_rounds:
            self.current_round = server_round
            self.report("round-start", server_round)

    def stops_here(self, server_round: int) -> bool:
        """Whether the run ends after this round: with `stop_at_target`, the round that
        first reached the target."""
        return self.config.stop_at_target == "yes" and self.rounds_to_target() == server_round

    def on_reply(self, reply: Message) -> None:
        """Each client update as it arrives, in the round being trained."""
        round_now = self.current_round
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
            attack_success=final.attack_success,
        )


class GlobalEvaluation:
    """The strategy's `evaluate_fn`: the global model on the whole test set (and on
    each missing-digit subset) before the first round and after every round; under a
    backdoor attack, also how often the trigger makes it answer the attack's target.

    In a background `behind`, the model of round r is scored while the clients train
    round r + 1 (`fedcore.flower.behind`): the same scores, recorded in round order;
    the strategy gets no metrics back (it only logs them), and a run that stops at
    its target stops one round later, whose training is not recorded. A failure in
    scoring, or the target reached, is raised at the strategy's next call."""

    def __init__(self, config: ExperimentConfig, recorder: RoundRecorder, behind: Behind) -> None:
        self.config, self.recorder, self.behind = config, recorder, behind
        self.data = load_mnist(config)
        self.partitions = partition_clients(self.data.train_y, config)
        self.subsets = missing_subsets(self.partitions)
        self.model = build_model(config.seed, config.model)
        self.target, self.triggered_x = None, None
        if config.attack_name == "backdoor":
            self.target = int(config.attack_parameters["target"])
            others = self.data.test_y != self.target
            self.triggered_x = stamp_trigger(self.data.test_x[others])

    def __call__(self, server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        # the previous round scored; this round's update norms (just given) may wait
        self.behind.catch_up(leave=1 if server_round else 0)
        metrics = self.behind.run(self.score, server_round, arrays)
        self.recorder.start_round(server_round + 1)
        return metrics

    def score(self, server_round: int, arrays: ArrayRecord) -> MetricRecord:
        """The model after `server_round` scored and recorded."""
        self.model.load_state_dict(torch_state(arrays))
        data = self.data
        parts = scoring_parts()
        evaluation = evaluate(self.model, data.test_x, data.test_y, self.subsets, parts)
        success = None
        if self.target is not None:
            success = backdoor_success(self.model, self.triggered_x, self.target)
        self.recorder.record_round(server_round, evaluation, success)
        return MetricRecord({"accuracy": evaluation.accuracy, "loss": evaluation.loss})


def run_federated(
    grid: Grid,
    config: ExperimentConfig,
    on_progress: ProgressCallback | None = None,
    stop: threading.Event | None = None,
    observe: Callable[[Message, Message], None] | None = None,
    overlap: bool = False,
) -> FederatedResult:
    """The config's strategy for `config.num_rounds` rounds; evaluate the global model
    before the first round and after each. Privacy `secagg` runs Flower's SecAgg+
    workflow instead (`fedcore.flower.secure_aggregation`).

    Setting `stop` makes a round that is waiting for replies give up at once.
    `overlap` scores each round's model, and measures its updates, while the next
    round trains (`fedcore.flower.behind`; not under SecAgg+, whose workflow reads
    the scores).
    `observe(sent, reply)` sees every reply as the ServerApp receives it; so does the
    curious server of the `leakage` setting, whose findings the result then holds.
    A run that samples (fewer clients a round than all) first asks each SuperNode its
    partition, except on the engine's grid (`partition_order`).
    """
    stop = stop or threading.Event()
    wait_for_supernodes(grid, config.num_clients, stop)
    partitions = None  # sampling from node ids in partition order (`partition_order`)
    if config.clients_per_round < config.num_clients and not lists_partitions_in_order(grid):
        partitions = partition_order(grid, stop)
    random.seed(config.seed)  # Flower's strategies sample clients with the `random` module
    np.random.seed(config.seed)  # and its DP wrappers draw their noise from NumPy's
    recorder = RoundRecorder(config, on_progress)
    behind = Behind(overlap and config.privacy_kind != "secagg")
    evaluation = GlobalEvaluation(config, recorder, behind)
    initial = ArrayRecord(build_model(config.seed, config.model).state_dict())
    curious = None
    if config.leakage != "off":
        curious = CuriousServer(config, evaluation.data, evaluation.partitions, stop)
    watchers = [w for w in (observe, curious and curious.observe) if w is not None]

    def watch(sent: Message, reply: Message) -> None:
        for watcher in watchers:
            watcher(sent, reply)

    try:
        if config.privacy_kind == "secagg":
            replies = training_replies(recorder.on_reply)
            secure = ReportingGrid(grid, replies, stop, watch, partitions)
            largest = max(p.size for p in evaluation.partitions)  # SecAgg+'s max_weight
            run_secure_aggregation(
                secure, config, initial, evaluation, recorder.log, ROUND_TIMEOUT_SECONDS, largest
            )
        else:
            build_strategy(config, recorder.log, behind).start(
                grid=ReportingGrid(grid, recorder.on_reply, stop, watch, partitions),
                initial_arrays=initial,
                num_rounds=config.num_rounds,
                timeout=ROUND_TIMEOUT_SECONDS,
                train_config=ConfigRecord(),
                evaluate_fn=evaluation,
            )
            behind.catch_up()
    except TargetReached:
        pass
    finally:
        behind.close()
    result = recorder.result()
    return result if curious is None else dataclasses.replace(result, leakage=curious.leakage())
