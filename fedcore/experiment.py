"""Run the phases of one experiment and time them."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

from fedcore.config import ExperimentConfig
from fedcore.data import load_mnist
from fedcore.federated import ProgressCallback
from fedcore.isolated import ClientEpochCallback, run_isolated
from fedcore.partition import iid_shards
from fedcore.results import ExperimentResult, FederatedResult

Phase = Literal["isolated", "federated", "all"]
PHASES: tuple[Phase, ...] = ("isolated", "federated", "all")


def _timed_simulation(
    config: ExperimentConfig, on_progress: ProgressCallback | None
) -> tuple[FederatedResult, float]:
    from fedcore.simulation import simulate  # imports Ray; only when needed

    start = time.perf_counter()
    return simulate(config, on_progress), time.perf_counter() - start


def run_experiment(
    config: ExperimentConfig,
    phase: Phase = "all",
    on_epoch: ClientEpochCallback | None = None,
    on_progress: ProgressCallback | None = None,
) -> ExperimentResult:
    """The isolated phase, the federated phase, or both; seconds per phase in `timings`.

    With both, the federated simulation starts first in a background thread:
    while Ray boots its workers (about 15 s of mostly waiting), the isolated
    models train on the main thread.
    """
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {', '.join(PHASES)}, got {phase!r}")
    begin = time.perf_counter()
    data = load_mnist(config)
    # Compute (or load) the split once here, so Ray workers find it cached.
    iid_shards(len(data.train_y), config.num_clients, config.seed)
    timings = {"load": time.perf_counter() - begin}
    isolated = federated = None
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="fedcore-federated") as pool:
        background = None
        if phase in ("federated", "all"):
            background = pool.submit(_timed_simulation, config, on_progress)
        if phase in ("isolated", "all"):
            start = time.perf_counter()
            isolated = run_isolated(config, data, on_epoch)
            timings["isolated"] = time.perf_counter() - start
        if background is not None:
            federated, timings["federated"] = background.result()
    timings["total"] = time.perf_counter() - begin
    return ExperimentResult(config=config, isolated=isolated, federated=federated, timings=timings)
