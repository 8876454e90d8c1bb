"""A published table reproduced: its rows run as one sweep (cached and resumable like
any sweep, in `DIR/TABLE/`), and `DIR/TABLE.csv` and `DIR/TABLE.md` with the paper's
figure beside each measured one.

Each row runs at every learning rate of the table's grid and every seed; the row's
figure is that of its best learning rate (fewest rounds to the target, or the
highest final accuracy), averaged over the seeds. A rounds row whose target was
not reached in every seed has no figure, and says in how many it was.
"""

from __future__ import annotations

import functools
import statistics
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedcore.engine.cost import duration_text, estimate_seconds
from fedcore.engine.sweep import Cell, Runner, run_sweep, to_csv
from fedcore.experiment.config import ExperimentConfig
from fedcore.experiment.specs import ConfigError
from fedcore.reproduction.tables import Row, Table, find_table, parse_learning_rates
from fedcore.storage import atomic_write_text

FIRST_SEED = ExperimentConfig().seed  # seeds FIRST_SEED, FIRST_SEED + 1, ...
MAX_SEEDS = 10


@dataclass(frozen=True)
class Plan:
    """What one `reproduce` command runs: the table's chosen rows, each at every
    learning rate and seed; `skipped` are the rows left out because they were not
    asked for: the heavy ones, and those whose paper gives no figure."""

    table: Table
    rows: tuple[Row, ...]
    skipped: tuple[Row, ...]
    learning_rates: tuple[float, ...]
    seeds: tuple[int, ...]
    quick: bool = False
    max_rounds: int | None = None
    data_dir: str = ""

    def config(self, row: Row, learning_rate: float, seed: int) -> ExperimentConfig:
        return self.table.config(
            row, learning_rate, seed, self.quick, self.max_rounds, self.data_dir
        )

    @functools.cached_property
    def cells(self) -> list[Cell]:
        """Every row at every learning rate and seed, built once."""
        return [
            Cell(
                {"row": row.key, "learning-rate": rate, "seed": seed},
                self.config(row, rate, seed),
                "federated",
            )
            for row in self.rows
            for rate in self.learning_rates
            for seed in self.seeds
        ]

    def estimate_seconds(self, row: Row) -> float:
        """What running `row` would take here: its grid and seeds, each run for the
        paper's number of rounds (rounds rows) or its own (accuracy rows)."""
        config = self.config(row, self.learning_rates[0], self.seeds[0])
        if self.table.measure == "rounds" and row.paper is not None:
            config = config.replace(num_rounds=int(row.paper))
        runs = len(self.learning_rates) * len(self.seeds)
        return runs * estimate_seconds(config, "federated")


def make_plan(
    name: str,
    rows: str | None = None,
    seeds: int = 1,
    learning_rates: str | None = None,
    quick: bool = False,
    max_rounds: int | None = None,
    data_dir: str = "",
) -> Plan:
    """The command's plan, every setting checked before anything runs. With no
    `rows`, every row but the heavy ones and those the paper gives no figure for
    ("—": nothing to compare with, and capped at `UNPUBLISHED_ROUNDS`, the dearest
    of all at C=1.0); they run only when `rows` names them."""
    table = find_table(name)
    if not 1 <= seeds <= MAX_SEEDS:
        raise ConfigError(f"--seeds {seeds}: give 1 to {MAX_SEEDS}")
    chosen = table.select(rows)
    skipped = (
        [] if rows is not None else [r for r in chosen if table.is_heavy(r) or r.paper is None]
    )
    plan = Plan(
        table=table,
        rows=tuple(row for row in chosen if row not in skipped),
        skipped=tuple(skipped),
        learning_rates=table.learning_rates
        if learning_rates is None
        else parse_learning_rates(learning_rates),
        seeds=tuple(range(FIRST_SEED, FIRST_SEED + seeds)),
        quick=quick,
        max_rounds=max_rounds,
        data_dir=data_dir,
    )
    if not plan.rows:
        raise ConfigError(f"{name}: every chosen row is heavy here; name them with --rows")
    _ = plan.cells  # each a valid experiment (built once): an error now, not after an hour
    return plan


@dataclass
class Measured:
    """A row's outcome: every cell's figure by learning rate, one per seed."""

    row: Row
    by_rate: dict[float, list[float | None]] = field(default_factory=dict)
    wall_seconds: float = 0.0


def cell_figure(table: Table, sweep_row: dict[str, Any], config: ExperimentConfig) -> float | None:
    """A finished cell's figure: its rounds to the target (None: not reached), or its
    final accuracy in percent."""
    if table.measure == "rounds":
        return sweep_row[f"rounds_to_{config.target_accuracy:g}pct"]
    return 100 * sweep_row["federated_accuracy"]


def best_rate(table: Table, measured: Measured) -> float | None:
    """The learning rate with the best figure over the seeds: most seeds reaching the
    target, then the fewest rounds; or the highest mean accuracy."""
    complete = {rate: v for rate, v in measured.by_rate.items() if v}
    if not complete:
        return None

    def rounds_key(rate: float) -> tuple[int, float]:
        reached = [v for v in complete[rate] if v is not None]
        return -len(reached), statistics.fmean(reached) if reached else 0.0

    if table.measure == "rounds":
        return min(complete, key=rounds_key)
    return max(complete, key=lambda rate: statistics.fmean(complete[rate]))  # type: ignore[arg-type]


def summary_row(plan: Plan, measured: Measured) -> dict[str, Any]:
    """One line of TABLE.csv: the row's settings, the paper's figure and ours."""
    table, row = plan.table, measured.row
    rate = best_rate(table, measured)
    config = plan.config(row, rate or plan.learning_rates[0], plan.seeds[0])
    values = measured.by_rate.get(rate, []) if rate is not None else []
    reached = [v for v in values if v is not None]
    figure = statistics.fmean(reached) if values and len(reached) == len(values) else None
    note = ""
    if len(values) < len(plan.seeds):
        note = f"{len(values)} of {len(plan.seeds)} seeds finished"
    elif table.measure == "rounds" and figure is None:
        note = (
            f"{config.target_accuracy:g}% not reached within {config.num_rounds} rounds "
            f"in {len(values) - len(reached)} of {len(values)} seeds"
        )
    return {
        "table": table.name,
        "row": row.key,
        "model": config.model,
        "split": config.split,
        "strategy": config.strategy,
        "clients": config.num_clients,
        "fraction": config.fraction_train,
        "local_epochs": config.local_epochs,
        "batch_size": config.batch_size,
        "momentum": config.momentum,
        "rounds": config.num_rounds,
        "target": config.target_accuracy if table.measure == "rounds" else None,
        "measure": table.measure,
        "paper": row.paper,
        "source": row.source,
        "measured": figure,
        "measured_std": statistics.stdev(reached) if len(reached) > 1 else None,
        "ratio": figure / row.paper if figure is not None and row.paper else None,
        "learning_rate": rate,
        "learning_rates": " ".join(f"{r:g}" for r in plan.learning_rates),
        "seeds": len(values),
        "wall_seconds": round(measured.wall_seconds, 1),
        "note": note,
    }


def skipped_row(plan: Plan, row: Row) -> dict[str, Any]:
    seconds = plan.estimate_seconds(row)
    why = "" if row.paper is not None else ", and the paper gives no figure"
    return {
        "table": plan.table.name,
        "row": row.key,
        "measure": plan.table.measure,
        "paper": row.paper,
        "source": row.source,
        "note": f"not run: {duration_text(seconds)} on this machine{why} (name it with --rows)",
    }


def _number(value: float | None, measure: str) -> str:
    if value is None:
        return "—"
    return f"{value:.0f}" if measure == "rounds" else f"{value:.1f}"


def to_markdown(plan: Plan, rows: Sequence[dict[str, Any]], command: str) -> str:
    table = plan.table
    unit = "rounds to the target" if table.measure == "rounds" else "test accuracy (%)"
    lines = [
        f"# {table.name}: {table.title}",
        "",
        f"Published: {table.citation}.",
        "",
        f"Learning rate: {table.tuning}",
        "",
    ]
    if plan.quick:
        lines += [f"**Quick preset**: {table.quick_why}. Not the paper's setting.", ""]
    lines += [
        f"`{command}`",
        "",
        f"| row | paper ({unit}) | measured | measured / paper | learning rate | seeds | "
        "wall | note |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        measured = _number(r.get("measured"), table.measure)
        if r.get("measured_std") is not None:
            measured += f" ± {_number(r['measured_std'], table.measure)}"
        ratio = "" if r.get("ratio") is None else f"{r['ratio']:.2f}"
        rate = "" if r.get("learning_rate") is None else f"{r['learning_rate']:g}"
        wall = "" if r.get("wall_seconds") is None else f"{r['wall_seconds']:.0f} s"
        lines.append(
            f"| {r['row']} | {_number(r['paper'], table.measure)} | {measured} | {ratio} | "
            f"{rate} | {r.get('seeds', '')} | {wall} | {r.get('note', '')} |"
        )
    lines += ["", "Sources of the published figures:", ""]
    lines += [f"- {r['row']}: {r['source']}" for r in rows]
    return "\n".join(lines) + "\n"


def sweep_folder(out: Path, plan: Plan) -> Path:
    """Where the table's cells and sweep table live: `out/TABLE/`."""
    return out / plan.table.name


def reproduce(
    plan: Plan,
    out: Path,
    run: Runner,
    command: str,
    on_cell: Callable[[int, Cell, str], None] = lambda index, cell, state: None,
    on_event: Callable[[str, Any], None] = lambda kind, payload: None,
    on_note: Callable[[str], None] = lambda line: None,
) -> Iterator[list[dict[str, Any]]]:
    """Run the plan's cells not finished earlier into `sweep_folder(out, plan)` (claim
    it first, as any sweep's folder), rewriting `out/TABLE.csv` and `out/TABLE.md`
    after every cell; yield the summary rows each time."""
    cells = plan.cells
    measured = {row.key: Measured(row) for row in plan.rows}
    sweep = run_sweep(cells, sweep_folder(out, plan), run, on_cell, on_event, on_note)
    for cell, sweep_row in zip(cells, sweep, strict=False):
        entry = measured[cell.values["row"]]
        figure = cell_figure(plan.table, sweep_row, cell.config)
        entry.by_rate.setdefault(cell.values["learning-rate"], []).append(figure)
        entry.wall_seconds += sweep_row.get("wall_seconds") or 0.0
        rows = [summary_row(plan, m) for m in measured.values()]
        rows += [skipped_row(plan, row) for row in plan.skipped]
        atomic_write_text(out / f"{plan.table.name}.csv", to_csv(rows))
        atomic_write_text(out / f"{plan.table.name}.md", to_markdown(plan, rows, command))
        yield rows
