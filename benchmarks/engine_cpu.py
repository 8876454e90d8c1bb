"""Where a federated run's CPU goes: the engine's main process against its workers.

  python benchmarks/engine_cpu.py --data-dir ../shared/data/mnist [--rounds 50]
      [--fraction 0.1] [--batch-size 10] [--repeat R] [--before COMMIT]

Runs `bench_rounds.measure` (a warm-up job, then `--rounds` rounds at McMahan et
al.'s scale) in a fresh process for the code of `--before` and for this tree,
alternated, and reads every process's CPU time and minor page faults from `/proc`
while it runs: the measuring process, the engine it starts, and the engine's
workers. CPU time is less at the mercy of a busy neighbour than wall time, and the
split says whether a change moved work off the workers' cores or off the main
process's. Each process is read until it exits (every 0.2 s), so the last instant of
each is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

from bench_rounds import add_round_arguments, before_and_now, in_fresh_process

TICKS = os.sysconf("SC_CLK_TCK")


def descendants(pid: int, depth: int = 0) -> list[tuple[int, int]]:
    """`pid` and every process below it, each with its depth (`pid` is 0)."""
    found = [(pid, depth)]
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            children = Path(f"/proc/{pid}/task/{task}/children").read_text().split()
        except OSError:
            continue
        for child in children:
            found += descendants(int(child), depth + 1)
    return found


def cpu_and_faults(pid: int) -> tuple[float, int] | None:
    """CPU seconds (user + system) and minor page faults of one process so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICKS, int(fields[7])


def watched_run(tree: Path, args: list[object]) -> dict:
    """`bench_rounds.measure(*args)` with `tree`'s fedcore; its result, and CPU
    seconds and faults by role: `measure` (the calling process), `engine`, `workers`."""
    seen: dict[int, tuple[int, float, int]] = {}  # pid -> (depth, cpu, faults)
    with tempfile.TemporaryFile("w+") as output:  # read once it has exited: a pipe could fill
        process = subprocess.Popen(**in_fresh_process(tree, "measure", *args), stdout=output)
        try:
            while process.poll() is None:
                for pid, depth in descendants(process.pid):
                    reading = cpu_and_faults(pid)
                    if reading is not None:
                        seen[pid] = (min(depth, 2), *reading)
                time.sleep(0.2)
        finally:
            if process.poll() is None:
                process.kill()
            process.wait()
        if process.returncode != 0:
            raise RuntimeError(f"measuring {tree} failed (exit {process.returncode})")
        output.seek(0)
        last_line = output.read().strip().splitlines()[-1]
    roles = {0: "measure", 1: "engine", 2: "workers"}
    usage = {role: {"cpu_s": 0.0, "faults": 0} for role in roles.values()}
    for depth, cpu, faults in seen.values():
        usage[roles[depth]]["cpu_s"] += cpu
        usage[roles[depth]]["faults"] += faults
    return {"result": json.loads(last_line), "usage": usage}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_round_arguments(parser)
    args = parser.parse_args()
    measure_args = [str(Path(args.data_dir).resolve()), args.rounds, args.fraction,
                    args.batch_size]  # fmt: skip
    with before_and_now(args.before) as trees:
        for _ in range(args.repeat):
            for name, tree in trees.items():
                run = watched_run(tree, measure_args)
                usage, result = run["usage"], run["result"]
                print(
                    f"{name}: {result['round_s'] * 1e3:.0f} ms a round; CPU "
                    + ", ".join(
                        f"{role} {u['cpu_s']:.1f} s ({u['faults'] / 1e3:.0f}k faults)"
                        for role, u in usage.items()
                    ),
                    flush=True,
                )


if __name__ == "__main__":
    main()
