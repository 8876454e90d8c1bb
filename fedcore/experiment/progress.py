"""Progress events and run errors of a federated run, free of Flower imports so that
the CLI and the app can name them without loading Flower."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fedcore.experiment.results import RoundResult


class FederatedRunError(RuntimeError):
    """A federated run could not go on; the message says which round and why."""


@dataclass(frozen=True)
class Progress:
    """One step of a federated run, for progress bars and live charts.

    kind: "round-start", "client-done", "client-failed" or "round-done".
    `history` holds every round finished so far (round 0 = initial model).
    """

    kind: str
    server_round: int
    num_rounds: int
    client: int | None = None
    detail: str = ""
    history: tuple[RoundResult, ...] = ()


ProgressCallback = Callable[[Progress], None]
