"""`marimo run app.py` on a free port for a script's browser (screenshots, benchmarks):
in a process group of its own, stopped by its id when the `with` ends, also on failure."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

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
