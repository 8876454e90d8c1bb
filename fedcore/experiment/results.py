"""Results as plain dataclasses that round-trip through JSON.

A run can then be cached, compared, reloaded by the app, or written by
`flwr run .` and read by a script. Accuracies are fractions in [0, 1];
subset names are the digits joined by commas (`"1,3,7"`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fedcore.experiment.config import ExperimentConfig
from fedcore.storage import atomic_write_text


class ResultsError(ValueError):
    """A results file that cannot be loaded; the message names the file."""


@dataclass(frozen=True)
class ClientResult:
    """One isolated model: trained on one client's data only."""

    client: int  # 1-based
    excluded: list[int]
    train_size: int
    loss: list[float]  # mean training loss of every epoch
    accuracy: float  # full test set
    missing_accuracy: float | None  # its own missing digits; None if it excludes none
    subset_accuracy: dict[str, float]
    confusion: list[list[int]]
    label_counts: list[int] = field(default_factory=list)  # its training images per digit


@dataclass(frozen=True)
class CentralizedResult:
    """The upper bound: one model trained on every client's data pooled, for as many
    epochs over it as one client trains over a whole run (rounds x local epochs)."""

    train_size: int
    epochs: int
    loss: list[float]  # mean training loss of every epoch
    accuracy: float
    subset_accuracy: dict[str, float]
    confusion: list[list[int]]


@dataclass(frozen=True)
class RoundResult:
    """The global model after `round` rounds (0 = the initial weights)."""

    round: int
    accuracy: float
    loss: float
    subset_accuracy: dict[str, float]
    # client number (as text, JSON keys are strings) -> loss of every local epoch
    client_loss: dict[str, list[float]] = field(default_factory=dict)
    digit_accuracy: list[float] = field(default_factory=list)  # test accuracy on each digit
    # client -> L2 norm of its update (its weights minus the round's global weights)
    update_norm: dict[str, float] = field(default_factory=dict)
    # client -> cosine between its update and the aggregated one (drift: low = pulls away)
    update_cosine: dict[str, float] = field(default_factory=dict)
    messages_sent: int = 0  # model weights to the sampled clients, and their bytes
    bytes_sent: int = 0
    messages_received: int = 0  # updates back, and their bytes
    bytes_received: int = 0
    epsilon: float | None = None  # privacy spent so far (differential privacy only)


@dataclass(frozen=True)
class FederatedResult:
    history: list[RoundResult]
    accuracy: float
    loss: float
    subset_accuracy: dict[str, float]
    confusion: list[list[int]]
    failures: list[str] = field(default_factory=list)  # "client K failed in round N: why"
    # the first round after which the global model reached the config's target accuracy
    rounds_to_target: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FederatedResult:
        history = [RoundResult(**row) for row in data["history"]]
        return cls(**(data | {"history": history}))


@dataclass(frozen=True)
class ExperimentResult:
    config: ExperimentConfig
    isolated: list[ClientResult] | None = None
    federated: FederatedResult | None = None
    centralized: CentralizedResult | None = None
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase
    # the split: training images per digit of every client (rows: clients, 1 first)
    label_counts: list[list[int]] = field(default_factory=list)
    # isolated model i scored on client j's label mix (rows: i, columns: j)
    cross_accuracy: list[list[float]] | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"config": self.config.to_dict()}
        if self.isolated is not None:
            data["isolated"] = [asdict(client) for client in self.isolated]
        if self.federated is not None:
            data["federated"] = self.federated.to_dict()
        if self.centralized is not None:
            data["centralized"] = asdict(self.centralized)
        if self.cross_accuracy is not None:
            data["cross_accuracy"] = self.cross_accuracy
        data["label_counts"] = self.label_counts
        data["timings"] = dict(self.timings)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExperimentResult:
        isolated = data.get("isolated")
        federated = data.get("federated")
        centralized = data.get("centralized")
        return cls(
            config=ExperimentConfig.from_dict(data["config"]),
            isolated=None if isolated is None else [ClientResult(**c) for c in isolated],
            federated=None if federated is None else FederatedResult.from_dict(federated),
            centralized=None if centralized is None else CentralizedResult(**centralized),
            timings=dict(data.get("timings", {})),
            label_counts=data.get("label_counts", []),
            cross_accuracy=data.get("cross_accuracy"),
        )

    @property
    def unlearnable_digits(self) -> tuple[int, ...]:
        """Digits no client has an image of: no model can learn them."""
        counts = self.label_counts or [c.label_counts for c in self.isolated or []]
        if not counts:
            return ()
        totals = [sum(column) for column in zip(*counts, strict=True)]
        return tuple(d for d, total in enumerate(totals) if total == 0)

    @property
    def subsets(self) -> list[str]:
        """The missing-digit subsets every model was scored on (`"1,3,7"`, ...)."""
        for scored in (self.federated, *(self.isolated or []), self.centralized):
            if scored is not None:
                return list(scored.subset_accuracy)
        return []

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> ExperimentResult:
        return cls.from_dict(json.loads(text))

    def save(self, path: str | Path) -> Path:
        """Write atomically, so a half-written file can never be loaded."""
        return atomic_write_text(path, self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | Path) -> ExperimentResult:
        path = Path(path)
        try:
            return cls.from_json(path.read_text(encoding="utf-8"))
        except OSError as error:
            raise ResultsError(f"{path}: cannot be read ({error.strerror or error})") from error
        except (ValueError, KeyError, TypeError, AttributeError) as error:  # e.g. a JSON list
            raise ResultsError(f"{path}: not a fedcore results file ({error})") from error
