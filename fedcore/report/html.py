"""One self-contained HTML report of one or more runs: the story, every chart, the
numbers; it opens anywhere, offline, with no script at all.

Charts are inline SVG (vl-convert), styles are inline, nothing is fetched. Each
accuracy in the tables also carries its exact value (`data-value`), so the
report can be checked against the results JSON. Every value written into it is
escaped (`_e`): run names and failures come from files people hand us, and
vl-convert escapes the text inside the charts.
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Sequence

import altair as alt
import pandas as pd

from fedcore.experiment.results import ExperimentResult
from fedcore.experiment.specs import format_digits
from fedcore.report import charts, labels, tables, text
from fedcore.report.figures import run_charts, to_svg
from fedcore.report.labels import percent

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem;
       color: #1f2937; line-height: 1.5; }
h1 { font-weight: 600; } h2 { margin-top: 2.5rem; border-bottom: 1px solid #e5e7eb; }
table { border-collapse: collapse; margin: 1rem 0; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #e5e7eb; padding: 0.25rem 0.6rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.missing { color: #b91c1c; font-weight: 600; }
figure { margin: 1rem 0; } figcaption { color: #6b7280; font-size: 0.9rem; }
.note { color: #6b7280; }
.diverged { color: #b91c1c; border-left: 4px solid #b91c1c; padding-left: 0.6rem; }
"""


def _e(value: object) -> str:
    """A value as HTML text: `<`, `&` and quotes escaped."""
    return html.escape(str(value))


def _cell(value: float | None, missing: bool = False) -> str:
    exact = "" if value is None else f' data-value="{value!r}"'
    css = ' class="missing"' if missing else ""
    return f"<td{exact}{css}>{percent(value)}</td>"


def _figure(name: str, chart: alt.TopLevelMixin) -> str:
    caption = _e(name.replace("-", " "))
    svg = to_svg(chart)
    return f'<figure data-chart="{_e(name)}">{svg}<figcaption>{caption}</figcaption></figure>'


def accuracy_table(result: ExperimentResult) -> str:
    """Every model on every test set (`tables.accuracy_table`, the isolated models' mean
    left out); a model's own missing digits in red."""
    return accuracy_table_html(tables.accuracy_table(result))


def accuracy_table_html(table: pd.DataFrame) -> str:
    """An `accuracy_table` as HTML: each row's `data-model` is its `key`, each accuracy
    carries its exact value; the isolated models' mean is left out."""
    subsets = tables.subset_columns(table)
    head = "".join(f"<th>{_e(labels.subset_name(s))}</th>" for s in subsets)
    rows = []
    for row in table.to_dict("records"):
        if row["key"] == labels.ISOLATED_MEAN_KEY:
            continue
        own = None if row["excluded"] is None else format_digits(sorted(row["excluded"]))
        cells = "".join(_cell(row[labels.subset_name(s)], s == own) for s in subsets)
        rows.append(
            f'<tr data-model="{_e(row["key"])}"><td>{_e(row["model"])}</td>'
            f"{_cell(row[labels.ALL_DIGITS])}{cells}</tr>"
        )
    head = f"<tr><th>model</th><th>{_e(labels.ALL_DIGITS)}</th>{head}</tr>"
    return f"<table>{head}{''.join(rows)}</table>"


MAX_LISTED_CLIENTS = 20  # clients named one by one in the story; beyond, grouped


def exclusions_text(exclusions: Sequence[Sequence[int]]) -> str:
    """`"client 1: 1,3,7; client 2: 2,5,8"`; beyond `MAX_LISTED_CLIENTS` clients, each
    set of digits once with how many clients exclude it (`"1,3,7: 3,334 clients; ..."`)."""
    if len(exclusions) <= MAX_LISTED_CLIENTS:
        return "; ".join(
            f"client {i}: {format_digits(d) or 'none'}" for i, d in enumerate(exclusions, start=1)
        )
    groups = Counter(format_digits(d) or "none" for d in exclusions)
    return "; ".join(f"{digits}: {count:,} clients" for digits, count in groups.items())


def _story(result: ExperimentResult) -> str:
    config, isolated, federated = result.config, result.isolated, result.federated
    excluded = exclusions_text(config.excluded_digits)
    parts = [
        f"<p>{config.num_clients} clients, split {_e(config.split)}, model {_e(config.model)}, "
        f"{config.num_rounds} round(s) of FedAvg, "
        f"{config.local_epochs} local epoch(s), batch {config.batch_size}, learning rate "
        f"{config.learning_rate}, seed {config.seed}."
        + (f" Excluded digits: {_e(excluded)}." if config.excluded_digits else "")
        + "</p>"
    ]
    if result.diverged:
        items = "".join(f"<li>{_e(line)}</li>" for line in result.diverged)
        parts.append(
            "<div class='diverged'><p><b>This run diverged or did not learn</b> "
            f"({_e(labels.diverged_hint(config))}):</p><ul>{items}</ul></div>"
        )
    if isolated:
        lines = "".join(
            f"<li><b>{_e(labels.client_name(c.client))}</b> "
            f"(never saw {_e(', '.join(map(str, c.excluded)) or 'nothing')}): "
            f"{percent(c.accuracy)} on all test digits"
            + (f", <b>{percent(c.missing_accuracy)}</b> on its missing digits" * bool(c.excluded))
            + "</li>"
            for c in isolated
        )
        parts.append(f"<h3>Each client alone</h3><ul>{lines}</ul>")
    if federated is not None:
        rounds = ", ".join(percent(h.accuracy) for h in federated.history)
        parts.append(
            "<h3>Together, with Flower</h3>"
            f"<p>The ServerApp averaged the clients' weights (FedAvg, weighted by number of "
            f"images) for {config.num_rounds} round(s). Global accuracy by round "
            f"(0 = before training): {rounds}.</p>"
        )
        if federated.failures:
            items = "".join(f"<li>{_e(f)}</li>" for f in federated.failures)
            parts.append(f"<p>Some client updates failed:</p><ul>{items}</ul>")
    if isolated and federated is not None:
        story = tables.story(isolated, federated)
        if not story.empty:
            alone, together = tables.story_spans(story)
            parts.append(
                "<h3>Alone vs together</h3>"
                f"<p>On the digits a client never saw, its own model scores {_e(alone)}; "
                "the federated model, trained on the same private data without any image "
                f"leaving its client, scores {_e(together)}.</p>"
            )
    if federated is not None and federated.leakage is not None:
        lines = "".join(f"<li>{_e(line.strip())}</li>" for line in
                        text.leakage_lines(config, federated)[1:])  # fmt: skip
        parts.append(
            "<h3>What the server learned</h3><p>From each client's first update, as Flower "
            f"delivered it (privacy {_e(config.privacy)}):</p><ul>{lines}</ul>"
        )
    return "".join(parts)


def _run_section(name: str, result: ExperimentResult) -> str:
    figures = "".join(_figure(name, build()) for name, build in run_charts(result).items())
    return (
        f'<section data-run="{_e(name)}"><h2>{_e(name)}</h2>'
        f"{_story(result)}{accuracy_table(result)}{figures}</section>"
    )


def _differing_settings(runs: Sequence[tables.Run]) -> str:
    differ = tables.differing_settings(runs)
    if differ.empty:
        return "<p class='note'>The runs have the same settings.</p>"
    head = "".join(f"<th>{_e(run)}</th>" for run, _ in runs)
    rows = "".join(
        f"<tr><td>{_e(row[0])}</td>" + "".join(f"<td>{_e(v)}</td>" for v in row[2:]) + "</tr>"
        for row in differ.itertuples(index=False)
    )
    return f"<h3>Settings that differ</h3><table><tr><th>setting</th>{head}</tr>{rows}</table>"


def _final_accuracies(runs: Sequence[tables.Run]) -> str:
    finals = tables.runs_final_accuracies(runs)
    head = "".join(f'<th data-run="{_e(run)}">{_e(run)}</th>' for run, _ in runs)
    rows = "".join(
        f'<tr data-model="{_e(row[0])}" data-test-set="{_e(row[1])}">'
        f"<td>{_e(row[0])}, {_e(row[1])}</td>" + "".join(_cell(v) for v in row[2:]) + "</tr>"
        for row in finals.itertuples(index=False)
    )
    return f"<h3>Final accuracy</h3><table><tr><th>model, test set</th>{head}</tr>{rows}</table>"


def _side_by_side(runs: Sequence[tables.Run]) -> str:
    history = tables.runs_history(runs)
    overlay = (
        _figure("runs-accuracy-per-round", charts.runs_history_chart(history))
        if len(history)
        else ""
    )
    return (
        "<section><h2>Runs side by side</h2>"
        f"{_differing_settings(runs)}{_final_accuracies(runs)}{overlay}</section>"
    )


def report_html(runs: Sequence[tuple[str, ExperimentResult]]) -> str:
    """The report of `(name, result)` runs: one run's story, or several side by side."""
    body = [
        "<h1>Learning together without sharing data</h1>",
        "<p>Each client (a hospital, say) holds part of the MNIST digits and never sees "
        "some of them. Trained alone, a client's model cannot recognise the digits it never "
        "saw; trained together with federated learning (Flower, FedAvg), by exchanging model "
        "weights and never images, one model learns every digit. Made by fedcore from "
        "results files; every number below is measured on the 10,000 MNIST test images.</p>",
    ]
    if len(runs) > 1:
        body.append(_side_by_side(runs))
    body += [_run_section(name, result) for name, result in runs]
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        "<title>fedcore report</title>"
        f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>\n"
    )
