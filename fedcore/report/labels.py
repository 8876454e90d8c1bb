"""The words people read, in one place: model and test-set names, column names, and
`percent()`, the one way an accuracy becomes text.

Tables, charts, the terminal table, the HTML report and the page all take their
labels from here, so "Client 2" or "Federated" is spelled once. Some renderers
have their own, shorter spellings of the same model (the terminal's
`"federated (global)"`); those are here too, next to the long ones.
"""

from __future__ import annotations

from collections.abc import Sequence

from fedcore.experiment.config import ExperimentConfig
from fedcore.experiment.specs import format_digits

# ------------------------------------------------------------- models (charts, page, HTML)
FEDERATED = "Federated"
CENTRALIZED = "Centralized (all data pooled)"
ISOLATED_MEAN = "Isolated (mean)"
TARGET = "Target"
TRAINED_ALONE = "trained alone"
TRAINED_TOGETHER = "trained together (FedAvg)"

# -------------------------------------------------------------------------- test sets
ALL_DIGITS = "all digits"
SUBSET_PREFIX = "digits "

# ---------------------------------------------------------------------- communication
SENT = "sent to clients"
RECEIVED = "received from clients"

# ---------------------------------------------- the accuracy table (`tables.accuracy_table`)
# `key`: a model's stable id (the HTML report's `data-model`), one per row
CENTRALIZED_KEY = "centralized"
FEDERATED_KEY = "federated"
ISOLATED_MEAN_KEY = "isolated mean"
# its columns besides the model's ids and one per missing-digit subset (`subset_name`)
TRAIN_SIZE = "train images"
OWN_MISSING = "own missing digits"

# -------------------------------------------------- the terminal's spellings (`report.text`)
TEXT_MODEL = "model"
TEXT_TRAIN = "train"
TEXT_FULL = "full"
TEXT_OWN_MISSING = "own missing"
TEXT_FEDERATED = "federated (global)"
TEXT_CENTRALIZED = "centralized (pooled)"
TEXT_ISOLATED_MEAN = "isolated (mean)"
NO_DIGITS = "none"  # a client that lacks no digit

MISSING_VALUE = "-"  # an accuracy nobody measured


def client_name(client: int) -> str:
    return f"Client {client}"


def client_number(name: str) -> int | None:
    """`client_name`'s client back (`"Client 12"` -> 12); None for any other model."""
    number = name.removeprefix("Client ")
    return int(number) if number != name and number.isdigit() else None


def client_key(client: int) -> str:
    """`"client 2"`: the accuracy table's `key` of a client's isolated model."""
    return f"client {client}"


def client_alone(client: int) -> str:
    """`"Client 2 alone"`: a client's isolated model in the accuracy table."""
    return f"{client_name(client)} alone"


def text_isolated(client: int, excluded: Sequence[int]) -> str:
    """`"isolated 1 (-1,3,7)"`: a client's isolated model in the terminal table."""
    return f"isolated {client} (-{format_digits(excluded) or NO_DIGITS})"


def subset_name(digits: str) -> str:
    """`"1,3,7"` -> `"digits 1,3,7"`, as the test sets are labelled in charts."""
    return f"{SUBSET_PREFIX}{digits}"


def subset_digits(name: str) -> str:
    """`"digits 1,3,7"` -> `"1,3,7"` (the inverse of `subset_name`)."""
    return name.removeprefix(SUBSET_PREFIX)


def percent(
    value: float | None, digits: int = 1, width: int = 0, missing: str = MISSING_VALUE
) -> str:
    """An accuracy (a fraction) as a percentage: `percent(0.9581)` -> `"95.8%"`.

    `digits`: decimals; `width`: the number's width before the `%` sign, padded on
    the left (`percent(0.5, width=5)` -> `" 50.0%"`, the terminal's columns);
    `missing`: the text for None. Same digits as Python's `f"{value:.1%}"`.
    """
    if value is None:
        return missing
    number = 100 * value
    return f"{number:{width}.{digits}f}%" if width else f"{number:.{digits}f}%"


def diverged_hint(config: ExperimentConfig) -> str:
    """What usually makes a run of `config` learn again, when it diverged or did not
    learn: what the settings make likely first (noise, an attack, a few images a
    round), else the optimiser."""
    if config.privacy_kind == "local":
        return "local DP's noise drowns the updates: a larger epsilon (less noise) helps"
    if config.privacy_kind in ("server", "client"):
        return "the DP noise drowns the averaged update: less noise or more clients help"
    if config.attacker_clients:
        return f"the attack ({config.attack}) may be what it is: a robust strategy helps"
    if config.local_steps:
        images = config.local_steps * config.batch_size
        return f"each client trains on {images} image(s) a round: more local steps help"
    return "a smaller learning rate (--lr) or larger batches (--batch-size) usually help"
