"""SCAFFOLD (Karimireddy et al. 2020, "SCAFFOLD: Stochastic Controlled Averaging for
Federated Learning", ICML), both halves: the server's strategy and the client's
control variate.

Hand-written because Flower's core has no SCAFFOLD (only a separate baseline
project); `Scaffold` is Flower's own `FedAvg` (Message API) with the control
variates added, so sampling, validation and metrics stay Flower's.

The server keeps c (zeros at the start, the model's keys and shapes) and sends it
in every training message beside the model x. Client i keeps c_i in its node
state (`context.state`, zeros the first time), subtracts `lr * (c - c_i)` after
every SGD step, and after its K steps takes the paper's option II,
`c_i+ = c_i - c + (x - y_i) / (K * lr)`; it keeps c_i+ and replies with its
model y_i and `c_i+ - c_i`. The server's model is `x + eta_g * mean(y_i - x)`
and `c += sum(c_i+ - c_i) / N` over all N clients, so c stays the mean of every
client's c_i (as long as each change reaches it: a reply lost after the client
kept its c_i+ breaks that, as it would in the paper's algorithm).

Where the paper leaves a choice, NIID-Bench decides (Li et al. 2022,
github.com/Xtra-Computing/NIID-Bench, `experiments.py`: `train_net_scaffold`,
`local_train_net_scaffold` and the `scaffold` server loop), since fedcore
reproduces its table: the correction is applied after the optimizer's step,
outside the momentum; K counts the steps of all local epochs; the mean of
`y_i - x` is weighted by the clients' examples (the paper's is plain), and
NIID-Bench's server takes that weighted mean itself, which is eta_g = 1. One
difference: NIID-Bench divides the sum of the changes by the clients sampled
in the round, not by N; the two agree when every client trains every round,
and only N keeps c the mean of the c_i under partial participation.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from logging import INFO
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from flwr.supercore import log
from torch import nn

from fedcore.flower.arrays import array_record, numpy_arrays, torch_state

CONTROL = "scaffold-control"  # the server's c, in every training message
CONTROL_CHANGE = "scaffold-control-change"  # a client's c_i+ - c_i, in its reply
CLIENT_CONTROL = "scaffold-client-control"  # a client's c_i, in its node state


class Scaffold(FedAvg):
    """SCAFFOLD's server on Flower's FedAvg: the control variate c, sent with the
    model; `x + eta_g * mean(y_i - x)` and `c += sum(delta c_i) / N` from the replies.

    `num_clients` is N, every client of the federation (not only those sampled);
    `server_learning_rate` is eta_g (1: FedAvg's average of the y_i). The other
    arguments are FedAvg's.
    """

    def __init__(
        self, *, num_clients: int, server_learning_rate: float = 1.0, **fedavg: Any
    ) -> None:
        super().__init__(**fedavg)
        self.num_clients, self.server_learning_rate = num_clients, server_learning_rate
        self.control: dict[str, np.ndarray] | None = None  # c, from the first round's model
        self._sent: ArrayRecord | None = None  # x, the model of the round in progress

    def summary(self) -> None:
        log(INFO, "\t├──> SCAFFOLD settings:")
        log(INFO, "\t│\t├── Server learning rate: %s", self.server_learning_rate)
        log(INFO, "\t│\t└── Clients (N): %d", self.num_clients)
        super().summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """FedAvg's messages, each with c beside the model."""
        if self.control is None:
            self.control = {key: np.zeros_like(a) for key, a in numpy_arrays(arrays).items()}
        self._sent = arrays
        messages = list(super().configure_train(server_round, arrays, config, grid))
        control = array_record(self.control)
        for message in messages:
            message.content[CONTROL] = control
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """The new model and c from the replies; their control changes are taken
        out, so that FedAvg's checks and average see the model only."""
        replies = list(replies)
        changes = [
            numpy_arrays(reply.content.pop(CONTROL_CHANGE))
            for reply in replies
            if not reply.has_error()
        ]
        arrays, metrics = super().aggregate_train(server_round, replies)
        if arrays is None:
            return None, metrics
        assert self.control is not None and self._sent is not None  # set by configure_train
        for key, value in self.control.items():
            total = np.sum([change[key] for change in changes], axis=0, dtype=np.float64)
            self.control[key] = (value + total / self.num_clients).astype(value.dtype)
        if self.server_learning_rate != 1.0:  # (1: the average itself, no rounding)
            start, eta = numpy_arrays(self._sent), self.server_learning_rate
            average = numpy_arrays(arrays)
            arrays = array_record({k: start[k] + eta * (average[k] - start[k]) for k in start})
        return arrays, metrics


@dataclass(frozen=True)
class ClientControl:
    """A client's side of SCAFFOLD in one round: the server's c and its own c_i."""

    server: dict[str, torch.Tensor]
    own: dict[str, torch.Tensor]

    @classmethod
    def of(cls, msg: Message, context: Context) -> ClientControl | None:
        """The round's control variates when the server runs SCAFFOLD (None otherwise):
        c from the message, c_i from the node state, zeros the first time."""
        if CONTROL not in msg.content.array_records:
            return None
        server = torch_state(msg.content[CONTROL])
        if CLIENT_CONTROL in context.state.array_records:
            own = torch_state(context.state[CLIENT_CONTROL])
        else:
            own = {key: torch.zeros_like(value) for key, value in server.items()}
        return cls(server, own)

    def correction(self, model: nn.Module) -> list[torch.Tensor]:
        """`c - c_i` for each of the model's parameters, in their order: what local
        training subtracts, times the learning rate, after every step."""
        return [self.server[name] - self.own[name] for name, _ in model.named_parameters()]

    def update(
        self,
        sent: Mapping[str, torch.Tensor],
        trained: Mapping[str, torch.Tensor],
        steps: int,
        learning_rate: float,
        context: Context,
    ) -> ArrayRecord:
        """Option II, `c_i+ = c_i - c + (x - y) / (K * lr)` with x the model `sent`,
        y the `trained` one and K the `steps`: c_i+ goes into the node state, and
        `c_i+ - c_i` is returned, for the reply."""
        scale = steps * learning_rate
        new = {
            key: own - self.server[key] + (sent[key] - trained[key]) / scale
            for key, own in self.own.items()
        }
        context.state[CLIENT_CONTROL] = ArrayRecord(new)
        return ArrayRecord({key: new[key] - self.own[key] for key in new})
