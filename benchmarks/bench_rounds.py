"""What one federated round costs beyond its clients' training, at McMahan et al.'s scale.

  python benchmarks/bench_rounds.py --data-dir ../shared/data/mnist [--rounds 50]
      [--fraction 0.1] [--batch-size 10] [--client-calls N] [--repeat R]
      [--before COMMIT]

100 clients with 600 images each (the IID split of the 60,000), 10 sampled per
round (`--fraction 0.1`; 0.01 is McMahan et al.'s C=0, one client a round), 1 local
epoch, batch 10 (`--batch-size 60000` is B=inf, the whole partition), the 2NN: the
setting of McMahan et al.'s 2NN experiments. The
engine is warmed by a small run first (its start is not a round's cost), then runs
`--rounds` rounds. Reported per round: the wall time, the clients' own training
(wall-clock time in which at least one ClientApp was training, measured in the
workers) and everything else (Flower's messages, the engine, aggregation,
evaluating the global model on the 10,000 test images after every round). Target:
everything else <= 50% of a round.

`--client-calls N`: also one client's task alone, as a worker runs it (the
ClientApp called in-process on one sampled client's message, the 2NN's weights in
it), the median of N calls: what every client of every round costs a worker.

Both in one run, each in a fresh process: `before`, a `git worktree` of `--before`
(default BEFORE_COMMIT: the code before issue 24's round work, whose engine ran
Flower's own message loop and scored every round's model before sending the next
round), and `now`; `--repeat R` alternates them R times (this machine's timings
move 10-20% from run to run).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
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


def measure(data_dir: str, rounds: int, fraction: float = 0.1, batch_size: int = 10) -> dict:
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
            "batch_size": batch_size,
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


def client_task(data_dir: str, calls: int, batch_size: int = 10) -> dict:
    """One client's task as an engine worker runs it, `calls` times in this process
    (client i % 100 in round i, after one call to warm up): the median and fastest
    wall time, and the median CPU time of this thread (which a busy neighbour of
    this virtual machine inflates less)."""
    from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    from fedcore.engine.worker import run_client_app
    from fedcore.experiment.config import ExperimentConfig
    from fedcore.learning.models import build_model

    # who is sending: the engine's runtime sets this before its ServerApp makes messages
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 1
    config = ExperimentConfig(data_dir=data_dir, **(SCALE | {"batch_size": batch_size}))
    run_config = config.to_run_config()
    weights = ArrayRecord(build_model(config.seed, config.model).state_dict())
    seconds, cpu_seconds = [], []
    for call in range(calls + 1):
        sent = RecordDict({"arrays": weights, "config": ConfigRecord({"server-round": call + 1})})
        message = Message(content=sent, dst_node_id=1, message_type="train")
        node = {"partition-id": call % 100, "num-partitions": SCALE["num_clients"]}
        context = Context(run_id=1, node_id=1, node_config=node, state=RecordDict(), run_config={})
        started, cpu_started = time.perf_counter(), time.thread_time()
        reply, _ = run_client_app(run_config, message, context)
        seconds.append(time.perf_counter() - started)
        cpu_seconds.append(time.thread_time() - cpu_started)
        if not reply.has_content():
            raise RuntimeError(f"the client failed: {reply.error.reason}")
    seconds = sorted(seconds[1:])
    return {
        "calls": calls,
        "median_s": statistics.median(seconds),
        "min_s": seconds[0],
        "cpu_median_s": statistics.median(cpu_seconds[1:]),
    }


def in_fresh_process(tree: Path, function: str, *args: object) -> dict:
    """How to run `function(*args)` of this script in a fresh process running the
    fedcore of `tree`: `subprocess` arguments; its last line of output is the result
    as JSON."""
    code = (
        "import json, sys; sys.path[:0] = sys.argv[1:3]; import bench_rounds; "
        "print(json.dumps(getattr(bench_rounds, sys.argv[3])(*json.loads(sys.argv[4]))))"
    )
    where = [str(tree), str(ROOT / "benchmarks")]
    return {
        "args": [sys.executable, "-c", code, *where, function, json.dumps(args)],
        "cwd": tree,
        "env": os.environ | {"PYTHONPATH": str(tree)},
        "text": True,
    }


def measure_in(tree: Path, function: str, *args: object) -> dict:
    """`function(*args)` of this script in a fresh process running the fedcore of `tree`."""
    done = subprocess.run(
        **in_fresh_process(tree, function, *args), capture_output=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def add_round_arguments(parser: argparse.ArgumentParser) -> None:
    """The settings of `measure` and of the before-and-now comparison."""
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--fraction", type=float, default=0.1, help="share of clients a round")
    parser.add_argument("--batch-size", type=int, default=10, help="60000: B=inf")
    parser.add_argument("--repeat", type=int, default=1, help="before and now, alternated")
    parser.add_argument("--before", default=BEFORE_COMMIT, help="the commit to compare with")


@contextmanager
def before_and_now(before: str) -> Iterator[dict[str, Path]]:
    """`{"before": a scratch git worktree of the commit `before`, "now": this tree}`,
    the worktree removed after."""
    with tempfile.TemporaryDirectory() as scratch:
        trees = {"before": Path(scratch) / "before", "now": ROOT}
        subprocess.run(["git", "worktree", "add", "--detach", str(trees["before"]), before],
                       cwd=ROOT, check=True, capture_output=True)  # fmt: skip
        try:
            yield trees
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(trees["before"])],
                           cwd=ROOT, check=True, capture_output=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_round_arguments(parser)
    parser.add_argument("--client-calls", type=int, default=0, help="also time one client")
    args = parser.parse_args()
    data_dir = str(Path(args.data_dir).resolve())
    runs: dict[str, list[dict]] = {"before": [], "now": []}
    with before_and_now(args.before) as trees:
        for _ in range(args.repeat):
            for name, tree in trees.items():
                row = {}
                if args.client_calls:
                    row["client"] = measure_in(
                        tree, "client_task", data_dir, args.client_calls, args.batch_size
                    )
                if args.rounds:
                    row |= measure_in(
                        tree, "measure", data_dir, args.rounds, args.fraction, args.batch_size
                    )
                runs[name].append(row)
    print(json.dumps(runs, indent=2))
    for name, rows in runs.items():
        for row in rows:
            line = f"{name}:"
            if "client" in row:
                client = row["client"]
                line += (
                    f" one client {client['median_s'] * 1000:.2f} ms (median of "
                    f"{client['calls']}, fastest {client['min_s'] * 1000:.2f} ms; CPU "
                    f"{client['cpu_median_s'] * 1000:.2f} ms);"
                )
            if "round_s" in row:
                line += (
                    f" per round {row['round_s'] * 1000:.0f} ms wall = "
                    f"{row['clients_s'] * 1000:.0f} ms clients + {row['else_s'] * 1000:.0f} ms "
                    f"else ({row['else_share']:.0%}); final accuracy "
                    f"{row['final_accuracy']:.1%} after {row['rounds']} rounds"
                )
            print(line)


if __name__ == "__main__":
    main()
