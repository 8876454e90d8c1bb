"""A class on one `marimo run` server: many visitors at once, one asking for far
more than the server allows, one uploading a large file.

  python benchmarks/bench_classroom.py --data-dir ../shared/data/mnist [--sessions 30]

The server runs the page with small settings (`-- --rounds 1 --epochs 1`) and an
empty cache of its own. Then, in one Debian chromium, one browser context per
visitor (each its own marimo session):

1. every visitor opens the page and waits for it to be drawn (they all ask for
   the same first run, which the engine computes once);
2. the server's memory is read (the server process, and its whole process tree);
3. every visitor changes the seed to one nobody computed (one run each), all
   within a second, while one more visitor opens an address that asks for far
   more than the budget (`?num-clients=100&num-server-rounds=1000&local-epochs=20
   &model=cnn`) and clicks "Run the lab", and another uploads a large file to
   Compare (19 MB of JSON that is no results file: the browser refuses files over
   the page's 20 MB itself, so this is the largest the server parses);
4. each visitor's wait, from its change to its page showing its own run's
   numbers, the refusal line each of the two others got, and the memory again.

Waits are read by polling every page in turn, so each is late by at most one
pass over the pages (printed). Every process started here is stopped by its id.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from playwright.sync_api import Locator, Page, sync_playwright

from fedcore.deploy.network import free_port, wait_until_listening

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]  # fmt: skip
SMALL = ["--", "--rounds", "1", "--epochs", "1"]
DONE = "On the digits a client never saw"
OVER_BUDGET = "?num-clients=100&num-server-rounds=1000&local-epochs=20&model=cnn"
REFUSED_RUN = "This run was not queued"
REFUSED_UPLOAD = "Not loaded:"
LONG = 900  # s: the most any step may take before the benchmark gives up


def memory_mb(pid: int) -> tuple[float, float]:
    """(the server process's RSS, its whole tree's PSS: shared pages counted once), in MB."""
    server = psutil.Process(pid)
    tree = [server, *server.children(recursive=True)]
    pss = 0
    for process in tree:
        with contextlib.suppress(psutil.Error):  # a worker that ended meanwhile
            pss += process.memory_full_info().pss
    return server.memory_info().rss / 2**20, pss / 2**20


def visible(page: Page, text: str) -> bool:
    return page.get_by_text(text).first.is_visible()


def wait_all(pages: dict[str, Page], texts: dict[str, list[str]], start: float) -> dict:
    """Seconds from `start` until each page shows all its texts, polling the pages in
    turn; and the longest pass over them (how late each figure can be)."""
    waits: dict[str, float] = {}
    longest_pass = 0.0
    while len(waits) < len(pages):
        if time.perf_counter() - start > LONG:
            missing = sorted(set(pages) - set(waits))
            raise SystemExit(f"bench_classroom: not drawn after {LONG} s: {missing}")
        began = time.perf_counter()
        for name, page in pages.items():
            if name not in waits and all(visible(page, text) for text in texts[name]):
                waits[name] = time.perf_counter() - start
        longest_pass = max(longest_pass, time.perf_counter() - began)
        time.sleep(0.05)
    return {"waits": waits, "poll_pass_s": longest_pass}


def open_visitor(browser, url: str) -> Page:
    page = browser.new_context(viewport={"width": 1280, "height": 3000}).new_page()
    page.goto(url, timeout=LONG * 1000)
    return page


def set_seed(page: Page, seed: int) -> None:
    page.get_by_text("Advanced: optimiser").click()
    field = page.locator('input[aria-label*=">Seed<"]')
    field.fill(str(seed))
    field.press("Enter")


def lab_button(page: Page) -> Locator:
    """The lab's "Run the lab" button (the page draws its cell once the lab is set)."""
    heading = page.get_by_role("heading", name="The lab's settings")
    return page.locator("[data-cell-name]", has=heading).get_by_role("button", name="Run the lab")


def classroom(sessions: int, data_dir: str, upload_mb: int) -> dict:
    report: dict = {"sessions": sessions, "upload_mb": upload_mb}
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        env = os.environ | {"FEDCORE_DATA_DIR": data_dir, "FEDCORE_CACHE_DIR": f"{tmp}/cache",
                            "FLWR_TELEMETRY_ENABLED": "0"}  # fmt: skip
        log = Path(tmp) / "server.log"
        with log.open("w") as out:
            server = subprocess.Popen(
                [str(BIN / "marimo"), "run", "app.py", "--headless", "--no-token", "--port",
                 str(port), *SMALL],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        try:
            url = f"http://127.0.0.1:{port}/"
            wait_until_listening(
                None,
                port,
                lambda: server.poll() is None,
                time.monotonic() + 60,
                what="the marimo server",
            )
            report["memory_idle_mb"] = memory_mb(server.pid)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS
                )
                start = time.perf_counter()
                pages = {f"visitor {i + 1}": open_visitor(browser, url) for i in range(sessions)}
                first = wait_all(pages, {name: [DONE] for name in pages}, start)
                report["first_page_s"] = sorted(first["waits"].values())
                report["memory_drawn_mb"] = memory_mb(server.pid)
                print(f"  {sessions} pages drawn after {max(first['waits'].values()):.1f} s; "
                      f"memory {report['memory_drawn_mb']}", flush=True)  # fmt: skip

                greedy = open_visitor(browser, url + OVER_BUDGET)  # drawn before the clock
                uploader = open_visitor(browser, url)
                lab_button(greedy).wait_for(timeout=LONG * 1000)
                upload = uploader.locator("input[type=file]").first
                upload.wait_for(state="attached", timeout=LONG * 1000)
                big = Path(tmp) / "big.json"  # a file: Playwright takes buffers up to 50 MB
                big.write_bytes(b"[" + b"0," * (upload_mb * 2**19) + b"0]")

                seeds = {name: 1000 + i for i, name in enumerate(pages)}
                start = time.perf_counter()
                for name, page in pages.items():
                    set_seed(page, seeds[name])
                lab_button(greedy).click()
                upload.set_input_files(big)
                report["changes_made_in_s"] = time.perf_counter() - start
                texts = {name: [f"shuffled (seed {seeds[name]})", DONE] for name in pages}
                texts |= {"over budget": [REFUSED_RUN], "upload": [REFUSED_UPLOAD]}
                pages |= {"over budget": greedy, "upload": uploader}
                changed = wait_all(pages, texts, start)
                waits = changed["waits"]
                visitors = [waits[name] for name in seeds]
                report["wait_s"] = {"min": min(visitors), "median": statistics.median(visitors),
                                    "max": max(visitors)}  # fmt: skip
                report["poll_pass_s"] = changed["poll_pass_s"]
                report["refused_run_s"] = waits["over budget"]
                report["refused_upload_s"] = waits["upload"]
                report["refused_run_line"] = (
                    greedy.get_by_text(REFUSED_RUN).first.inner_text().split("\n")[0]
                )
                report["refused_upload_line"] = (
                    uploader.get_by_text(REFUSED_UPLOAD).first.locator("xpath=..").inner_text()
                )
                report["memory_after_mb"] = memory_mb(server.pid)
                report["server_up"] = server.poll() is None
                report["tracebacks_in_log"] = log.read_text().count("Traceback")
                browser.close()
        finally:
            os.killpg(server.pid, 15)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, 9)
                server.wait()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--sessions", type=int, default=30)
    parser.add_argument("--upload-mb", type=int, default=19)
    args = parser.parse_args()
    report = classroom(args.sessions, str(Path(args.data_dir).resolve()), args.upload_mb)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
