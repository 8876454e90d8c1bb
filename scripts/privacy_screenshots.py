"""Screenshots of the privacy chapter, "What the server learns", from a real `marimo run`
page in Debian's chromium.

  python scripts/privacy_screenshots.py --data-dir ../shared/data/mnist [--out docs/screenshots]

Opens the page, waits for the story's run, and saves what the server learned from it
(`privacy-story.png`); then runs the attack with a batch of 1 image, 1 batch a round
(`privacy-batch-1.png`), and again with SecAgg+, and saves the defenses side by side
(`privacy-defenses.png`).
"""

from __future__ import annotations

import sys

from playwright.sync_api import Page
from served_app import screenshot_page

LONG = 900_000  # ms


def cell_with(page: Page, text: str):
    return page.locator("[data-cell-name]").filter(has=page.get_by_text(text, exact=False)).last


def choose(page: Page, option: str, among: str) -> None:
    """Pick `option` in the chapter's dropdown that also offers `among`."""
    select = page.locator(f"select:has(option:text-is('{among}'))").last
    select.select_option(option)


def run_attack(page: Page) -> None:
    """Press "Run the attack" and wait for the run's summary line."""
    page.get_by_role("button", name="Run the attack").click()
    page.get_by_text("the global model reaches").first.wait_for(timeout=LONG)
    page.wait_for_timeout(3000)  # the charts paint


def main() -> int:
    with screenshot_page(__doc__.splitlines()[0], 1200) as (page, url, out):
        page.goto(url, wait_until="commit")
        story = page.get_by_role("heading", name="In the story's run")
        story.wait_for(timeout=LONG)
        page.wait_for_timeout(3000)
        page.locator("[data-cell-name]").filter(has=story).last.screenshot(
            path=str(out / "privacy-story.png")
        )
        choose(page, "1", among="64")
        choose(page, "1 batch", among="all its images")
        run_attack(page)
        cell_with(page, "the global model reaches").screenshot(
            path=str(out / "privacy-batch-1.png")
        )
        choose(page, "secagg", among="central-dp")
        run_attack(page)
        table = cell_with(page, "The defenses side by side")
        table.wait_for(timeout=LONG)
        page.wait_for_timeout(2000)
        table.screenshot(path=str(out / "privacy-defenses.png"))
    print(f"screenshots in {out}/: privacy-story.png, privacy-batch-1.png, privacy-defenses.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
