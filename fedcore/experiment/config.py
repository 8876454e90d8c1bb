"""The one experiment config shared by the notebook, the CLI, Flower and the benchmarks.

Each setting is described once, in `fedcore.experiment.settings` (default, limits, CLI
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

from fedcore.experiment.settings import BY_NAME, SETTINGS

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

    An empty group (`"1,3,7;;4,6,9"`) is a client that excludes nothing; an empty
    text is no exclusions at all (splits other than exclude).
    """
    if not isinstance(text, str):
        raise ConfigError(f"exclude must be a string like '1,3,7;2,5,8;4,6,9', got {text!r}")
    if not text.strip():
        return ()
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

# split kind -> (its parameter's type, default, what it means); None: no parameter
SPLITS: dict[str, tuple[type, object, str] | None] = {
    "exclude": None,
    "iid": None,
    "dirichlet": (float, 0.5, "alpha, > 0 (small: each client holds few digits)"),
    "classes": (int, 2, "digits per client, 1-10"),
    "shards": (int, 2, "label-sorted shards per client, >= 1"),
    "sizes": (
        str,
        "linear",
        "how sizes grow with the client number: linear, square or exponential",
    ),
}
SIZE_LAWS = ("linear", "square", "exponential")


def parse_split(text: str) -> tuple[str, Any]:
    """`"dirichlet:0.1"` -> `("dirichlet", 0.1)`, `"shards"` -> `("shards", 2)` (its default)."""
    if not isinstance(text, str):
        raise ConfigError(f"split must be text like 'dirichlet:0.1', got {text!r}")
    kind, _, given = text.strip().partition(":")
    kind = kind.strip().lower()
    known = ", ".join(
        name if spec is None else f"{name}:{spec[1]}" for name, spec in SPLITS.items()
    )
    if kind not in SPLITS:
        raise ConfigError(f"split {text!r}: unknown kind {kind!r} (known: {known})")
    spec = SPLITS[kind]
    if spec is None:
        if given.strip():
            raise ConfigError(f"split {text!r}: {kind} takes no parameter")
        return kind, None
    kind_type, default, meaning = spec
    if not given.strip():
        return kind, default
    try:
        value = kind_type(given.strip())
    except ValueError:
        raise ConfigError(f"split {text!r}: the parameter is {meaning}") from None
    bad = (
        (kind == "dirichlet" and not 0 < value < float("inf"))
        or (kind == "classes" and not 1 <= value <= 10)
        or (kind == "shards" and value < 1)
        or (kind == "sizes" and value not in SIZE_LAWS)
    )
    if bad:
        raise ConfigError(f"split {text!r}: the parameter is {meaning}")
    return kind, value


# strategy -> its parameters and their defaults: Flower's, except where Flower's
# default makes the strategy FedAvg itself (FedProx mu 0, FedAvgM momentum 0)
STRATEGIES: dict[str, dict[str, float]] = {
    "fedavg": {},
    "fedprox": {"mu": 0.1},
    "fedavgm": {"lr": 1.0, "momentum": 0.9},
    "fedadam": {"eta": 0.1, "tau": 0.001},
    "fedyogi": {"eta": 0.01, "tau": 0.001},
    "fedadagrad": {"eta": 0.1, "tau": 0.001},
    "fedmedian": {},
    "fedtrimmedavg": {"beta": 0.2},
    "krum": {"f": 0},
    "multikrum": {"f": 0, "m": 1},
}
PRIVACY: dict[str, dict[str, float]] = {
    "off": {},
    "server": {"noise": 1.0, "clip": 1.0, "delta": 1e-5},
    "client": {"noise": 1.0, "clip": 1.0, "delta": 1e-5},
}
WHOLE_PARAMETERS = ("f", "m")  # counts of clients
# a parameter -> (is it allowed, what it must be)
PARAMETER_RULES: dict[str, tuple[Any, str]] = {
    "mu": (lambda v: v >= 0, ">= 0"),
    "lr": (lambda v: v > 0, "> 0"),
    "momentum": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "eta": (lambda v: v > 0, "> 0"),
    "tau": (lambda v: v > 0, "> 0"),
    "beta": (lambda v: 0 <= v < 0.5, "in [0, 0.5)"),
    "f": (lambda v: v >= 0, "a count >= 0"),
    "m": (lambda v: v >= 1, "a count >= 1"),
    "noise": (lambda v: v > 0, "> 0"),
    "clip": (lambda v: v > 0, "> 0"),
    "delta": (lambda v: 0 < v < 1, "in (0, 1)"),
}


def parse_spec(
    text: str, table: dict[str, dict[str, float]], what: str
) -> tuple[str, dict[str, float]]:
    """`"fedprox:mu=0.5"` -> `("fedprox", {"mu": 0.5})`; parameters left out take
    the table's defaults, unknown names and bad values are errors that say so."""
    if not isinstance(text, str):
        raise ConfigError(f"{what} must be text like {next(iter(table))!r}, got {text!r}")
    name, _, given = text.strip().partition(":")
    name = name.strip().lower()
    if name not in table:
        raise ConfigError(f"{what} {text!r}: unknown {what} {name!r} (known: {', '.join(table)})")
    values = dict(table[name])
    for item in filter(None, (part.strip() for part in given.split(","))):
        key, equals, raw = item.partition("=")
        key = key.strip()
        if key not in values or not equals:
            known = ", ".join(f"{k}=..." for k in values) or "no parameters"
            raise ConfigError(f"{what} {text!r}: {name} takes {known}")
        rule, meaning = PARAMETER_RULES[key]
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{what} {text!r}: {key} must be a number {meaning}") from None
        if key in WHOLE_PARAMETERS and value != int(value) or not rule(value):
            raise ConfigError(f"{what} {text!r}: {key} must be {meaning}, got {raw.strip()}")
        values[key] = int(value) if key in WHOLE_PARAMETERS else value
    return name, values


def format_spec(name: str, values: dict[str, float]) -> str:
    """The normal spelling, every parameter written: `"fedprox:mu=0.1"`."""
    return name + (":" + ",".join(f"{k}={v:g}" for k, v in values.items()) if values else "")


def format_split(kind: str, value: Any) -> str:
    """The normal spelling of a split: `("dirichlet", 0.1)` -> `"dirichlet:0.1"`."""
    return (
        kind if value is None else f"{kind}:{value:g}" if kind == "dirichlet" else f"{kind}:{value}"
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

    What each field means, its default and its limits are in `fedcore.experiment.settings`
    (`SETTINGS`, one row per field). In short: `num_clients` clients share the
    MNIST training set as `split` says (the default: client i never sees
    `excluded_digits[i]`); `strategy` (Flower's, FedAvg by default, `privacy`
    its DP wrapper) runs `num_rounds` rounds of `local_epochs` local epochs
    (also the isolated models' epochs) of SGD (`batch_size`, `learning_rate`,
    `momentum`) on `model`, with a `fraction_train` of the clients per round
    (at least `min_train_clients`; each fails with probability `dropout`);
    `seed` seeds the split, the weights, the batch order, the sampling and the
    dropouts; `data_dir` holds the four MNIST IDX files (empty:
    `$FEDCORE_DATA_DIR`, else the Hugging Face Hub).

    Example
    -------
    >>> config = ExperimentConfig(local_epochs=1)
    >>> ExperimentConfig.from_run_config(config.to_run_config()) == config
    True
    """

    num_clients: int = BY_NAME["num_clients"].default  # type: ignore[assignment]
    split: str = BY_NAME["split"].default  # type: ignore[assignment]
    excluded_digits: tuple[tuple[int, ...], ...] = REFERENCE_EXCLUSIONS
    model: str = BY_NAME["model"].default  # type: ignore[assignment]
    strategy: str = BY_NAME["strategy"].default  # type: ignore[assignment]
    privacy: str = BY_NAME["privacy"].default  # type: ignore[assignment]
    num_rounds: int = BY_NAME["num_rounds"].default  # type: ignore[assignment]
    local_epochs: int = BY_NAME["local_epochs"].default  # type: ignore[assignment]
    batch_size: int = BY_NAME["batch_size"].default  # type: ignore[assignment]
    learning_rate: float = BY_NAME["learning_rate"].default  # type: ignore[assignment]
    momentum: float = BY_NAME["momentum"].default  # type: ignore[assignment]
    fraction_train: float = BY_NAME["fraction_train"].default  # type: ignore[assignment]
    min_train_clients: int = BY_NAME["min_train_clients"].default  # type: ignore[assignment]
    dropout: float = BY_NAME["dropout"].default  # type: ignore[assignment]
    target_accuracy: float = BY_NAME["target_accuracy"].default  # type: ignore[assignment]
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
        if self.min_train_clients > self.num_clients:
            raise ConfigError(
                f"min_train_clients ({self.min_train_clients}) is more than the "
                f"{self.num_clients} clients"
            )
        object.__setattr__(self, "split", format_split(*parse_split(self.split)))
        object.__setattr__(
            self, "strategy", format_spec(*parse_spec(self.strategy, STRATEGIES, "strategy"))
        )
        object.__setattr__(
            self, "privacy", format_spec(*parse_spec(self.privacy, PRIVACY, "privacy"))
        )
        if self.privacy_kind != "off" and self.strategy_name not in ("fedavg", "fedprox"):
            raise ConfigError(
                f"privacy {self.privacy} needs fedavg or fedprox: Flower's accountant follows "
                f"FedAvg's aggregation only (the strategy is {self.strategy})"
            )
        if self.model not in BY_NAME["model"].choices:
            raise ConfigError(
                f"model must be one of {', '.join(BY_NAME['model'].choices)}, got {self.model!r}"
            )
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
        if self.split_kind != "exclude":
            # The reference exclusions are the field's default: they mean "none given".
            if exclusions not in ((), REFERENCE_EXCLUSIONS, default_exclusions(self.num_clients)):
                raise ConfigError(
                    f"excluded digits apply to the exclude split only; the split is {self.split}"
                )
            exclusions = ()
        elif exclusions == ():  # the exclude split with nothing given: nobody excludes
            exclusions = ((),) * self.num_clients
        object.__setattr__(self, "excluded_digits", exclusions)
        if self.split_kind == "exclude":
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
    def split_kind(self) -> str:
        """`"dirichlet"` for `"dirichlet:0.1"`."""
        return self.split.partition(":")[0]

    @property
    def split_parameter(self) -> Any:
        return parse_split(self.split)[1]

    @property
    def strategy_name(self) -> str:
        return self.strategy.partition(":")[0]

    @property
    def strategy_parameters(self) -> dict[str, float]:
        return parse_spec(self.strategy, STRATEGIES, "strategy")[1]

    @property
    def privacy_kind(self) -> str:
        """ "off", "server" or "client"."""
        return self.privacy.partition(":")[0]

    @property
    def privacy_parameters(self) -> dict[str, float]:
        return parse_spec(self.privacy, PRIVACY, "privacy")[1]

    @property
    def excluded_by_all(self) -> tuple[int, ...]:
        """Digits every client excludes (exclude split): no model can learn them."""
        if not self.excluded_digits:
            return ()
        return tuple(sorted(set.intersection(*(set(d) for d in self.excluded_digits))))

    @property
    def total_local_epochs(self) -> int:
        """Epochs one client trains over a run when it trains every round: the
        centralized baseline's epochs."""
        return self.num_rounds * self.local_epochs

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
        values = self.to_run_config()
        return " ".join(
            f"{s.flag} '{values[s.key]}'" if s.kind is str else f"{s.flag} {values[s.key]}"
            for s in SETTINGS
            if s.name != "data_dir" and (s.name != "excluded_digits" or values[s.key])
        )

    def cache_key(self) -> str:
        """A stable text naming what determines the results (data folder resolved)."""
        data = self.to_dict() | {"data_dir": self.resolved_data_dir()}
        return json.dumps(data, sort_keys=True)


RUN_CONFIG_KEYS: dict[str, str] = {s.name: s.key for s in SETTINGS}
