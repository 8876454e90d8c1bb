"""Many people at once on one `marimo run` server (real browser, separate contexts):
each gets its own numbers, identical requests are computed once, Stop, and a
killed engine; the server stays up throughout."""

import json
import re
import signal
import subprocess
import sys
import time

import psutil
import pytest

from .conftest import REPO
from .test_app import launch_chromium, serve_app

DONE = "On the digits a client never saw"
LONG = 180_000  # ms


@pytest.fixture(scope="module")
def server(mnist_dir, tmp_path_factory):
    with serve_app(mnist_dir, tmp_path_factory.mktemp("sessions")) as server:
        yield server


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        yield browser
        browser.close()


def open_session(browser, server):
    """A new browser context (its own marimo session) showing the finished page."""
    from playwright.sync_api import expect

    page = browser.new_context(viewport={"width": 1280, "height": 3000}).new_page()
    page.goto(server.url)
    expect(page.get_by_text(DONE)).to_be_visible(timeout=LONG)
    page.get_by_text("Advanced: optimiser").click()
    return page


def set_seed(page, seed: int) -> None:
    field = page.locator('input[aria-label*=">Seed<"]')
    field.fill(str(seed))
    field.press("Enter")


def cli_numbers(mnist_dir, tmp_path, seed: int) -> list[str]:
    """What `python -m fedcore run` computes for the small settings and `seed`,
    as the page writes it."""
    out = tmp_path / f"seed{seed}.json"
    done = subprocess.run(
        [sys.executable, "-m", "fedcore", "run", "--rounds", "1", "--epochs", "1", "--seed",
         str(seed), "--data-dir", str(mnist_dir), "--no-cache", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    rounds = ", ".join(f"{h['accuracy']:.1%}" for h in result["federated"]["history"])
    alone = [f"{c['accuracy']:.1%} on all test digits" for c in result["isolated"]]
    return [f"(0 = before training): {rounds}.", *alone]


def wait_for_numbers(page, seed: int, numbers: list[str]) -> None:
    from playwright.sync_api import expect

    expect(page.get_by_text(f"shuffled (seed {seed})")).to_be_visible(timeout=LONG)
    for text in numbers:
        expect(page.get_by_text(text).first).to_be_visible(timeout=LONG)
    expect(page.get_by_text(DONE)).to_be_visible(timeout=LONG)


def runs_started(server, seed: int) -> int:
    return len(re.findall(rf"run \d+ started: story .* --seed {seed}\n", server.log_text()))


@pytest.mark.parametrize("sessions", [2, 4])
def test_sessions_train_at_once_and_each_gets_its_own_numbers(
    server, browser, mnist_dir, tmp_path, sessions
):
    seeds = [100 * sessions + i for i in range(sessions)]
    expected = {seed: cli_numbers(mnist_dir, tmp_path, seed) for seed in seeds}
    pages = [open_session(browser, server) for _ in seeds]
    changed = {}
    for page, seed in zip(pages, seeds, strict=True):  # one after the other, at once
        set_seed(page, seed)
        changed[seed] = time.monotonic()
    for page, seed in zip(pages, seeds, strict=True):
        wait_for_numbers(page, seed, expected[seed])
        print(f"{sessions} sessions: seed {seed} drawn {time.monotonic() - changed[seed]:.1f} s")
        assert server.process.poll() is None, "the server went down"
    for seed in seeds:
        assert runs_started(server, seed) == 1
    for page in pages:
        page.context.close()
    assert "Traceback" not in server.log_text()


def test_one_setting_asked_by_two_sessions_is_computed_once(server, browser):
    from playwright.sync_api import expect

    first, second = open_session(browser, server), open_session(browser, server)
    set_seed(first, 77)
    set_seed(second, 77)
    for page in (first, second):
        expect(page.get_by_text("shuffled (seed 77)")).to_be_visible(timeout=LONG)
        expect(page.get_by_text("(0 = before training): ")).to_be_visible(timeout=LONG)
        expect(page.get_by_text(DONE)).to_be_visible(timeout=LONG)
    assert runs_started(server, 77) == 1
    first.context.close()
    second.context.close()


def engine_processes(server) -> set[int]:
    return {p.pid for p in psutil.Process(server.process.pid).children(recursive=True)}


ROUND = re.compile(r"together, with Flower: round \d+/50")


def start_a_long_run(page, seed: int) -> None:
    """20 rounds of 20 epochs: still running when the test acts on it."""
    from playwright.sync_api import expect

    set_seed(page, seed)
    expect(page.get_by_text(f"shuffled (seed {seed})")).to_be_visible(timeout=LONG)
    for slider in (1, 2):  # federated rounds, local epochs
        page.get_by_role("slider").nth(slider).focus()
        page.keyboard.press("End")
    expect(page.get_by_text(ROUND)).to_be_visible(timeout=LONG)


def test_stop_ends_the_run_and_the_next_one_works(server, browser):
    from playwright.sync_api import expect

    page = open_session(browser, server)
    before = engine_processes(server)
    start_a_long_run(page, 91)
    pressed = time.monotonic()
    page.get_by_role("button", name="Stop").click()
    expect(page.get_by_text("Stopped.")).to_be_visible(timeout=10_000)
    stopped = time.monotonic() - pressed
    time.sleep(5)
    after = engine_processes(server)
    print(f"stopped {stopped:.2f} s after the click; processes before {sorted(before)}, "
          f"5 s after {sorted(after)}")  # fmt: skip
    assert stopped < 2.0
    assert after == before  # the run started no process, and left none
    assert re.search(r"run \d+ stopped after", server.log_text())
    page.get_by_role("button", name="Run again").click()
    expect(page.get_by_text(ROUND)).to_be_visible(timeout=LONG)
    page.get_by_role("button", name="Stop").click()
    expect(page.get_by_text("Stopped.")).to_be_visible(timeout=10_000)
    page.context.close()


def test_a_killed_engine_is_one_line_and_the_next_run_works(server, browser):
    from playwright.sync_api import expect

    page = open_session(browser, server)
    start_a_long_run(page, 92)
    engine = next(
        p
        for p in psutil.Process(server.process.pid).children()
        if "fedcore.engine.service" in " ".join(p.cmdline())
    )
    engine.send_signal(signal.SIGKILL)
    failure = page.get_by_text("The run failed:")
    expect(failure).to_be_visible(timeout=30_000)
    line = failure.locator("xpath=..").inner_text().strip()
    assert line.startswith("The run failed: the engine process ended unexpectedly (signal 9)")
    assert "\n" not in line
    page.get_by_role("button", name="Run again").click()
    expect(page.get_by_text(ROUND)).to_be_visible(timeout=LONG)
    assert server.process.poll() is None
    page.get_by_role("button", name="Stop").click()
    expect(page.get_by_text("Stopped.")).to_be_visible(timeout=10_000)
    page.context.close()
