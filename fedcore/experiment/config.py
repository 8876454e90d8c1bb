"""The one experiment config shared by the notebook, the CLI, Flower and the benchmarks.

Each setting is described once, in `fedcore.experiment.settings` (default,
limits, CLI flag, run-config key, label, help); this module turns that table
into a frozen, validated config. Text becomes a config in one place,
`fedcore.experiment.from_text` (CLI flags, Flower's run config, the page's
address, sweeps); the split, strategy and privacy are parsed once, here, into
the frozen objects of `fedcore.experiment.specs`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedcore.experiment.settings import BY_NAME, SETTINGS
from fedcore.experiment.specs import (
    CENTRAL_DP,
    REFERENCE_EXCLUSIONS,
    ConfigError,
    Spec,
    Split,
    default_exclusions,
    format_attackers,
    format_exclusions,
    parse_attack,
    parse_attackers,
    parse_privacy,
    parse_strategy,
)

DATA_DIR_ENV = "FEDCORE_DATA_DIR"


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
    dropouts; `attack` is what the clients `attackers` send instead of an honest
    update (none by default); `data_dir` holds the four MNIST IDX files (empty:
    `$FEDCORE_DATA_DIR`, else the Hugging Face Hub).

    Example
    -------
    >>> config = ExperimentConfig(num_clients=5, local_epochs=1)
    >>> config.excluded_digits[3:]  # the reference, cycled
    ((1, 3, 7), (2, 5, 8))
    >>> ExperimentConfig.from_dict(config.to_dict()) == config
    True
    """

    num_clients: int = BY_NAME["num_clients"].default  # type: ignore[assignment]
    split: str = BY_NAME["split"].default  # type: ignore[assignment]
    # None (not given): the reference exclusions cycled to `num_clients` for the
    # exclude split, none for the others; always a tuple once the config is built
    excluded_digits: tuple[tuple[int, ...], ...] | None = None
    model: str = BY_NAME["model"].default  # type: ignore[assignment]
    strategy: str = BY_NAME["strategy"].default  # type: ignore[assignment]
    privacy: str = BY_NAME["privacy"].default  # type: ignore[assignment]
    attack: str = BY_NAME["attack"].default  # type: ignore[assignment]
    attackers: str = BY_NAME["attackers"].default  # type: ignore[assignment]
    leakage: str = BY_NAME["leakage"].default  # type: ignore[assignment]
    num_rounds: int = BY_NAME["num_rounds"].default  # type: ignore[assignment]
    local_epochs: int = BY_NAME["local_epochs"].default  # type: ignore[assignment]
    batch_size: int = BY_NAME["batch_size"].default  # type: ignore[assignment]
    local_steps: int = BY_NAME["local_steps"].default  # type: ignore[assignment]
    learning_rate: float = BY_NAME["learning_rate"].default  # type: ignore[assignment]
    momentum: float = BY_NAME["momentum"].default  # type: ignore[assignment]
    fraction_train: float = BY_NAME["fraction_train"].default  # type: ignore[assignment]
    min_train_clients: int = BY_NAME["min_train_clients"].default  # type: ignore[assignment]
    dropout: float = BY_NAME["dropout"].default  # type: ignore[assignment]
    target_accuracy: float = BY_NAME["target_accuracy"].default  # type: ignore[assignment]
    stop_at_target: str = BY_NAME["stop_at_target"].default  # type: ignore[assignment]
    seed: int = BY_NAME["seed"].default  # type: ignore[assignment]
    data_dir: str = BY_NAME["data_dir"].default  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self._check_numbers()
        # the texts, parsed once: the normal spelling in the field, the object beside it
        split, strategy, privacy, attack = (
            Split.parse(self.split),
            parse_strategy(self.strategy),
            parse_privacy(self.privacy),
            parse_attack(self.attack),
        )
        specs = (("split", split), ("strategy", strategy), ("privacy", privacy), ("attack", attack))
        for name, spec in specs:
            object.__setattr__(self, name, str(spec))
            object.__setattr__(self, f"_{name}_spec", spec)
        self._resolve_attackers()
        if privacy.name in CENTRAL_DP and strategy.name not in ("fedavg", "fedprox"):
            raise ConfigError(
                f"privacy {self.privacy} needs fedavg or fedprox: Flower's accountant follows "
                f"FedAvg's aggregation only (the strategy is {self.strategy})"
            )
        if privacy.name == "secagg" and (strategy.name != "fedavg" or attack.name != "none"):
            raise ConfigError(
                f"privacy secagg with strategy {self.strategy} and attack {self.attack}: Flower's "
                "SecAgg+ workflow sums the updates for FedAvg, so it needs strategy fedavg and "
                "no attack (a rule that looks at each update cannot see them)"
            )
        if privacy.name == "local" and strategy.name == "scaffold":
            raise ConfigError(
                f"privacy {self.privacy} with strategy {self.strategy}: Flower's LocalDpMod "
                "noises a reply of one ArrayRecord, and SCAFFOLD's second one, the client's "
                "control-variate change, would show the server its update without the noise"
            )
        if privacy.name == "secagg" and self.clients_per_round < 2:
            raise ConfigError(
                f"privacy secagg with {self.clients_per_round} client a round: a sum of one "
                "update is that update; SecAgg+ needs at least 2 clients a round"
            )
        self._check_strategy_fits()
        for setting in (s for s in SETTINGS if s.choices):
            if getattr(self, setting.name) not in setting.choices:
                raise ConfigError(
                    f"{setting.name} must be one of {', '.join(setting.choices)}, "
                    f"got {getattr(self, setting.name)!r}"
                )
        self._resolve_exclusions()

    def _check_numbers(self) -> None:
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

    def _resolve_attackers(self) -> None:
        """`attackers` in its normal spelling, the clients beside it; an attack needs
        attackers and attackers need an attack."""
        clients = parse_attackers(self.attackers, self.num_clients)
        object.__setattr__(self, "attackers", format_attackers(clients))
        object.__setattr__(self, "_attacker_clients", clients)
        if self.attack_name == "none" and clients:
            raise ConfigError(
                f"attackers {self.attackers} are given, but no attack: give --attack "
                "(label-flip, sign-flip, noise, scale or backdoor)"
            )
        if self.attack_name != "none" and not clients:
            raise ConfigError(
                f"attack {self.attack} needs attackers: --attackers K (clients 1..K) or "
                "their numbers, e.g. '2,5,7'"
            )
        if self.attack_name != "none" and self.privacy_kind == "client":
            raise ConfigError(
                f"attack {self.attack} with privacy {self.privacy}: an attacker would not clip "
                "its own update; clip on the server (privacy server:...) to defend"
            )

    def _check_strategy_fits(self) -> None:
        """The robust rules' parameters against the clients of a round: beyond these
        Flower's Krum, MultiKrum and trimmed mean run without a word, but are not what
        they are named (Krum's scores clamp to one neighbour, MultiKrum averages all
        it has, a trimmed mean trims nothing). Clients that drop out of a round are
        not foreseen here: the round then has fewer updates."""
        name, p, n = self.strategy_name, self.strategy_parameters, self.clients_per_round
        strategy, per_round = f"strategy '{self.strategy}'", f"{n} client{'s' * (n != 1)} a round"
        if name in ("krum", "multikrum") and n < 2 * p["f"] + 3:
            raise ConfigError(
                f"{strategy}: Krum needs n >= 2f + 3 clients a round to tolerate f faulty "
                "ones; "
                + (
                    f"this run has {per_round}, f must be at most {(n - 3) // 2}"
                    if n >= 3
                    else f"this run has {per_round}, fewer than Krum's 3"
                )
            )
        if name == "multikrum" and p["m"] > n - p["f"]:
            raise ConfigError(
                f"{strategy}: MultiKrum averages the m best of the n - f updates it trusts; "
                f"with {per_round} and f={p['f']}, m must be at most {n - p['f']}"
            )
        if name == "fedtrimmedavg" and p["beta"] > 0 and int(p["beta"] * n) == 0:
            least = math.ceil(100 / n) / 100
            raise ConfigError(
                f"{strategy}: with {per_round} it trims int({p['beta']:g} x {n}) = 0 updates "
                "at each end, a plain mean; beta must be "
                + (
                    f"at least {least:g} (or 0)"
                    if least < 0.5
                    else "0: 2 updates cannot be trimmed"
                )
            )

    def _resolve_exclusions(self) -> None:
        """`excluded_digits` as one tuple per client (lists from JSON or a UI become
        tuples, so the config stays hashable). Not given, or given as the cycled
        reference, it follows the number of clients in `replace`."""
        exclusions, cycled = self.excluded_digits, default_exclusions(self.num_clients)
        if exclusions is not None and (
            isinstance(exclusions, str)
            or not isinstance(exclusions, Sequence)
            or any(isinstance(d, str) or not isinstance(d, Sequence) for d in exclusions)
        ):
            raise ConfigError(
                f"excluded_digits must be one list of digits per client, got {exclusions!r}"
            )
        if exclusions is not None:
            exclusions = tuple(tuple(digits) for digits in exclusions)
        given = self.split_kind == "exclude" and exclusions not in (None, cycled)
        object.__setattr__(self, "_exclusions_given", given)
        if self.split_kind != "exclude":
            # the reference exclusions are the field's default: they mean "none given"
            if exclusions not in (None, (), REFERENCE_EXCLUSIONS, cycled):
                raise ConfigError(
                    f"excluded digits apply to the exclude split only; the split is {self.split}"
                )
            exclusions = ()
        elif exclusions is None:
            exclusions = cycled
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
    def split_spec(self) -> Split:
        return self._split_spec  # type: ignore[attr-defined]

    @property
    def strategy_spec(self) -> Spec:
        return self._strategy_spec  # type: ignore[attr-defined]

    @property
    def privacy_spec(self) -> Spec:
        return self._privacy_spec  # type: ignore[attr-defined]

    @property
    def attack_spec(self) -> Spec:
        return self._attack_spec  # type: ignore[attr-defined]

    @property
    def attack_name(self) -> str:
        """ "none", "label-flip", "sign-flip", "noise", "scale" or "backdoor"."""
        return self.attack_spec.name

    @property
    def attack_parameters(self) -> dict[str, float]:
        return self.attack_spec.parameters

    @property
    def attacker_clients(self) -> tuple[int, ...]:
        """The attacking clients' numbers (1-based, sorted); empty without an attack."""
        return self._attacker_clients  # type: ignore[attr-defined]

    @property
    def split_kind(self) -> str:
        """`"dirichlet"` for `"dirichlet:0.1"`."""
        return self.split_spec.kind

    @property
    def split_parameter(self) -> Any:
        return self.split_spec.value

    @property
    def strategy_name(self) -> str:
        return self.strategy_spec.name

    @property
    def strategy_parameters(self) -> dict[str, float]:
        return self.strategy_spec.parameters

    @property
    def privacy_kind(self) -> str:
        """ "off", "server" or "client" (central DP), "local" (local DP) or "secagg"."""
        return self.privacy_spec.name

    @property
    def privacy_parameters(self) -> dict[str, float]:
        return self.privacy_spec.parameters

    @property
    def excluded_by_all(self) -> tuple[int, ...]:
        """Digits every client excludes (exclude split): no model can learn them."""
        if not self.excluded_digits:
            return ()
        return tuple(sorted(set.intersection(*(set(d) for d in self.excluded_digits))))

    @property
    def clients_per_round(self) -> int:
        """How many clients are sampled to train in a round (Flower's rule: the
        fraction of them, at least `min_train_clients`)."""
        return max(int(self.num_clients * self.fraction_train), self.min_train_clients)

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
        """A copy with some settings changed, validated like a new config; exclusions
        that were not given follow a new number of clients or split."""
        if not self._exclusions_given:  # type: ignore[attr-defined]
            changes.setdefault("excluded_digits", None)
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
