"""How fast the app answers, measured in a real browser (Debian's chromium).

  python benchmarks/bench_app.py --data-dir ../shared/data/mnist [--screenshots docs/screenshots]

1. cold: `marimo run app.py` with an empty cache, default settings; time from
   opening the page to the last section drawn (isolated + federated training).
2. back to a computed setting: local epochs 10 -> 9 (computed), then -> 10
   again; time from the key press to the 10-epoch page drawn (target < 1 s).
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

from playwright.sync_api import Page, expect, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]  # fmt: skip
DONE = "On the digits a client never saw"
LONG = 600_000  # ms


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def epochs_text(epochs: int) -> str:
    return f"train locally for {epochs} epoch(s) per round"


def wait_drawn(page: Page, epochs: int) -> None:
    expect(page.get_by_text(epochs_text(epochs))).to_be_visible(timeout=LONG)
    expect(page.get_by_text(DONE)).to_be_visible(timeout=LONG)
    expect(page.get_by_role("progressbar")).to_have_count(0, timeout=LONG)


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
    report: dict[str, float | int] = {}
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
                wait_drawn(page, 10)
                report["cold_first_render_s"] = time.perf_counter() - start
                print(f"cold first render: {report['cold_first_render_s']:.1f} s", flush=True)
                if args.screenshots:
                    shoot(page, Path(args.screenshots))

                epochs = page.get_by_role("slider").nth(2)
                epochs.focus()
                page.keyboard.press("ArrowLeft")
                wait_drawn(page, 9)
                epochs.focus()
                start = time.perf_counter()
                page.keyboard.press("ArrowRight")
                wait_drawn(page, 10)
                report["same_setting_again_s"] = time.perf_counter() - start
                print(
                    f"back to a computed setting: {report['same_setting_again_s']:.2f} s",
                    flush=True,
                )

                before = isolated_entries(cache)
                page.get_by_label("Client 1 never sees").click()
                start = time.perf_counter()
                page.get_by_role("option", name="7", exact=True).click()
                page.keyboard.press("Escape")
                expect(page.get_by_text("Client 1 (never saw 1, 3)")).to_be_visible(timeout=LONG)
                wait_drawn(page, 10)
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
