"""What a run will cost on this machine, estimated before it runs, from its settings
alone: the examples trained (x local epochs x rounds) times what one example costs
its model, plus the test set scored after every round.

A server uses it to refuse a run beyond its budget before queueing it, and the
engine names it in its log; it is a rough figure (the same for every split: at
most the 60,000 training images are spread over the clients), not a promise.
The constants are measured on this machine by `benchmarks/calibrate_cost.py`,
whose figures are in docs/benchmarks.md ("What a run costs").
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from fedcore.engine.protocol import PHASE_PARTS, Phase
from fedcore.experiment.config import ExperimentConfig

TRAIN_IMAGES = 60_000  # each image belongs to one client at most, whatever the split
TEST_IMAGES = 10_000


@dataclass(frozen=True)
class ModelCost:
    """Seconds of one core: per training example, per optimiser step (a batch),
    per test example scored."""

    example: float
    step: float
    test_example: float


# From `python benchmarks/calibrate_cost.py` (docs/benchmarks.md).
MODEL_COSTS: dict[str, ModelCost] = {
    "mlp": ModelCost(example=1.24e-05, step=2.89e-04, test_example=4.89e-06),
    "2nn": ModelCost(example=2.46e-05, step=3.54e-04, test_example=7.23e-06),
    "cnn": ModelCost(example=1.47e-03, step=1.71e-02, test_example=1.12e-03),
    "lenet": ModelCost(example=4.27e-05, step=7.98e-04, test_example=5.94e-05),
    # logreg: `calibrate_cost.model_cost` on 4,000 images, 3 repeats, measured beside mlp
    # in the same process on a faster machine than the table's (2026-12-02: logreg 1.73
    # us/example, 30.2 us/step, 0.41 us/test image; mlp 4.78, 95.9, 1.73), scaled by the
    # mlp row's ratio to the table's mlp figures (docs/benchmarks.md, "What a run costs")
    "logreg": ModelCost(example=4.47e-06, step=9.10e-05, test_example=1.16e-06),
}
ROUND_SECONDS = 0.033  # a round beyond its training and scoring: Flower's messages, the engine
JOB_SECONDS = 0.01  # a job beyond its rounds: the data, the split, the results


def epoch_seconds(config: ExperimentConfig) -> float:
    """One pass of every client over its own data (all the training images), in
    seconds of one core."""
    cost = MODEL_COSTS[config.model]
    steps = TRAIN_IMAGES / config.batch_size + config.num_clients  # a last, partial batch each
    return TRAIN_IMAGES * cost.example + steps * cost.step


def estimate_seconds(config: ExperimentConfig, phase: Phase, cores: int | None = None) -> float:
    """Wall-clock seconds `config`'s `phase` should take on `cores` cores (this
    machine's). The clients, the isolated models and the centralized baseline
    train side by side, one core each; scoring the global model after each round
    does not."""
    parts = PHASE_PARTS[phase]
    cores = cores or os.cpu_count() or 1
    cost = MODEL_COSTS[config.model]
    epoch = epoch_seconds(config)
    scoring = TEST_IMAGES * cost.test_example
    spread = 0.0  # seconds of one core, spread over the cores
    longest = 0.0  # one task that no other core can share
    serial = JOB_SECONDS
    if "federated" in parts:
        sampled = config.clients_per_round / config.num_clients
        spread += config.num_rounds * config.local_epochs * sampled * epoch
        serial += (config.num_rounds + 1) * (scoring + ROUND_SECONDS)
    if "isolated" in parts:
        if "federated" not in parts or config.fraction_train < 1:  # else round 1 gives them
            spread += config.local_epochs * epoch
        serial += config.num_clients * scoring
    if "centralized" in parts:
        longest = config.total_local_epochs * epoch
        spread += longest
        serial += scoring
    return max(spread / cores, longest) + serial


def duration_text(seconds: float) -> str:
    """`"about 40 s"`, `"about 12 min"`, `"about 3.5 h"`, `"about 2 days"`: a rough
    figure, said roughly."""
    if seconds < 90:
        return f"about {math.ceil(seconds)} s"
    if seconds < 90 * 60:
        return f"about {math.ceil(seconds / 60)} min"
    if seconds < 48 * 3600:
        return f"about {seconds / 3600:.1f} h"
    return f"about {seconds / 86400:.0f} days"


def cli_command(config: ExperimentConfig, phase: Phase) -> str:
    """The same run from the command line, which has no budget."""
    return f"python -m fedcore run --phase {phase} {config.summary()}"
