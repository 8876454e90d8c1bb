"""Wall-clock time of fedcore against the yardsticks, each in a fresh process, in one run.

  python benchmarks/bench_speed.py isolated --data-dir ../shared/data/mnist
      isolated phase (3 clients x 10 epochs + evaluation): fedcore vs naive
      (torchvision per-image transforms + DataLoader). Target: ratio <= 1/8.
  python benchmarks/bench_speed.py full --data-dir ../shared/data/mnist
      whole reference experiment: fedcore (`python -m fedcore run --phase all`)
      vs (a) naive (per-image DataLoader, Flower simulation with default settings)
      and (b) a bare PyTorch loop, one thread, clients in turn.
      Targets: fedcore <= (b), and (a) / fedcore >= 10.

Every command starts cold: a new process and an empty fedcore cache (the
split is recomputed). Two times are reported for each: `wall` (the whole
process, interpreter start and imports included) and `work` (what the program
itself times from its settings to its results: data loading, splitting,
training, evaluation, Ray start and stop; imports excluded). Ratios use `work`;
`wall` is there so nothing is hidden.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def timed(name: str, command: list[str]) -> tuple[float, str]:
    with tempfile.TemporaryDirectory() as cache:
        env = os.environ | {"FEDCORE_CACHE_DIR": cache}
        start = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{name} failed:\n{done.stdout}\n{done.stderr}")
    print(f"{name:<28} {seconds:7.1f} s", flush=True)
    return seconds, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("suite", choices=["isolated", "full"])
    parser.add_argument("--data-dir", required=True)
    args = parser.parse_args()
    data = str(Path(args.data_dir).resolve())
    python = sys.executable
    phase = "isolated" if args.suite == "isolated" else "all"
    with tempfile.TemporaryDirectory() as out:
        ours_cmd = [python, "-m", "fedcore", "run", "--phase", phase, "--data-dir", data,
                    "--out", f"{out}/ours.json"]  # fmt: skip
        ours_wall, _ = timed("fedcore", ours_cmd)
        ours = json.loads(Path(f"{out}/ours.json").read_text())
    naive_cmd = [python, "benchmarks/naive.py", "--phase", phase, "--data-dir", data]
    naive_wall, naive_out = timed("naive", naive_cmd)
    naive = json.loads(naive_out.strip().splitlines()[-1])
    report = {
        "suite": args.suite,
        "fedcore": {
            "wall_s": ours_wall,
            "work_s": ours["timings"]["total"],
            "timings": ours["timings"],
            "isolated_accuracy": [c["accuracy"] for c in ours["isolated"]],
        },
        "naive": {"wall_s": naive_wall, "work_s": naive["seconds"], **naive},
        "naive_over_fedcore": naive["seconds"] / ours["timings"]["total"],
    }
    if args.suite == "full":
        history = [h["accuracy"] for h in ours["federated"]["history"]]
        report["fedcore"]["global_accuracy_per_round"] = history
        bare_cmd = [python, "benchmarks/bare_loop.py", "--data-dir", data]
        bare_wall, bare_out = timed("bare PyTorch loop", bare_cmd)
        bare = json.loads(bare_out.strip().splitlines()[-1])
        report["bare"] = {"wall_s": bare_wall, "work_s": bare["seconds"], **bare}
        report["fedcore_over_bare"] = ours["timings"]["total"] / bare["seconds"]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
