"""Run pytest targets several times in a row while busy loops keep the cores busy:
a test that passes only on an idle machine fails here.

  uv run python scripts/under_load.py --rounds 10 -- tests/test_app_sessions.py \\
      tests/test_engine.py tests/test_faults.py

Each round is one `pytest -x -q TARGETS` in a fresh process (fresh engines and
servers). The busy loops (`--hogs`, default one per core) are processes of this
script, started before the first round and stopped by their process ids at the
end, also on failure or Ctrl-C. They run in a session of their own, as another
program's work does (another terminal, another user, a CI job): where Linux
shares the CPU by session (autogroup), loops in the tests' own session would be
part of the tests, and starve the `marimo run` server the tests start beside them.
Prints one line per round (passed or failed, its time) and the total; exits 1 if
any round failed, leaving each failed round's output in `--logs`.

Ctrl-C (or SIGINT) is handed to the round's pytest once, which then tears its
fixtures down (servers, engines, browsers); a shell starts background commands
with SIGINT ignored, so the script and pytest take it back.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUSY_LOOP = "while True: pass"


TEARDOWN_SECONDS = 180  # for pytest to stop its servers after a Ctrl-C


def start_hogs(count: int) -> list[subprocess.Popen]:
    return [
        subprocess.Popen([sys.executable, "-c", BUSY_LOOP], start_new_session=True)
        for _ in range(count)
    ]


def stop_hogs(hogs: list[subprocess.Popen]) -> None:
    for hog in hogs:  # our own children, not reaped yet: their ids are surely theirs
        hog.kill()
    for hog in hogs:
        hog.wait()


def _take_sigint_back() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # Python then installs its own handler


def run_round(targets: list[str], log: Path) -> tuple[bool, float]:
    """One pytest run in a process group of its own (a terminal's Ctrl-C reaches only
    this script, which hands it on once)."""
    start = time.monotonic()
    with log.open("w") as out:
        pytest = subprocess.Popen(
            [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *targets],
            stdout=out,
            stderr=subprocess.STDOUT,
            process_group=0,
            preexec_fn=_take_sigint_back,
        )
        try:
            code = pytest.wait()
        except KeyboardInterrupt:
            pytest.send_signal(signal.SIGINT)
            try:
                pytest.wait(timeout=TEARDOWN_SECONDS)
            except subprocess.TimeoutExpired:
                pytest.kill()
                pytest.wait()
            raise
    return code == 0, time.monotonic() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--hogs", type=int, default=os.cpu_count() or 1,
                        help="busy-loop processes (default: one per core)")  # fmt: skip
    parser.add_argument("--logs", help="folder for each round's output (default: a new temp dir)")
    parser.add_argument("targets", nargs="+", help="what pytest runs (after --)")
    args = parser.parse_args()
    signal.signal(signal.SIGINT, signal.default_int_handler)
    logs = Path(args.logs or tempfile.mkdtemp(prefix="under-load-"))
    logs.mkdir(parents=True, exist_ok=True)
    hogs = start_hogs(args.hogs)
    print(f"{args.hogs} busy loops running (pids {', '.join(str(h.pid) for h in hogs)})")
    began, failed, log, number = time.monotonic(), 0, logs, 0
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
    except KeyboardInterrupt:
        print(f"interrupted in round {number}; its output is in {log}")
        return 130
    finally:
        stop_hogs(hogs)
    total = time.monotonic() - began
    print(f"{args.rounds - failed} of {args.rounds} rounds passed in {total / 60:.1f} min"
          + (f"; the failed rounds' output is in {logs}/" if failed else ""))  # fmt: skip
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
