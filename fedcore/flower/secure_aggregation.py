"""Flower's SecAgg+ for the `secagg` privacy setting: both halves of it.

SecAgg+ exists in Flower 1.42 only for the legacy API: the server runs
`SecAggPlusWorkflow` as the fit step of a `DefaultWorkflow`, with a legacy
`FedAvg` in a `LegacyContext`; the clients run `secaggplus_mod`, which reads
and writes the legacy `fitins.*` / `fitres.*` records. This module puts
fedcore's pieces into that frame and no more: on the client, an adapter between
the legacy records and our `train_handler`; on the server, the global
evaluation, the round records and the seeded initial model.

What the server sees. `secaggplus_mod` masks the parameters only: each client
sends its quantized, weighted model plus masks, and the server can unmask only
the sum. Everything else in a reply reaches the server in plain: the
`fitres.num_examples`, `fitres.metrics` and `fitres.status` records and our
`client` record (the client's number and epoch losses), beside the protocol's
own public keys, encrypted shares and key shares. So the round records keep
the clients' losses and failures (Flower delivers them in plain) and have no
update norms or cosines (those need each client's update, which SecAgg+ hides).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.client.mod import secaggplus_mod
from flwr.clientapp.typing import ClientAppCallable
from flwr.common import (
    Code,
    FitRes,
    NDArrays,
    Scalar,
    Status,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.compat.common import recorddict_compat as compat
from flwr.server import LegacyContext, ServerConfig, SimpleClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import FedAvg
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD, Key
from flwr.serverapp import Grid
from flwr.supercore.run import RunNotRunningException

from fedcore.experiment.config import ExperimentConfig
from fedcore.experiment.progress import FederatedRunError
from fedcore.flower.run_config import experiment_config
from fedcore.flower.strategies import DROPOUT_REASON, RoundLog, RunLog, client_of, failure_reason
from fedcore.learning.models import build_model

# ------------------------------------------------------------------ client side


def secagg_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Flower's `secaggplus_mod` when the run's privacy is `secagg`; the message
    untouched otherwise. A mod rather than a fixed list of mods because the run
    config comes with each message (the ClientApp is built before it is known)."""
    if experiment_config(context.run_config).privacy_kind != "secagg":
        return call_next(msg, context)
    return secaggplus_mod(msg, context, functools.partial(legacy_train, call_next=call_next))


@functools.cache
def _state_keys(model: str) -> tuple[str, ...]:
    """The model's state_dict keys: the legacy records carry the weights unnamed."""
    return tuple(build_model(0, model).state_dict())


def legacy_train(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Our train step under the legacy records `secaggplus_mod` reads and writes:
    `fitins.*` in, the message our handler takes; its reply out as `fitres.*`.

    The reply keeps our `client` record (the client's number and epoch losses):
    the mod leaves every record but the parameters as it is, so the server gets
    it in plain, as it gets `fitres.num_examples`. Its `metrics` record is left
    out: `fitres.num_examples` carries what it says, and legacy metrics take no lists.
    """
    fitins = compat.recorddict_to_fitins(msg.content, keep_input=True)
    keys = _state_keys(experiment_config(context.run_config).model)
    weights = parameters_to_ndarrays(fitins.parameters)
    arrays = ArrayRecord({k: Array(a) for k, a in zip(keys, weights, strict=True)})
    content = RecordDict({"arrays": arrays, "config": ConfigRecord(dict(fitins.config))})
    reply = call_next(Message(content=content, metadata=msg.metadata), context)  # same message
    fitres = FitRes(
        status=Status(code=Code.OK, message=""),
        parameters=ndarrays_to_parameters(reply.content["arrays"].to_numpy_ndarrays()),
        num_examples=int(reply.content["metrics"]["num-examples"]),
        metrics={},
    )
    out = compat.fitres_to_recorddict(fitres, keep_input=True)
    out["client"] = reply.content["client"]
    return Message(content=out, reply_to=msg)


# ------------------------------------------------------------------ server side


def training_replies(on_reply: Callable[[Message], None]) -> Callable[[Message], None]:
    """`on_reply` for the replies that finish a client's training (those with our
    `client` record) and for failures: SecAgg+ exchanges four messages with each
    client a round, and the other three say nothing a progress view shows."""

    def report(reply: Message) -> None:
        if reply.has_error() or "client" in reply.content.config_records:
            on_reply(reply)

    return report


def _payload_bytes(content: RecordDict) -> int:
    """Bytes a message carries: its arrays, and the bytes its config records hold
    (SecAgg+'s public keys, encrypted shares, masked vectors and key shares). The
    envelope and small numbers are left out, as the plain rounds count only weights."""
    arrays = sum(len(a.data) for r in content.array_records.values() for a in r.values())
    blobs = sum(
        len(item)
        for record in content.config_records.values()
        for value in record.values()
        for item in (value if isinstance(value, list) else [value])
        if isinstance(item, bytes)
    )
    return arrays + blobs


class LedgerGrid:
    """The grid the workflow talks to: it counts every message of every SecAgg+
    stage into the round's `RoundLog` (SecAgg+ costs four exchanges a round, so
    all four are counted), keeps the clients' losses and failures, and, once
    `close`d, tells Flower's client-manager thread that the run is over (a run
    that stops with an error never reaches the workflow's own shutdown of it)."""

    def __init__(self, grid: Grid, log: RunLog) -> None:
        self._grid, self.log = grid, log
        self.failures: dict[int, list[str]] = {}  # round -> the failures seen in it
        self._closed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def get_node_ids(self) -> Iterable[int]:
        if self._closed:
            raise RunNotRunningException
        return self._grid.get_node_ids()

    def close(self) -> None:
        self._closed = True

    def _entry(self, message: Message) -> tuple[int, RoundLog]:
        server_round = int(message.metadata.group_id)  # the workflow's round, on every message
        return server_round, self.log.rounds.setdefault(server_round, RoundLog())

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        messages = list(messages)
        for message in messages:
            _, entry = self._entry(message)
            entry.messages_sent += 1
            entry.bytes_sent += _payload_bytes(message.content)
        replies = list(self._grid.send_and_receive(messages, timeout=timeout))
        failures = []
        for reply in replies:
            server_round, entry = self._entry(reply)
            if reply.has_error():
                failures.append(failure_reason(reply, server_round))
                self.failures.setdefault(server_round, []).append(failures[-1])
                continue
            entry.messages_received += 1
            entry.bytes_received += _payload_bytes(reply.content)
            if "client" in reply.content.config_records:
                losses = reply.content["client"]["epoch-losses"]
                entry.client_loss[str(client_of(reply))] = list(losses)
        self.log.failures += sorted(failures)
        return replies


class SortedClientManager(SimpleClientManager):
    """Flower's client manager, its clients kept in the grid's order. It samples with
    `random.sample` from them in registration order, which follows a set's order of
    random node ids; in the order of `ReportingGrid.get_node_ids` (the nodes'
    partitions), the seed alone decides which partitions train, as it does for the
    new strategies."""

    def __init__(self, grid: Grid) -> None:
        super().__init__()
        self.grid, self.order = grid, dict[int, int]()

    def register(self, client: ClientProxy) -> bool:
        registered = super().register(client)
        if client.node_id not in self.order:  # a node the grid listed since
            self.order = {node_id: i for i, node_id in enumerate(self.grid.get_node_ids())}
        last = len(self.order)
        with self._cv:
            self.clients = dict(
                sorted(self.clients.items(), key=lambda c: self.order.get(c[1].node_id, last))
            )
        return registered


class SecureFitRound:
    """Flower's SecAgg+ fit step, and the two things fedcore adds after it: the
    aggregate back in the model's dtypes (SecAgg+ dequantizes to float64, which the
    next round would send), and a round SecAgg+ gave up said out loud (it only logs
    it and leaves the model as it was)."""

    def __init__(self, workflow: SecAggPlusWorkflow, dtypes: list[np.dtype], grid: LedgerGrid):
        self.workflow, self.dtypes, self.grid = workflow, dtypes, grid

    def __call__(self, grid: Grid, context: LegacyContext) -> None:
        state = context.state  # a RecordDict: its `array_records` is a copy of the moment
        before = state[MAIN_PARAMS_RECORD]
        self.workflow(grid, context)
        if state[MAIN_PARAMS_RECORD] is before:
            self._gave_up(int(state[MAIN_CONFIGS_RECORD][Key.CURRENT_ROUND]))
            return
        aggregate = compat.arrayrecord_to_parameters(state[MAIN_PARAMS_RECORD], True)
        weights = [
            w.astype(d) for w, d in zip(parameters_to_ndarrays(aggregate), self.dtypes, strict=True)
        ]
        state[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(
            ndarrays_to_parameters(weights), True
        )

    def _gave_up(self, server_round: int) -> None:
        """Too few clients left to unmask the sum: like a round whose every client
        dropped out, the model stays when only the dropout setting silenced them;
        any other failure ends the run, as every client failing does in plain rounds."""
        failures = self.grid.failures.get(server_round, [])
        if failures and all(DROPOUT_REASON in reason for reason in failures):
            self.grid.log.failures.append(
                f"round {server_round}: too few clients left for SecAgg+ to unmask the sum "
                "(it needs a majority of those sampled); the model stays"
            )
            return
        reasons = "; ".join(dict.fromkeys(failures)) or "no client replied in time"
        raise FederatedRunError(f"round {server_round}: SecAgg+ could not aggregate ({reasons})")


def legacy_evaluate(
    evaluate: Callable[[int, ArrayRecord], MetricRecord], keys: list[str]
) -> Callable[[int, NDArrays, dict[str, Scalar]], tuple[float, dict[str, Scalar]]]:
    """The legacy strategy's `evaluate_fn` around fedcore's global evaluation (which
    takes an ArrayRecord with the model's keys; the legacy API passes bare arrays)."""

    def evaluate_fn(
        server_round: int, weights: NDArrays, _config: dict[str, Scalar]
    ) -> tuple[float, dict[str, Scalar]]:
        arrays = ArrayRecord({k: Array(w) for k, w in zip(keys, weights, strict=True)})
        metrics = evaluate(server_round, arrays)
        return float(metrics["loss"]), {"accuracy": float(metrics["accuracy"])}

    return evaluate_fn


def secagg_workflow(
    config: ExperimentConfig, max_weight: int, timeout: float
) -> SecAggPlusWorkflow:
    """Flower's SecAgg+ with every sampled client a neighbour of every other (shares
    1.0: with at most 100 clients the sparse graph saves little) and the shares of a
    majority of them needed to rebuild a client's secret: no two disjoint groups of
    clients can then each rebuild one of its two secrets (its mask seed, its key), so
    a server that lies about who dropped out cannot unmask one update (Bonawitz et al.
    2017), while any minority may drop out. Quantization is Flower's default: weighted
    weights within +-8, in steps of 16 / 2**22. `max_weight`: the most examples any
    client weighs its update by; each client's weighted weights are quantized as a share
    of it: a smaller bound could overflow the masked sum, a larger one would waste the
    quantization's range."""
    return SecAggPlusWorkflow(
        num_shares=1.0,
        reconstruction_threshold=config.clients_per_round // 2 + 1,
        max_weight=float(max_weight),
        timeout=timeout,
    )


def run_secure_aggregation(
    grid: Grid,
    config: ExperimentConfig,
    initial: ArrayRecord,
    evaluate: Callable[[int, ArrayRecord], MetricRecord],
    log: RunLog,
    timeout: float,
    max_weight: int,
) -> None:
    """`config.num_rounds` rounds of FedAvg through Flower's SecAgg+ workflow, from
    `initial`; `evaluate(round, arrays)` scores the global model before round 1 and
    after each. Flower's legacy FedAvg samples the clients by the config's fraction and
    minimum (at least 2 a round: the config refuses fewer), and SecAgg+ weighs each
    update by its number of examples inside the sum."""
    keys = list(initial.keys())
    weights = initial.to_numpy_ndarrays()
    strategy = FedAvg(
        fraction_fit=config.fraction_train,
        fraction_evaluate=0.0,
        min_fit_clients=config.min_train_clients,
        min_available_clients=config.num_clients,
        evaluate_fn=legacy_evaluate(evaluate, keys),
        on_fit_config_fn=lambda server_round: {"server-round": server_round},
        initial_parameters=ndarrays_to_parameters(weights),
    )
    ledger = LedgerGrid(grid, log)
    context = LegacyContext(
        Context(
            run_id=grid.run.run_id, node_id=0, node_config={}, state=RecordDict(), run_config={}
        ),
        config=ServerConfig(num_rounds=config.num_rounds, round_timeout=timeout),
        strategy=strategy,
        client_manager=SortedClientManager(grid),
    )
    workflow = secagg_workflow(config, max_weight, timeout)
    fit = SecureFitRound(workflow, [w.dtype for w in weights], ledger)
    try:
        DefaultWorkflow(fit_workflow=fit)(ledger, context)
    finally:
        ledger.close()
