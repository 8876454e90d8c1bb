"""The settings written as text, parsed once where they enter: exclusions, the split,
the strategy, the privacy, the attack and its attackers.

`ExperimentConfig` keeps the normal spelling of each (`"dirichlet:0.1"`, what
JSON, the CLI and Flower's run config carry) and the parsed, frozen object
beside it (`config.split_spec`, `config.strategy_spec`, `config.privacy_spec`,
`config.attack_spec`, `config.attacker_clients`):
code downstream reads `spec.kind`, `spec.value`, `spec.parameters`, never the
text again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fedcore.experiment.settings import BY_NAME


class ConfigError(ValueError):
    """A setting a user gave is out of range or of the wrong type."""


# ---------------------------------------------------------------- exclusions


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


def default_exclusions(num_clients: int) -> tuple[tuple[int, ...], ...]:
    """Reference exclusions, cycled so that any client count gets a skewed split: what
    the exclude split means when no exclusions are given."""
    return tuple(REFERENCE_EXCLUSIONS[i % len(REFERENCE_EXCLUSIONS)] for i in range(num_clients))


# --------------------------------------------------------------------- split

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


@dataclass(frozen=True)
class Split:
    """How the training set is split: a kind and its one parameter (None: it has none).

    Example
    -------
    >>> Split.parse("dirichlet:0.1")
    Split(kind='dirichlet', value=0.1)
    >>> str(Split.parse("shards"))
    'shards:2'
    """

    kind: str
    value: Any = None

    @classmethod
    def parse(cls, text: str) -> Split:
        """`"dirichlet:0.1"` -> `Split("dirichlet", 0.1)`; a parameter left out takes its
        default; anything else is a `ConfigError` that says what the parameter is."""
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
            return cls(kind)
        kind_type, default, meaning = spec
        if not given.strip():
            return cls(kind, default)
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
        return cls(kind, value)

    def __str__(self) -> str:
        """The normal spelling: `"dirichlet:0.1"`, `"exclude"`."""
        if self.value is None:
            return self.kind
        return (
            f"{self.kind}:{self.value:g}"
            if self.kind == "dirichlet"
            else f"{self.kind}:{self.value}"
        )


# ------------------------------------------------------ strategy and privacy

# strategy -> its parameters and their defaults: Flower's, except where Flower's
# default makes the strategy FedAvg itself (FedProx mu 0, FedAvgM momentum 0).
# scaffold and fednova are written on Flower's FedAvg (`fedcore.flower.scaffold`,
# `fedcore.flower.fednova`); scaffold's lr is the server's learning rate eta_g.
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
    "scaffold": {"lr": 1.0},
    "fednova": {},
}
PRIVACY: dict[str, dict[str, float]] = {
    "off": {},
    "server": {"noise": 1.0, "clip": 1.0, "delta": 1e-5},
    "client": {"noise": 1.0, "clip": 1.0, "delta": 1e-5},
    "local": {"epsilon": 10.0, "clip": 1.0, "delta": 1e-5},
    "secagg": {},
}
CENTRAL_DP = ("server", "client")  # Flower's fixed-clipping wrappers, with their accountant
# attack -> its parameters and their defaults (`fedcore.learning.attacks` says what each does)
ATTACKS: dict[str, dict[str, float]] = {
    "none": {},
    "label-flip": {},
    "sign-flip": {"scale": 4.0},
    "noise": {"std": 1.0},
    "scale": {"factor": 10.0},
    "backdoor": {"target": 0, "share": 0.5, "boost": 0.0},
}
WHOLE_PARAMETERS = ("f", "m", "target")  # counts of clients; a digit
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
    "epsilon": (lambda v: v > 0, "> 0"),
    "scale": (lambda v: v > 0, "> 0"),
    "std": (lambda v: v > 0, "> 0"),
    "factor": (lambda v: v > 0, "> 0"),
    "target": (lambda v: 0 <= v <= 9, "a digit 0-9"),
    "share": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "boost": (lambda v: v >= 0, ">= 0 (0: the clients per round over the attackers)"),
}


def parse_spec(
    text: str, table: Mapping[str, Mapping[str, float]], what: str
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


@dataclass(frozen=True)
class Spec:
    """A name and its parameters, all given (a strategy: `fedprox` with `mu`; a privacy
    setting: `server` with `noise`, `clip`, `delta`)."""

    name: str
    items: tuple[tuple[str, float], ...] = ()

    @property
    def parameters(self) -> dict[str, float]:
        return dict(self.items)

    def __str__(self) -> str:
        """The normal spelling, every parameter written: `"fedprox:mu=0.1"`."""
        return self.name + (
            ":" + ",".join(f"{k}={v:g}" for k, v in self.items) if self.items else ""
        )


def parse_strategy(text: str) -> Spec:
    """`"fedprox:mu=0.5"` -> `Spec("fedprox", (("mu", 0.5),))`."""
    name, values = parse_spec(text, STRATEGIES, "strategy")
    return Spec(name, tuple(values.items()))


def parse_privacy(text: str) -> Spec:
    """`"server:noise=0.5"` -> `Spec("server", (("noise", 0.5), ("clip", 1.0), ("delta", 1e-5)))`:
    parameters left out take their defaults."""
    name, values = parse_spec(text, PRIVACY, "privacy")
    return Spec(name, tuple(values.items()))


# The privacy command's `--defense` names (the privacy chapter's words) -> the privacy
# setting's: the same Flower components under the names the chapter compares them by.
DEFENSES = {"none": "off", "secagg": "secagg", "local-dp": "local", "central-dp": "server"}


def parse_defense(text: str) -> Spec:
    """`"central-dp:noise=0.5"` -> the privacy setting `server:noise=0.5,clip=1,delta=1e-05`;
    `"none"` -> `off`. Parameters as the privacy setting takes them."""
    name, colon, given = str(text).strip().partition(":")
    name = name.strip().lower()
    if name not in DEFENSES:
        raise ConfigError(
            f"defense {text!r}: unknown defense {name!r} (known: "
            "none, secagg, local-dp:epsilon=E,clip=C,delta=D, central-dp:noise=N,clip=C,delta=D)"
        )
    try:
        return parse_privacy(DEFENSES[name] + colon + given)
    except ConfigError as error:
        why = str(error).partition(": ")[2].replace(f"{DEFENSES[name]} takes", f"{name} takes")
        raise ConfigError(f"defense {text!r}: {why}") from None


def defense_name(privacy: Spec) -> str:
    """The privacy setting under the chapter's name: `server:noise=1,...` -> `central-dp:...`;
    Flower's client-side clipping variant of central DP is `central-dp (client clipping)`."""
    if privacy.name == "client":
        return str(privacy).replace("client", "central-dp (client clipping)", 1)
    named = {value: key for key, value in DEFENSES.items()}[privacy.name]
    return str(privacy).replace(privacy.name, named, 1)


def parse_attack(text: str) -> Spec:
    """`"sign-flip:scale=2"` -> `Spec("sign-flip", (("scale", 2.0),))`."""
    name, values = parse_spec(text, ATTACKS, "attack")
    return Spec(name, tuple(values.items()))


def parse_attackers(text: str, num_clients: int) -> tuple[int, ...]:
    """Which clients attack: `"3"` -> clients 1, 2, 3; `"2,5,7"` (or `"4,"` for one)
    -> those clients; `"0"` or `""` -> none. Sorted, each once, each one of the clients."""
    if isinstance(text, int) and not isinstance(text, bool):
        text = str(text)
    if not isinstance(text, str):
        raise ConfigError(
            f"attackers must be a count like '3' or clients like '2,5,7', got {text!r}"
        )
    given = text.strip()
    if "," not in given:
        if not given.isdigit():
            raise ConfigError(
                f"attackers {text!r}: write a count K (clients 1..K) or client numbers "
                "like '2,5,7' (one client: '4,')"
            )
        count = int(given)
        if count > num_clients:
            raise ConfigError(
                f"attackers {text!r}: {count} attackers, but only {num_clients} clients"
            )
        return tuple(range(1, count + 1))
    clients = []
    for item in filter(None, (part.strip() for part in given.split(","))):
        if not item.isdigit() or not 1 <= int(item) <= num_clients:
            raise ConfigError(
                f"attackers {text!r}: {item!r} is not a client number 1-{num_clients}"
            )
        clients.append(int(item))
    if len(set(clients)) != len(clients):
        raise ConfigError(f"attackers {text!r}: a client is named twice")
    return tuple(sorted(clients))


def format_attackers(clients: Sequence[int]) -> str:
    """The normal spelling: `"3"` for clients 1..3, `"2,5,7"` otherwise, `"4,"` for one."""
    if tuple(clients) == tuple(range(1, len(clients) + 1)):
        return str(len(clients))
    return ",".join(str(c) for c in clients) + ("," if len(clients) == 1 else "")
