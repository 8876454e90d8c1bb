"""How much slower a run gets when other processes keep the cores busy.

  python benchmarks/bench_under_load.py --data-dir ../shared/data/mnist [--hogs 2]

Runs `python -m fedcore run --phase all` (3 clients, 1 round of 1 epoch, no
cache) three times, each in a fresh process: on the idle machine (the baseline);
beside `--hogs` busy loops at normal priority in another session; and beside as
many in this script's own session. Linux shares the CPU between sessions first
(autogroup; under systemd, between cgroups) and by nice only within one: the
third case is what the `marimo run` server and its sessions' kernels are to the
engine it starts, which met its nice-19 pool head-on until the engine got a
session of its own. Prints each run's wall time and the phase timings its results
JSON holds (`load`, `isolated`, `federated`, `centralized-wait`, `total`), so the
phase that waits on the engine's low-priority pool shows by name.

The busy loops and the run are this script's children: each is stopped by its
process id (the run, by its process group: its engine's workers with it), also
on failure, Ctrl-C or a run past `--limit` seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUSY_LOOP = "while True: pass"
SMALL = ["--phase", "all", "--rounds", "1", "--epochs", "1", "--no-cache"]


def timed_run(data_dir: str, out: Path, limit: float) -> tuple[float, dict[str, float]]:
    """One CLI run in a process group of its own: its wall time and phase timings."""
    command = [sys.executable, "-m", "fedcore", "run", *SMALL, "--data-dir", data_dir,
               "--out", str(out)]  # fmt: skip
    start = time.monotonic()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, process_group=0)
    try:
        process.wait(timeout=limit)
    finally:
        if process.poll() is None:  # past the limit, or interrupted: the whole group
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    wall = time.monotonic() - start
    if process.returncode != 0:
        raise SystemExit(f"the run failed (exit code {process.returncode}) after {wall:.0f} s")
    return wall, json.loads(out.read_text())["timings"]


def show(label: str, wall: float, timings: dict[str, float]) -> None:
    phases = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in timings.items())
    print(f"{label}: {wall:.1f} s wall; {phases}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("FEDCORE_DATA_DIR"))
    parser.add_argument(
        "--hogs", type=int, default=os.cpu_count() or 1, help="busy loops (default: one per core)"
    )
    parser.add_argument("--limit", type=float, default=900, help="seconds a run may take")
    args = parser.parse_args()
    if not args.data_dir:
        parser.error("--data-dir (or FEDCORE_DATA_DIR) names the folder of the MNIST files")
    with tempfile.TemporaryDirectory() as folder:
        show("idle", *timed_run(args.data_dir, Path(folder) / "idle.json", args.limit))
        for where, own_session in (("another session", True), ("the run's session", False)):
            hogs = [
                subprocess.Popen([sys.executable, "-c", BUSY_LOOP], start_new_session=own_session)
                for _ in range(args.hogs)
            ]
            try:
                label = f"beside {args.hogs} busy loops in {where}"
                show(label, *timed_run(args.data_dir, Path(folder) / "loaded.json", args.limit))
            finally:
                for hog in hogs:  # our own children, not reaped yet: their ids are theirs
                    hog.kill()
                for hog in hogs:
                    hog.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
