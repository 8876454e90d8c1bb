"""What one federated round costs beyond its clients' training, at McMahan et al.'s scale.

  python benchmarks/bench_rounds.py --data-dir ../shared/data/mnist [--rounds 50]

100 clients with 600 images each (the IID split of the 60,000), 10 sampled per
round (fraction 0.1), 1 local epoch, batch 10, the 2NN: the setting of McMahan
et al.'s 2NN experiments. The engine is warmed by a small run first (its start
is not a round's cost), then runs `--rounds` rounds. Reported per round: the
wall time, the clients' own training (wall-clock time in which at least one
ClientApp was training, measured in the workers) and everything else (Flower's
messages, the engine, aggregation, evaluating the global model on the 10,000
test images after every round). Target: everything else <= 50% of a round.
"""

from __future__ import annotations

import argparse
import json

from fedcore.config import ExperimentConfig
from fedcore.engine import Engine

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args()
    with Engine() as engine:
        warm = ExperimentConfig(data_dir=args.data_dir, num_rounds=1, local_epochs=1)
        engine.submit(warm, "federated", use_cache=False).result()
        config = ExperimentConfig(data_dir=args.data_dir, num_rounds=args.rounds, **SCALE)
        result = engine.submit(config, "federated", use_cache=False).result()
    wall, clients = result.timings["federated"], result.timings["federated-clients"]
    rounds = args.rounds
    row = {
        "rounds": rounds,
        "round_s": wall / rounds,
        "clients_s": clients / rounds,
        "else_s": (wall - clients) / rounds,
        "else_share": (wall - clients) / wall,
        "final_accuracy": result.federated.accuracy,
        "rounds_to_97": result.federated.rounds_to_target,
    }
    print(json.dumps(row, indent=2))
    print(
        f"per round: {row['round_s'] * 1000:.0f} ms wall = {row['clients_s'] * 1000:.0f} ms "
        f"clients + {row['else_s'] * 1000:.0f} ms else ({row['else_share']:.0%}; target <= 50%); "
        f"final accuracy {row['final_accuracy']:.1%} after {rounds} rounds"
    )


if __name__ == "__main__":
    main()
