"""Runs side by side: the tables the app's "Compare runs" and the HTML report share, on
hand-made results, and the page in a real browser (Debian's chromium): the lab's
settings from the page's address, a lab run and a results file pinned together."""

import io
import json
import os
import re
import time
from dataclasses import replace
from pathlib import Path

import pytest

from fedcore.experiment.config import ExperimentConfig
from fedcore.experiment.specs import default_exclusions
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

# ------------------------------------------------------------ the shared tables


def two_runs():
    first = tiny_result()
    second = replace(
        tiny_result(rounds_to_target=2),
        config=first.config.replace(split="iid", num_rounds=3, seed=7),
        centralized=None,
    )
    return [("first", first), ("second", second)]


def test_differing_settings_names_only_what_differs():
    a = ExperimentConfig(num_clients=4, local_epochs=1, excluded_digits=default_exclusions(4))
    b = a.replace(split="dirichlet:0.1", num_rounds=5, learning_rate=0.05)
    runs = [("a", replace(tiny_result(), config=a)), ("b", replace(tiny_result(), config=b))]
    differ = tables.differing_settings(runs)
    assert list(differ.columns) == ["setting", "label", "a", "b"]
    rows = {row.setting: (row.label, row.a, row.b) for row in differ.itertuples()}
    assert rows == {
        "split": ("Data split", "exclude", "dirichlet:0.1"),
        # the exclude split's exclusions against none: the other splits have none
        "excluded_digits": (
            "Which digits does each client not have?",
            "1,3,7;2,5,8;4,6,9;1,3,7",
            tables.NO_EXCLUSIONS,
        ),
        "num_rounds": ("Federated rounds", "3", "5"),
        "learning_rate": ("Learning rate", "0.01", "0.05"),
    }
    same = tables.differing_settings([("a", runs[0][1]), ("again", runs[0][1])])
    assert same.empty and list(same.columns) == ["setting", "label", "a", "again"]


def test_runs_final_accuracies_and_history():
    runs = two_runs()
    finals = tables.runs_final_accuracies(runs)
    assert list(finals.columns) == ["model", "test_set", "first", "second"]
    rows = {(r.model, r.test_set): (r.first, r.second) for r in finals.itertuples()}
    assert rows == {
        (tables.FEDERATED, tables.ALL_DIGITS): (0.8, 0.8),
        (tables.FEDERATED, "digits 1"): (0.7, 0.7),
        (tables.CENTRALIZED, tables.ALL_DIGITS): (0.9, None),  # the second has none
        (tables.ISOLATED_MEAN, tables.ALL_DIGITS): (0.25, 0.25),
    }
    history = tables.runs_history(runs)
    assert history.groupby("run", sort=False).size().to_dict() == {"first": 3, "second": 3}
    assert tables.runs_history([("none", replace(runs[0][1], federated=None))]).empty
    spec = charts.runs_history_chart(history).to_dict()
    assert spec["mark"]["type"] == "line" and spec["encoding"]["color"]["field"] == "run"
    assert spec["encoding"]["color"]["sort"] is None  # the runs' order, not the alphabet


def test_a_session_keeps_its_latest_runs_within_the_caps(monkeypatch):
    from fedcore.app import compare

    base = tiny_result()
    runs = [replace(base, config=base.config.replace(seed=seed)) for seed in range(25)]
    kept: list = []
    for result in runs:
        kept = compare.kept_with(kept, "lab", result)
    assert kept is compare.kept_with(kept, "lab", runs[-1])  # the same run is not kept twice
    assert len(kept) == compare.MAX_KEPT_RUNS == 20
    assert [result for _, result in kept] == runs[5:]  # the oldest let go
    assert [name.partition(":")[0] for name in kept.dropped] == [f"lab {i}" for i in range(1, 6)]
    assert kept[-1][0].startswith("lab 25: ")  # numbered on, never reused
    label = compare.pin_select(kept, [], lambda names: None).text
    assert "keeps the latest 20 runs" in label and "5 older let go: lab 1, lab 2" in label
    assert "let go" not in compare.pin_select(kept[:3], [], lambda names: None).text

    size = compare.held_bytes(base)
    assert 1000 < size < 100_000  # a few hundred numbers
    monkeypatch.setattr(compare, "MAX_KEPT_BYTES", 3 * size)
    few: list = []
    for result in runs[:5]:
        few = compare.kept_with(few, "file", result, file="r.json")
    assert [result for _, result in few] == runs[2:5] and len(few.dropped) == 2
    assert few[0][0].startswith("file 3 (r.json): ")


def test_an_upload_over_the_limit_is_refused_before_it_is_parsed():
    from fedcore.app import compare
    from fedcore.experiment.results import ResultsError

    too_big = b"[" * (compare.MAX_UPLOAD_BYTES + 1)  # parsed, it would be a RecursionError
    with pytest.raises(ResultsError) as refused:
        compare.read_results_file("big.json", too_big)
    assert str(refused.value) == (
        "big.json: 20.0 MB, more than the 20 MB a results file may be on this page "
        "(make its report with `python -m fedcore report big.json`)"
    )
    assert compare.results_file_input()._args.args["max_size"] == compare.MAX_UPLOAD_BYTES
    # a file within the limit is checked as the CLI's report checks it: the same line
    with pytest.raises(ResultsError, match=r"^r\.json: federated\.accuracy: not a number$"):
        data = json.loads(Path(__file__).parent.joinpath("data", "golden-lab.json").read_text())
        data["federated"]["accuracy"] = "high"
        compare.read_results_file("r.json", json.dumps(data).encode())


def test_the_compare_table_says_which_runs_diverged():
    from fedcore.app import compare

    first, second = two_runs()
    nan_loss = replace(second[1].federated, loss=float("nan"))
    diverged = replace(
        second[1],
        federated=replace(nan_loss, history=[*nan_loss.history[:2],
                                             replace(nan_loss.history[2], loss=float("nan"))]),
    )  # fmt: skip
    table = compare.final_accuracies_table([first, ("second", diverged)]).text
    assert "Diverged or did not learn" in table
    assert re.search(r"Diverged or did not learn</td>\s*<td[^>]*>no</td>\s*<td[^>]*>yes", table)


def test_run_label():
    config = ExperimentConfig(num_clients=10, split="dirichlet:0.1", num_rounds=3, local_epochs=1)
    assert tables.run_label(config) == "dirichlet:0.1, 10 clients, mlp, 3 rounds of 1 epoch"


# --------------------------------------------------------------- in a browser

# The lab's settings in the page's address (run-config keys), and one bad value.
ADDRESS = "?split=classes:2&num-clients=4&num-server-rounds=2&local-epochs=1&seed=abc"
FILE_RUN = ["--split", "iid", "--clients", "3", "--rounds", "2", "--epochs", "1"]


SHOT = "compare-runs.png"


def table_rows(section) -> list[list[str]]:
    """The text of every row of every table in `section`, header rows too."""
    return [
        [cell.strip() for cell in row.locator("th, td").all_inner_texts()]
        for row in section.locator("tr").all()
    ]


def pixels_of(png: bytes, color: str) -> int:
    """How many pixels of a screenshot are (nearly) `color` (`"#4c78a8"`)."""
    from PIL import Image

    target = [int(color[i : i + 2], 16) for i in (1, 3, 5)]
    data = Image.open(io.BytesIO(png)).convert("RGB").tobytes()
    return sum(
        all(abs(a - b) < 24 for a, b in zip(pixel, target, strict=True))
        for pixel in zip(data[0::3], data[1::3], data[2::3], strict=True)
    )


def screenshot(page, section, path: Path) -> None:
    """The comparison part, from its heading to the end of `section`."""
    heading = page.get_by_role("heading", name="Compare runs")
    heading.evaluate("element => element.scrollIntoView({block: 'start'})")
    page.wait_for_timeout(500)
    top, bottom = heading.bounding_box(), section.bounding_box()
    page.screenshot(
        path=path,
        clip={
            "x": bottom["x"],
            "y": top["y"] - 16,
            "width": bottom["width"],
            "height": bottom["y"] + bottom["height"] - top["y"] + 32,
        },
    )


def test_compare_a_lab_run_and_a_results_file(mnist_dir, tmp_path):
    from playwright.sync_api import expect

    started = time.monotonic()
    results = tmp_path / "cli.json"
    bad = tmp_path / "bad.json"
    bad.write_text('{"hello": "world"}')
    reference = cli_beside_the_page(mnist_dir, results, *FILE_RUN, "--phase", "federated")
    try:
        with serve_app(mnist_dir, tmp_path) as server, chromium() as browser:
            # (a) The address's settings are the lab's controls' values.
            url = server.url + ADDRESS
            page, lab = open_page(browser, url, "The lab's settings", height=2400)
            split = lab.locator("select:has(option:text-is('classes'))")
            expect(split).to_have_value("classes")
            expect(lab.locator('input[aria-label*="digits per client"]')).to_have_value("2")
            sliders = lab.get_by_role("slider")  # clients, rounds, epochs
            for index, value in enumerate(("4", "2", "1")):
                expect(sliders.nth(index)).to_have_attribute("aria-valuenow", value)
            expect(lab.get_by_text("Some settings in the page's address")).to_be_visible()
            expect(lab.get_by_text("seed=abc")).to_be_visible()
            lab.get_by_role("button", name="Run the lab").click()
            expect(page.get_by_role("heading", name="The lab's results")).to_be_visible(
                timeout=120_000
            )
            # The run wrote its settings in the address; the bad seed is gone.
            expect(page).to_have_url(re.compile(r"[?&]num-clients=4(&|$)"))
            address = page.url

            # (b) A results file and a bad file, loaded through the file input.
            log, _ = reference.communicate(timeout=120)
            assert reference.returncode == 0, log
            expect(page.get_by_role("heading", name="Compare runs")).to_be_visible()
            page.locator("input[type=file]").first.set_input_files([results, bad])
            refused = page.get_by_text("Not loaded: bad.json: not a fedcore results file")
            expect(refused).to_be_visible(timeout=30_000)

            # Pin the lab's run and the file's: the overlay, the tables.
            pins = page.locator("marimo-multiselect").filter(has_text="Pinned runs")
            expect(pins).to_have_attribute("data-options", re.compile(r"classes:2.*cli\.json"))
            pins.locator("button").click()
            options = page.get_by_role("option").filter(has_text=" clients, ")
            names = [name.strip() for name in options.all_inner_texts()]
            lab_name = next(n for n in names if n.startswith("lab ") and "classes:2" in n)
            file_name = next(n for n in names if "(cli.json): iid" in n)
            for name in (lab_name, file_name):
                page.get_by_role("option", name=name, exact=True).click()
            page.keyboard.press("Escape")
            differ = page.get_by_role("heading", name="Settings that differ")
            expect(differ).to_be_visible(timeout=30_000)
            section = page.locator("[data-cell-name]", has=differ)
            chart = section.locator("marimo-mime-renderer[data-mime*='vegalite']")
            expect(chart.locator(".vega-embed .marks")).to_have_count(1, timeout=30_000)
            box = chart.locator(".vega-embed .marks").bounding_box()
            assert box and box["width"] > 100 and box["height"] > 100
            painted = chart.locator(".vega-embed .marks").screenshot()
            spec = chart_spec(chart)
            rows = {cells[0]: cells[1:] for cells in table_rows(section)}
            expect_no_errors(page)
            if os.environ.get("FEDCORE_SCREENSHOTS"):  # docs/screenshots/compare-runs.png
                screenshot(page, section, Path(os.environ["FEDCORE_SCREENSHOTS"]) / SHOT)
        assert "Traceback" not in server.log_text()
    finally:
        if reference.poll() is None:
            reference.kill()
            reference.wait()

    for written in ("split=classes%3A2", "num-server-rounds=2", "local-epochs=1", "seed=42"):
        assert written in address, address  # the bad seed's default, now in the address
    assert lab_name.endswith(": classes:2, 4 clients, mlp, 2 rounds of 1 epoch")
    assert file_name.endswith(" (cli.json): iid, 3 clients, mlp, 2 rounds of 1 epoch")
    assert spec["title"] == "Global accuracy per round, run by run"
    drawn = next(iter(spec["datasets"].values()))
    assert sorted({row["run"] for row in drawn}) == [file_name, lab_name]
    # one line each, in the order they came: the palette's first two colours, painted
    assert [row["run"] for row in drawn][:: len(drawn) // 2] == [lab_name, file_name]
    assert spec["encoding"]["color"]["sort"] is None
    first, second = charts.PALETTE[:2]
    assert pixels_of(painted, first) > 200 and pixels_of(painted, second) > 200
    cli = json.loads(results.read_text())
    assert [row["accuracy"] for row in drawn if row["run"] == file_name] == [
        h["accuracy"] for h in cli["federated"]["history"]
    ]
    # the settings that differ, one column per run (short names)
    assert rows["setting"] == [lab_name.partition(": ")[0], file_name.partition(": ")[0]]
    assert rows["Data split (split)"] == ["classes:2", "iid"]
    assert rows["Clients (num_clients)"] == ["4", "3"]
    assert "Federated rounds (num_rounds)" not in rows  # both ran 2
    federated = cli["federated"]["accuracy"]
    assert rows["Federated, all digits"][1] == f"{federated:.1%}"
    assert rows["Centralized (all data pooled), all digits"][1] == "-"  # phase federated
    print(f"compare test: {time.monotonic() - started:.1f} s")


# The rows of a reproduced McMahan et al. Table 1 loaded on the page: the 2NN's IID and
# non-IID rows (B=10, C=0.1) with chosen figures, and one row whose target was missed.
REPRODUCED_ROWS = "2nn,iid,B=10,C=0.1;2nn,non-iid,B=10,C=0.1;2nn,iid,B=10,C=0.2"
MEASURED_ROUNDS = (83.0, 370.0, None)


def reproduced_table_csv(name: str) -> str:
    """`TABLE.csv` as `python -m fedcore reproduce` writes it (`summary_row`, `to_csv`),
    for `MEASURED_ROUNDS` at one learning rate and seed; its paper column then doctored
    (a file that says the paper said 100, 200, 300): the page takes fedcore's figures."""
    from fedcore.engine.sweep import to_csv
    from fedcore.reproduction.reproduce import Measured, make_plan, summary_row

    plan = make_plan(name, rows=REPRODUCED_ROWS)
    lines = [
        summary_row(plan, Measured(row, {plan.learning_rates[1]: [figure]}))
        for row, figure in zip(plan.rows, MEASURED_ROUNDS, strict=True)
    ]
    assert [line["paper"] for line in lines] == [87, 664, 77]  # published.toml's
    assert [line["measured"] for line in lines] == list(MEASURED_ROUNDS)
    doctored = [
        {**line, "paper": claimed, "ratio": None if line["measured"] is None else 0.5}
        for line, claimed in zip(lines, (100, 200, 300), strict=True)
    ]
    return to_csv(doctored)


def test_compare_a_reproduced_table_against_the_papers_figures(mnist_dir, tmp_path):
    from playwright.sync_api import expect

    from fedcore.reproduction.tables import tables as known_tables

    started = time.monotonic()
    name = "mcmahan2017-table1"
    good = tmp_path / f"{name}.csv"
    good.write_text(reproduced_table_csv(name))
    unknown = tmp_path / "bad.csv"  # a table fedcore does not know, else the same file
    unknown.write_text(good.read_text().replace(f"{name},", "mcmahan2017-table9,"))
    garbage = tmp_path / "garbage.csv"
    garbage.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff not a table")
    refusals = [
        f"bad.csv: unknown table 'mcmahan2017-table9' (known: {', '.join(known_tables())})",
        "garbage.csv: not a CSV table ('utf-8' codec can't decode byte 0x89 in position 0: "
        "invalid start byte)",
    ]
    with serve_app(mnist_dir, tmp_path) as server, chromium() as browser:
        page, loader = open_page(
            browser, server.url, "A paper reproduced", height=2400, timeout=300_000
        )
        loader.locator("input[type=file]").set_input_files(good)

        # The view: the table's name, its chart, its rows as text.
        shown = page.locator("[data-cell-name]").filter(has=page.locator("strong", has_text=name))
        expect(shown).to_have_count(1, timeout=300_000)
        view = page.locator(f"[data-cell-id='{shown.get_attribute('data-cell-id')}']")
        chart = view.locator("marimo-mime-renderer[data-mime*='vegalite']")
        marks = chart.locator(".vega-embed .marks")
        expect(marks).to_have_count(1, timeout=30_000)
        box = marks.bounding_box()
        assert box and box["width"] > 100 and box["height"] > 50
        painted = marks.screenshot()
        spec = chart_spec(chart)
        rows = table_rows(view)
        headline = view.locator("strong", has_text=name).locator("xpath=..").inner_text()

        # Bad files: one line each in place of the table, never a traceback.
        shown_refusals = []
        for bad in (unknown, garbage):
            loader.locator("input[type=file]").set_input_files(bad)
            refused = view.get_by_text(f"Not loaded: {bad.name}: ")
            expect(refused).to_be_visible(timeout=30_000)
            expect(chart).to_have_count(0)
            expect(view.locator("table")).to_have_count(0)
            shown_refusals.append(refused.inner_text().strip())
        expect(page.get_by_text("Traceback")).to_have_count(0)
        expect(page.locator(".marimo-error, [data-testid='marimo-error']")).to_have_count(0)
    assert "Traceback" not in server.log_text()

    assert headline.startswith(f"{name}: McMahan, Moore, Ramage")
    # the paper's figures are published.toml's (87, 664, 77), not the file's (100, 200, 300)
    assert rows == [
        ["row", "paper", "measured", "measured / paper"],
        ["2nn,iid,E=1,B=10,C=0.1", "87", "83", "0.95"],
        ["2nn,non-iid,E=1,B=10,C=0.1", "664", "370", "0.56"],
        ["2nn,iid,E=1,B=10,C=0.2", "77", "—", ""],  # target missed: no figure
    ]
    assert spec["mark"]["type"] == "point"
    assert spec["encoding"]["x"]["field"] == "value" and spec["encoding"]["y"]["field"] == "row"
    assert spec["encoding"]["x"]["scale"]["type"] == "log"
    assert spec["encoding"]["color"]["field"] == "kind"
    drawn = next(iter(spec["datasets"].values()))
    assert [(point["row"], point["kind"], point["value"]) for point in drawn] == [
        ("2nn,iid,E=1,B=10,C=0.1", "paper", 87),
        ("2nn,iid,E=1,B=10,C=0.1", "measured", 83),
        ("2nn,non-iid,E=1,B=10,C=0.1", "paper", 664),
        ("2nn,non-iid,E=1,B=10,C=0.1", "measured", 370),
        ("2nn,iid,E=1,B=10,C=0.2", "paper", 77),  # and no measured point
    ]
    # painted: the measured points' blue (vega-lite's 0.7 opacity for points, on white)
    # beyond the ~100 pixels of the legend's square
    blue = spec["encoding"]["color"]["scale"]["range"][1]
    on_white = "#" + "".join(
        f"{round(0.7 * int(blue[i : i + 2], 16) + 0.3 * 255):02x}" for i in (1, 3, 5)
    )
    assert pixels_of(painted, on_white) > 150
    assert shown_refusals == [f"Not loaded: {line}" for line in refusals]
    print(f"reproduced table test: {time.monotonic() - started:.1f} s")
