"""Run the phases of one experiment and time them."""

from __future__ import annotations

import time
from typing import Literal

from fedcore.config import ExperimentConfig
from fedcore.data import load_mnist
from fedcore.isolated import ClientEpochCallback, run_isolated
from fedcore.results import ExperimentResult

Phase = Literal["isolated", "federated", "all"]
PHASES: tuple[Phase, ...] = ("isolated", "federated", "all")


def run_experiment(
    config: ExperimentConfig,
    phase: Phase = "all",
    on_epoch: ClientEpochCallback | None = None,
) -> ExperimentResult:
    """The isolated phase, the federated phase, or both; seconds per phase in `timings`."""
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {', '.join(PHASES)}, got {phase!r}")
    timings: dict[str, float] = {}
    start = time.perf_counter()
    data = load_mnist(config)
    timings["load"] = time.perf_counter() - start
    isolated = None
    if phase in ("isolated", "all"):
        start = time.perf_counter()
        isolated = run_isolated(config, data, on_epoch)
        timings["isolated"] = time.perf_counter() - start
    return ExperimentResult(config=config, isolated=isolated, timings=timings)
