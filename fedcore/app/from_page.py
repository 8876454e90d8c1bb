"""Settings where they enter the page, turned into an `ExperimentConfig`: the story's
controls, the lab's controls, and the page's address (read when the page opens and
written when the lab runs, so a link opens the same lab).

Plain functions without marimo: the address and the controls' values come in as
plain values, so they can be tested without a page. The address is read by
`fedcore.experiment.from_text`, as the CLI's flags are."""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any, Protocol

from fedcore.experiment.config import ExperimentConfig
from fedcore.experiment.from_text import lenient_config_from_text
from fedcore.experiment.settings import BY_NAME
from fedcore.experiment.specs import parse_defense

# The lab's settings, under their run-config keys in the address
# (`?split=classes:2&num-clients=4&num-server-rounds=2&local-epochs=1`; the CLI's
# flag names, `clients=4`, are read too), in the order they are applied: the
# strategy before the privacy that needs it, the clients before their minimum.
LAB_SETTINGS = ("split", "model", "strategy", "privacy", "attack", "attackers", "num_clients",
                "num_rounds", "local_epochs", "fraction_train", "min_train_clients", "dropout",
                "target_accuracy", "seed")  # fmt: skip
# marimo's own parameters, not settings
NOT_SETTINGS = frozenset({"file", "kiosk", "mode", "view-as", "show-code", "access_token"})


class QueryParams(Protocol):
    """What the lab reads of the page's address (marimo's `mo.query_params()`)."""

    def __iter__(self) -> Any: ...
    def __contains__(self, key: str) -> bool: ...
    def get_all(self, key: str) -> list[str]: ...


def story_split_config(
    values: Mapping[str, Any], excluded_digits: Sequence[Sequence[int]], data_dir: str
) -> ExperimentConfig:
    """The story's split from its controls (`{"num_clients": 3, "seed": 42}`) and each
    client's excluded digits: what the data and split sections depend on."""
    return ExperimentConfig(
        num_clients=values["num_clients"],
        excluded_digits=tuple(tuple(d) for d in excluded_digits),
        seed=int(values["seed"]),
        data_dir=data_dir,
    )


def story_config(split: ExperimentConfig, values: Mapping[str, Any]) -> ExperimentConfig:
    """The story's whole config: its split and its training controls' values."""
    return split.replace(
        leakage="analytic",  # what the server learns is the next chapter's start
        num_rounds=values["num_rounds"],
        local_epochs=values["local_epochs"],
        batch_size=int(values["batch_size"]),
        learning_rate=float(values["learning_rate"]),
        momentum=float(values["momentum"]),
        fraction_train=round(float(values["fraction_train"]), 2),
    )


def chapter_config(
    split: ExperimentConfig, values: Mapping[str, Any], rounds: int
) -> ExperimentConfig:
    """The privacy chapter's run from its controls' values (`chapter_controls`): the
    story's split, `rounds` (the app's), the clients' local training, the defense (the
    privacy setting) and the curious server's attack. Raises `ConfigError` with the
    config's reason."""
    defense, parameters = values["defense"], values["parameters"].get(values["defense"], "")
    return split.replace(
        num_rounds=rounds,
        batch_size=int(values["batch_size"]),
        local_steps=int(values["local_steps"]),
        local_epochs=int(values["local_epochs"]),
        privacy=str(parse_defense(f"{defense}:{parameters}" if parameters else defense)),
        leakage=values["leakage"],
    )


def lab_base(defaults: ExperimentConfig) -> ExperimentConfig:
    """The lab's starting point: the app's settings with the exclusions left to the
    config (the lab has no digit pickers: its exclude split is the reference, cycled
    to its number of clients)."""
    return defaults.replace(excluded_digits=None)


def lab_settings_from_url(
    params: QueryParams, defaults: ExperimentConfig
) -> tuple[ExperimentConfig, list[str]]:
    """The lab's starting settings from the page's address, and one line for each
    parameter that could not be used (its default is used instead)."""
    pairs = [(key, params.get_all(key)[-1]) for key in params if key not in NOT_SETTINGS]
    return lenient_config_from_text(pairs, lab_base(defaults), LAB_SETTINGS, "lab setting")


def lab_url(config: ExperimentConfig) -> dict[str, str]:
    """The lab's settings of `config` as the page's address spells them."""
    values = {}
    for name in LAB_SETTINGS:
        value = getattr(config, name)
        values[BY_NAME[name].key] = f"{value:g}" if isinstance(value, float) else str(value)
    return values


def write_lab_url(params: MutableMapping[str, Any], config: ExperimentConfig) -> None:
    """Put the lab's settings of `config` in the page's address (`mo.query_params()`),
    each under its run-config key only."""
    for name in LAB_SETTINGS:
        alias = BY_NAME[name].flag.removeprefix("--")
        if alias != BY_NAME[name].key and alias in params:
            params.remove(alias)  # type: ignore[attr-defined]  # the key below says it
    for key, text in lab_url(config).items():
        params[key] = text


def lab_config_from_controls(
    kinds: Mapping[str, str],
    parameters: Mapping[str, Mapping[str, Any]],
    values: Mapping[str, Any],
    defaults: ExperimentConfig,
) -> ExperimentConfig:
    """The lab's config from its controls' values: `kinds` the split, strategy,
    privacy and attack chosen, `parameters` every kind's parameter (`{"split":
    {"dirichlet": 0.1}, "strategy": {"fedprox": "mu=0.1"}, ...}`), `values` the other
    controls' (the attackers count only with an attack chosen). Raises `ConfigError`
    for settings that cannot run, with the config's reason."""
    split = kinds["split"]
    parameter = parameters["split"].get(split)
    if split in parameters["split"]:
        if isinstance(parameter, int | float):
            split = f"{split}:{parameter:g}"
        else:  # an emptied field reads "?", which the config refuses with its meaning
            split = f"{split}:{parameter or '?'}"
    return lab_base(defaults).replace(
        split=split,
        strategy=_spec(kinds["strategy"], parameters["strategy"]),
        privacy=_spec(kinds["privacy"], parameters["privacy"]),
        attack=_spec(kinds["attack"], parameters["attack"]),
        **{name: _typed(name, values[name]) for name in values}
        | ({"attackers": "0"} if kinds["attack"] == "none" else {}),
    )


def _spec(kind: str, parameters: Mapping[str, str]) -> str:
    """`"fedprox"` and `"mu=0.5"` -> `"fedprox:mu=0.5"`; the config checks and
    normalises it."""
    text = (parameters.get(kind) or "").strip()
    return f"{kind}:{text}" if text else kind


def _typed(name: str, value: Any) -> Any:
    """A control's value as the setting's type; None (an emptied field) stays None for
    the config to refuse."""
    if value is None or isinstance(value, str):
        return value
    if BY_NAME[name].kind is int:
        return int(value) if float(value).is_integer() else value
    return round(float(value), 6)  # a slider's 0.30000000000000004
