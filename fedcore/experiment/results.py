"""Results as plain dataclasses that round-trip through JSON.

A run can then be cached, compared, reloaded by the app, or written by
`flwr run .` and read by a script. Accuracies are fractions in [0, 1];
subset names are the digits joined by commas (`"1,3,7"`). A file is read
with `ExperimentResult.load` or `.read`, which check every value first
(`fedcore.experiment.results_file`; each field's `metadata` holds its range
or shape), and a run that diverged says so (`ExperimentResult.diverged`).
"""

from __future__ import annotations

import functools
import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fedcore.experiment import results_file
from fedcore.experiment.config import ExperimentConfig
from fedcore.experiment.results_file import (
    CLIENT,
    CLIENT_DIGIT_COUNTS,
    CLIENTS,
    CONFUSION,
    COUNTS,
    DECIBELS,
    DIGITS,
    EPSILON,
    FRACTIONS,
    IMAGE,
    PER_CLIENT,
    PER_DIGIT_COUNTS,
    PER_DIGIT_FRACTIONS,
    SECONDS,
    SIMILARITY,
    SUBSET_FRACTIONS,
    ResultsError,
)
from fedcore.storage import atomic_write_text

__all__ = ["ResultsError"]  # raised by `load` and `read`; defined beside the checks
# Below this many times chance on the digits it trained on, a trained model "did not
# learn": a model that diverged predicts one digit (about 1/k of k digits' images);
# any MNIST model that learned, even one epoch, is far above (80% and more).
CHANCE_MARGIN = 1.5
# The digits a model "trained on": those that are at least this share of its training
# images. A client of a skewed split (dirichlet:0.1: 95% of one digit, a few images of
# others) rightly guesses its main digit; only among digits it saw in earnest is a
# model that guesses one of them a model that did not learn.
TRAINED_SHARE = 0.05


@dataclass(frozen=True)
class ClientResult:
    """One isolated model: trained on one client's data only."""

    client: int  # 1-based
    excluded: list[int] = field(metadata=DIGITS.metadata())
    train_size: int = field(metadata=COUNTS.metadata())
    loss: list[float]  # mean training loss of every epoch
    accuracy: float = field(metadata=FRACTIONS.metadata())  # full test set
    # its own missing digits; None if it excludes none
    missing_accuracy: float | None = field(metadata=FRACTIONS.metadata())
    subset_accuracy: dict[str, float] = field(metadata=SUBSET_FRACTIONS.metadata())
    confusion: list[list[int]] = field(metadata=CONFUSION.metadata())
    # its training images per digit
    label_counts: list[int] = field(default_factory=list, metadata=PER_DIGIT_COUNTS.metadata())


@dataclass(frozen=True)
class CentralizedResult:
    """The upper bound: one model trained on every client's data pooled, for as many
    epochs over it as one client trains over a whole run (rounds x local epochs)."""

    train_size: int = field(metadata=COUNTS.metadata())
    epochs: int
    loss: list[float]  # mean training loss of every epoch
    accuracy: float = field(metadata=FRACTIONS.metadata())
    subset_accuracy: dict[str, float] = field(metadata=SUBSET_FRACTIONS.metadata())
    confusion: list[list[int]] = field(metadata=CONFUSION.metadata())


@dataclass(frozen=True)
class RoundResult:
    """The global model after `round` rounds (0 = the initial weights)."""

    round: int
    accuracy: float = field(metadata=FRACTIONS.metadata())
    loss: float
    subset_accuracy: dict[str, float] = field(metadata=SUBSET_FRACTIONS.metadata())
    # client number (as text, JSON keys are strings) -> loss of every local epoch
    client_loss: dict[str, list[float]] = field(
        default_factory=dict, metadata=PER_CLIENT.metadata()
    )
    # test accuracy on each digit
    digit_accuracy: list[float] = field(
        default_factory=list, metadata=PER_DIGIT_FRACTIONS.metadata()
    )
    # client -> L2 norm of its update (its weights minus the round's global weights)
    update_norm: dict[str, float] = field(default_factory=dict, metadata=PER_CLIENT.metadata())
    # client -> cosine between its update and the aggregated one (drift: low = pulls away)
    update_cosine: dict[str, float] = field(default_factory=dict, metadata=PER_CLIENT.metadata())
    # model weights to the sampled clients, and their bytes; updates back, and theirs
    messages_sent: int = field(default=0, metadata=COUNTS.metadata())
    bytes_sent: int = field(default=0, metadata=COUNTS.metadata())
    messages_received: int = field(default=0, metadata=COUNTS.metadata())
    bytes_received: int = field(default=0, metadata=COUNTS.metadata())
    # privacy spent so far (differential privacy only)
    epsilon: float | None = field(default=None, metadata=EPSILON.metadata())
    # the clients whose updates the rule aggregated, for rules that choose (Krum's
    # choice); None: a rule that takes every update (or coordinates of each)
    kept_clients: list[int] | None = field(default=None, metadata=CLIENTS.metadata())
    # a backdoor attack only: the share of test images of other digits that the model,
    # the trigger stamped on them, classifies as the attack's target
    attack_success: float | None = field(default=None, metadata=FRACTIONS.metadata())


@dataclass(frozen=True)
class ClientLeakage:
    """What a curious server learned from one client's first update (the `leakage`
    setting; `fedcore.privacy.curious_server`), beside the truth it is scored on.
    The inferred fields are None where the server saw no update of this client's own
    (SecAgg+ shows it only the sum); the image fields also where the model allows no
    reconstruction, or none resembled an image of the client's."""

    client: int = field(metadata=CLIENT.metadata())
    round: int = field(metadata=COUNTS.metadata())  # the round of the update attacked; 0: none
    # the digits it holds no training image of, and the server's guess from its update
    true_missing: list[int] = field(metadata=DIGITS.metadata())
    inferred_missing: list[int] | None = field(metadata=DIGITS.metadata())
    # its training images per digit in the round attacked, and the server's estimate
    label_counts: list[int] = field(metadata=PER_DIGIT_COUNTS.metadata())
    label_counts_inferred: list[int] | None = field(metadata=PER_DIGIT_COUNTS.metadata())
    # the best reconstruction against the client's images of that round: its PSNR and
    # SSIM, the method that made it ("analytic" or "optimisation"), both images (0-255)
    psnr_db: float | None = field(metadata=DECIBELS.metadata())
    ssim: float | None = field(metadata=SIMILARITY.metadata())
    method: str | None = None
    # how many of its images that round some reconstruction rebuilt to 30 dB or more
    images_recovered: int | None = field(default=None, metadata=COUNTS.metadata())
    reconstruction: list[int] | None = field(default=None, metadata=IMAGE.metadata())
    matched: list[int] | None = field(default=None, metadata=IMAGE.metadata())


@dataclass(frozen=True)
class FederatedResult:
    history: list[RoundResult]
    accuracy: float = field(metadata=FRACTIONS.metadata())
    loss: float
    subset_accuracy: dict[str, float] = field(metadata=SUBSET_FRACTIONS.metadata())
    confusion: list[list[int]] = field(metadata=CONFUSION.metadata())
    failures: list[str] = field(default_factory=list)  # "client K failed in round N: why"
    # the first round after which the global model reached the config's target accuracy
    rounds_to_target: int | None = None
    # a backdoor attack only: the last round's attack success (see `RoundResult`)
    attack_success: float | None = field(default=None, metadata=FRACTIONS.metadata())
    # the `leakage` setting only: what the curious server learned of each client
    leakage: list[ClientLeakage] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FederatedResult:
        history = [RoundResult(**row) for row in data["history"]]
        leakage = data.get("leakage")
        if leakage is not None:
            leakage = [ClientLeakage(**client) for client in leakage]
        return cls(**(data | {"history": history, "leakage": leakage}))


@dataclass(frozen=True)
class ExperimentResult:
    config: ExperimentConfig
    isolated: list[ClientResult] | None = None
    federated: FederatedResult | None = None
    centralized: CentralizedResult | None = None
    # seconds per phase
    timings: dict[str, float] = field(default_factory=dict, metadata=SECONDS.metadata())
    # the split: training images per digit of every client (rows: clients, 1 first)
    label_counts: list[list[int]] = field(
        default_factory=list, metadata=CLIENT_DIGIT_COUNTS.metadata()
    )
    # isolated model i scored on client j's label mix (rows: i, columns: j)
    cross_accuracy: list[list[float]] | None = field(default=None, metadata=FRACTIONS.metadata())

    # written by `to_dict` for scripts that read the JSON; derived, so read back by nobody
    WRITTEN_FIELDS = ("diverged",)

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
        data["diverged"] = self.diverged
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExperimentResult:
        """A result from `to_dict`'s values (trusted: the engine's own; a file someone
        hands us goes through `read`, which checks every value first)."""
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

    def _pooled_counts(self) -> list[int]:
        """Training images per digit of every client together (empty: not recorded)."""
        counts = self.label_counts or [c.label_counts for c in self.isolated or []]
        return [sum(column) for column in zip(*counts, strict=True)]

    @property
    def unlearnable_digits(self) -> tuple[int, ...]:
        """Digits no client has an image of: no model can learn them."""
        return tuple(d for d, total in enumerate(self._pooled_counts()) if total == 0)

    @property
    def subsets(self) -> list[str]:
        """The missing-digit subsets every model was scored on (`"1,3,7"`, ...)."""
        for scored in (self.federated, *(self.isolated or []), self.centralized):
            if scored is not None:
                return list(scored.subset_accuracy)
        return []

    @functools.cached_property  # walks every loss: read by the report, Compare and to_dict
    def diverged(self) -> list[str]:
        """Each model that diverged (a loss that is not a finite number) or did not
        learn (about chance on the digits it trained on, after training), in words;
        empty for a run whose models all learned. Read from the numbers, so a file
        cannot say otherwise."""
        lines = []
        if self.isolated:
            lines += _isolated_diverged(self.isolated)
        pooled = self._pooled_counts()
        trained = _trained_digits(
            pooled or [int(d not in self.config.excluded_by_all) for d in range(10)]
        )
        if self.federated is not None:
            losses = [
                (h.round, [h.loss, *itertools.chain(*h.client_loss.values())])
                for h in self.federated.history
            ]
            lines += _diverged("federated", "round", losses, self.federated.confusion, trained)
        if self.centralized is not None:
            epochs = [(e, [loss]) for e, loss in enumerate(self.centralized.loss, start=1)]
            lines += _diverged("centralized", "epoch", epochs, self.centralized.confusion, trained)
        return lines

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def save(self, path: str | Path) -> Path:
        """Write atomically, so a half-written file can never be loaded."""
        return atomic_write_text(path, self.to_json() + "\n")

    @classmethod
    def read(cls, name: str, data: bytes) -> ExperimentResult:
        """A results file's bytes as a result, every value checked first; else
        `ResultsError`: one line naming `name` and the first problem."""
        value = results_file.parse_json(name, data)
        return results_file.checked(name, value, cls, cls.from_dict)

    @classmethod
    def load(cls, path: str | Path) -> ExperimentResult:
        """The results file at `path`, as `read` checks it."""
        return cls.read(str(path), results_file.read_bytes(path))


def _trained_digits(counts: Sequence[int]) -> list[int]:
    """The digits that are at least `TRAINED_SHARE` of the training images `counts`."""
    total = sum(counts)
    return [d for d, count in enumerate(counts) if total and count >= TRAINED_SHARE * total]


def _not_finite(losses: Sequence[float]) -> float | None:
    return next((loss for loss in losses if not math.isfinite(loss)), None)


def _at_chance(confusion: Sequence[Sequence[int]], digits: Sequence[int]) -> str | None:
    """`"9.8% on the digits it trained on, about chance (10%)"` for a model below
    `CHANCE_MARGIN` times chance on the test images of `digits`; None otherwise, or
    when a model trained on one digit only (it is right on it by guessing it)."""
    total = sum(sum(confusion[d]) for d in digits)
    if len(digits) < 2 or not total:
        return None
    accuracy, chance = sum(confusion[d][d] for d in digits) / total, 1 / len(digits)
    if accuracy >= CHANCE_MARGIN * chance:
        return None
    return f"{accuracy:.1%} on the digits it trained on, about chance ({chance:.0%})"


def _diverged(
    model: str,
    step: str,
    losses: Sequence[tuple[int, Sequence[float]]],
    confusion: Sequence[Sequence[int]],
    digits: Sequence[int],
) -> list[str]:
    """One line if the model diverged (the first `step` whose losses are not finite)
    or did not learn; none otherwise."""
    for number, values in losses:
        if (bad := _not_finite(values)) is not None:
            return [f"{model}: diverged: the loss is {bad} in {step} {number}"]
    if (chance := _at_chance(confusion, digits)) is not None:
        return [f"{model}: did not learn: {chance}"]
    return []


def _isolated_diverged(isolated: Sequence[ClientResult]) -> list[str]:
    """The isolated models that diverged and those that did not learn, one line
    each group (a hundred clients with the same learning rate fail together)."""
    diverged, unlearned = [], []
    for c in isolated:
        trained = _trained_digits(c.label_counts or [int(d not in c.excluded) for d in range(10)])
        if _not_finite(c.loss) is not None:
            diverged.append(c.client)
        elif _at_chance(c.confusion, trained) is not None:
            unlearned.append(c.client)
    lines = []
    for clients, what in (
        (diverged, "diverged: a training loss is not finite"),
        (unlearned, "did not learn: about chance on the digits trained on"),
    ):
        if clients:
            models = "models of clients" if len(clients) > 1 else "model of client"
            lines.append(f"isolated {models} {', '.join(map(str, clients))}: {what}")
    return lines
