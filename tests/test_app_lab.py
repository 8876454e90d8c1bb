"""The app's lab: its tables and charts on tiny hand-made results, and a lab run in
a real browser (Debian's chromium) whose numbers equal `python -m fedcore run`'s."""

import json
import re
import time

import pytest

from fedcore.experiment.config import ExperimentConfig
from fedcore.experiment.results import (
    CentralizedResult,
    ClientResult,
    ExperimentResult,
    FederatedResult,
    RoundResult,
)
from fedcore.report import charts, tables

from .test_app import (
    chart_spec,
    chromium,
    cli_beside_the_page,
    expect_no_errors,
    open_page,
    serve_app,
)

# ------------------------------------------------------------ tables and charts


def tiny_result(rounds_to_target=None, subsets=True) -> ExperimentResult:
    """Two clients, two rounds: numbers chosen by hand, nothing trained."""
    config = ExperimentConfig(
        num_clients=2, split="classes:1", num_rounds=2, local_epochs=1, target_accuracy=90.0
    )
    subset = {"1": 0.4} if subsets else {}

    def client(number, accuracy, excluded, counts):
        return ClientResult(number, excluded, sum(counts), [1.0], accuracy, 0.0, subset,
                            [[0] * 10] * 10, counts)  # fmt: skip

    counts = [[30, 0, 0, 0, 0, 0, 0, 0, 0, 10], [0, 20, 0, 0, 0, 0, 0, 0, 0, 0]]
    history = [
        RoundResult(0, 0.1, 2.3, subset),
        RoundResult(1, 0.5, 1.0, subset),
        RoundResult(2, 0.8, 0.5, {"1": 0.7} if subsets else {}),
    ]
    return ExperimentResult(
        config=config,
        isolated=[
            client(1, 0.3, list(range(1, 9)), counts[0]),
            client(2, 0.2, [0, *range(2, 10)], counts[1]),
        ],
        federated=FederatedResult(
            history,
            0.8,
            0.5,
            history[-1].subset_accuracy,
            [[0] * 10] * 10,
            rounds_to_target=rounds_to_target,
        ),  # fmt: skip
        centralized=CentralizedResult(60, 2, [1.0, 0.5], 0.9, subset, [[0] * 10] * 10),
        timings={"total": 3.3},
        label_counts=counts,
        cross_accuracy=[[0.75, 0.0], [0.0, 1.0]],
    )


def test_split_counts_any_split():
    counts = tables.split_counts(tiny_result().label_counts)
    assert len(counts) == 20 and list(counts.columns[:3]) == ["client", "digit", "count"]
    first = counts[counts.client == 1].set_index("digit")
    assert first.loc[0, "count"] == 30 and first.loc[0, "share"] == 0.75
    assert first.loc[9, "share"] == 0.25 and bool(first.loc[1, "excluded"])
    assert counts.groupby("client").share.sum().tolist() == [1.0, 1.0]


def test_cross_accuracy_rows_are_the_trained_model():
    cells = tables.cross_accuracy([[0.75, 0.1], [0.2, 1.0]])
    row = cells[(cells.trained_on == 1) & (cells.scored_on == 2)].iloc[0]
    assert row.accuracy == 0.1 and not row.own
    assert cells[cells.own].accuracy.tolist() == [0.75, 1.0]


def test_reference_lines_and_rounds():
    result = tiny_result()
    lines = tables.reference_lines(result).set_index("model")
    assert lines.loc[tables.CENTRALIZED, "label"] == "centralized 90.0%"
    assert lines.loc[tables.ISOLATED_MEAN, "accuracy"] == pytest.approx(0.25)
    assert lines.loc[tables.TARGET, "accuracy"] == 0.9 and lines.loc[tables.TARGET, "dashed"]
    rounds = tables.federated_rounds(result.federated.history)
    assert rounds["round"].tolist() == [0, 1, 2] and rounds.accuracy.tolist() == [0.1, 0.5, 0.8]


def test_lab_summary():
    summary = tables.lab_summary(tiny_result())
    assert dict(zip(summary.measure, summary.text, strict=True)) == {
        "Centralized baseline (all data pooled, 2 epochs)": "90.0%",
        "Isolated models, mean of 2": "25.0%",
        "Isolated models, lowest (client 2)": "20.0%",
        "Isolated models, highest (client 1)": "30.0%",
        "Federated (FedAvg), after 2 rounds": "80.0%",
        "Federated, worst missing-digit subset (digits 1)": "70.0%",
        "Rounds to 90% test accuracy": "not reached in 2",
        "Wall time": "3.3 s",
    }
    reached = tables.lab_summary(tiny_result(rounds_to_target=2, subsets=False))
    text = dict(zip(reached.measure, reached.text, strict=True))
    assert text["Rounds to 90% test accuracy"] == "2"
    assert text["Federated, worst missing-digit subset"] == "no client lacks a digit"


def test_lab_charts_bars_or_heatmap_and_numbers_only_when_few():
    result = tiny_result()
    counts = tables.split_counts(result.label_counts)
    assert charts.label_distribution_chart(counts, 2).to_dict()["mark"]["type"] == "bar"
    many = tables.split_counts([[5] * 10] * 12)
    heatmap = charts.label_distribution_chart(many, 12).to_dict()
    assert heatmap["mark"]["type"] == "rect" and heatmap["encoding"]["color"]["field"] == "count"

    def marks(chart):
        return [layer["mark"]["type"] for layer in chart.to_dict()["layer"]]

    cells = tables.cross_accuracy(result.cross_accuracy)
    assert marks(charts.cross_accuracy_chart(cells, 2)) == ["rect", "rect", "text"]
    eleven = tables.cross_accuracy([[0.5] * 11] * 11)
    assert marks(charts.cross_accuracy_chart(eleven, 11)) == ["rect", "rect"]
    rounds = charts.rounds_with_references_chart(
        tables.federated_rounds(result.federated.history), tables.reference_lines(result)
    )
    assert marks(rounds) == ["rule", "line", "text", "text", "text"]


# --------------------------------------------------------------- in a browser

LAB = {"clients": 5, "split": "dirichlet:0.1", "rounds": 2, "epochs": 1}


def test_lab_run_in_the_browser_equals_the_cli(mnist_dir, tmp_path):
    from playwright.sync_api import expect

    started = time.monotonic()
    out = tmp_path / "cli.json"
    reference = cli_beside_the_page(  # the lab's settings, computed anew (no cache)
        mnist_dir, out, "--clients", str(LAB["clients"]), "--split", LAB["split"],
        "--rounds", str(LAB["rounds"]), "--epochs", str(LAB["epochs"]), "--no-cache",
    )  # fmt: skip
    try:
        with serve_app(mnist_dir, tmp_path) as server, chromium() as browser:
            page, lab = open_page(browser, server.url, "The lab's settings")
            lab.locator("select:has(option:text-is('dirichlet'))").select_option("dirichlet")
            alpha = lab.locator('input[aria-label*="alpha"]')
            alpha.fill("0")  # out of range: a callout, not a traceback
            alpha.press("Enter")
            refused = page.get_by_text("These lab settings cannot run:")
            expect(refused).to_be_visible(timeout=30_000)
            expect(page.get_by_text("the parameter is alpha, > 0")).to_be_visible()
            alpha.fill("0.1")
            alpha.press("Enter")
            expect(refused).to_have_count(0, timeout=30_000)
            sliders = lab.get_by_role("slider")  # clients 3 -> 5, rounds 1 -> 2
            for index, steps in ((0, LAB["clients"] - 3), (1, LAB["rounds"] - 1)):
                sliders.nth(index).focus()
                for _ in range(steps):
                    page.keyboard.press("ArrowRight")
            expect(sliders.nth(0)).to_have_attribute("aria-valuenow", str(LAB["clients"]))
            expect(sliders.nth(1)).to_have_attribute("aria-valuenow", str(LAB["rounds"]))
            # the server has the sliders' last values (the browser sends them a little later)
            will_run = "Run the lab runs: {split}, {clients} clients, mlp, {rounds} rounds"
            will_run = will_run.format(**LAB)
            expect(page.get_by_text(will_run)).to_be_visible(timeout=30_000)
            lab.get_by_role("button", name="Run the lab").click()

            results_heading = page.get_by_role("heading", name="The lab's results")
            expect(results_heading).to_be_visible(timeout=120_000)
            results = page.locator("[data-cell-name]", has=results_heading)
            shown = {}
            for row in results.locator("tr").all():
                measure, _, value = row.inner_text().partition("\t")
                shown[measure.strip()] = value.strip()
            renderers = results.locator("marimo-mime-renderer[data-mime*='vegalite']")
            expect(renderers).to_have_count(3)
            titles = []
            for index in range(3):
                chart = renderers.nth(index)
                expect(chart.locator(".vega-embed .marks")).to_have_count(1, timeout=30_000)
                box = chart.locator(".vega-embed .marks").bounding_box()
                assert box and box["width"] > 100 and box["height"] > 100
                spec = chart_spec(chart)
                titles.append(spec["title"])
            command = results.get_by_text("python -m fedcore run --clients 5").inner_text()
            expect_no_errors(page)
        assert "Traceback" not in server.log_text()
        log, _ = reference.communicate(timeout=120)
    finally:
        if reference.poll() is None:
            reference.kill()
            reference.wait()
    assert reference.returncode == 0, log

    assert titles == [
        "Training images per client, by digit",
        "Federated accuracy per round, against the baselines",
        "Train on client i alone, score on client j's label mix",
    ]
    assert "--split 'dirichlet:0.1'" in command and "--rounds 2 --epochs 1" in command
    cli = json.loads(out.read_text())
    isolated = {c["client"]: c["accuracy"] for c in cli["isolated"]}
    mean = sum(isolated.values()) / len(isolated)
    low, high = min(isolated, key=isolated.get), max(isolated, key=isolated.get)
    worst = min(cli["federated"]["subset_accuracy"].items(), key=lambda kv: kv[1])
    expected = {
        "Centralized baseline (all data pooled, 2 epochs)": cli["centralized"]["accuracy"],
        "Federated (FedAvg), after 2 rounds": cli["federated"]["accuracy"],
        f"Federated, worst missing-digit subset (digits {worst[0]})": worst[1],
        "Isolated models, mean of 5": mean,
        f"Isolated models, lowest (client {low})": isolated[low],
        f"Isolated models, highest (client {high})": isolated[high],
    }
    for measure, accuracy in expected.items():
        assert shown.get(measure) == f"{accuracy:.1%}", (measure, shown)
    reached = cli["federated"]["rounds_to_target"]
    assert shown["Rounds to 97% test accuracy"] == (
        str(reached) if reached is not None else "not reached in 2"
    )
    assert re.fullmatch(r"\d+\.\d s", shown["Wall time"])
    print(f"lab test: {time.monotonic() - started:.1f} s; page: {shown}")
