"""Many clients, few per round: fedcore's engine against Flower's own simulation on Ray.

  python benchmarks/bench_scale.py --data-dir ../shared/data/mnist [--quick]

Settings (all IID, 1 local epoch, batch 10, momentum 0, 10 clients sampled a round):

- `mcmahan-100`: McMahan et al.'s 2NN setting, 100 clients of 600 images, lr 0.1;
- `flute-1000`: FLUTE's MNIST benchmark, 1,000 clients of 60 images, logistic
  regression (`logreg`, 784-10), lr 0.03;
- `mcmahan-1000`: the 2NN at 1,000 clients (60 images each);
- `clients-10000`: 10,000 clients of 6 images, logreg, 10 rounds (fedcore only).

Each runs as a fresh command, its clock started where the command starts, at a short
and a long number of rounds: fedcore as `python -m fedcore run --phase federated
--no-cache` (its engine starts and stops inside the command), Flower as `flwr run .`
(the same ServerApp and ClientApp, Flower's simulation runtime on Ray, one CPU per
ClientApp) against a local SuperLink that a tiny run has already started (so Flower's
clock does not hold the SuperLink's start). Per round is the difference of the two
runs' wall times over the difference of their rounds (the start cancels out). For
fedcore the long run's round is also split into the clients' own training
(wall-clock time in which at least one ClientApp ran, measured in the workers) and
everything else. Peak memory: the largest sum, sampled every 0.25 s, of the
proportional set size (PSS: shared pages split between the processes that share
them) of every process of the command (fedcore: the CLI, its engine and workers;
Flower: the SuperLink, SuperExec, simulation and Ray processes). Final accuracies
of both are printed: the same config gives the same numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT))

from fedcore.deploy.processes import processes_with_env, stop_processes  # noqa: E402

COMMON = {"split": "iid", "local-epochs": 1, "batch-size": 10, "momentum": 0.0,
          "min-train-clients": 10}  # fmt: skip
SETTINGS = {
    "mcmahan-100": {"num-clients": 100, "model": "2nn", "learning-rate": 0.1,
                    "fraction-train": 0.1},
    "flute-1000": {"num-clients": 1000, "model": "logreg", "learning-rate": 0.03,
                   "fraction-train": 0.01},
    "mcmahan-1000": {"num-clients": 1000, "model": "2nn", "learning-rate": 0.1,
                     "fraction-train": 0.01},
    "clients-10000": {"num-clients": 10000, "model": "logreg", "learning-rate": 0.03,
                      "fraction-train": 0.001},
}  # fmt: skip
# (setting, short rounds, long rounds, with Flower)
PLAN = [("mcmahan-100", 20, 100, True), ("flute-1000", 20, 100, True),
        ("mcmahan-1000", 20, 100, False), ("clients-10000", 2, 10, False)]  # fmt: skip
QUICK = [("mcmahan-100", 5, 20, True), ("flute-1000", 5, 20, True),
         ("clients-10000", 2, 5, False)]  # fmt: skip
FLAGS = {"num-clients": "--clients", "model": "--model", "learning-rate": "--lr",
         "fraction-train": "--fraction", "split": "--split", "local-epochs": "--epochs",
         "batch-size": "--batch-size", "momentum": "--momentum",
         "min-train-clients": "--min-clients", "num-server-rounds": "--rounds"}  # fmt: skip


def pss_bytes(processes: list[psutil.Process]) -> int:
    total = 0
    for process in processes:
        try:
            total += process.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return total


def timed(command: list[str], env: dict, marker: tuple[str, str], cwd: Path) -> tuple[float, int]:
    """Run `command`; its wall time and the peak PSS of the processes carrying `marker`."""
    peak, done = [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], pss_bytes(processes_with_env(*marker)))
            done.wait(0.25)

    sampler = threading.Thread(target=sample, daemon=True)
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)  # fmt: skip
    sampler.start()
    try:
        output, _ = process.communicate(timeout=3600)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, 9)
            process.wait()
    wall = time.perf_counter() - start
    done.set()
    sampler.join()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:4])} failed:\n{output[-3000:]}")
    return wall, peak[0]


def run_fedcore(setting: dict, rounds: int, data_dir: str, scratch: Path) -> dict:
    out = scratch / f"fedcore-{uuid.uuid4().hex}.json"
    marker = ("FEDCORE_BENCH_RUN", uuid.uuid4().hex)
    command = [sys.executable, "-m", "fedcore", "run", "--phase", "federated", "--no-cache",
               "--data-dir", data_dir, "--out", str(out)]  # fmt: skip
    for key, value in {**COMMON, **setting, "num-server-rounds": rounds}.items():
        command += [FLAGS[key], str(value)]
    env = os.environ | {marker[0]: marker[1], "FLWR_TELEMETRY_ENABLED": "0"}
    wall, peak = timed(command, env, marker, ROOT)
    result = json.loads(out.read_text())
    timings = result["timings"]
    return {"wall": wall, "peak": peak, "accuracy": result["federated"]["accuracy"],
            "federated": timings["federated"], "clients": timings["federated-clients"]}  # fmt: skip


class Flower:
    """`flwr run .` against a local SuperLink in a FLWR_HOME of its own; `close` stops
    the SuperLink, SuperExec and Ray processes by process id."""

    def __init__(self, scratch: Path, data_dir: str) -> None:
        self.home = scratch / "flwr-home"
        self.home.mkdir()
        self.data_dir = data_dir
        self.env = os.environ | {
            "FLWR_HOME": str(self.home),
            "FLWR_TELEMETRY_ENABLED": "0",
            "RAY_USAGE_STATS_ENABLED": "0",
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        }
        self.results = scratch / "flwr-results"
        self.supernodes = 0

    def _flwr(self, *args: str) -> None:
        done = subprocess.run([str(BIN / "flwr"), *args], cwd=ROOT, env=self.env,
                              capture_output=True, text=True, timeout=600)  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"flwr {args[0]} failed:\n{(done.stdout + done.stderr)[-3000:]}")

    def run(self, setting: dict, rounds: int) -> dict:
        if setting["num-clients"] != self.supernodes:
            self._flwr("federation", "simulation-config", "--num-supernodes",
                       str(setting["num-clients"]), "--client-resources-num-cpus", "1")  # fmt: skip
            self.supernodes = setting["num-clients"]
        config = {**COMMON, **setting, "num-server-rounds": rounds}
        text = " ".join(f"{k}={json.dumps(v)}" for k, v in config.items())
        text += f" data-dir='{self.data_dir}' results-dir='{self.results}'"
        command = [str(BIN / "flwr"), "run", ".", "--stream", "--run-config", text]
        wall, peak = timed(command, self.env, ("FLWR_HOME", str(self.home)), ROOT)
        result = json.loads((self.results / "latest.json").read_text())
        return {"wall": wall, "peak": peak, "accuracy": result["federated"]["accuracy"],
                "federated": result["timings"]["federated"]}  # fmt: skip

    def close(self) -> None:
        stop_processes(processes_with_env("FLWR_HOME", str(self.home)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--quick", action="store_true", help="fewer rounds (a smoke test)")
    args = parser.parse_args()
    data_dir = str(Path(args.data_dir).resolve())
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        scratch = Path(folder)
        flower = Flower(scratch, data_dir)
        try:
            # the SuperLink started, as Flower's users keep it
            flower.run({**SETTINGS["mcmahan-100"], "num-clients": 10}, 1)
            for name, short, long, with_flower in QUICK if args.quick else PLAN:
                setting = SETTINGS[name]
                engines = {"fedcore": lambda r, s=setting: run_fedcore(s, r, data_dir, scratch)}
                if with_flower:
                    engines["flower-ray"] = lambda r, s=setting: flower.run(s, r)
                for engine, run in engines.items():
                    a, b = run(short), run(long)
                    row = {"setting": name, "engine": engine, "rounds": [short, long],
                           "wall": [a["wall"], b["wall"]],
                           "per_round": (b["wall"] - a["wall"]) / (long - short),
                           "peak_mb": max(a["peak"], b["peak"]) / 2**20,
                           "accuracy": [a["accuracy"], b["accuracy"]]}  # fmt: skip
                    if "clients" in b:
                        row["clients_per_round"] = b["clients"] / long
                        row["else_per_round"] = (b["federated"] - b["clients"]) / long
                    rows.append(row)
                    print(json.dumps(row), flush=True)
        finally:
            flower.close()
    print(
        "\n| setting | engine | wall (short / long rounds) | per round | clients / else a "
        "round | peak memory (PSS) | accuracy (short / long) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        split = (f"{r['clients_per_round'] * 1000:.0f} / {r['else_per_round'] * 1000:.0f} ms "
                 f"({r['else_per_round'] / (r['clients_per_round'] + r['else_per_round']):.0%})"
                 if "clients_per_round" in r else "")  # fmt: skip
        print(f"| {r['setting']} | {r['engine']} | {r['wall'][0]:.1f} s ({r['rounds'][0]}) / "
              f"{r['wall'][1]:.1f} s ({r['rounds'][1]}) | {r['per_round'] * 1000:.0f} ms | "
              f"{split} | {r['peak_mb']:.0f} MB | {r['accuracy'][0]:.2%} / "
              f"{r['accuracy'][1]:.2%} |")  # fmt: skip


if __name__ == "__main__":
    main()
