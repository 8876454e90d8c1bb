"""The marimo app: headless end to end, and in a real browser (Debian's chromium)."""

import contextlib
import json
import os
import re
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from fedcore.deploy.network import free_port, wait_until_listening
from fedcore.deploy.processes import processes_with_env, stop_processes

from .conftest import REPO

BIN = Path(sys.executable).parent
CHROMIUM = "/usr/bin/chromium"
SMALL = ["--", "--rounds", "1", "--epochs", "1"]


def app_env(mnist_dir: Path, marker: str) -> dict:
    return os.environ | {"FEDCORE_DATA_DIR": str(mnist_dir), "FEDCORE_TEST_RUN": marker}


def test_export_html_has_every_chart(mnist_dir, tmp_path):
    marker = uuid.uuid4().hex
    out = tmp_path / "report.html"
    try:
        done = subprocess.run(
            [str(BIN / "marimo"), "export", "html", "app.py", "-o", str(out), *SMALL],
            cwd=REPO,
            env=app_env(mnist_dir, marker),
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        stop_processes(processes_with_env("FEDCORE_TEST_RUN", marker))
    assert done.returncode == 0, done.stdout + done.stderr
    page = out.read_text()
    # label counts, samples, isolated loss, accuracy, confusion, history,
    # client losses, global confusion, story, final accuracy
    assert len(re.findall(r"application/vnd\.vegalite\.v\d\+json", page)) >= 10
    for section in (
        "1-the-split",
        "2-each-client-alone",
        "3-together-with-flower",
        "4-alone-vs-together",
    ):
        assert f'id=\\"{section}\\"' in page, section  # rendered headings, not code
    assert "vnd.marimo+error" not in page  # no cell raised
    assert "The run failed:</" not in page and "cannot run:</" not in page


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def serve_app(mnist_dir: Path, folder: Path, session_ttl: int | None = None, app_args: tuple = ()):
    """`marimo run app.py` with small settings and its own cache; every process it
    started stopped afterwards, by process id. `session_ttl`: seconds marimo keeps a
    session after its tab closed (its own default: 120); `app_args`: more flags for
    the app (`("--max-run-minutes", "60")`)."""
    marker = uuid.uuid4().hex
    port = free_port()
    env = app_env(mnist_dir, marker) | {"FEDCORE_CACHE_DIR": str(folder / "cache")}
    log = folder / "server.log"
    ttl = [] if session_ttl is None else ["--session-ttl", str(session_ttl)]
    with log.open("w") as out:
        server = subprocess.Popen(
            [str(BIN / "marimo"), "run", "app.py", "--headless", "--no-token", "--port",
             str(port), *ttl, *SMALL, *app_args],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_until_listening(
            None,
            port,
            lambda: server.poll() is None,
            time.monotonic() + 60,
            what="the marimo server",
        )
        yield Server(f"http://127.0.0.1:{port}/", server, log)
    finally:
        stop_processes([*processes_with_env("FEDCORE_TEST_RUN", marker)])
        server.wait(timeout=30)


@pytest.fixture
def running_app(mnist_dir, tmp_path):
    with serve_app(mnist_dir, tmp_path) as server:
        yield server.url


def cli_beside_the_page(mnist_dir: Path, out: Path, *flags: str) -> subprocess.Popen:
    """`python -m fedcore run FLAGS --out OUT`, started beside a page under test: the
    numbers that page must show."""
    return subprocess.Popen(
        [sys.executable, "-m", "fedcore", "run", *flags, "--data-dir", str(mnist_dir),
         "--out", str(out)],
        cwd=REPO, env=os.environ | {"FLWR_TELEMETRY_ENABLED": "0"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def chart_spec(renderer) -> dict:
    """The Vega-Lite spec of a chart in the page (marimo stores it as JSON, at times in JSON)."""
    spec = json.loads(renderer.get_attribute("data-data"))
    return json.loads(spec) if isinstance(spec, str) else spec


@contextlib.contextmanager
def chromium():
    """Debian's chromium under playwright, closed afterwards, also on failure."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is missing: apt-get install chromium (.ci/run does)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"],
        )  # fmt: skip
        try:
            yield browser
        finally:
            browser.close()


def open_page(browser, url: str, heading: str, *, width: int = 1280, height: int = 3000,
              timeout: int = 120_000):  # fmt: skip
    """A new page on `url` once its heading `heading` is drawn: the page and the
    notebook cell that holds the heading. Waited for in `expect`, not in `goto`
    (only until the server answers), so a slow first load meets `timeout`, not
    playwright's 30 s for a page load."""
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": width, "height": height})
    page.goto(url, wait_until="commit")
    title = page.get_by_role("heading", name=heading)
    expect(title).to_be_visible(timeout=timeout)
    return page, page.locator("[data-cell-name]", has=title)


def expect_no_errors(page) -> None:
    """No refusal, failed run or marimo error anywhere in the page."""
    from playwright.sync_api import expect

    for problem in ("cannot run", "could not be loaded", "The run failed"):
        expect(page.get_by_text(problem)).to_have_count(0)
    expect(page.locator(".marimo-error, [data-testid='marimo-error']")).to_have_count(0)


def test_browser_changes_a_control_and_the_page_follows(running_app):
    from playwright.sync_api import expect

    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 4000})
        page.goto(running_app)
        story = page.get_by_text("On the digits a client never saw")
        expect(story).to_be_visible(timeout=300_000)
        expect(page.get_by_text("train locally for 1 epoch(s) per round")).to_be_visible()

        # Share: the results JSON and the offline report, made when clicked.
        with page.expect_download() as download:
            page.get_by_text("Results (JSON)").click()
        results = json.loads(Path(download.value.path()).read_text())
        assert results["config"]["local_epochs"] == 1 and results["federated"]["history"]
        with page.expect_download() as download:
            page.get_by_text("Report (HTML)").click()
        report = Path(download.value.path()).read_text()
        # 8 charts of the story, 2 of what the server learned from it
        assert report.count("<figure data-chart=") == 10 and "<script" not in report

        # Move the "Local epochs" slider one step with the keyboard.
        slider = page.get_by_role("slider").nth(2)
        slider.focus()
        page.keyboard.press("ArrowRight")
        expect(page.get_by_text("train locally for 2 epoch(s) per round")).to_be_visible(
            timeout=300_000
        )
        expect(story).to_be_visible(timeout=300_000)
        expect_no_errors(page)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rounds", "10001"], "num_rounds must be between 1 and 10000, got 10001"),
        (["--exclude", "1,3,7;2,5,8"], "excluded digits are given for 2 clients, but there are 3"),
        (["--epoch", "1"], "unknown setting(s) --epoch 1"),
        (["--data-dir", "/no/such/mnist"], "/no/such/mnist: data folder not found"),
        (["--max-run-minutes", "soon"], "--max-run-minutes must be a number of minutes above 0"),
    ],
)
def test_bad_input_is_a_callout_in_the_page(mnist_dir, tmp_path, args, message):
    out = tmp_path / "report.html"
    done = subprocess.run(
        [str(BIN / "marimo"), "export", "html", "app.py", "-o", str(out), "--", *args],
        cwd=REPO, env=app_env(mnist_dir, uuid.uuid4().hex), capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    page = out.read_text()
    assert message in page, done.stderr[-2000:]
    assert "vnd.marimo+error" not in page  # a callout, not a traceback
    assert "vnd.vegalite" not in page  # and nothing computed from bad settings
