"""FedNova (Wang et al. 2020, "Tackling the Objective Inconsistency Problem in
Heterogeneous Federated Optimization", NeurIPS): FedAvg with each client's update
normalized by how many local steps it took.

Hand-written because Flower's core has no FedNova (only a separate baseline
project); `FedNova` is Flower's own `FedAvg` (Message API) with the aggregation
replaced, so sampling, validation and metrics stay Flower's. FedAvg weighs a
client that took more steps (more data, same epochs) more than its share of the
data: its update is longer. FedNova divides each update by the client's
normalized steps first, then takes one step of the average length.

Each client reports the SGD steps it took, tau_i, in its reply's metrics
(`local-steps`; every client sends it). With the clients' SGD momentum rho,
client i's normalized steps are
`a_i = (tau_i - rho * (1 - rho**tau_i) / (1 - rho)) / (1 - rho)` (tau_i for
rho = 0), its normalized update `d_i = (x - y_i) / a_i`, and with
`p_i = n_i / sum_j n_j` over the round's replies the new model is
`x - tau_eff * sum_i p_i d_i`, `tau_eff = sum_i p_i a_i`. When every client takes
the same number of steps this is FedAvg's example-weighted mean of the y_i.

These are NIID-Bench's formulas (Li et al. 2022, github.com/Xtra-Computing/NIID-Bench,
`experiments.py`: `train_net_fednova` and the `fednova` server loop), which
fedcore reproduces, with one difference: NIID-Bench's n_i is
`len(train_dl_local)`, the client's batches per epoch, ceil(n_i / B); here it is
the client's examples, as in the paper (the two differ only by the short last
batch).
"""

from __future__ import annotations

from collections.abc import Iterable
from logging import INFO
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from flwr.supercore import log

from fedcore.flower.arrays import array_record, numpy_arrays

LOCAL_STEPS = "local-steps"  # in every reply's metrics: the SGD steps the client took


def normalized_steps(steps: int, momentum: float) -> float:
    """FedNova's a_i: the length of `steps` SGD steps with `momentum` in steps
    without (for momentum 0, the steps themselves)."""
    return (steps - momentum * (1 - momentum**steps) / (1 - momentum)) / (1 - momentum)


class FedNova(FedAvg):
    """FedNova's server on Flower's FedAvg: the clients' updates normalized by their
    local steps (`local-steps` in each reply's metrics) before they are averaged.

    `momentum` is the clients' SGD momentum rho; the other arguments are FedAvg's.
    """

    def __init__(self, *, momentum: float = 0.0, **fedavg: Any) -> None:
        super().__init__(**fedavg)
        self.momentum = momentum
        self._sent: ArrayRecord | None = None  # x, the model of the round in progress

    def summary(self) -> None:
        log(INFO, "\t├──> FedNova settings:")
        log(INFO, "\t│\t└── Client momentum: %s", self.momentum)
        super().summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._sent = arrays
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """FedAvg's checks and metrics; the model as FedNova aggregates it."""
        valid, _ = self._check_and_log_replies(list(replies), is_train=True)
        if not valid:
            return None, None
        contents = [reply.content for reply in valid]
        metrics = self.train_metrics_aggr_fn(contents, self.weighted_by_key)
        return self._normalized_average(contents), metrics

    def _normalized_average(self, contents: list[RecordDict]) -> ArrayRecord:
        assert self._sent is not None  # set by configure_train
        start = numpy_arrays(self._sent)
        replied = [next(iter(content.metric_records.values())) for content in contents]
        examples = np.array([float(m[self.weighted_by_key]) for m in replied])
        a = np.array([normalized_steps(int(m[LOCAL_STEPS]), self.momentum) for m in replied])
        p = examples / examples.sum()
        tau_eff = float(p @ a)
        models = [numpy_arrays(next(iter(c.array_records.values()))) for c in contents]
        new = {}
        for key, x in start.items():
            d = [(x.astype(np.float64) - y[key]) / a_i for y, a_i in zip(models, a, strict=True)]
            new[key] = (x - tau_eff * np.tensordot(p, d, axes=1)).astype(x.dtype)  # sum_i p_i d_i
        return array_record(new)
