"""The privacy chapter in a real browser (Debian's chromium): what the server learned
from the story's run, and a run of the attack with one image a round, whose rebuilt
images are the clients' own."""

import re

from .test_app import chromium, open_page, serve_app

LONG = 600_000  # ms


def chapter_cell(page, text: str):
    return page.locator("[data-cell-name]").filter(has=page.get_by_text(text)).last


def test_the_chapter_shows_what_the_server_learned(mnist_dir, tmp_path):
    from playwright.sync_api import expect

    with serve_app(mnist_dir, tmp_path) as server, chromium() as browser:
        page, story = open_page(browser, server.url, "In the story's run", timeout=LONG)
        table = story.last
        for client, missing in (
            ("Client 1", "1,3,7"),
            ("Client 2", "2,5,8"),
            ("Client 3", "4,6,9"),
        ):
            row = table.get_by_role("row").filter(has_text=client)
            expect(row).to_contain_text(missing)  # holds no; the server infers no
            expect(row).to_contain_text("yes")  # named exactly
        page.locator("select:has(option:text-is('64'))").last.select_option("1")
        page.locator("select:has(option:text-is('all its images'))").last.select_option("1 batch")
        page.get_by_role("button", name="Run the attack").click()
        summary = page.get_by_text("Defense none: the global model reaches")
        expect(summary).to_be_visible(timeout=LONG)
        result = chapter_cell(page, "Defense none: the global model reaches")
        rows = result.get_by_role("row").filter(has_text=re.compile(r"Client \d"))
        expect(rows).to_have_count(3)
        for index in range(3):  # one image a round, rebuilt to the float's precision
            expect(rows.nth(index)).to_contain_text("100")
