"""Reports that open anywhere: the HTML report offline, its numbers, the figure files,
and bad input."""

import gzip
import json
import re
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from fedcore.experiment.results import ExperimentResult
from fedcore.report import charts, tables
from fedcore.report.figures import PNG_SCALE, run_charts
from fedcore.report.html import report_html
from fedcore.report.text import format_table

from .conftest import REPO
from .test_app import chromium

# A real run of 1000 rounds (`tests/data/README.md` says how it was made), compact JSON
REAL_1000 = REPO / "tests" / "data" / "real-1000-rounds.json.gz"


def report_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fedcore", "report", *args],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@pytest.fixture(scope="module")
def made(small_run, tmp_path_factory):
    """The small run's results file, its report and its figures."""
    folder = tmp_path_factory.mktemp("report")
    results = small_run[0].save(folder / "small.json")
    done = report_cli(str(results), "-o", str(folder / "report.html"), "--figures",
                      str(folder / "figures"))  # fmt: skip
    assert done.returncode == 0, done.stderr
    return folder, small_run[0]


def test_the_report_opens_offline_and_paints_every_chart(made):
    folder, result = made
    report = folder / "report.html"
    assert report.stat().st_size < 3_000_000
    with chromium() as browser:
        page = browser.new_page()
        asked = []

        def block(route):
            if not route.request.url.startswith("file:"):
                asked.append(route.request.url)
                return route.abort()
            return route.continue_()

        page.route("**/*", block)
        page.goto(report.as_uri())
        figures = page.locator("figure[data-chart]")
        assert figures.count() == len(run_charts(result)) == 8
        for i in range(figures.count()):
            marks = figures.nth(i).locator("svg.marks path, svg.marks rect")
            assert marks.count() > 5, figures.nth(i).get_attribute("data-chart")
        assert page.get_by_role("heading", name="Alone vs together").count() == 1
        assert asked == []  # nothing fetched


def test_the_reports_numbers_are_the_results_files(made):
    folder, _ = made
    page = (folder / "report.html").read_text()
    data = json.loads((folder / "small.json").read_text())
    rows = dict(re.findall(r'<tr data-model="([^"]+)">(.*?)</tr>', page))
    values = {
        m: [float(v) for v in re.findall(r'data-value="([^"]+)"', r)] for m, r in rows.items()
    }
    subsets = ["1,3,7", "2,5,8", "4,6,9"]
    for client in data["isolated"]:
        expected = [client["accuracy"], *[client["subset_accuracy"][s] for s in subsets]]
        assert values[f"client {client['client']}"] == expected
    federated = data["federated"]
    assert values["federated"] == [
        federated["accuracy"],
        *[federated["subset_accuracy"][s] for s in subsets],
    ]
    rounds = ", ".join(f"{h['accuracy']:.1%}" for h in federated["history"])
    assert f"(0 = before training): {rounds}." in page


def test_figures_are_valid_images_of_the_expected_size(made):
    folder, result = made
    names = sorted(run_charts(result))
    files = sorted(p.name for p in (folder / "figures").iterdir())
    assert files == sorted([f"{n}.png" for n in names] + [f"{n}.svg" for n in names])
    for name in names:
        svg = ET.parse(folder / "figures" / f"{name}.svg").getroot()
        assert svg.tag.endswith("svg")
        width, height = int(float(svg.get("width"))), int(float(svg.get("height")))
        png = (folder / "figures" / f"{name}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
        png_width, png_height = struct.unpack(">II", png[16:24])
        assert (png_width, png_height) == (width * PNG_SCALE, height * PNG_SCALE), name


def test_two_runs_side_by_side(made, engine, small_config, tmp_path):
    folder, _ = made
    other = engine.submit(small_config.replace(seed=7)).result().save(tmp_path / "seed7.json")
    out = tmp_path / "both.html"
    done = report_cli(str(folder / "small.json"), str(other), "-o", str(out))
    assert done.returncode == 0, done.stderr
    page = out.read_text()
    assert "Runs side by side" in page and "<td>seed</td><td>42</td><td>7</td>" in page
    assert page.count('data-chart="runs-accuracy-per-round"') == 1
    assert page.count("<section data-run=") == 2
    assert '<th data-run="small">small</th><th data-run="seed7">seed7</th>' in page
    finals = re.search(r'<tr data-model="Federated" data-test-set="all digits">(.*?)</tr>', page)
    assert [float(v) for v in re.findall(r'data-value="([^"]+)"', finals.group(1))] == [
        ExperimentResult.load(folder / "small.json").federated.accuracy,
        ExperimentResult.load(other).federated.accuracy,
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"config": {"num_clients": 3', "not a fedcore results file"),
        ('{"hello": "world"}', "not a fedcore results file"),
        (None, "cannot be read"),
    ],
)
def test_a_bad_or_foreign_file_is_one_line(tmp_path, content, message):
    path = tmp_path / "results.json"
    if content is not None:
        path.write_text(content)
    done = report_cli(str(path), "-o", str(tmp_path / "report.html"))
    assert done.returncode == 1
    line = done.stderr.strip()
    assert "\n" not in line and line.startswith(f"fedcore: report: {path}: {message}"), line
    assert not (tmp_path / "report.html").exists()


def test_a_crafted_file_is_the_one_line_of_its_first_problem(made, tmp_path):
    data = json.loads((made[0] / "small.json").read_text())
    data["federated"]["accuracy"] = "high"
    path = tmp_path / "r.json"
    path.write_text(json.dumps(data))
    done = report_cli(str(path), "-o", str(tmp_path / "report.html"))
    assert done.returncode == 1
    assert done.stderr.strip() == f"fedcore: report: {path}: federated.accuracy: not a number"


def chart_rows(spec: dict) -> list[int]:
    """The rows of every dataset a chart's spec holds."""
    return [len(rows) for rows in spec.get("datasets", {}).values()]


def test_a_real_1000_round_run_makes_its_report_and_every_chart():
    result = ExperimentResult.read(REAL_1000.name, gzip.decompress(REAL_1000.read_bytes()))
    history = result.federated.history
    assert result.config.num_rounds == 1000 and len(history) == 1001
    # one SGD step each (batch 30000, 1 epoch): the isolated models did not learn; the
    # federated one, a thousand steps later, did
    assert result.diverged == [
        "isolated models of clients 1, 2: did not learn: about chance on the digits trained on"
    ]
    # as they are, these tables are more rows than altair draws (its MaxRowsError)
    assert len(tables.digit_rounds(history)) > charts.MAX_ROWS

    from fedcore.app import views  # the page's own charts of a run

    built = {name: build() for name, build in run_charts(result).items()}
    built |= {f"page {i}": chart for i, chart in enumerate(views.round_views(result))}
    built |= {f"lab {i}": chart for i, chart in enumerate(views.lab_charts(result))}
    two = [("a", result), ("b", result)]
    built["runs side by side"] = charts.runs_history_chart(tables.runs_history(two))
    thinned = []
    for name, chart in built.items():
        spec = chart.to_dict()
        assert all(rows <= charts.MAX_ROWS for rows in chart_rows(spec)), name
        if isinstance(spec.get("title"), dict):
            thinned.append(spec["title"]["subtitle"])
    assert "101 of 1001 rounds shown (one in 10)" in thinned
    assert "60 of 1001 rounds shown (one in 17)" in thinned  # the digit heatmap
    page = report_html(two)
    assert page.count("<figure data-chart=") == 1 + 2 * len(run_charts(result))
    assert page.count("<svg") == page.count("<figure data-chart=")
    assert "101 of 1001 rounds shown" in page


def test_a_run_that_diverges_says_so_in_its_results_the_cli_and_the_report(
    engine, small_config, small_run, tmp_path
):
    assert small_run[0].diverged == []  # the reference learns
    result = engine.submit(small_config.replace(learning_rate=10.0), use_cache=False).result()
    # lr 10: the losses stay finite, but every model predicts one digit
    assert result.diverged == [
        "isolated models of clients 1, 2, 3: did not learn: about chance on the digits trained on",
        f"federated: did not learn: {result.federated.accuracy:.1%} on the digits it trained "
        "on, about chance (10%)",
        f"centralized: did not learn: {result.centralized.accuracy:.1%} on the digits it "
        "trained on, about chance (10%)",
    ]
    path = result.save(tmp_path / "lr10.json")
    assert json.loads(path.read_text())["diverged"] == result.diverged
    printed = format_table(result).splitlines()
    assert [line for line in printed if line.startswith("warning: ")][:3] == [
        f"warning: {line}" for line in result.diverged
    ]
    done = report_cli(str(path), "-o", str(tmp_path / "report.html"))
    assert done.returncode == 0, done.stderr
    page = (tmp_path / "report.html").read_text()
    assert "<div class='diverged'><p><b>This run diverged or did not learn</b>" in page
    assert all(line in page for line in result.diverged)

    from fedcore.app import views

    callout = views.diverged_callout(result).text
    assert "This run diverged or did not learn" in callout and "centralized: did not" in callout
    assert views.diverged_callout(small_run[0]) is None
