"""The papers' tables: their rows, what each row runs, and the published figures.

Everything about a table is data, in `published.toml` beside this module: the
paper, how it tuned its learning rate, the settings every row shares, what each
word of a row's key sets (`"2nn"`, `"non-iid"`, `"B=10"`), and each row's
published figure with the table and column it was transcribed from. This module
reads that file once, checks it, and turns a row into an `ExperimentConfig`.
"""

from __future__ import annotations

import functools
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from fedcore.experiment.config import ExperimentConfig
from fedcore.experiment.from_text import config_from_run_config
from fedcore.experiment.settings import BY_NAME
from fedcore.experiment.specs import ConfigError

PUBLISHED = Path(__file__).with_name("published.toml")
Measure = Literal["rounds", "accuracy"]
MEASURES: tuple[Measure, ...] = ("rounds", "accuracy")
UNPUBLISHED_ROUNDS = 1000  # the cap of a rounds row whose paper gives no figure ("—")
ROUNDS_CAP_FACTOR = 2  # a rounds row may take this many times the paper's figure
MAX_ROUNDS = int(BY_NAME["num_rounds"].high or 1)


@dataclass(frozen=True)
class Row:
    """One row of a published table."""

    key: str  # its settings as words: "2nn,iid,E=1,B=10,C=0.1" (what --rows matches)
    paper: float | None  # the published figure; None where the paper prints "—"
    source: str  # where it stands in the paper: table, row and column

    @property
    def words(self) -> tuple[str, ...]:
        return tuple(self.key.split(","))


@dataclass(frozen=True)
class Table:
    """A published table and how fedcore runs it."""

    name: str
    title: str
    citation: str
    measure: Measure  # rounds to the target accuracy, or the final accuracy (%)
    tuning: str  # how the paper chose its learning rate, and what fedcore does
    learning_rates: tuple[float, ...]  # the grid every row runs over (the best is kept)
    settings: Mapping[str, Any]  # run-config keys every row shares
    words: Mapping[str, Mapping[str, Any]]  # a row word -> the run-config keys it sets
    rows: tuple[Row, ...]
    heavy: tuple[str, ...] = ()  # row words that mean hours here: run only when asked for
    quick: Mapping[str, Any] | None = None  # the --quick preset: run-config keys
    quick_why: str = ""

    def is_heavy(self, row: Row) -> bool:
        return any(word in self.heavy for word in row.words)

    def config(
        self,
        row: Row,
        learning_rate: float,
        seed: int,
        quick: bool = False,
        max_rounds: int | None = None,
        data_dir: str = "",
    ) -> ExperimentConfig:
        """The experiment of `row` at one learning rate and seed. A rounds row runs
        until the target (at most `max_rounds`, by default twice the paper's figure)."""
        if quick and self.quick is None:
            raise ConfigError(f"{self.name} has no --quick preset")
        values: dict[str, Any] = dict(self.settings)
        for word in row.words:
            values |= self.words[word]
        values |= dict(self.quick or {}) if quick else {}
        values |= {"learning-rate": learning_rate, "seed": seed, "data-dir": data_dir}
        if self.measure == "rounds":
            values |= {"stop-at-target": "yes", "num-server-rounds": self.rounds_cap(row)}
        if max_rounds is not None:
            values["num-server-rounds"] = max_rounds
        return config_from_run_config(values)

    def rounds_cap(self, row: Row) -> int:
        if row.paper is None:
            return UNPUBLISHED_ROUNDS
        return min(MAX_ROUNDS, max(50, math.ceil(ROUNDS_CAP_FACTOR * row.paper)))

    def select(self, wanted: str | None) -> list[Row]:
        """The rows `--rows` names: `;` between rows, each a set of words that a row's
        key must all hold (`2nn,iid` is every 2NN IID row). None: every row."""
        if wanted is None:
            return list(self.rows)
        chosen: list[Row] = []
        for text in (part.strip() for part in wanted.split(";")):
            words = {word.strip() for word in text.split(",") if word.strip()}
            unknown = sorted(words - set(self.words))
            if unknown:
                raise ConfigError(
                    f"--rows {text!r}: {self.name} has no row word {unknown[0]!r} "
                    f"(its words: {', '.join(self.words)})"
                )
            matching = [row for row in self.rows if words <= set(row.words)]
            if not matching:
                raise ConfigError(f"--rows {text!r}: no row of {self.name} has all of these")
            chosen += [row for row in matching if row not in chosen]
        return chosen


def _table(name: str, data: Mapping[str, Any]) -> Table:
    rows = tuple(
        Row(str(r["row"]), None if r.get("paper") is None else float(r["paper"]), str(r["source"]))
        for r in data["rows"]
    )
    table = Table(
        name=name,
        title=str(data["title"]),
        citation=str(data["citation"]),
        measure=data["measure"],
        tuning=str(data["tuning"]),
        learning_rates=tuple(float(lr) for lr in data["learning-rates"]),
        settings=dict(data["settings"]),
        words={word: dict(keys) for word, keys in data["words"].items()},
        rows=rows,
        heavy=tuple(data.get("heavy", ())),
        quick=data.get("quick"),
        quick_why=str(data.get("quick-why", "")),
    )
    if table.measure not in MEASURES:
        raise ValueError(f"{name}: measure {table.measure!r} is not one of {MEASURES}")
    for row in rows:
        unknown = [word for word in row.words if word not in table.words]
        if unknown:
            raise ValueError(f"{name}: row {row.key!r} has no meaning for {unknown[0]!r}")
        if row.paper is not None and row.paper <= 0:
            raise ValueError(f"{name}: row {row.key!r}: the paper's figure must be positive")
        table.config(row, table.learning_rates[0], 0)  # every row a valid experiment
    return table


@functools.cache
def tables() -> dict[str, Table]:
    """Every table of `published.toml`, checked: each row's words known, its figure
    positive, and its settings a valid experiment."""
    with PUBLISHED.open("rb") as file:
        data = tomllib.load(file)
    return {name: _table(name, entry) for name, entry in data.items()}


def find_table(name: str) -> Table:
    known = tables()
    if name not in known:
        raise ConfigError(f"unknown table {name!r} (known: {', '.join(known)})")
    return known[name]


def parse_learning_rates(text: str) -> tuple[float, ...]:
    """`--lrs 0.05,0.1` as numbers, each a valid learning rate."""
    try:
        rates = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"--lrs {text!r}: write numbers separated by commas") from None
    if not rates:
        raise ConfigError("--lrs: give at least one learning rate")
    for rate in rates:
        ExperimentConfig(learning_rate=rate)  # its range, checked where every setting is
    return rates
