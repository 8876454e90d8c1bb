"""The one experiment config shared by the notebook, the CLI, Flower and the benchmarks.

Each setting is described once, in `fedcore.settings` (default, limits, CLI
flag, run-config key, label, help); this module turns that table into a frozen,
validated config. The notebook builds an `ExperimentConfig` from its controls,
the CLI from its flags, Flower from `context.run_config` (flat kebab-case keys,
see `to_run_config`), and the benchmarks from the defaults; all of them
validate the same way.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedcore.settings import BY_NAME, SETTINGS

DATA_DIR_ENV = "FEDCORE_DATA_DIR"


class ConfigError(ValueError):
    """A setting a user gave is out of range or of the wrong type."""


def default_exclusions(num_clients: int) -> tuple[tuple[int, ...], ...]:
    """Reference exclusions, cycled so that any client count gets a skewed split."""
    return tuple(REFERENCE_EXCLUSIONS[i % len(REFERENCE_EXCLUSIONS)] for i in range(num_clients))


def format_digits(digits: Sequence[int]) -> str:
    """`(1, 3, 7)` -> `"1,3,7"`: the name of a missing-digit subset everywhere."""
    return ",".join(str(d) for d in digits)


def format_exclusions(exclusions: Sequence[Sequence[int]]) -> str:
    """`((1, 3, 7), (2, 5, 8))` -> `"1,3,7;2,5,8"`, the form the CLI and Flower use."""
    return ";".join(format_digits(digits) for digits in exclusions)


def parse_exclusions(text: str) -> tuple[tuple[int, ...], ...]:
    """Parse `"1,3,7;2,5,8;4,6,9"`: one group per client, `;` between clients.

    An empty group (`"1,3,7;;4,6,9"`) is a client that excludes nothing.
    """
    if not isinstance(text, str):
        raise ConfigError(f"exclude must be a string like '1,3,7;2,5,8;4,6,9', got {text!r}")
    groups = []
    for number, group in enumerate(text.split(";"), start=1):
        digits = []
        for item in group.split(","):
            item = item.strip()
            if not item:
                continue
            if not item.isdigit() or len(item) != 1:
                raise ConfigError(
                    f"exclude: client {number} has {item!r}, which is not a digit 0-9 "
                    "(write digits separated by ',' and clients separated by ';', "
                    "e.g. '1,3,7;2,5,8;4,6,9')"
                )
            digits.append(int(item))
        groups.append(tuple(digits))
    return tuple(groups)


REFERENCE_EXCLUSIONS: tuple[tuple[int, ...], ...] = parse_exclusions(
    str(BY_NAME["excluded_digits"].default)
)


def _check_int(name: str, value: Any, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be a whole number, got {value!r}")
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}, got {value}")


def _check_float(name: str, value: Any, low: float, high: float, *, low_open: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    too_low = value <= low if low_open else value < low
    if too_low or value > high or value != value:
        bracket = "(" if low_open else "["
        raise ConfigError(f"{name} must be in {bracket}{low}, {high}], got {value}")


@dataclass(frozen=True)
class ExperimentConfig:
    """Every setting of one experiment; the defaults are the reference experiment.

    What each field means, its default and its limits are in `fedcore.settings`
    (`SETTINGS`, one row per field). In short: `num_clients` clients share the
    MNIST training set, client i never sees `excluded_digits[i]`; FedAvg runs
    `num_rounds` rounds of `local_epochs` local epochs (also the isolated
    models' epochs) of SGD (`batch_size`, `learning_rate`, `momentum`) with a
    `fraction_train` of the clients per round; `seed` seeds the split, the
    weights, the batch order and the sampling; `data_dir` holds the four MNIST
    IDX files (empty: `$FEDCORE_DATA_DIR`, else the Hugging Face Hub).

    Example
    -------
    >>> config = ExperimentConfig(local_epochs=1)
    >>> ExperimentConfig.from_run_config(config.to_run_config()) == config
    True
    """

    num_clients: int = BY_NAME["num_clients"].default  # type: ignore[assignment]
    excluded_digits: tuple[tuple[int, ...], ...] = REFERENCE_EXCLUSIONS
    num_rounds: int = BY_NAME["num_rounds"].default  # type: ignore[assignment]
    local_epochs: int = BY_NAME["local_epochs"].default  # type: ignore[assignment]
    batch_size: int = BY_NAME["batch_size"].default  # type: ignore[assignment]
    learning_rate: float = BY_NAME["learning_rate"].default  # type: ignore[assignment]
    momentum: float = BY_NAME["momentum"].default  # type: ignore[assignment]
    fraction_train: float = BY_NAME["fraction_train"].default  # type: ignore[assignment]
    seed: int = BY_NAME["seed"].default  # type: ignore[assignment]
    data_dir: str = BY_NAME["data_dir"].default  # type: ignore[assignment]

    def __post_init__(self) -> None:
        for setting in SETTINGS:  # the numbers, with the table's limits
            value, low, high = getattr(self, setting.name), setting.low, setting.high
            if setting.kind is int:
                _check_int(setting.name, value, low, high)
            elif setting.kind is float:
                _check_float(setting.name, value, low, high, low_open=setting.low_open)
        if not isinstance(self.data_dir, str):
            raise ConfigError(f"data_dir must be a folder path, got {self.data_dir!r}")
        # Normalise lists (from JSON or a UI) into tuples so the config stays hashable.
        exclusions = self.excluded_digits
        if isinstance(exclusions, str) or not isinstance(exclusions, Sequence):
            raise ConfigError(
                f"excluded_digits must be one list of digits per client, got {exclusions!r}"
            )
        if any(isinstance(d, str) or not isinstance(d, Sequence) for d in exclusions):
            raise ConfigError(
                f"excluded_digits must be one list of digits per client, got {exclusions!r}"
            )
        exclusions = tuple(tuple(digits) for digits in exclusions)
        object.__setattr__(self, "excluded_digits", exclusions)
        self._check_exclusions()

    def _check_exclusions(self) -> None:
        if len(self.excluded_digits) != self.num_clients:
            raise ConfigError(
                f"excluded digits are given for {len(self.excluded_digits)} clients, "
                f"but there are {self.num_clients} clients"
            )
        for client, digits in enumerate(self.excluded_digits, start=1):
            for digit in digits:
                if isinstance(digit, bool) or not isinstance(digit, int) or not 0 <= digit <= 9:
                    raise ConfigError(
                        f"client {client}: excluded digit {digit!r} is not a digit 0-9"
                    )
            if len(set(digits)) != len(digits):
                raise ConfigError(f"client {client}: excluded digits {list(digits)} repeat a digit")
            if len(digits) == 10:
                raise ConfigError(
                    f"client {client} excludes all ten digits and would have nothing to train on"
                )

    # ----------------------------------------------------------------- derived

    @property
    def missing_subsets(self) -> tuple[tuple[int, ...], ...]:
        """The distinct, non-empty missing-digit sets, sorted: the test subsets we report."""
        seen: dict[tuple[int, ...], None] = {}
        for digits in self.excluded_digits:
            if digits:
                seen.setdefault(tuple(sorted(digits)), None)
        return tuple(seen)

    @property
    def unlearnable_digits(self) -> tuple[int, ...]:
        """Digits every client excludes: no model, federated or not, can learn them."""
        common = set(range(10))
        for digits in self.excluded_digits:
            common &= set(digits)
        return tuple(sorted(common))

    def resolved_data_dir(self) -> str:
        """The folder to read, absolute: the config's, else `$FEDCORE_DATA_DIR`; "" = the Hub."""
        folder = self.data_dir or os.environ.get(DATA_DIR_ENV, "")
        return str(Path(folder).expanduser().resolve()) if folder else ""

    def replace(self, **changes: Any) -> ExperimentConfig:
        """A copy with some settings changed, validated like a new config."""
        return dataclasses.replace(self, **changes)

    # ---------------------------------------------------------- serialisation

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (lists, not tuples)."""
        data = dataclasses.asdict(self)
        data["excluded_digits"] = [list(digits) for digits in self.excluded_digits]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExperimentConfig:
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(unknown)}")
        return cls(**data)

    def to_run_config(self) -> dict[str, int | float | str]:
        """The flat kebab-case keys of Flower's run config (`[tool.flwr.app.config]`)."""
        return {
            RUN_CONFIG_KEYS[name]: format_exclusions(value) if name == "excluded_digits" else value
            for name, value in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, Any]) -> ExperimentConfig:
        """Build from Flower's run config; a mistyped key is an error, not ignored."""
        by_key = {key: name for name, key in RUN_CONFIG_KEYS.items()}
        unknown = sorted(set(run_config) - set(by_key))
        if unknown:
            raise ConfigError(
                f"unknown run-config key(s): {', '.join(unknown)}; "
                f"known keys: {', '.join(sorted(by_key))}"
            )
        values = {by_key[key]: value for key, value in run_config.items()}
        if "excluded_digits" in values:
            values["excluded_digits"] = parse_exclusions(values["excluded_digits"])
        if "learning_rate" in values and isinstance(values["learning_rate"], int):
            values["learning_rate"] = float(values["learning_rate"])
        return cls(**values)

    def summary(self) -> str:
        """The settings in one line, as the CLI's flags spell them (for logs)."""
        return (
            f"--clients {self.num_clients} --exclude '{format_exclusions(self.excluded_digits)}' "
            f"--rounds {self.num_rounds} --epochs {self.local_epochs} "
            f"--batch-size {self.batch_size} --lr {self.learning_rate} "
            f"--momentum {self.momentum} --fraction {self.fraction_train} --seed {self.seed}"
        )

    def cache_key(self) -> str:
        """A stable text naming what determines the results (data folder resolved)."""
        data = self.to_dict() | {"data_dir": self.resolved_data_dir()}
        return json.dumps(data, sort_keys=True)


RUN_CONFIG_KEYS: dict[str, str] = {s.name: s.key for s in SETTINGS}
