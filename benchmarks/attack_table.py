"""The attack table of docs/attacks.md: each aggregation rule against each attack,
with 1 and 3 attackers out of 10 clients, on real MNIST.

  python benchmarks/attack_table.py --data-dir ../shared/data/mnist [--rounds 5]

Every cell is one federated run through the engine (10 IID clients, the MLP, 1 local
epoch a round, the other settings the lab's defaults, seed 42), computed once and
then read from the engine's cache. Prints (and with `--out` writes) a markdown
table: final test accuracy, and for the backdoor the attack's success (triggered
test images of other digits that the global model calls the target), for each
rule, attack and number of attackers; and, for Krum and MultiKrum, the share of the
updates they kept that were attackers'.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from fedcore.engine import Engine
from fedcore.engine.sweep import attackers_kept
from fedcore.experiment.config import ExperimentConfig

RULES = {
    "fedavg": {"strategy": "fedavg"},
    "fedmedian": {"strategy": "fedmedian"},
    "fedtrimmedavg:beta=0.2": {"strategy": "fedtrimmedavg:beta=0.2"},
    "krum:f=3": {"strategy": "krum:f=3"},
    "multikrum:f=3,m=5": {"strategy": "multikrum:f=3,m=5"},
    "fedavg + central DP (clip 2, noise 0.1)": {"privacy": "server:noise=0.1,clip=2"},
}
ATTACKS = ("label-flip", "sign-flip:scale=4", "noise:std=1", "scale:factor=10",
           "backdoor:target=0")  # fmt: skip
ATTACKERS = ("1", "3")


def cell_text(config: ExperimentConfig, federated) -> str:
    text = f"{federated.accuracy:.1%}"
    if federated.attack_success is not None:
        text += f" / bd {federated.attack_success:.0%}"
    kept = attackers_kept(config, federated)
    if kept is not None:
        text += f" / kept {kept:.0%}"
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("FEDCORE_DATA_DIR"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", help="also write the table to this file")
    args = parser.parse_args()
    if not args.data_dir:
        parser.error("--data-dir (or FEDCORE_DATA_DIR) names the folder of the MNIST files")
    base = ExperimentConfig(num_clients=10, split="iid", local_epochs=1, num_rounds=args.rounds,
                            data_dir=args.data_dir)  # fmt: skip
    columns = [("none", "0")] + [(a, k) for a in ATTACKS for k in ATTACKERS]
    header = ["rule"] + [
        "no attack" if a == "none" else f"{a.split(':')[0]} x{k}" for a, k in columns
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    start = time.monotonic()
    with Engine() as engine:
        for rule, settings in RULES.items():
            cells = []
            for attack, attackers in columns:
                config = base.replace(**settings, attack=attack, attackers=attackers)
                federated = engine.submit(config, "federated").result().federated
                cells.append(cell_text(config, federated))
                print(f"{rule}, {attack} x{attackers}: {cells[-1]}", flush=True)
            lines.append(f"| {rule} | " + " | ".join(cells) + " |")
    minutes = (time.monotonic() - start) / 60
    print(f"{len(RULES) * len(columns)} cells in {minutes:.1f} min", *lines, sep="\n")
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
