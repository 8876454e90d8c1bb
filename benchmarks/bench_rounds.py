"""What one federated round costs beyond its clients' training, at McMahan et al.'s scale.

  python benchmarks/bench_rounds.py --data-dir ../shared/data/mnist [--rounds 50]
      [--fraction 0.1] [--before COMMIT]

100 clients with 600 images each (the IID split of the 60,000), 10 sampled per
round (`--fraction 0.1`; 0.01 is McMahan et al.'s C=0, one client a round), 1 local
epoch, batch 10, the 2NN: the setting of McMahan et al.'s 2NN experiments. The
engine is warmed by a small run first (its start is not a round's cost), then runs
`--rounds` rounds. Reported per round: the wall time, the clients' own training
(wall-clock time in which at least one ClientApp was training, measured in the
workers) and everything else (Flower's messages, the engine, aggregation,
evaluating the global model on the 10,000 test images after every round). Target:
everything else <= 50% of a round.

Both in one run, each in a fresh process: `before`, a `git worktree` of `--before`
(default BEFORE_COMMIT: the code before issue 24's round work, whose engine ran
Flower's own message loop and scored every round's model before sending the next
round), and `now`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BEFORE_COMMIT = "18bda77"  # the papers reproduced; before issue 24's round work

SCALE = {
    "num_clients": 100,
    "split": "iid",
    "model": "2nn",
    "local_epochs": 1,
    "batch_size": 10,
    "fraction_train": 0.1,
    "min_train_clients": 10,
    "learning_rate": 0.05,
    "momentum": 0.0,
}


def measure(data_dir: str, rounds: int, fraction: float = 0.1) -> dict:
    """The warm engine's `rounds` rounds at SCALE, `fraction` of the clients a
    round, in this process's fedcore."""
    from fedcore.engine import Engine
    from fedcore.experiment.config import ExperimentConfig

    with Engine() as engine:
        warm = ExperimentConfig(data_dir=data_dir, num_rounds=1, local_epochs=1)
        engine.submit(warm, "federated", use_cache=False).result()
        sampled = {
            "fraction_train": fraction,
            "min_train_clients": max(1, round(SCALE["num_clients"] * fraction)),
        }
        config = ExperimentConfig(data_dir=data_dir, num_rounds=rounds, **(SCALE | sampled))
        result = engine.submit(config, "federated", use_cache=False).result()
    wall, clients = result.timings["federated"], result.timings["federated-clients"]
    return {
        "rounds": rounds,
        "round_s": wall / rounds,
        "clients_s": clients / rounds,
        "else_s": (wall - clients) / rounds,
        "else_share": (wall - clients) / wall,
        "final_accuracy": result.federated.accuracy,
        "rounds_to_97": result.federated.rounds_to_target,
    }


def measure_in(tree: Path, data_dir: str, rounds: int, fraction: float) -> dict:
    """`measure` in a fresh process running the fedcore of `tree`."""
    code = (
        "import json, sys; sys.path[:0] = sys.argv[1:3]; from bench_rounds import measure; "
        "print(json.dumps(measure(sys.argv[3], int(sys.argv[4]), float(sys.argv[5]))))"
    )
    where = [str(tree), str(ROOT / "benchmarks")]
    done = subprocess.run(
        [sys.executable, "-c", code, *where, data_dir, str(rounds), str(fraction)],
        cwd=tree, env=os.environ | {"PYTHONPATH": str(tree)}, capture_output=True, text=True,
        check=True,
    )  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--fraction", type=float, default=0.1, help="share of clients a round")
    parser.add_argument("--before", default=BEFORE_COMMIT, help="the commit to compare with")
    args = parser.parse_args()
    data_dir = str(Path(args.data_dir).resolve())
    rows = {}
    with tempfile.TemporaryDirectory() as scratch:
        tree = Path(scratch) / "before"
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), args.before],
                       cwd=ROOT, check=True, capture_output=True)  # fmt: skip
        try:
            rows["before"] = measure_in(tree, data_dir, args.rounds, args.fraction)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT,
                           check=True, capture_output=True)  # fmt: skip
    rows["now"] = measure_in(ROOT, data_dir, args.rounds, args.fraction)
    print(json.dumps(rows, indent=2))
    for name, row in rows.items():
        print(
            f"{name}: per round {row['round_s'] * 1000:.0f} ms wall = "
            f"{row['clients_s'] * 1000:.0f} ms clients + {row['else_s'] * 1000:.0f} ms else "
            f"({row['else_share']:.0%}; target <= 10%); final accuracy "
            f"{row['final_accuracy']:.1%} after {row['rounds']} rounds"
        )


if __name__ == "__main__":
    main()
