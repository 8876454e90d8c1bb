"""Many people at once on one `marimo run` server (real browser, separate contexts):
each gets its own numbers, identical requests are computed once, Stop is per
visitor, a closed tab's run is released, a run over the budget is refused, and a
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
from .test_app import chromium, serve_app

DONE = "On the digits a client never saw"
LONG = 180_000  # ms
SESSION_TTL = 3  # seconds marimo keeps a session after its tab closed
# The long runs below (50 rounds of 20 epochs) are stopped or killed, never waited
# for: a budget they fit whatever the estimate's calibration.
BUDGET = ("--max-run-minutes", "600")


@pytest.fixture(scope="module")
def server(mnist_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("sessions")
    with serve_app(mnist_dir, folder, session_ttl=SESSION_TTL, app_args=BUDGET) as server:
        yield server


@pytest.fixture(scope="module")
def browser():
    with chromium() as browser:
        yield browser


def new_page(browser, server, query: str = ""):
    """A new browser context (its own marimo session) on the page, not waited for:
    only until the server answers (`commit`), not until the page's scripts have
    loaded, so that sessions opened one after the other open at once (a cold server
    under load took over 30 s to load each, while the earlier ones ran)."""
    page = browser.new_context(viewport={"width": 1280, "height": 3000}).new_page()
    page.goto(server.url + query, wait_until="commit")
    return page


def finished(page):
    """`page` once its story run is drawn, with the advanced controls open."""
    from playwright.sync_api import expect

    expect(page.get_by_text(DONE)).to_be_visible(timeout=LONG)
    page.get_by_text("Advanced: optimiser").click()
    return page


def open_session(browser, server):
    """A new browser context (its own marimo session) showing the finished page."""
    return finished(new_page(browser, server))


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


def story_runs(server, seed: int, flags: str = "") -> list[str]:
    """The ids of the story runs the engine started for `seed` (and `flags`, e.g.
    `--rounds 50`), from the server's log."""
    pattern = rf"run (\d+) started: story .*{flags}.* --seed {seed} \("
    return re.findall(pattern, server.log_text())


def runs_started(server, seed: int) -> int:
    return len(story_runs(server, seed))


def wait_for_log(server, pattern: str) -> re.Match:
    """The first match of `pattern` in the server's log, once it is there."""
    deadline = time.monotonic() + LONG / 1000
    while not (found := re.search(pattern, server.log_text())):
        assert time.monotonic() < deadline, f"never logged: {pattern}"
        time.sleep(0.2)
    return found


def test_sessions_train_at_once_and_each_gets_its_own_numbers(server, browser, mnist_dir, tmp_path):
    """Four sessions opened at once on a cold server."""
    sessions = 4
    seeds = [100 * sessions + i for i in range(sessions)]
    expected = {seed: cli_numbers(mnist_dir, tmp_path, seed) for seed in seeds}
    pages = [finished(page) for page in [new_page(browser, server) for _ in seeds]]
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


def round_of(rounds: int = 50) -> re.Pattern:
    return re.compile(rf"together, with Flower: round \d+/{rounds}")


ROUND = round_of()
LONG_RUN_EPOCHS = re.compile(r"each client alone: \d+/60 epochs")  # 3 clients x 20 epochs


def start_a_long_run(page, seed: int, epochs: bool = True, rounds: int = 50) -> None:
    """50 rounds (the slider's end, or `rounds`, 10 at a time below it) of 20 epochs
    (of 1 epoch without `epochs`): still running when the test acts on it. Waits
    until the page shows that very run under way: the browser may send a slider's
    last value a little after it shows it, and the run before it (50 rounds of 1
    epoch) shows rounds out of 50 too."""
    from playwright.sync_api import expect

    set_seed(page, seed)
    expect(page.get_by_text(f"shuffled (seed {seed})")).to_be_visible(timeout=LONG)
    keys = {1: ["End", *["PageDown"] * ((50 - rounds) // 10)], 2: ["End"]}
    for index in (1, 2) if epochs else (1,):  # federated rounds, local epochs
        slider = page.get_by_role("slider").nth(index)
        slider.focus()
        for key in keys[index]:
            page.keyboard.press(key)
        value = str(rounds) if index == 1 else slider.get_attribute("aria-valuemax")
        expect(slider).to_have_attribute("aria-valuenow", value)
    progress = page.locator("[data-cell-name]").filter(has_text=round_of(rounds))
    if epochs:
        progress = progress.filter(has_text=LONG_RUN_EPOCHS)
    expect(progress).to_be_visible(timeout=LONG)


def test_stop_ends_the_run_and_the_next_one_works(server, browser):
    from playwright.sync_api import expect

    page = open_session(browser, server)
    before = engine_processes(server)
    start_a_long_run(page, 91)
    page.get_by_role("button", name="Stop").click()
    expect(page.get_by_text("Stopped.")).to_be_visible(timeout=10_000)
    (run,) = story_runs(server, 91, "--epochs 20")
    wait_for_log(server, rf"run {run} stopped after")  # nobody else waited: the job ended
    after = engine_processes(server)
    print(f"processes before {sorted(before)}, after {sorted(after)}")
    # The run started no process and left none: the warm engine went on, or, if it
    # had to be killed, nothing of it is left and a new engine stands in its place.
    assert after == before or not after & before
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


def test_one_visitors_stop_leaves_the_others_run_going(server, browser):
    """Two sessions on the same settings share one run: the first one's Stop ends it
    for that page only; the other page's run goes on to its end."""
    from playwright.sync_api import expect

    leaving, staying = open_session(browser, server), open_session(browser, server)
    for page in (leaving, staying):
        start_a_long_run(page, 95, epochs=False, rounds=20)  # of 1 epoch
    leaving.get_by_role("button", name="Stop").click()
    expect(leaving.get_by_text("Stopped.")).to_be_visible(timeout=10_000)
    expect(staying.get_by_text("for 20 round(s)")).to_be_visible(timeout=LONG)
    expect(staying.get_by_text(DONE)).to_be_visible(timeout=LONG)
    (run,) = story_runs(server, 95, "--rounds 20")  # one job for both pages
    assert re.search(rf"run {run} done after", server.log_text())
    expect(leaving.get_by_text("Stopped.")).to_be_visible()
    for page in (leaving, staying):
        page.context.close()


def test_a_closed_tabs_run_is_released(server, browser):
    page = open_session(browser, server)
    start_a_long_run(page, 96)
    (run,) = story_runs(server, 96, "--epochs 20")
    page.context.close()  # marimo ends the session SESSION_TTL seconds later
    wait_for_log(server, rf"run {run} stopped after")


FLOOD = "?num-clients=100&num-server-rounds=1000&local-epochs=20&model=cnn"


def test_a_run_over_the_budget_is_refused_on_the_server(server, browser):
    """The page's address widens the lab's controls; the server refuses the run."""
    from playwright.sync_api import expect

    page = new_page(browser, server, FLOOD)
    heading = page.get_by_role("heading", name="The lab's settings")
    expect(heading).to_be_visible(timeout=LONG)
    will_run = "Run the lab runs: exclude, 100 clients, cnn, 1000 rounds of 20 epochs"
    expect(page.get_by_text(will_run)).to_be_visible(timeout=LONG)
    page.locator("[data-cell-name]", has=heading).get_by_role("button", name="Run the lab").click()
    refused = page.get_by_text("This run was not queued.")
    expect(refused).to_be_visible(timeout=LONG)
    line = refused.locator("xpath=..").inner_text()
    print(line)
    assert "beyond the page's limits (clients up to 20; federated rounds up to 50)" in line
    assert "over this server's budget of 600 min per run" in line
    expect(page.get_by_text("python -m fedcore run --phase all --clients 100")).to_be_visible()
    assert not re.search(r"started: all .*--clients 100", server.log_text())
    page.context.close()
