"""What a federated run costs beyond its clients' training, for each way to run it.

  python benchmarks/bench_engine.py --data-dir ../shared/data/mnist [--runs 4]

Each option runs in a fresh process and does `--runs` federated runs of 3
clients x 1 round x 1 local epoch (seeds 1, 2, ...), then one reference run
(3 rounds x 10 epochs). For every run: the federated phase's wall time, the
clients' own training time (the wall-clock time in which at least one ClientApp
was training) and the difference, the fixed overhead (Flower, the engine,
the evaluation, starting and stopping processes).

- `before`: the code before the run engine (`git worktree` of BEFORE_COMMIT),
  `python -m fedcore run --phase federated`, one process per run, as the app
  and the CLI ran it: Flower's `run_simulation` on Ray, started and stopped
  for every run.
- `ray-kept`: Flower's `run_simulation` on Ray in one process, with Ray's
  shutdown after each run skipped (so Ray starts once; Flower still creates
  and kills its actors, one process per client, in every run).
- `engine`: fedcore's engine (`fedcore.engine.Engine`): Flower's in-memory
  runtime with a backend on warm worker processes; the engine started once.

The clients' own time is measured in the workers (a ClientApp mod for the Ray
options; the engine's task log for the engine).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BEFORE_COMMIT = "e539a95"  # the last commit before the run engine
SMALL = {"num_rounds": 1, "local_epochs": 1}


def row(name: str, wall: float, clients: float) -> dict[str, float | str]:
    return {"run": name, "federated_s": wall, "clients_s": clients, "overhead_s": wall - clients}


# ------------------------------------------------------------------ the options


def run_engine(data_dir: str, runs: int) -> list[dict]:
    from fedcore.engine import Engine
    from fedcore.experiment.config import ExperimentConfig

    rows = []
    begin = time.perf_counter()
    with Engine() as engine:
        configs = [ExperimentConfig(data_dir=data_dir, seed=s, **SMALL) for s in range(1, runs + 1)]
        for index, config in enumerate([*configs, ExperimentConfig(data_dir=data_dir)]):
            timings = engine.submit(config, "federated", use_cache=False).result().timings
            name = "reference" if index == runs else f"small {index + 1}"
            rows.append(row(name, timings["federated"], timings["federated-clients"]))
            if index == 0:  # the engine's own start, before its first run could begin
                rows[0]["engine_start_to_first_result_s"] = time.perf_counter() - begin
    return rows


def run_ray_kept(data_dir: str, runs: int) -> list[dict]:
    import ray
    from flwr.clientapp import ClientApp
    from flwr.serverapp import ServerApp
    from flwr.simulation import run_simulation

    from fedcore.engine.pool import covered_seconds
    from fedcore.experiment.config import ExperimentConfig
    from fedcore.flower.client_app import train_handler, with_run_config
    from fedcore.flower.rounds import run_federated

    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    os.environ.setdefault("RAY_prestart_worker_first_driver", "0")
    shutdown = ray.shutdown
    ray.shutdown = lambda *args, **kwargs: None  # keep Ray between runs
    log = Path(tempfile.mkstemp(suffix=".times")[1])

    def timing_mod(msg, context, call_next):  # runs in Ray's workers
        start = time.time()
        reply = call_next(msg, context)
        with open(log, "a") as out:
            out.write(f"{start} {time.time()}\n")
        return reply

    rows = []
    configs = [ExperimentConfig(data_dir=data_dir, seed=s, **SMALL) for s in range(1, runs + 1)]
    for index, config in enumerate([*configs, ExperimentConfig(data_dir=data_dir)]):
        log.write_text("")
        server_app = ServerApp()
        server_app.main()(lambda grid, context, config=config: run_federated(grid, config))
        # fedcore's ClientApp (as `build_client_app` makes it), timed
        client_app = ClientApp(mods=[with_run_config(config.to_run_config()), timing_mod])
        client_app.train()(train_handler)
        start = time.perf_counter()
        run_simulation(
            server_app=server_app,
            client_app=client_app,
            num_supernodes=config.num_clients,
            backend_config={
                "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                "init_args": {"num_cpus": os.cpu_count() or 1, "logging_level": "ERROR",
                              "log_to_driver": False, "include_dashboard": False},
            },
        )  # fmt: skip
        wall = time.perf_counter() - start
        intervals = [tuple(map(float, line.split())) for line in log.read_text().splitlines()]
        name = "reference" if index == runs else f"small {index + 1}"
        rows.append(row(name, wall, covered_seconds(intervals)))
    shutdown()
    log.unlink()
    return rows


def run_before(data_dir: str, runs: int, engine_rows: list[dict]) -> list[dict]:
    """The old CLI in a worktree, a process per run; the clients' own time is taken from
    the engine's runs of the same settings (the same training code on the same data)."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "before"
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), BEFORE_COMMIT],
                       cwd=ROOT, check=True, capture_output=True)  # fmt: skip
        try:
            env = os.environ | {"PYTHONPATH": str(tree), "FEDCORE_CACHE_DIR": f"{tmp}/cache"}
            settings = [["--seed", str(s), "--rounds", "1", "--epochs", "1"]
                        for s in range(1, runs + 1)]  # fmt: skip
            for index, flags in enumerate([*settings, []]):
                out = Path(tmp) / f"run{index}.json"
                subprocess.run(
                    [sys.executable, "-m", "fedcore", "run", "--phase", "federated",
                     "--data-dir", data_dir, "--out", str(out), *flags],
                    cwd=tree, env=env, check=True, capture_output=True,
                )  # fmt: skip
                wall = json.loads(out.read_text())["timings"]["federated"]
                name = "reference" if index == runs else f"small {index + 1}"
                rows.append(row(name, wall, engine_rows[index]["clients_s"]))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT,
                           capture_output=True)  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--option", choices=["engine", "ray-kept"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    data_dir = str(Path(args.data_dir).resolve())
    if args.option:  # one option, in this fresh process
        run = run_engine if args.option == "engine" else run_ray_kept
        print(json.dumps(run(data_dir, args.runs)))
        return
    report = {}
    for option in ("engine", "ray-kept"):
        with tempfile.TemporaryDirectory() as cache:
            done = subprocess.run(
                [sys.executable, __file__, "--data-dir", data_dir, "--runs", str(args.runs),
                 "--option", option],
                cwd=ROOT, env=os.environ | {"FEDCORE_CACHE_DIR": cache}, capture_output=True,
                text=True, check=False,
            )  # fmt: skip
        if done.returncode != 0:
            sys.exit(f"{option} failed:\n{done.stderr[-3000:]}")
        report[option] = json.loads(done.stdout.strip().splitlines()[-1])
    report["before"] = run_before(data_dir, args.runs, report["engine"])
    for option in ("before", "ray-kept", "engine"):
        print(f"\n{option}")
        for r in report[option]:
            print(f"  {r['run']:<10} federated {r['federated_s']:6.2f} s   clients "
                  f"{r['clients_s']:5.2f} s   overhead {r['overhead_s']:5.2f} s")  # fmt: skip
            if "engine_start_to_first_result_s" in r:
                print(f"  (engine start to its first result: "
                      f"{r['engine_start_to_first_result_s']:.2f} s)")  # fmt: skip
    with contextlib.suppress(BrokenPipeError):
        print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
