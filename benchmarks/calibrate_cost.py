"""The constants of `fedcore.engine.cost`, measured on this machine.

  python benchmarks/calibrate_cost.py --data-dir ../shared/data/mnist [--examples 4000]

Run it on an otherwise idle machine: the figures are times.

For each model, one core (as in the engine's workers) trains one epoch on
`--examples` real MNIST images (the CNN on a tenth of them) at batch sizes 64
and 8: the seconds per example and per optimiser step solve those two timings.
Then it scores the 10,000 test images. Each timing is the best of `--repeats`,
after one untimed run.
Then the engine runs 2 clients x `--rounds` rounds, each client one step of
one epoch (batch 60,000), and what the federated phase took beyond its clients'
training and scoring gives the seconds of a round (Flower's messages, the
engine), and the rest of the job the seconds of a job (the data, the split,
the results).

Prints the constants as Python, to paste into fedcore/engine/cost.py, and the
table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import time

import torch

from fedcore.data.mnist import load_mnist
from fedcore.engine import Engine
from fedcore.engine.cost import TEST_IMAGES, ModelCost
from fedcore.experiment.config import ExperimentConfig
from fedcore.learning.evaluation import predict
from fedcore.learning.fast_path import use_one_thread
from fedcore.learning.models import MODELS, build_model
from fedcore.learning.train import train

BATCHES = (64, 8)


def best_of(repeats: int, work) -> float:
    """The shortest of `repeats` timings of `work()`, after one untimed (first-call costs)."""
    work()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def model_cost(kind: str, x: torch.Tensor, y: torch.Tensor, test_x: torch.Tensor,
               repeats: int) -> ModelCost:  # fmt: skip
    """Per example and per step from one epoch at each of `BATCHES`; per test example
    from scoring the test set."""
    n = len(x)

    def epoch(batch_size: int) -> float:
        return best_of(
            repeats,
            lambda: train(build_model(0, kind), x, y, epochs=1, batch_size=batch_size,
                          learning_rate=0.01, momentum=0.9, seed=0),
        )  # fmt: skip

    large, small = (epoch(b) for b in BATCHES)
    step = max(small - large, 0.0) / (n / BATCHES[1] - n / BATCHES[0])
    example = max(large - n / BATCHES[0] * step, 0.0) / n
    model = build_model(0, kind)
    scoring = best_of(repeats, lambda: predict(model, test_x))
    return ModelCost(example=example, step=step, test_example=scoring / len(test_x))


def round_and_job_seconds(data_dir: str, rounds: int, scoring: float) -> tuple[float, float]:
    """What a round costs beyond its training and scoring, and a job beyond its rounds."""
    config = ExperimentConfig(
        data_dir=data_dir, num_clients=2, split="iid", num_rounds=rounds, local_epochs=1,
        batch_size=60_000,
    )  # fmt: skip
    with Engine() as engine:
        engine.submit(config.replace(num_rounds=1), "federated", use_cache=False).result()  # warm
        timings = engine.submit(config, "federated", use_cache=False).result().timings
    beyond = timings["federated"] - timings["federated-clients"] - (rounds + 1) * scoring
    return max(beyond, 0.0) / rounds, timings["total"] - timings["federated"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--examples", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    use_one_thread()
    data = load_mnist(args.data_dir)
    costs = {}
    for kind in MODELS:
        n = args.examples // 10 if kind == "cnn" else args.examples
        costs[kind] = model_cost(kind, data.train_x[:n], data.train_y[:n], data.test_x,
                                 args.repeats)  # fmt: skip
    mlp_scoring = TEST_IMAGES * costs["mlp"].test_example
    round_seconds, job_seconds = round_and_job_seconds(args.data_dir, args.rounds, mlp_scoring)

    print("MODEL_COSTS: dict[str, ModelCost] = {")
    for kind, cost in costs.items():
        print(f'    "{kind}": ModelCost(example={cost.example:.2e}, step={cost.step:.2e}, '
              f"test_example={cost.test_example:.2e}),")  # fmt: skip
    print("}")
    print(f"ROUND_SECONDS = {round_seconds:.3f}")
    print(f"JOB_SECONDS = {job_seconds:.2f}")
    print()
    print("| model | per training example | per step | per test example |")
    print("| --- | ---: | ---: | ---: |")
    for kind, cost in costs.items():
        print(f"| {kind} | {cost.example * 1e6:.2f} µs | {cost.step * 1e6:.1f} µs | "
              f"{cost.test_example * 1e6:.2f} µs |")  # fmt: skip
    print(f"\nA round beyond its training and scoring: {round_seconds * 1e3:.0f} ms; "
          f"a job beyond its rounds: {job_seconds:.2f} s.")  # fmt: skip


if __name__ == "__main__":
    main()
