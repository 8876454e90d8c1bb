"""The least a reproduced Table 1 can take on this machine: its arithmetic alone.

  python benchmarks/table1_floor.py --data-dir ../shared/data/mnist \
      --table DIR/mcmahan2017-table1.csv

`DIR/mcmahan2017-table1.csv` is what `python -m fedcore reproduce mcmahan2017-table1`
wrote: each row's rounds to 97% (or its cap, where not reached) say how many rounds
it ran, and its wall time how long they took. This measures, on real MNIST and one
thread as fedcore's workers run, the two things every round must do whatever runs
it: each sampled client's local epoch (`train_on_partition`, what the ClientApp
calls: the client's images gathered, then fedcore's SGD loop) and scoring the
10,000 test images (`predict`, what the server calls). Their sum over the rounds
the rows ran, spread perfectly over the cores with nothing else at all (no Flower,
no messages, no aggregation), is the floor no engine can beat with these kernels.

Each timing is the fastest of `--repeats`, taken twice: alone, and in one process a
core at once (all cores busy, as in a reproduction, where they share the caches and the
memory). The same float32 work at the large matrix product's speed (sgemm of a
600 x 784 by 784 x 200, one thread) is the floor's floor: what perfect kernels
would leave.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
from calibrate_cost import best_of
from torch import nn

from fedcore.data.mnist import load_mnist
from fedcore.data.partition import partition_clients
from fedcore.experiment.config import ExperimentConfig
from fedcore.learning.evaluation import predict
from fedcore.learning.fast_path import use_one_thread
from fedcore.learning.local import train_on_partition
from fedcore.learning.models import build_model
from fedcore.reproduction.table_file import read_reproduced_table

FIRST_SEED = 42  # the reproduction's first seed: its splits


def epoch_key(config: ExperimentConfig) -> str:
    """Which client epoch's timing a row uses: its split and batch size."""
    return f"{config.split},B={config.batch_size}"


def linear_flops(model: nn.Module, images: int, backward: bool) -> float:
    """Float operations of the MLP's matrix products for `images` images: forward, and
    with `backward` each weight's gradient and each input's but the first layer's."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    forward = sum(2 * images * m.in_features * m.out_features for m in linears)
    if not backward:
        return forward
    return 2 * forward + sum(2 * images * m.in_features * m.out_features for m in linears[1:])


def measure(data_dir: str, configs: list[ExperimentConfig], repeats: int) -> dict[str, float]:
    """Seconds of one core: a client's local epoch for each config (keyed by its
    split and batch size), the test set's scoring, and the large sgemm's GFLOP/s."""
    use_one_thread()
    data = load_mnist(data_dir)
    timings: dict[str, float] = {}
    for config in configs:
        key = epoch_key(config)
        if key in timings:
            continue
        partition = partition_clients(data.train_y, config)[0]
        model = build_model(config.seed, config.model)
        timings[key] = best_of(
            repeats,
            lambda: train_on_partition(model, data, partition, config, server_round=1),  # noqa: B023
        )
    model = build_model(FIRST_SEED, configs[0].model)
    timings["scoring"] = best_of(repeats, lambda: predict(model, data.test_x))
    a, b = torch.randn(600, 784), torch.randn(784, 200)
    sgemm = best_of(50 * repeats, lambda: a @ b)
    timings["sgemm_gflops"] = 2 * 600 * 784 * 200 / sgemm / 1e9
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--table", required=True, type=Path, help="a mcmahan2017-table1.csv")
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    contents = args.table.read_bytes()
    reproduced = read_reproduced_table(args.table.name, contents)
    walls = {line["row"]: float(line["wall_seconds"])  # the rows it ran (a skipped row has none)
             for line in csv.DictReader(contents.decode().splitlines())
             if line.get("wall_seconds")}  # fmt: skip
    table = reproduced.table
    rate = table.learning_rates[0]  # any: the rate changes no product's size
    rows = [(row, measured, table.config(row, rate, FIRST_SEED, data_dir=args.data_dir))
            for row, measured in reproduced.measured if row.key in walls]  # fmt: skip
    if table.name != "mcmahan2017-table1" or any(c.model != "2nn" for _, _, c in rows):
        raise SystemExit(f"{args.table}: give the 2NN rows of a mcmahan2017-table1.csv")
    configs = [config for _, _, config in rows]
    cores = os.cpu_count() or 1

    alone = measure(args.data_dir, configs, args.repeats)
    with ProcessPoolExecutor(cores) as pool:  # every core busy at once
        pair = [f.result() for f in [pool.submit(measure, args.data_dir, configs, args.repeats)
                                     for _ in range(cores)]]  # fmt: skip
    busy = {key: statistics.mean(t[key] for t in pair) for key in alone}

    model = build_model(FIRST_SEED, configs[0].model)
    print(f"one thread, fastest of {args.repeats} (alone / {cores} processes at once):")
    for key in alone:
        unit, scale = ("GFLOP/s", 1) if key == "sgemm_gflops" else ("ms", 1e3)
        print(f"  {key}: {alone[key] * scale:.2f} / {busy[key] * scale:.2f} {unit}")
    print()
    print("| row | rounds run | clients a round | floor (busy cores) | at sgemm speed | wall |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    totals = {"floor": 0.0, "peak": 0.0, "wall": 0.0}
    for row, measured, config in rows:
        rounds = int(measured) if measured is not None else config.num_rounds
        clients = config.clients_per_round
        client = busy[epoch_key(config)]
        floor = rounds * (clients * client + busy["scoring"]) / cores
        images = 60_000 // config.num_clients
        flops = rounds * (clients * linear_flops(model, images, backward=True)
                          + linear_flops(model, 10_000, backward=False))  # fmt: skip
        peak = flops / (cores * alone["sgemm_gflops"] * 1e9)
        wall = walls[row.key]
        totals["floor"] += floor
        totals["peak"] += peak
        totals["wall"] += wall
        print(f"| {row.key} | {rounds} | {clients} | {floor:.0f} s | {peak:.0f} s | {wall:.0f} s |")
    print(
        f"| all {len(rows)} rows | | | **{totals['floor'] / 60:.1f} min** | "
        f"{totals['peak'] / 60:.1f} min | {totals['wall'] / 60:.1f} min |"
    )


if __name__ == "__main__":
    main()
