"""Screenshots of the privacy chapter, "What the server learns", from a real `marimo run`
page in Debian's chromium.

  python scripts/privacy_screenshots.py --data-dir ../shared/data/mnist [--out docs/screenshots]

Opens the page, waits for the story's run, and saves what the server learned from it
(`privacy-story.png`); then runs the attack with a batch of 1 image, 1 batch a round
(`privacy-batch-1.png`), and again with SecAgg+, and saves the defenses side by side
(`privacy-defenses.png`).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import Page, sync_playwright
from served_app import CHROMIUM_ARGS, served_app

LONG = 900_000  # ms


def cell_with(page: Page, text: str):
    return page.locator("[data-cell-name]").filter(has=page.get_by_text(text, exact=False)).last


def choose(page: Page, option: str, among: str) -> None:
    """Pick `option` in the chapter's dropdown that also offers `among`."""
    select = page.locator(f"select:has(option:text-is('{among}'))").last
    select.select_option(option)


def run_attack(page: Page, before: int) -> None:
    """Press "Run the attack" and wait for the run's summary line (`before` of them shown)."""
    page.get_by_role("button", name="Run the attack").click()
    summary = page.get_by_text("the global model reaches")
    summary.nth(before).wait_for(timeout=LONG) if before else summary.first.wait_for(timeout=LONG)
    page.wait_for_timeout(3000)  # the charts paint


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("FEDCORE_DATA_DIR"))
    parser.add_argument("--out", default="docs/screenshots")
    args = parser.parse_args()
    if not args.data_dir:
        parser.error("--data-dir (or FEDCORE_DATA_DIR) names the folder of the MNIST files")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory() as cache,
        served_app(args.data_dir, cache) as url,
        sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1200})
        page.goto(url, wait_until="commit")
        story = page.get_by_role("heading", name="In the story's run")
        story.wait_for(timeout=LONG)
        page.wait_for_timeout(3000)
        page.locator("[data-cell-name]").filter(has=story).last.screenshot(
            path=str(out / "privacy-story.png")
        )
        choose(page, "1", among="64")
        choose(page, "1 batch", among="all its images")
        run_attack(page, 0)
        cell_with(page, "the global model reaches").screenshot(
            path=str(out / "privacy-batch-1.png")
        )
        choose(page, "secagg", among="central-dp")
        run_attack(page, 0)
        table = cell_with(page, "The defenses side by side")
        table.wait_for(timeout=LONG)
        page.wait_for_timeout(2000)
        table.screenshot(path=str(out / "privacy-defenses.png"))
        browser.close()
    print(f"screenshots in {out}/: privacy-story.png, privacy-batch-1.png, privacy-defenses.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
