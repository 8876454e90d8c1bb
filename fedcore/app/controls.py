"""The page's controls, made from the settings table, so that a label, a range or a
step is written once (`fedcore.experiment.settings`) for the CLI, Flower and the page.

Controls that act together are one `mo.ui.dictionary`: a cell reads one value
instead of taking a dozen elements as arguments."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import marimo as mo

from fedcore.experiment.config import ExperimentConfig
from fedcore.experiment.settings import BY_NAME, control_range
from fedcore.experiment.specs import (
    ATTACKS,
    DEFENSES,
    PRIVACY,
    SIZE_LAWS,
    SPLITS,
    STRATEGIES,
    Spec,
    default_exclusions,
)

Exclusions = tuple[tuple[int, ...], ...]

# The story's training controls (the client count and the seed, what the data and
# split sections depend on, are controls of their own), so that moving the rounds
# does not redraw the split.
STORY_TRAINING = ("num_rounds", "local_epochs", "learning_rate", "batch_size", "momentum",
                  "fraction_train")  # fmt: skip
# The lab's controls with a value of their own (the split, strategy, privacy and
# attack kinds are dropdowns of their tables; their parameters are `lab_parameters`).
LAB_CONTROLS = ("model", "num_clients", "num_rounds", "local_epochs", "dropout", "attackers",
                "fraction_train", "min_train_clients", "target_accuracy", "seed")  # fmt: skip
STRATEGY_PARAMETERS_LABEL = "its parameters"
PRIVACY_PARAMETERS_LABEL = "its parameters"
ATTACK_PARAMETERS_LABEL = "its parameters"


def control(name: str, start_from: ExperimentConfig) -> mo.ui.UIElement:
    """A setting's control: label, range and step from the settings table, its value
    from `start_from`."""
    setting = BY_NAME[name]
    value = getattr(start_from, name)
    if setting.choices:
        return mo.ui.dropdown(list(setting.choices), value=value, label=setting.label)
    if setting.kind is str:  # text the config parses (the attackers: "3" or "2,5,7")
        return mo.ui.text(value=str(value), label=setting.label, full_width=False)
    start, stop, step = control_range(setting)
    # a value from the command line or the page's address may pass the page's range
    start, stop = min(start, value), max(stop, value)
    if setting.control == "slider":
        return mo.ui.slider(
            start, stop, step=step, value=value, debounce=True, show_value=True,
            label=setting.label,
        )  # fmt: skip
    return mo.ui.number(start, stop, step=step, value=value, label=setting.label)


def controls(names: Sequence[str], start_from: ExperimentConfig) -> mo.ui.dictionary:
    """The controls of `names`, as one element whose value is `{name: value}`."""
    return mo.ui.dictionary({name: control(name, start_from) for name in names})


def exclusion_pickers(
    num_clients: int, kept: Exclusions, on_change: Callable[[Exclusions], None]
) -> mo.ui.array:
    """One selector per client of the digits it never sees: the picks `kept` from
    before (a changed client count keeps them), the reference exclusions after."""
    reference = default_exclusions(num_clients)
    initial = [kept[i] if i < len(kept) else reference[i] for i in range(num_clients)]
    return mo.ui.array(
        [
            mo.ui.multiselect(
                options=[str(d) for d in range(10)],
                value=[str(d) for d in digits],
                label=f"Client {i} never sees",
            )
            for i, digits in enumerate(initial, start=1)
        ],
        on_change=lambda picks: on_change(exclusions_from_picks(picks)),
    )


def exclusions_from_picks(picks: Sequence[Sequence[str]]) -> Exclusions:
    """The pickers' values (`[["3", "1"], []]`) as a config takes them (`((1, 3), ())`)."""
    return tuple(tuple(sorted(int(d) for d in p)) for p in picks)


def lab_kinds(start_from: ExperimentConfig) -> mo.ui.dictionary:
    """The lab's split, strategy, privacy and attack, each a dropdown of its table."""
    return mo.ui.dictionary(
        {
            "split": mo.ui.dropdown(
                list(SPLITS), value=start_from.split_kind, label=BY_NAME["split"].label
            ),
            "strategy": mo.ui.dropdown(
                list(STRATEGIES), value=start_from.strategy_name, label=BY_NAME["strategy"].label
            ),
            "privacy": mo.ui.dropdown(
                list(PRIVACY), value=start_from.privacy_kind, label=BY_NAME["privacy"].label
            ),
            "attack": mo.ui.dropdown(
                list(ATTACKS), value=start_from.attack_name, label=BY_NAME["attack"].label
            ),
        }
    )


def lab_parameters(start_from: ExperimentConfig) -> mo.ui.dictionary:
    """A parameter control for every split, strategy, privacy and attack kind that has
    parameters, made once (the page shows the chosen kind's): switching kinds and back
    keeps what was typed. Their values: the tables' defaults, `start_from`'s for its
    own kinds. `{"split": {kind: element}, "strategy": {...}, "privacy": {...}}`."""
    splits = {}
    for kind, spec in SPLITS.items():
        if spec is None:
            continue
        kind_type, default, meaning = spec
        if kind == start_from.split_kind:
            default = start_from.split_parameter  # the address's, or `-- --split ...`
        if kind_type is str:
            splits[kind] = mo.ui.dropdown(list(SIZE_LAWS), value=default, label=meaning)
        else:
            step = 0.01 if kind_type is float else 1
            splits[kind] = mo.ui.number(value=default, step=step, label=meaning)

    def texts(table: dict[str, dict[str, float]], given: str, values: dict, label: str) -> dict:
        """`mu=0.1`-style fields, as written after the colon of a spec."""
        return {
            kind: mo.ui.text(
                value=_parameters_text(kind, values if kind == given else table[kind]),
                label=label,
                full_width=False,
            )
            for kind in table
            if table[kind]
        }

    strategies = texts(STRATEGIES, start_from.strategy_name, start_from.strategy_parameters,
                       STRATEGY_PARAMETERS_LABEL)  # fmt: skip
    privacy = texts(PRIVACY, start_from.privacy_kind, start_from.privacy_parameters,
                    PRIVACY_PARAMETERS_LABEL)  # fmt: skip
    attacks = texts(ATTACKS, start_from.attack_name, start_from.attack_parameters,
                    ATTACK_PARAMETERS_LABEL)  # fmt: skip
    return mo.ui.dictionary(
        {
            "split": mo.ui.dictionary(splits),
            "strategy": mo.ui.dictionary(strategies),
            "privacy": mo.ui.dictionary(privacy),
            "attack": mo.ui.dictionary(attacks),
        }
    )


# The privacy chapter's sizes of a client's local training: small batches and few
# steps are where an update gives its images away.
CHAPTER_BATCHES = ("1", "2", "4", "8", "16", "64")
CHAPTER_STEPS = {"all its images": 0, "1 batch": 1, "2 batches": 2, "10 batches": 10,
                 "100 batches": 100}  # fmt: skip
CHAPTER_EPOCHS = ("1", "2", "5", "10")


def chapter_controls() -> mo.ui.dictionary:
    """The privacy chapter's controls: the defense (and its parameters, one field per
    defense that has them), the clients' batch size, images a round and local epochs,
    and the attack. Their defaults: the story's batch, all images, one epoch, no defense."""
    parameters = {
        name: mo.ui.text(
            value=_parameters_text(DEFENSES[name], PRIVACY[DEFENSES[name]]),
            label=PRIVACY_PARAMETERS_LABEL,
            full_width=False,
        )
        for name in DEFENSES
        if PRIVACY[DEFENSES[name]]
    }
    return mo.ui.dictionary(
        {
            "defense": mo.ui.dropdown(list(DEFENSES), value="none", label="Defense"),
            "parameters": mo.ui.dictionary(parameters),
            "batch_size": mo.ui.dropdown(
                list(CHAPTER_BATCHES), value="64", label=BY_NAME["batch_size"].label
            ),
            "local_steps": mo.ui.dropdown(
                CHAPTER_STEPS, value="all its images", label="Each client trains a round on"
            ),
            "local_epochs": mo.ui.dropdown(
                list(CHAPTER_EPOCHS), value="1", label=BY_NAME["local_epochs"].label
            ),
            "leakage": mo.ui.dropdown(
                ["analytic", "optimise"], value="analytic", label="The server's attack"
            ),
        }
    )


def chosen_parameter(parameters: mo.ui.dictionary, part: str, kind: str) -> Any:
    """The parameter control of the chosen `kind` of `part` ("split", ...); None if
    that kind has none."""
    elements = parameters[part]
    return elements[kind] if kind in elements else None  # noqa: SIM401 (no .get on marimo batches)


def _parameters_text(kind: str, values: dict[str, float]) -> str:
    """`{"mu": 0.1}` -> `"mu=0.1"`: the parameters as written after a spec's colon."""
    return str(Spec(kind, tuple(values.items()))).partition(":")[2]
