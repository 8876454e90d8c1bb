"""How fast the app answers, measured in a real browser (Debian's chromium).

  python benchmarks/bench_app.py --data-dir ../shared/data/mnist [--screenshots docs/screenshots]

1. cold: `marimo run app.py` with an empty cache, default settings; time from
   opening the page to the last section drawn (isolated + federated training).
2. back to a computed setting: local epochs 10 -> 9 (computed), then 10, 9,
   10, ... (each computed already); time from the key press to the page drawn
   (target < 1 s), five times each way.
3. one client's excluded digits changed (client 1 stops excluding 7); time to
   the updated page, and how many isolated models were trained (read from the
   cache folder: each newly trained model adds one entry).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]  # fmt: skip
DONE = "On the digits a client never saw"
CHARTS = 10  # Vega-Lite charts on the page at the default settings
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
  return expected.every((t) => text.includes(t)) && !busy && painted >= charts;
}"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--screenshots", help="also save screenshots of the default page here")
    args = parser.parse_args()
    port = free_port()
    report: dict[str, float | int | list[float]] = {}
    with tempfile.TemporaryDirectory() as cache_dir:
        cache = Path(cache_dir)
        env = os.environ | {"FEDCORE_DATA_DIR": str(Path(args.data_dir).resolve()),
                            "FEDCORE_CACHE_DIR": cache_dir}  # fmt: skip
        server = subprocess.Popen(
            [str(BIN / "marimo"), "run", "app.py", "--headless", "--no-token", "--port", str(port)],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
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
                print(f"cold first render: {report['cold_first_render_s']:.1f} s", flush=True)
                if args.screenshots:
                    shoot(page, Path(args.screenshots))

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
                print(
                    "back to a computed setting: " + ", ".join(f"{t:.2f}" for t in times) + " s",
                    flush=True,
                )

                before = isolated_entries(cache)
                page.get_by_label("Client 1 never sees").click()
                start = time.perf_counter()
                page.get_by_role("option", name="7", exact=True).click()
                page.keyboard.press("Escape")
                wait_drawn(page, "Client 1 (never saw 1, 3)", epochs_text(10), DONE)
                report["one_client_changed_s"] = time.perf_counter() - start
                report["retrained_isolated_models"] = isolated_entries(cache) - before
                print(
                    f"one client's digits changed: {report['one_client_changed_s']:.1f} s, "
                    f"isolated models retrained: {report['retrained_isolated_models']}"
                )
                browser.close()
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
