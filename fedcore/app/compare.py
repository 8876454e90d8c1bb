"""The runs a session keeps to compare: every run finished on the page and every
results file loaded, and the tables that set pinned runs side by side.

All sessions are threads of one server, so what one keeps is bounded: a results
file larger than `MAX_UPLOAD_BYTES` is refused before it is parsed, and a session
keeps its latest `MAX_KEPT_RUNS` runs within about `MAX_KEPT_BYTES` (the oldest
let go first; the page says which).
"""

from __future__ import annotations

import dataclasses
import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import marimo as mo

from fedcore.experiment.results import ExperimentResult, ResultsError
from fedcore.experiment.results_file import MEGABYTE
from fedcore.report import charts, tables, text
from fedcore.report.html import report_html
from fedcore.report.labels import percent
from fedcore.reproduction.table_file import (
    MAX_TABLE_BYTES,
    TableFileError,
    read_reproduced_table,
)

# A results file of 1000 rounds is about 1 MB for 2 clients of 1 epoch, some 15 MB for
# 20 clients of 20 epochs (the page's most clients); `python -m fedcore report` takes
# the larger ones.
MAX_UPLOAD_BYTES = 20 * MEGABYTE
MAX_KEPT_RUNS = 20
MAX_KEPT_BYTES = 400 * MEGABYTE  # the session's kept results, in memory (`held_bytes`)
BYTES_PER_VALUE = 80  # a number or text in a loaded result: its object, and its list or dict slot

Run = tables.Run  # (name, result)


@dataclass(frozen=True)
class Kept(Sequence[Run]):
    """The runs a session keeps, oldest first, as `(name, result)` pairs; `numbered`:
    runs ever kept (each run's number in its name), `dropped`: the names of those let
    go to stay within `MAX_KEPT_RUNS` and `MAX_KEPT_BYTES`."""

    runs: tuple[Run, ...] = ()
    sizes: tuple[int, ...] = ()  # `held_bytes` of each run
    numbered: int = 0
    dropped: tuple[str, ...] = ()

    def __getitem__(self, index: Any) -> Any:
        return self.runs[index]

    def __len__(self) -> int:
        return len(self.runs)


def held_bytes(value: object) -> int:
    """About how much memory a result holds: its numbers and texts (walked through
    its dataclasses, lists and mappings) at `BYTES_PER_VALUE` each. An estimate, but
    cheap: a session's runs are summed each time one is kept."""

    def values(item: object) -> int:
        if dataclasses.is_dataclass(item):
            return sum(values(getattr(item, f.name)) for f in dataclasses.fields(item))
        if isinstance(item, dict):
            return sum(1 + values(v) for v in item.values())
        if isinstance(item, list | tuple):
            return sum(values(v) for v in item)
        return 1

    return values(value) * BYTES_PER_VALUE


def kept_with(
    kept: Sequence[Run], source: str, result: ExperimentResult, file: str | None = None
) -> Kept:
    """`kept` and a finished run, named by where it comes from and its settings (`"lab 2:
    dirichlet:0.1, 10 clients, mlp, 3 rounds of 1 epoch"`); the same result again is
    not kept twice; the oldest runs let go while more than `MAX_KEPT_RUNS` or
    `MAX_KEPT_BYTES` are kept (the newest is always kept)."""
    if not isinstance(kept, Kept):  # the page's first, empty list
        kept = Kept(tuple(kept), tuple(map(held_bytes, (r for _, r in kept))), len(kept))
    if any(other == result for _, other in kept):
        return kept
    origin = f"{source} {kept.numbered + 1}" + (f" ({file})" if file else "")
    runs = [*kept.runs, (f"{origin}: {tables.run_label(result.config)}", result)]
    sizes, dropped = [*kept.sizes, held_bytes(result)], list(kept.dropped)
    while len(runs) > 1 and (len(runs) > MAX_KEPT_RUNS or sum(sizes) > MAX_KEPT_BYTES):
        dropped.append(runs.pop(0)[0])
        sizes.pop(0)
    return Kept(tuple(runs), tuple(sizes), kept.numbered + 1, tuple(dropped))


def results_file_input() -> mo.ui.file:
    """Where results files are loaded: the browser refuses files over
    `MAX_UPLOAD_BYTES`, and `read_results_file` again on the server."""
    return mo.ui.file(
        filetypes=[".json"],
        multiple=True,
        max_size=MAX_UPLOAD_BYTES,
        label=f"Load results files (JSON, up to {MAX_UPLOAD_BYTES // MEGABYTE} MB each)",
    )


def read_results_file(name: str, contents: bytes) -> ExperimentResult:
    """An uploaded results file as a result, every value checked as
    `ExperimentResult.read` checks it; `ResultsError` (naming the file) if it is not
    one, or larger than `MAX_UPLOAD_BYTES` (refused before it is parsed: the browser's
    limit is only the browser's)."""
    if len(contents) > MAX_UPLOAD_BYTES:
        raise ResultsError(
            f"{name}: {len(contents) / MEGABYTE:.1f} MB, more than the "
            f"{MAX_UPLOAD_BYTES // MEGABYTE} MB a results file may be on this page (make its "
            f"report with `python -m fedcore report {name}`)"
        )
    return ExperimentResult.read(name, contents)


def not_loaded(error: Exception) -> mo.Html:
    return mo.callout(mo.Html(f"<b>Not loaded:</b> {html.escape(str(error))}"), kind="danger")


def short_name(name: str) -> str:
    """`"lab 2"`, `"file 3 (x.json)"`: a kept run's name without its settings."""
    return name.partition(": ")[0]


def text_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> mo.Html:
    """A markdown table of text, for runs' names and settings (escaped, `|` too)."""
    return mo.md(text.markdown_table(head, rows))


def differing_settings_table(pinned: Sequence[Run]) -> mo.Html:
    """The settings in which the pinned runs differ, one column per run."""
    differ = tables.differing_settings(pinned)
    if not len(differ):
        return mo.md("_The pinned runs have the same settings._")
    return text_table(
        ["setting", *(short_name(name) for name, _ in pinned)],
        [[f"{r[1]} ({r[0]})", *r[2:]] for r in differ.itertuples(index=False)],
    )


def final_accuracies_table(pinned: Sequence[Run]) -> mo.Html:
    """Each pinned run's final accuracies, by model and test set, and whether it
    diverged (its accuracies then are a guess's)."""
    finals = tables.runs_final_accuracies(pinned)
    diverged = ["yes" if result.diverged else "no" for _, result in pinned]
    return text_table(
        ["model, test set", *(short_name(name) for name, _ in pinned)],
        [[f"{r[0]}, {r[1]}", *(percent(v) for v in r[2:])] for r in finals.itertuples(index=False)]
        + [["Diverged or did not learn", *diverged]],
    )


def compare_hint(kept: Sequence[Run]) -> mo.Html:
    """What to do to have runs side by side, while fewer than two are pinned."""
    hint = (
        "Pin two or more runs above to see them side by side."
        if len(kept) >= 2
        else f"{len(kept)} run{'' if len(kept) == 1 else 's'} kept so far: run the lab "
        "(with other settings than the story's) or load a results file to have two to "
        "compare."
    )
    return mo.md(f"_{hint}_")


def compare_download(pinned: Sequence[Run]) -> mo.Html:
    """The pinned runs side by side in one HTML report, made when clicked."""
    return mo.download(
        lambda: report_html(pinned).encode(), "fedcore-compare.html", "text/html",
        label="These runs side by side (HTML report)",
    )  # fmt: skip


def pin_select(
    kept: Sequence[Run], pinned: Sequence[str], on_change: Callable[[list[str]], None]
) -> mo.ui.multiselect:
    """The runs to set side by side, chosen among those kept; the names `pinned` before
    stay pinned when the list grows (`on_change` keeps them). Its label says which
    older runs the page let go, if any."""
    names = [name for name, _ in kept]
    dropped = kept.dropped if isinstance(kept, Kept) else ()
    label = "Pinned runs"
    if dropped:
        let_go = ", ".join(html.escape(short_name(name), quote=False) for name in dropped)
        label += (
            f" (this page keeps the latest {MAX_KEPT_RUNS} runs, within about "
            f"{MAX_KEPT_BYTES // MEGABYTE} MB: {len(dropped)} older let go: {let_go})"
        )
    return mo.ui.multiselect(
        options=names,
        value=[name for name in pinned if name in names],
        label=label,
        on_change=on_change,
        full_width=True,
    )


def reproduced_table_input() -> mo.ui.file:
    """Where a reproduced table is loaded (refused over `MAX_TABLE_BYTES` in the
    browser, and again on the server)."""
    return mo.ui.file(
        filetypes=[".csv"],
        max_size=MAX_TABLE_BYTES,
        label="Load a reproduced table (TABLE.csv from `python -m fedcore reproduce`)",
    )


def reproduced_table_view(name: str, contents: bytes) -> mo.Html:
    """A reproduced table drawn against the paper's figures (fedcore's own transcription,
    not the file's), with the rows as text; one line if the file is not one."""
    try:
        reproduced = read_reproduced_table(name, contents)
    except TableFileError as error:
        return not_loaded(error)
    table = reproduced.table
    number = "{:.0f}" if table.measure == "rounds" else "{:.1f}"
    rows = [
        [
            row.key,
            "—" if row.paper is None else number.format(row.paper),
            "—" if value is None else number.format(value),
            "" if value is None or not row.paper else f"{value / row.paper:.2f}",
        ]
        for row, value in reproduced.measured
    ]
    return mo.vstack(
        [
            mo.md(f"**{html.escape(table.name)}**: {html.escape(table.citation)}."),
            charts.reproduction_chart(reproduced.frame(), table.measure, table.title),
            text_table(["row", "paper", "measured", "measured / paper"], rows),
        ]
    )
