"""What the curious server costs and what it learns, measured on real MNIST.

  python benchmarks/bench_leakage.py --data-dir ../shared/data/mnist [--repeats 5] [--parts 1,3]

1. Cost: one round of the story (3 clients, 10 local epochs, batch 64, the engine
   warm, no cache), federated phase only, with the server's analytic attacks
   (`leakage analytic`: label leakage and first-layer inversion) and without,
   alternating, `--repeats` times each; the median of each and the overhead.
2. The optimisation attack on one client's update of 1 step (batch 1, 4, 8): its
   time on one thread, and the PSNR of its best image.
3. The leakage curve: the best PSNR over the clients as the batch grows (1 local
   step) and as the local steps grow (batch 8), 1 round of 1 epoch.
4. The defenses on the story (3 rounds of 10 epochs): the missing digits named,
   the best PSNR, the accuracy and the epsilon; and the best PSNR at batch 1, 1 step.

Run it with nothing else on the machine: the times are worthless beside other work.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from fedcore.data.mnist import load_mnist
from fedcore.data.partition import partition_clients
from fedcore.engine import Engine
from fedcore.experiment.config import ExperimentConfig
from fedcore.learning.local import round_sample, train_on_partition
from fedcore.learning.models import build_model
from fedcore.privacy.curious_server import image_bytes
from fedcore.privacy.image_scores import best_match
from fedcore.privacy.inversion import Recipe, optimisation_attack
from fedcore.privacy.summary import epsilon_spent, leakage_scores

DEFENSES = ("off", "secagg", "local:epsilon=10,clip=1", "server:noise=1,clip=1")


def federated_seconds(engine: Engine, config: ExperimentConfig) -> float:
    result = engine.submit(config, "federated", use_cache=False).result()
    return result.timings["federated"]


def cost(engine: Engine, story: ExperimentConfig, repeats: int) -> None:
    one_round = story.replace(num_rounds=1)
    federated_seconds(engine, one_round)  # warm: the workers have the data and the split
    times: dict[str, list[float]] = {"off": [], "analytic": []}
    for _ in range(repeats):
        for leakage in times:
            times[leakage].append(federated_seconds(engine, one_round.replace(leakage=leakage)))
    off, on = (statistics.median(times[k]) for k in ("off", "analytic"))
    print("\n## 1. A round of the story, with and without the curious server")
    for leakage, median in (("off", off), ("analytic", on)):
        every = ", ".join(f"{t:.2f}" for t in times[leakage])
        print(f"leakage {leakage}: median {median:.2f} s (all: {every})")
    print(f"overhead: {100 * (on - off) / off:+.1f}%")


def optimisation(story: ExperimentConfig) -> None:
    print("\n## 2. The optimisation attack on one update of 1 step (client 1, MLP, one thread)")
    torch.set_num_threads(1)
    data = load_mnist(story)
    partition = partition_clients(data.train_y, story)[0]
    for batch in (1, 4, 8):
        config = story.replace(local_steps=1, batch_size=batch, local_epochs=1)
        model = build_model(config.seed, config.model)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        train_on_partition(model, data, partition, config, 1)
        chosen = partition.indices[round_sample(partition.size, config, 1, 1)]
        labels = data.train_y[chosen]
        start = time.perf_counter()
        images = optimisation_attack(before, model.state_dict(), config.model, labels,
                                     Recipe.from_config(config), seed=config.seed)  # fmt: skip
        seconds = time.perf_counter() - start
        match = best_match(images, data.train_x[chosen])
        assert len(image_bytes(images[0])) == 784
        print(f"batch {batch}: {seconds:.2f} s, best PSNR {match.psnr_db:.1f} dB, "
              f"SSIM {match.ssim:.2f}")  # fmt: skip


def best_psnr(engine: Engine, config: ExperimentConfig) -> tuple[dict, object]:
    result = engine.submit(config, "federated", use_cache=False).result()
    return leakage_scores(result.federated), result


def curve(engine: Engine, story: ExperimentConfig) -> None:
    print("\n## 3. The leakage curve (1 round of 1 epoch; best PSNR over the 3 clients)")
    base = story.replace(num_rounds=1, local_epochs=1, leakage="analytic")
    head = "best PSNR (dB) | images rebuilt to 30 dB, of the 3 clients' |\n| ---: | ---: | ---: |"
    print(f"| batch (1 step) | {head}")
    for batch in (1, 2, 4, 8, 16, 64):
        scores, _ = best_psnr(engine, base.replace(local_steps=1, batch_size=batch))
        print(f"| {batch} | {scores['best_psnr_db']:.1f} | {scores['images_recovered']} of "
              f"{3 * batch} |")  # fmt: skip
    print(f"\n| local steps (batch 8) | {head}")
    for steps in (1, 2, 10, 100, 0):
        scores, result = best_psnr(engine, base.replace(local_steps=steps, batch_size=8))
        trained = sum(sum(c.label_counts) for c in result.federated.leakage)
        print(f"| {steps or 'all its images'} | {scores['best_psnr_db']:.1f} | "
              f"{scores['images_recovered']} of {trained} |")  # fmt: skip


def defenses(engine: Engine, story: ExperimentConfig) -> None:
    print("\n## 4. The defenses")
    print("| defense | missing digits named | best PSNR, story (dB) | accuracy | epsilon | "
          "best PSNR, batch 1, 1 step (dB) |")  # fmt: skip
    print("| :--- | ---: | ---: | ---: | ---: | ---: |")
    for privacy in DEFENSES:
        scores, result = best_psnr(engine, story.replace(leakage="analytic", privacy=privacy))
        small = story.replace(leakage="analytic", privacy=privacy, num_rounds=1, local_epochs=1,
                              local_steps=1, batch_size=1)  # fmt: skip
        exposed, _ = best_psnr(engine, small)
        epsilon, _ = epsilon_spent(result.config, result.federated)

        def db(value: float | None) -> str:
            return "-" if value is None else f"{value:.1f}"

        print(f"| {result.config.privacy} | {scores['missing_named']} of 3 | "
              f"{db(scores['best_psnr_db'])} | {result.federated.accuracy:.1%} | "
              f"{'-' if epsilon is None else f'{epsilon:.3g}'} | "
              f"{db(exposed['best_psnr_db'])} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--parts", default="1,2,3,4", help="which parts to run, e.g. 1,3")
    args = parser.parse_args()
    parts = {int(part) for part in args.parts.split(",")}
    story = ExperimentConfig(data_dir=args.data_dir)
    with Engine() as engine:
        if 1 in parts:
            cost(engine, story, args.repeats)
        if 2 in parts:
            optimisation(story)
        if 3 in parts:
            curve(engine, story)
        if 4 in parts:
            defenses(engine, story)


if __name__ == "__main__":
    main()
