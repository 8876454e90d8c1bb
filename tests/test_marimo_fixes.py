"""`fedcore.app.marimo_fixes`: two controls of one `mo.ui.dictionary` changed while the
kernel is busy both reach it (marimo 0.25.2 alone keeps the last one only)."""

import os
import re
import subprocess
import time
from pathlib import Path

import pytest
from marimo._runtime.commands import UpdateUIElementCommand

from fedcore.app.marimo_fixes import merge_ui_commands
from fedcore.deploy.network import free_port, wait_until_listening

from .test_app import BIN, chromium

PAGE = Path(__file__).parent / "data" / "two_sliders.py"


def command(**values):
    return UpdateUIElementCommand(object_ids=list(values), values=list(values.values()))


def test_each_control_goes_on_alone_at_its_last_value_in_order():
    merged = merge_ui_commands([command(a=1), command(b=10), command(a=10)])
    assert [(c.object_ids, c.values) for c in merged] == [(["b"], [10]), (["a"], [10])]
    assert merge_ui_commands([]) == []


def kernel_saw(fixed: bool, folder: Path) -> list[str]:
    """What the kernel of `PAGE` printed after both sliders moved to 10 while it was busy."""
    port, log = free_port(), folder / f"server-{fixed}.log"
    env = os.environ | {"FEDCORE_MARIMO_FIX": "1" if fixed else "0"}
    with log.open("w") as out:
        server = subprocess.Popen(
            [str(BIN / "marimo"), "run", str(PAGE), "--headless", "--no-token", "--port",
             str(port)], env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_until_listening(None, port, lambda: server.poll() is None, time.monotonic() + 60,
                             what="the marimo server")  # fmt: skip
        with chromium() as browser:
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{port}/")
            deadline = time.monotonic() + 60
            while "kernel sees" not in log.read_text():  # the first run of the busy cell
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
            sliders = page.get_by_role("slider")
            sliders.nth(0).focus()
            page.keyboard.press("ArrowRight")  # a = 1: the kernel is busy for 3 s
            time.sleep(0.5)
            page.keyboard.press("End")  # a = 10, queued
            sliders.nth(1).focus()
            page.keyboard.press("End")  # b = 10, queued beside it
            deadline = time.monotonic() + 60
            while len(re.findall("kernel sees", log.read_text())) < 3 + fixed:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
            time.sleep(4)  # a run more would show here
    finally:
        server.terminate()
        server.wait(timeout=30)
    return re.findall(r"kernel sees (\{.*\})", log.read_text())


@pytest.mark.parametrize("fixed", [False, True])
def test_two_controls_changed_while_the_kernel_is_busy(fixed, tmp_path):
    seen = kernel_saw(fixed, tmp_path)
    if fixed:
        assert seen[-1] == "{'a': 10, 'b': 10}", seen
    else:  # marimo's own merge: the change of a is lost, while the page shows 10
        assert seen[-1] == "{'a': 1, 'b': 10}", seen
