"""The runs a session keeps to compare: every run finished on the page and every
results file loaded, and the tables that set pinned runs side by side."""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence

import marimo as mo

from fedcore.experiment.results import ExperimentResult, ResultsError
from fedcore.report import tables, text
from fedcore.report.html import report_html
from fedcore.report.labels import percent

Kept = list[tuple[str, ExperimentResult]]  # (name, result), in the order they came


def kept_with(kept: Kept, source: str, result: ExperimentResult, file: str | None = None) -> Kept:
    """`kept` and a finished run, named by where it comes from and its settings (`"lab 2:
    dirichlet:0.1, 10 clients, mlp, 3 rounds of 1 epoch"`); the same result again is
    not kept twice."""
    if any(other == result for _, other in kept):
        return kept
    origin = f"{source} {len(kept) + 1}" + (f" ({file})" if file else "")
    return [*kept, (f"{origin}: {tables.run_label(result.config)}", result)]


def read_results_file(name: str, contents: bytes) -> ExperimentResult:
    """A results file's text as a result; `ResultsError` (naming the file) if it is not
    one, as `ExperimentResult.load` says it."""
    try:
        return ExperimentResult.from_json(contents.decode("utf-8"))
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ResultsError(f"{name}: not a fedcore results file ({error})") from None


def not_loaded(error: Exception) -> mo.Html:
    return mo.callout(mo.Html(f"<b>Not loaded:</b> {html.escape(str(error))}"), kind="danger")


def short_name(name: str) -> str:
    """`"lab 2"`, `"file 3 (x.json)"`: a kept run's name without its settings."""
    return name.partition(": ")[0]


def text_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> mo.Html:
    """A markdown table of text, for runs' names and settings (escaped, `|` too)."""
    return mo.md(text.markdown_table(head, rows))


def differing_settings_table(pinned: Kept) -> mo.Html:
    """The settings in which the pinned runs differ, one column per run."""
    differ = tables.differing_settings(pinned)
    if not len(differ):
        return mo.md("_The pinned runs have the same settings._")
    return text_table(
        ["setting", *(short_name(name) for name, _ in pinned)],
        [[f"{r[1]} ({r[0]})", *r[2:]] for r in differ.itertuples(index=False)],
    )


def final_accuracies_table(pinned: Kept) -> mo.Html:
    """Each pinned run's final accuracies, by model and test set."""
    finals = tables.runs_final_accuracies(pinned)
    return text_table(
        ["model, test set", *(short_name(name) for name, _ in pinned)],
        [[f"{r[0]}, {r[1]}", *(percent(v) for v in r[2:])] for r in finals.itertuples(index=False)],
    )


def compare_hint(kept: Kept) -> mo.Html:
    """What to do to have runs side by side, while fewer than two are pinned."""
    hint = (
        "Pin two or more runs above to see them side by side."
        if len(kept) >= 2
        else f"{len(kept)} run{'' if len(kept) == 1 else 's'} kept so far: run the lab "
        "(with other settings than the story's) or load a results file to have two to "
        "compare."
    )
    return mo.md(f"_{hint}_")


def compare_download(pinned: Kept) -> mo.Html:
    """The pinned runs side by side in one HTML report, made when clicked."""
    return mo.download(
        lambda: report_html(pinned).encode(), "fedcore-compare.html", "text/html",
        label="These runs side by side (HTML report)",
    )  # fmt: skip


def pin_select(
    kept: Kept, pinned: Sequence[str], on_change: Callable[[list[str]], None]
) -> mo.ui.multiselect:
    """The runs to set side by side, chosen among those kept; the names `pinned` before
    stay pinned when the list grows (`on_change` keeps them)."""
    names = [name for name, _ in kept]
    return mo.ui.multiselect(
        options=names,
        value=[name for name in pinned if name in names],
        label="Pinned runs",
        on_change=on_change,
        full_width=True,
    )
