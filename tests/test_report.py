"""Reports that open anywhere: the HTML report offline, its numbers, the figure files,
and bad input."""

import json
import re
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from fedcore.experiment.results import ExperimentResult
from fedcore.report.figures import PNG_SCALE, run_charts

from .conftest import REPO
from .test_app import launch_chromium


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
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
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
        finally:
            browser.close()


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
