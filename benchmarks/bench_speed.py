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
split is recomputed), so imports, data loading and Ray start-up are included.
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
        ours, _ = timed(
            "fedcore",
            [
                python,
                "-m",
                "fedcore",
                "run",
                "--phase",
                phase,
                "--data-dir",
                data,
                "--out",
                f"{out}/ours.json",
            ],
        )
        result = json.loads(Path(f"{out}/ours.json").read_text())
    naive, naive_out = timed(
        "naive", [python, "benchmarks/naive.py", "--phase", phase, "--data-dir", data]
    )
    report = {
        "suite": args.suite,
        "fedcore_s": ours,
        "naive_s": naive,
        "naive_over_fedcore": naive / ours,
        "fedcore_isolated_accuracy": [c["accuracy"] for c in result["isolated"]],
        "naive": json.loads(naive_out.strip().splitlines()[-1]),
    }
    if args.suite == "full":
        bare, bare_out = timed(
            "bare PyTorch loop", [python, "benchmarks/bare_loop.py", "--data-dir", data]
        )
        report |= {
            "bare_s": bare,
            "fedcore_over_bare": ours / bare,
            "fedcore_history": [h["accuracy"] for h in result["federated"]["history"]],
            "bare": json.loads(bare_out.strip().splitlines()[-1]),
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
