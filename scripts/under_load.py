"""Run pytest targets several times in a row while busy loops keep the cores busy:
a test that passes only on an idle machine fails here.

  uv run python scripts/under_load.py --rounds 10 -- tests/test_app_sessions.py \\
      tests/test_engine.py tests/test_faults.py

Each round is one `pytest -x -q TARGETS` in a fresh process (fresh engines and
servers). The busy loops (`--hogs`, default one per core) are processes of this
script, started before the first round and stopped by their process ids at the
end, also on failure or Ctrl-C. Prints one line per round (passed or failed, its
time) and the total; exits 1 if any round failed, leaving each failed round's
output in `--logs`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUSY_LOOP = "while True: pass"


def start_hogs(count: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(count)]


def stop_hogs(hogs: list[subprocess.Popen]) -> None:
    for hog in hogs:  # our own children, not reaped yet: their ids are surely theirs
        hog.kill()
    for hog in hogs:
        hog.wait()


def run_round(targets: list[str], log: Path) -> tuple[bool, float]:
    start = time.monotonic()
    with log.open("w") as out:
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *targets],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return done.returncode == 0, time.monotonic() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--hogs", type=int, default=os.cpu_count() or 1,
                        help="busy-loop processes (default: one per core)")  # fmt: skip
    parser.add_argument("--logs", help="folder for each round's output (default: a new temp dir)")
    parser.add_argument("targets", nargs="+", help="what pytest runs (after --)")
    args = parser.parse_args()
    logs = Path(args.logs or tempfile.mkdtemp(prefix="under-load-"))
    logs.mkdir(parents=True, exist_ok=True)
    hogs = start_hogs(args.hogs)
    print(f"{args.hogs} busy loops running (pids {', '.join(str(h.pid) for h in hogs)})")
    began, failed = time.monotonic(), 0
    try:
        for number in range(1, args.rounds + 1):
            log = logs / f"round-{number}.log"
            passed, seconds = run_round(args.targets, log)
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] or [""]
            print(f"round {number}/{args.rounds}: {'passed' if passed else 'FAILED'} "
                  f"in {seconds:.0f} s ({tail[0]})", flush=True)  # fmt: skip
            if passed:
                log.unlink()
            else:
                failed += 1
    finally:
        stop_hogs(hogs)
    total = time.monotonic() - began
    print(f"{args.rounds - failed} of {args.rounds} rounds passed in {total / 60:.1f} min"
          + (f"; the failed rounds' output is in {logs}/" if failed else ""))  # fmt: skip
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
