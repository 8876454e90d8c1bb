"""The story's Share section: the report, the results, the tables and every chart,
each made when its button is clicked, not when the page is drawn."""

from __future__ import annotations

from collections.abc import Callable

import marimo as mo

from fedcore.experiment.results import ExperimentResult
from fedcore.report import tables
from fedcore.report.figures import run_charts, to_png, to_svg
from fedcore.report.html import report_html


def downloads(result: ExperimentResult) -> mo.Html:
    """The report (one HTML file), the results (JSON) and the tables (CSV)."""
    federated = result.federated
    csv = {
        "accuracies.csv": lambda: tables.accuracies(result.isolated or [], federated),
        "accuracy-per-round.csv": lambda: tables.history(federated.history),
        "client-losses.csv": lambda: tables.federated_client_losses(federated),
    }
    return mo.hstack(
        [
            mo.download(
                lambda: report_html([("fedcore run", result)]).encode(),
                "fedcore-report.html", "text/html", label="Report (HTML)",
            ),
            mo.download(
                lambda: result.to_json().encode(), "fedcore-results.json",
                "application/json", label="Results (JSON)",
            ),
            *[
                mo.download(lambda make=make: make().to_csv(index=False).encode(),
                            name, "text/csv", label=name)
                for name, make in csv.items()
            ],
        ],
        justify="start",
        wrap=True,
    )  # fmt: skip


def figure_downloads(result: ExperimentResult) -> mo.Html:
    """Each chart of the run as SVG or PNG, one row a chart."""
    drawn = run_charts(result)

    def render(name: str, kind: str) -> Callable[[], bytes]:
        def make() -> bytes:
            chart = drawn[name]()
            return to_svg(chart).encode() if kind == "svg" else to_png(chart)

        return make

    return mo.vstack(
        [
            mo.hstack(
                [
                    mo.md(name.replace("-", " ")),
                    mo.download(render(name, "svg"), f"{name}.svg", "image/svg+xml", label="SVG"),
                    mo.download(render(name, "png"), f"{name}.png", "image/png", label="PNG"),
                ],
                justify="start",
            )
            for name in drawn
        ]
    )
