"""Screenshots of the lab's attack views, from a real `marimo run` page in Debian's chromium.

  python scripts/attack_screenshots.py --data-dir ../shared/data/mnist [--out docs/screenshots]

Opens the lab with its settings in the page's address (10 IID clients, 4 rounds
of 1 epoch, MultiKrum f=3 m=5, clients 2, 5 and 9 sending backdoored updates),
presses "Run the lab", and saves the lab's settings and its "Inside the rounds"
views (whom the rule trusted, accuracy and backdoor success per round) as
`lab-attack-settings.png` and `lab-attack-rounds.png` (the whole cell).
"""

from __future__ import annotations

import sys

from served_app import screenshot_page

LAB = ("num-clients=10&split=iid&num-server-rounds=4&local-epochs=1"
       "&strategy=multikrum:f=3,m=5&attack=backdoor:target=0&attackers=2,5,9")  # fmt: skip
LONG = 900_000  # ms


def main() -> int:
    with screenshot_page(__doc__.splitlines()[0], 1000) as (page, url, out):
        page.goto(f"{url}?{LAB}", wait_until="commit")
        settings = page.get_by_role("heading", name="The lab's settings")
        settings.wait_for(timeout=LONG)
        page.get_by_role("button", name="Run the lab").click()
        rounds = page.get_by_role("heading", name="Inside the rounds")
        rounds.wait_for(timeout=LONG)
        settings.evaluate("e => e.scrollIntoView()")
        page.wait_for_timeout(3000)  # the charts paint
        page.screenshot(path=str(out / "lab-attack-settings.png"))
        cell = page.locator("[data-cell-name]").filter(has=rounds).last
        cell.evaluate("e => e.scrollIntoView()")
        page.wait_for_timeout(3000)
        cell.screenshot(path=str(out / "lab-attack-rounds.png"))
    print(f"screenshots in {out}/: lab-attack-settings.png, lab-attack-rounds.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
