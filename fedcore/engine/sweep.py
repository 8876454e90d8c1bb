"""Sweeps: a grid of experiments through the engine, one results table out.

`python -m fedcore sweep --vary split=exclude,dirichlet:0.1 --vary local-epochs=1,5
--out sweep/` runs every combination of the varied settings on top of the other
flags. Each finished cell is written to `OUT/cells/` at once, so a sweep
interrupted (Ctrl-C, a closed laptop) resumes where it stopped when the same
command runs again; the table (`OUT/sweep.json`, `OUT/sweep.csv`) is rewritten
after every cell.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedcore.engine.cache import code_fingerprint
from fedcore.experiment.config import ExperimentConfig
from fedcore.experiment.results import ExperimentResult, ResultsError
from fedcore.experiment.settings import Setting
from fedcore.experiment.specs import ConfigError, parse_exclusions
from fedcore.storage import atomic_write_text

MAX_CELLS = 1000


@dataclass(frozen=True)
class Cell:
    """One point of the grid: the varied settings' values and the whole config."""

    values: dict[str, Any]  # run-config key -> value, in --vary order
    config: ExperimentConfig

    @property
    def name(self) -> str:
        return " ".join(f"{key}={value}" for key, value in self.values.items())

    @property
    def file_name(self) -> str:
        """Named by the settings and the code: a sweep resumed after the code (or a
        library) changed computes its cells again rather than mixing the two."""
        key = f"{code_fingerprint()}\n{self.config.cache_key()}"
        return hashlib.sha256(key.encode()).hexdigest()[:20] + ".json"


def grid(base: ExperimentConfig, varied: Sequence[tuple[Setting, list[Any]]]) -> list[Cell]:
    """Every combination, validated before anything runs (a bad one is an error up front)."""
    names = [setting.name for setting, _ in varied]
    if len(set(names)) < len(names):
        raise ConfigError("a setting is varied twice; give its values in one --vary")
    combinations = list(itertools.product(*(values for _, values in varied)))
    if len(combinations) > MAX_CELLS:
        raise ConfigError(f"the grid has {len(combinations)} cells; at most {MAX_CELLS}")
    cells = []
    for combination in combinations:
        changes = {s.name: value for (s, _), value in zip(varied, combination, strict=True)}
        if "excluded_digits" in changes:
            changes["excluded_digits"] = parse_exclusions(changes["excluded_digits"])
        try:
            config = base.replace(**changes)
        except ConfigError as error:
            cell = ", ".join(f"{s.key}={v}" for (s, _), v in zip(varied, combination, strict=True))
            raise ConfigError(f"cell {cell}: {error}") from None
        values = {s.key: v for (s, _), v in zip(varied, combination, strict=True)}
        cells.append(Cell(values, config))
    return cells


def row(cell: Cell, result: ExperimentResult) -> dict[str, Any]:
    """One line of the table: the varied settings, then the numbers."""
    config, federated = result.config, result.federated
    out: dict[str, Any] = dict(cell.values)
    out |= {
        "split": config.split,
        "model": config.model,
        "strategy": config.strategy,
        "privacy": config.privacy,
        "clients": config.num_clients,
        "rounds": config.num_rounds,
        "local_epochs": config.local_epochs,
        "fraction": config.fraction_train,
        "seed": config.seed,
    }
    if federated is not None:
        out["federated_accuracy"] = federated.accuracy
        scores = federated.subset_accuracy
        worst = min(scores, key=scores.get) if scores else None
        out["worst_subset"] = worst
        out["worst_subset_accuracy"] = scores[worst] if worst else None
        out[f"rounds_to_{config.target_accuracy:g}pct"] = federated.rounds_to_target
        out["epsilon"] = federated.history[-1].epsilon
        out["failures"] = len(federated.failures)
    if result.centralized is not None:
        out["centralized_accuracy"] = result.centralized.accuracy
    if result.isolated:
        out["isolated_mean_accuracy"] = sum(c.accuracy for c in result.isolated) / len(
            result.isolated
        )
    if federated is not None:
        out |= {f"subset_{name}": value for name, value in federated.subset_accuracy.items()}
    out["wall_seconds"] = result.timings.get("total")
    return out


def to_csv(rows: Sequence[dict[str, Any]]) -> str:
    columns = list(dict.fromkeys(key for r in rows for key in r))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


Runner = Callable[[ExperimentConfig, Callable[[str, Any], None]], ExperimentResult]


def run_sweep(
    cells: Sequence[Cell],
    out: Path,
    run: Runner,
    on_cell: Callable[[int, Cell, str], None] = lambda index, cell, state: None,
    on_event: Callable[[str, Any], None] = lambda kind, payload: None,
) -> Iterator[dict[str, Any]]:
    """Run the cells not finished in an earlier sweep into `out`; yield every row.

    `on_cell(index, cell, state)`: state is "kept" (finished earlier), "running" or "done".
    """
    rows: list[dict[str, Any]] = []
    folder = out / "cells"
    for index, cell in enumerate(cells):
        path = folder / cell.file_name
        try:
            result = ExperimentResult.load(path)
            state = "kept"
        except ResultsError:
            on_cell(index, cell, "running")
            result = run(cell.config, on_event)
            result.save(path)
            state = "done"
        rows.append(row(cell, result))
        write_table(out, rows, cells)
        on_cell(index, cell, state)
        yield rows[-1]


def write_table(out: Path, rows: Sequence[dict[str, Any]], cells: Sequence[Cell]) -> None:
    summary = {"cells": len(cells), "finished": len(rows), "rows": rows}
    atomic_write_text(out / "sweep.json", json.dumps(summary, indent=2) + "\n")
    atomic_write_text(out / "sweep.csv", to_csv(rows))
