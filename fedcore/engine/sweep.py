"""Sweeps: a grid of experiments through the engine, one results table out.

`python -m fedcore sweep --vary split=exclude,dirichlet:0.1 --vary local-epochs=1,5
--out sweep/` runs every combination of the varied settings on top of the other
flags. Each finished cell is written to `OUT/cells/` at once, so a sweep
interrupted (Ctrl-C, a closed laptop) resumes where it stopped when the same
command runs again; the table (`OUT/sweep.json`, `OUT/sweep.csv`) is rewritten
after every cell. A folder holds one sweep's table: another sweep into it is
refused before it runs (`claim_folder`), and a kept cell is used only if it holds
what its cell asks (`kept_result`), since a folder is only a folder: files can be
copied into it or edited.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedcore.engine.cache import code_fingerprint
from fedcore.engine.protocol import PHASE_PARTS, Phase
from fedcore.experiment.config import ExperimentConfig
from fedcore.experiment.results import ExperimentResult, FederatedResult, ResultsError
from fedcore.experiment.settings import Setting
from fedcore.experiment.specs import ConfigError, parse_exclusions
from fedcore.privacy.summary import leakage_scores
from fedcore.storage import atomic_write_text, check_writable

MAX_CELLS = 1000
log = logging.getLogger("fedcore.sweep")


class SweepFolderError(Exception):
    """The --out folder holds what this sweep must not overwrite (one line)."""


@dataclass(frozen=True)
class Cell:
    """One point of the grid: the varied settings' values, the whole config and
    the phases computed."""

    values: dict[str, Any]  # run-config key -> value, in --vary order
    config: ExperimentConfig
    phase: Phase = "all"

    @property
    def name(self) -> str:
        return " ".join(f"{key}={value}" for key, value in self.values.items())

    @property
    def key(self) -> str:
        """What the cell computes: its settings and phase."""
        return f"{self.phase}\n{self.config.cache_key()}"

    @property
    def file_name(self) -> str:
        """Named by what it computes and the code: a sweep resumed after the code (or
        a library) changed computes its cells again rather than mixing the two."""
        key = f"{code_fingerprint()}\n{self.key}"
        return hashlib.sha256(key.encode()).hexdigest()[:20] + ".json"


def grid(
    base: ExperimentConfig, varied: Sequence[tuple[Setting, list[Any]]], phase: Phase = "all"
) -> list[Cell]:
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
        cells.append(Cell(values, config, phase))
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
        "attack": config.attack,
        "attackers": config.attackers,
        "clients": config.num_clients,
        "rounds": config.num_rounds,
        "local_epochs": config.local_epochs,
        "batch_size": config.batch_size,
        "local_steps": config.local_steps,
        "leakage": config.leakage,
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
        out["attack_success"] = federated.attack_success
        out["attackers_kept"] = attackers_kept(config, federated)
        out["failures"] = len(federated.failures)
        out |= leakage_scores(federated)
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


def attackers_kept(config: ExperimentConfig, federated: FederatedResult) -> float | None:
    """The share of the updates a choosing rule (Krum) kept that were attackers', over
    the run; None for a rule that keeps every update, or with no attack."""
    kept = [c for h in federated.history if h.kept_clients for c in h.kept_clients]
    if not kept or not config.attacker_clients:
        return None
    return sum(c in config.attacker_clients for c in kept) / len(kept)


def to_csv(rows: Sequence[dict[str, Any]]) -> str:
    columns = list(dict.fromkeys(key for r in rows for key in r))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


Runner = Callable[[ExperimentConfig, Phase, Callable[[str, Any], None]], ExperimentResult]


def sweep_id(cells: Sequence[Cell]) -> str:
    """Which sweep a table is of: its cells' settings and phases (not the code, so
    that the same command resumes its sweep after an upgrade)."""
    return hashlib.sha256("\n\n".join(cell.key for cell in cells).encode()).hexdigest()[:20]


def claim_folder(out: Path, cells: Sequence[Cell]) -> None:
    """Before anything runs: `SweepFolderError` if `out` holds another sweep's table
    (or a table fedcore cannot read), the `OSError` a write would raise if `out`
    cannot be written; else an empty table marks the folder as this sweep's, so
    that another sweep started meanwhile is refused too."""
    table, csv_table = out / "sweep.json", out / "sweep.csv"
    move = f"give another --out, or move {table.name} and {csv_table.name} away"
    if table.exists():
        try:
            held = json.loads(table.read_text(encoding="utf-8"))
            ident, phase, names = held["id"], held["phase"], list(held["grid"])
        except (OSError, ValueError, KeyError, TypeError, RecursionError):
            raise SweepFolderError(
                f"{table} is not a sweep table fedcore can read; {move}"
            ) from None
        if ident != sweep_id(cells):
            first = f", the first {names[0]}" if names else ""
            raise SweepFolderError(
                f"{out} holds the table of another sweep ({len(names)} cells of phase "
                f"{phase}{first}); {move}"
            )
    elif csv_table.exists():
        raise SweepFolderError(f"{csv_table} is not this sweep's table (no {table.name}); {move}")
    check_writable(out / "cells" / cells[0].file_name)
    if table.exists():
        return  # this sweep's own table: it resumes
    try:  # created exclusively: of two sweeps started at once, one claims the folder
        os.close(os.open(table, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except FileExistsError:
        raise SweepFolderError(f"{out} was claimed by another sweep just now; {move}") from None
    write_table(out, [], cells)


def kept_result(path: Path, cell: Cell, on_note: Callable[[str], None]) -> ExperimentResult | None:
    """The cell's result from an earlier sweep, if `path` holds one computed with the
    cell's settings and with its phases; else None (one note if there was a file)."""
    if not path.exists():
        return None
    try:
        result = ExperimentResult.load(path)
    except ResultsError as error:
        on_note(f"{error}; computing cell {cell.name} again")
        return None
    theirs, ours = json.loads(result.config.cache_key()), json.loads(cell.config.cache_key())
    why = ", ".join(
        f"{key} {theirs.get(key)!r}, not {value!r}"
        for key, value in ours.items()
        if theirs.get(key) != value
    )
    if not why:
        parts = {
            "isolated": result.isolated,
            "federated": result.federated,
            "centralized": result.centralized,
        }
        why = ", ".join(
            f"no {part}" for part in sorted(PHASE_PARTS[cell.phase]) if parts[part] is None
        )
    if why:
        on_note(f"{path} holds another computation ({why}); computing cell {cell.name} again")
        return None
    return result


def run_sweep(
    cells: Sequence[Cell],
    out: Path,
    run: Runner,
    on_cell: Callable[[int, Cell, str], None] = lambda index, cell, state: None,
    on_event: Callable[[str, Any], None] = lambda kind, payload: None,
    on_note: Callable[[str], None] = log.warning,
) -> Iterator[dict[str, Any]]:
    """Run the cells not finished in an earlier sweep into `out` (see `claim_folder`
    first); yield every row.

    `on_cell(index, cell, state)`: state is "kept" (finished earlier), "running" or
    "done"; `on_note(line)`: a file in `cells/` that could not be kept, and why.
    """
    rows: list[dict[str, Any]] = []
    folder = out / "cells"
    for index, cell in enumerate(cells):
        path = folder / cell.file_name
        result = kept_result(path, cell, on_note)
        state = "kept"
        if result is None:
            on_cell(index, cell, "running")
            result = run(cell.config, cell.phase, on_event)
            result.save(path)
            state = "done"
        rows.append(row(cell, result))
        write_table(out, rows, cells)
        on_cell(index, cell, state)
        yield rows[-1]


def write_table(out: Path, rows: Sequence[dict[str, Any]], cells: Sequence[Cell]) -> None:
    summary = {
        "id": sweep_id(cells),
        "phase": cells[0].phase,
        "grid": [cell.name for cell in cells],
        "cells": len(cells),
        "finished": len(rows),
        "rows": rows,
    }
    atomic_write_text(out / "sweep.json", json.dumps(summary, indent=2) + "\n")
    atomic_write_text(out / "sweep.csv", to_csv(rows))
