"""Inside the lab's rounds: the tables and charts of what each round recorded (accuracy
per digit, client drift, communication, privacy, clients that answered) on hand-made
results, and a lab run with a strategy and privacy in a real browser (Debian's
chromium) whose epsilon equals `python -m fedcore run`'s."""

import json
import os
import time
from dataclasses import replace
from urllib.parse import quote

import pytest

from fedcore.experiment.results import RoundResult
from fedcore.report import charts, tables

from .test_app import (
    chart_spec,
    chromium,
    cli_beside_the_page,
    expect_no_errors,
    open_page,
    serve_app,
)
from .test_app_lab import tiny_result

# ------------------------------------------------------------ tables and charts

MB = 1_000_000


def recorded_rounds() -> list[RoundResult]:
    """Round 0 and two rounds of two clients, with everything a round records; in
    round 2 client 2 did not answer (dropout)."""
    digits = [[0.1] * 10, [0.5] * 9 + [0.0], [0.9] * 9 + [0.6]]
    return [
        RoundResult(0, 0.1, 2.3, {}, digit_accuracy=digits[0]),
        RoundResult(1, 0.5, 1.0, {}, digit_accuracy=digits[1],
                    update_norm={"1": 2.0, "2": 3.0}, update_cosine={"1": 0.9, "2": 0.4},
                    messages_sent=2, bytes_sent=2 * MB, messages_received=2,
                    bytes_received=2 * MB, epsilon=1.5),
        RoundResult(2, 0.85, 0.5, {}, digit_accuracy=digits[2],
                    update_norm={"1": 1.0}, update_cosine={"1": 1.0},
                    messages_sent=2, bytes_sent=2 * MB, messages_received=1,
                    bytes_received=MB, epsilon=2.25),
    ]  # fmt: skip


def recorded_result():
    base = tiny_result()
    config = base.config.replace(strategy="fedprox", privacy="server:noise=0.5,clip=5", dropout=0.2)
    return replace(
        base, config=config, federated=replace(base.federated, history=recorded_rounds())
    )


def test_digit_rounds_last_round_is_the_final_per_digit_accuracy():
    rounds = recorded_rounds()
    cells = tables.digit_rounds(rounds)
    assert len(cells) == 30 and list(cells.columns) == ["round", "digit", "accuracy"]
    last = cells[cells["round"] == 2].sort_values("digit")
    assert last.accuracy.tolist() == rounds[-1].digit_accuracy
    assert cells[(cells["round"] == 1) & (cells.digit == 9)].accuracy.item() == 0.0
    spec = charts.digit_rounds_chart(cells).to_dict()
    assert [layer["mark"]["type"] for layer in spec["layer"]] == ["rect", "text"]
    assert spec["title"] == "Test accuracy per digit, round by round"


def test_client_drift_per_round_and_client():
    drift = tables.client_drift(recorded_rounds())
    assert list(drift.columns) == ["round", "client", "cosine", "norm"]
    assert drift[["round", "client"]].values.tolist() == [[1, 1], [1, 2], [2, 1]]
    assert drift.cosine.tolist() == [0.9, 0.4, 1.0] and drift.norm.tolist() == [2.0, 3.0, 1.0]
    lines = charts.client_drift_chart(drift, 2).to_dict()
    assert [c["mark"]["type"] for c in lines["hconcat"]] == ["line", "line"]
    many = charts.client_drift_chart(drift, 12).to_dict()  # many clients: a heatmap
    assert [c["mark"]["type"] for c in many["hconcat"]] == ["rect", "line"]


def test_communication_per_round_and_cumulative():
    messages = tables.communication(recorded_rounds())
    assert messages["round"].tolist() == [1, 1, 2, 2]  # round 0 sends nothing
    sent = messages[messages.direction == tables.SENT]
    received = messages[messages.direction == tables.RECEIVED]
    assert sent.megabytes.tolist() == [2.0, 2.0] and sent.cumulative_megabytes.tolist() == [2, 4]
    assert received.messages.tolist() == [2, 1]
    assert received.cumulative_megabytes.tolist() == [2.0, 3.0]
    spec = charts.communication_chart(messages).to_dict()
    assert spec["title"] == "Communication: model weights to and from the clients"


def test_privacy_and_clients_answered():
    rounds = recorded_rounds()
    spent = tables.privacy_spent(rounds)
    assert spent.values.tolist() == [[1, 1.5], [2, 2.25]]
    assert charts.privacy_chart(spent, 1e-5).to_dict()["title"].endswith("(delta 1e-05)")
    answers = tables.clients_answered(rounds)
    assert answers.values.tolist() == [[1, 2, 2, 0], [2, 2, 1, 1]]
    assert charts.clients_answered_chart(answers).to_dict()["layer"][0]["mark"]["type"] == "bar"


def test_lab_summary_says_the_communication_and_the_epsilon():
    summary = tables.lab_summary(recorded_result())
    text = dict(zip(summary.measure, summary.text, strict=True))
    assert text["Federated (fedprox:mu=0.1), after 2 rounds"] == "80.0%"
    assert text["Communication, all rounds"] == "4.0 MB sent, 3.0 MB received, 7 messages"
    assert text["Privacy spent: epsilon (delta 1e-05)"] == "2.25"


def test_older_results_have_empty_round_views():
    """Results saved before rounds recorded these: empty tables (the page writes a
    line instead of each chart), and the summary as before."""
    old = tiny_result()
    for table in (tables.digit_rounds, tables.client_drift, tables.communication,
                  tables.privacy_spent, tables.clients_answered):  # fmt: skip
        assert table(old.federated.history).empty
    measures = tables.lab_summary(old).measure.tolist()
    assert "Communication, all rounds" not in measures
    assert not any(m.startswith("Privacy spent") for m in measures)


def test_run_label_names_strategy_privacy_dropout():
    config = recorded_result().config
    assert tables.run_label(config) == (
        "classes:1, 2 clients, mlp, 2 rounds of 1 epoch, fedprox:mu=0.1, "
        "privacy server:noise=0.5,clip=5,delta=1e-05, dropout 0.2"
    )


# --------------------------------------------------------------- in a browser

ROUNDS_LAB = {"clients": 3, "rounds": 2, "epochs": 1, "strategy": "fedprox:mu=0.1",
              "privacy": "server:noise=0.5,clip=5"}  # fmt: skip
ROUND_VIEWS = [
    "Test accuracy per digit, round by round",
    "Client drift, round by round",
    "Communication: model weights to and from the clients",
    "Privacy spent: epsilon after each round (delta 1e-05)",
]


def test_lab_round_views_in_the_browser(mnist_dir, tmp_path):
    from playwright.sync_api import expect

    started = time.monotonic()
    out = tmp_path / "cli.json"
    lab = ROUNDS_LAB
    reference = cli_beside_the_page(
        mnist_dir, out, "--phase", "all", "--clients", str(lab["clients"]),
        "--rounds", str(lab["rounds"]), "--epochs", str(lab["epochs"]),
        "--strategy", lab["strategy"], "--privacy", lab["privacy"], "--no-cache",
    )  # fmt: skip
    query = (
        f"?num-clients={lab['clients']}&num-server-rounds={lab['rounds']}"
        f"&local-epochs={lab['epochs']}&strategy={quote(lab['strategy'])}"
        f"&privacy={quote(lab['privacy'])}"
    )
    try:
        with serve_app(mnist_dir, tmp_path) as server, chromium() as browser:
            url = server.url + query
            page, settings = open_page(browser, url, "The lab's settings", width=1400)
            strategy = settings.locator("select:has(option:text-is('fedmedian'))")
            privacy = settings.locator("select:has(option:text-is('server'))")
            expect(strategy).to_have_value("fedprox")  # from the address
            expect(privacy).to_have_value("server")
            strategy.select_option("fedmedian")  # no privacy with the median
            refused = page.get_by_text("These lab settings cannot run:")
            expect(refused).to_be_visible(timeout=30_000)
            expect(page.get_by_text("needs fedavg or fedprox")).to_be_visible()
            strategy.select_option("fedprox")
            expect(refused).to_have_count(0, timeout=30_000)
            settings.get_by_role("button", name="Run the lab").click()

            rounds_heading = page.get_by_role("heading", name="Inside the rounds")
            expect(rounds_heading).to_be_visible(timeout=120_000)
            views = page.locator("[data-cell-name]", has=rounds_heading)
            renderers = views.locator("marimo-mime-renderer[data-mime*='vegalite']")
            expect(renderers).to_have_count(len(ROUND_VIEWS))
            titles = []
            for index in range(len(ROUND_VIEWS)):
                chart = renderers.nth(index)
                marks = chart.locator(".vega-embed .marks")
                expect(marks).to_have_count(1, timeout=30_000)
                box = marks.bounding_box()
                assert box and box["width"] > 100 and box["height"] > 100
                spec = chart_spec(chart)
                titles.append(spec["title"])
            results = page.locator(
                "[data-cell-name]", has=page.get_by_role("heading", name="The lab's results")
            )
            shown = {}
            for row in results.locator("tr").all():
                measure, _, value = row.inner_text().partition("\t")
                shown[measure.strip()] = value.strip()
            page.wait_for_timeout(300)
            url = page.url
            expect_no_errors(page)
            if os.environ.get("FEDCORE_SCREENSHOT"):
                rounds_heading.scroll_into_view_if_needed()
                views.screenshot(path=os.environ["FEDCORE_SCREENSHOT"])
        assert "Traceback" not in server.log_text()
        log, _ = reference.communicate(timeout=120)
    finally:
        if reference.poll() is None:
            reference.kill()
            reference.wait()
    assert reference.returncode == 0, log

    assert titles == ROUND_VIEWS
    assert "strategy=fedprox" in url and "privacy=server" in url  # the lab's link
    cli = json.loads(out.read_text())
    epsilon = cli["federated"]["history"][-1]["epsilon"]
    assert epsilon is not None and epsilon > 0
    assert shown["Privacy spent: epsilon (delta 1e-05)"] == f"{epsilon:.2f}", shown
    # (the accuracy is not compared: Flower's DP wrapper draws its noise unseeded)
    assert shown["Federated (fedprox:mu=0.1), after 2 rounds"].endswith("%")
    assert shown["Communication, all rounds"].endswith(f"{2 * 2 * lab['clients']} messages")
    print(f"round views test: {time.monotonic() - started:.1f} s; page: {shown}")


@pytest.fixture(autouse=True)
def _no_telemetry(monkeypatch):
    monkeypatch.setenv("FLWR_TELEMETRY_ENABLED", "0")
