"""`marimo run app.py` on a free port for a script's browser (screenshots, benchmarks):
in a process group of its own, stopped by its id when the `with` ends, also on failure;
and `screenshot_page`, the command line and browser page the screenshot scripts share."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

from fedcore.deploy.network import free_port, wait_until_listening

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]  # fmt: skip


@contextlib.contextmanager
def served_app(data_dir: str, cache_dir: str) -> Iterator[str]:
    """The page's address, once the server listens; MNIST from `data_dir`, an empty cache."""
    port = free_port()
    env = os.environ | {"FEDCORE_DATA_DIR": data_dir, "FEDCORE_CACHE_DIR": cache_dir}
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "marimo"), "run", "app.py", "--headless",
         "--no-token", "--port", str(port)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        process_group=0,
    )  # fmt: skip
    try:
        alive = lambda: server.poll() is None  # noqa: E731
        wait_until_listening(None, port, alive, time.monotonic() + 120, what="the marimo server")
        yield f"http://127.0.0.1:{port}/"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        server.wait()


@contextlib.contextmanager
def screenshot_page(description: str, height: int) -> Iterator[tuple[Page, str, Path]]:
    """A screenshot script's command line (`--data-dir`, `--out`) read, and a chromium
    page 1400 pixels wide on a served app with an empty cache: `(page, url, out)`."""
    parser = argparse.ArgumentParser(description=description)
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
        yield browser.new_page(viewport={"width": 1400, "height": height}), url, out
        browser.close()
