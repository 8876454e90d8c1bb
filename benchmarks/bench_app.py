"""How fast the app answers, measured in a real browser (Debian's chromium),
for the app before the run engine and now, in the same run.

  python benchmarks/bench_app.py --data-dir ../shared/data/mnist [--screenshots docs/screenshots]

For each app (`before`: a `git worktree` of BEFORE_COMMIT; `now`: this checkout),
`marimo run app.py` with an empty cache, default settings (the reference
experiment):

1. cold: time from opening the page to the last section drawn (isolated +
   federated training, the engine or Ray starting too).
2. back to a computed setting: local epochs 10 -> 9 (computed), then 10, 9,
   10, ... (each computed already); time from the key press to the page drawn
   (target < 1 s), REPEATS times each way.
3. one client's excluded digits changed (client 1 stops excluding 7); time to
   the updated page, and how many isolated models were trained (read from the
   cache folder: each newly trained model adds one entry).
4. the reference experiment not computed yet, the engine warm: the seed
   changed to 43 (the same work as the reference); time from the change to
   the last chart drawn (target <= 9 s), and the run's phase times from the
   server's log (now only; target for the federated phase <= 6.5 s).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

from fedcore.deploy.network import free_port

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]  # fmt: skip
BEFORE_COMMIT = "e539a95"  # the last commit before the run engine
DONE = "On the digits a client never saw"
CHARTS = 12  # Vega-Lite charts on the page at the default settings (2 the privacy chapter's)
LONG = 600_000  # ms
REPEATS = 5  # times back and forth between two computed settings
# The page is drawn when it shows the expected settings, no cell is queued or
# running (marimo marks those outputs), no progress bar is left, and every
# chart has painted its marks. Checked every 25 ms in the page itself, so the
# times below are not rounded up to Playwright's retry intervals.
DRAWN = """([expected, charts]) => {
  const nodes = [];
  const walk = (root) => root.querySelectorAll("*").forEach((node) => {
    nodes.push(node);
    if (node.shadowRoot) walk(node.shadowRoot);
  });
  walk(document);
  const roots = [document.body, ...nodes.filter((n) => n.shadowRoot).map((n) => n.shadowRoot)];
  const text = roots.map((root) => root.textContent).join(" ").replace(/\s+/g, " ");
  const busy = nodes.some((n) =>
    n.classList.contains("marimo-output-stale") ||
    n.classList.contains("marimo-output-loading") ||
    n.getAttribute("role") === "progressbar");
  const painted = nodes.filter((n) =>
    n.classList.contains("vega-embed") && n.querySelector("canvas.marks, svg.marks")).length;
  const live = text.includes("each client alone:");  // the run's progress view
  return expected.every((t) => text.includes(t)) && !busy && !live && painted >= charts;
}"""


def epochs_text(epochs: int) -> str:
    return f"train locally for {epochs} epoch(s) per round"


def wait_drawn(page: Page, *expected: str) -> None:
    page.wait_for_function(DRAWN, arg=[list(expected), CHARTS], polling=25, timeout=LONG)


def isolated_entries(cache: Path) -> int:
    folder = cache / "results" / "isolated"
    return len(list(folder.glob("*.pt"))) if folder.exists() else 0


def shoot(page: Page, folder: Path) -> None:
    """The page in four parts, as a visitor scrolls through it."""
    folder.mkdir(parents=True, exist_ok=True)
    sections = {
        "app-top.png": "The setup",
        "app-isolated.png": "2. Each client alone",
        "app-federated.png": "3. Together, with Flower",
        "app-story.png": "4. Alone vs together",
    }
    for name, heading in sections.items():
        page.get_by_role("heading", name=heading).scroll_into_view_if_needed()
        page.get_by_role("heading", name=heading).evaluate("e => e.scrollIntoView()")
        page.wait_for_timeout(800)
        page.screenshot(path=str(folder / name))


def measure(app_dir: Path, data_dir: str, screenshots: str | None) -> dict:
    port = free_port()
    report: dict[str, float | int | list[float] | str] = {}
    with tempfile.TemporaryDirectory() as cache_dir:
        cache = Path(cache_dir)
        env = os.environ | {"FEDCORE_DATA_DIR": data_dir, "FEDCORE_CACHE_DIR": cache_dir,
                            "PYTHONPATH": str(app_dir)}  # fmt: skip
        log = cache / "server.log"
        with log.open("w") as out:
            server = subprocess.Popen(
                [str(BIN / "marimo"), "run", "app.py", "--headless", "--no-token",
                 "--port", str(port)],
                cwd=app_dir, env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS
                )
                page = browser.new_page(viewport={"width": 1280, "height": 1000})
                time.sleep(2)
                start = time.perf_counter()
                page.goto(f"http://127.0.0.1:{port}/")
                wait_drawn(page, epochs_text(10), DONE)
                report["cold_first_render_s"] = time.perf_counter() - start
                print(f"  cold first render: {report['cold_first_render_s']:.1f} s", flush=True)
                if screenshots:
                    shoot(page, Path(screenshots))

                epochs = page.get_by_role("slider").nth(2)
                epochs.focus()
                page.keyboard.press("ArrowLeft")
                wait_drawn(page, epochs_text(9), DONE)
                times = []
                for key, value in [("ArrowRight", 10), ("ArrowLeft", 9)] * REPEATS:
                    epochs.focus()
                    start = time.perf_counter()
                    page.keyboard.press(key)
                    wait_drawn(page, epochs_text(value), DONE)
                    times.append(time.perf_counter() - start)
                page.keyboard.press("ArrowRight")
                wait_drawn(page, epochs_text(10), DONE)
                report["same_setting_again_s"] = times
                print("  back to a computed setting: " + ", ".join(f"{t:.2f}" for t in times)
                      + " s", flush=True)  # fmt: skip

                before = isolated_entries(cache)
                page.get_by_label("Client 1 never sees").click()
                start = time.perf_counter()
                page.get_by_role("option", name="7", exact=True).click()
                page.keyboard.press("Escape")
                wait_drawn(page, "Client 1 (never saw 1, 3)", epochs_text(10), DONE)
                report["one_client_changed_s"] = time.perf_counter() - start
                report["retrained_isolated_models"] = isolated_entries(cache) - before
                print(f"  one client's digits changed: {report['one_client_changed_s']:.1f} s, "
                      f"isolated models retrained: {report['retrained_isolated_models']}",
                      flush=True)  # fmt: skip

                # Back to the reference exclusions, then a seed nobody computed.
                page.get_by_label("Client 1 never sees").click()
                page.get_by_role("option", name="7", exact=True).click()
                page.keyboard.press("Escape")
                wait_drawn(page, "Client 1 (never saw 1, 3, 7)", epochs_text(10), DONE)
                page.get_by_text("Advanced: optimiser").click()
                seed = page.locator('input[aria-label*=">Seed<"]')
                seed.fill("43")
                start = time.perf_counter()
                seed.press("Enter")
                wait_drawn(page, "shuffled (seed 43)", epochs_text(10), DONE)
                report["uncomputed_reference_warm_s"] = time.perf_counter() - start
                print(f"  the reference, not computed yet (seed 43): "
                      f"{report['uncomputed_reference_warm_s']:.1f} s", flush=True)  # fmt: skip
                browser.close()
        finally:
            server.terminate()
            server.wait(timeout=30)
        runs = re.findall(
            r"run \d+ done after [^\n]*--seed 43|run \d+ done after .*", log.read_text()
        )
        if runs:
            report["engine_last_run"] = runs[-1]
            print(f"  engine log: {runs[-1]}", flush=True)
    return report


@contextlib.contextmanager
def worktree(commit: str):
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "before"
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), commit],
                       cwd=ROOT, check=True, capture_output=True)  # fmt: skip
        try:
            yield tree
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT,
                           capture_output=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--screenshots", help="also save screenshots of the default page here")
    parser.add_argument("--now-only", action="store_true", help="skip the app before the engine")
    parser.add_argument(
        "--before", default=BEFORE_COMMIT, metavar="COMMIT",
        help=f"the commit to compare with (default {BEFORE_COMMIT}, the last before the engine)",
    )  # fmt: skip
    args = parser.parse_args()
    data_dir = str(Path(args.data_dir).resolve())
    report = {}
    if not args.now_only:
        print(f"before ({args.before}):", flush=True)
        with worktree(args.before) as tree:
            report["before"] = measure(tree, data_dir, None)
    print("now:", flush=True)
    report["now"] = measure(ROOT, data_dir, args.screenshots)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
