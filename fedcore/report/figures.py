"""A run's charts, by what they show, and as SVG and PNG files.

Rendered by vl-convert (Vega-Lite's own renderer, bundled in a Python
package): no browser, no network.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import altair as alt

from fedcore.experiment.results import ExperimentResult
from fedcore.report import charts, tables

PNG_SCALE = 2  # pixels per SVG unit: sharp on slides and in papers


def run_charts(result: ExperimentResult) -> dict[str, Callable[[], alt.TopLevelMixin]]:
    """Every chart of a run that its results determine, named after what it shows;
    each built only when called (a page can offer them all and draw none)."""
    config, isolated, federated = result.config, result.isolated, result.federated
    n = config.num_clients
    out: dict[str, Callable[[], alt.TopLevelMixin]] = {}
    if isolated and all(c.label_counts for c in isolated):  # (files before 2026-11-28: none)
        out["training-images-per-digit"] = lambda: charts.label_counts_chart(
            tables.label_counts_table((c.client, c.label_counts, c.excluded) for c in isolated),
            n,
        )
    if isolated:
        out["isolated-training-loss"] = lambda: charts.loss_chart(
            tables.isolated_losses(isolated), n, "Training loss, each client alone"
        )
    out["test-accuracy"] = lambda: charts.accuracy_chart(
        tables.accuracies(isolated or [], federated, result.centralized), n
    )
    if isolated:
        out["isolated-confusion-matrices"] = lambda: charts.confusion_chart(
            tables.isolated_confusions(isolated), normalized=True
        )
    if federated is not None:
        out["federated-accuracy-per-round"] = lambda: charts.history_chart(
            tables.history(federated.history)
        )
        out["federated-client-losses"] = lambda: charts.federated_loss_chart(
            tables.federated_client_losses(federated), n
        )
        out["federated-confusion-matrix"] = lambda: charts.confusion_chart(
            tables.confusion(tables.FEDERATED, federated.confusion, result.unlearnable_digits),
            normalized=True,
        )
        if isolated and not tables.story(isolated, federated).empty:
            out["alone-vs-together"] = lambda: charts.story_chart(tables.story(isolated, federated))
    leaked = federated.leakage if federated is not None else None
    if leaked and any(c.label_counts_inferred for c in leaked):
        out["server-label-counts"] = lambda: charts.leakage_counts_chart(
            tables.leakage_counts(leaked)
        )
    if leaked and any(c.reconstruction for c in leaked):
        out["server-reconstructions"] = lambda: charts.reconstruction_chart(
            tables.reconstructions(leaked)
        )
    return out


def to_svg(chart: alt.TopLevelMixin) -> str:
    import vl_convert  # here: 0.6 s to import, paid only by who renders

    return vl_convert.vegalite_to_svg(chart.to_dict())


def to_png(chart: alt.TopLevelMixin) -> bytes:
    import vl_convert

    return vl_convert.vegalite_to_png(chart.to_dict(), scale=PNG_SCALE)


def write_figures(result: ExperimentResult, folder: str | Path, prefix: str = "") -> list[Path]:
    """`<prefix><name>.svg` and `.png` for every chart of the run; the paths written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, build in run_charts(result).items():
        chart = build()
        svg, png = folder / f"{prefix}{name}.svg", folder / f"{prefix}{name}.png"
        svg.write_text(to_svg(chart), encoding="utf-8")
        png.write_bytes(to_png(chart))
        written += [svg, png]
    return written
