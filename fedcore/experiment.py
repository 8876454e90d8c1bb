"""Run the phases of one experiment and time them."""

from __future__ import annotations

import threading
import time
from typing import Literal

from fedcore.config import ExperimentConfig
from fedcore.data import load_mnist
from fedcore.isolated import run_isolated
from fedcore.local_training import ClientEpochCallback
from fedcore.partition import iid_shards
from fedcore.progress import ProgressCallback
from fedcore.results import ExperimentResult, FederatedResult

Phase = Literal["isolated", "federated", "all"]
PHASES: tuple[Phase, ...] = ("isolated", "federated", "all")


class BackgroundSimulation(threading.Thread):
    """The federated simulation in a daemon thread: Ctrl-C on the main thread ends the
    process at once (Ray's exit hook then stops its workers) instead of waiting for it."""

    def __init__(self, config: ExperimentConfig, on_progress: ProgressCallback | None) -> None:
        super().__init__(name="fedcore-federated", daemon=True)
        self.config, self.on_progress = config, on_progress
        self.result: FederatedResult | None = None
        self.error: BaseException | None = None
        self.seconds = 0.0

    def run(self) -> None:
        start = time.perf_counter()
        try:
            from fedcore.simulation import simulate  # imports Ray; only when needed

            self.result = simulate(self.config, self.on_progress)
        except BaseException as error:  # handed to the caller in `outcome`
            self.error = error
        self.seconds = time.perf_counter() - start

    def outcome(self) -> tuple[FederatedResult, float]:
        self.join()
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result, self.seconds


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
    background = None
    if phase in ("federated", "all"):  # first: Ray takes longest to start
        background = BackgroundSimulation(config, on_progress)
        background.start()
    data = load_mnist(config)
    # Compute (or load) the split now, so Ray workers (seconds away) find it cached.
    iid_shards(len(data.train_y), config.num_clients, config.seed)
    timings = {"load": time.perf_counter() - begin}
    isolated = federated = None
    if phase in ("isolated", "all"):
        start = time.perf_counter()
        isolated = run_isolated(config, data, on_epoch)
        timings["isolated"] = time.perf_counter() - start
    if background is not None:
        federated, timings["federated"] = background.outcome()
    timings["total"] = time.perf_counter() - begin
    return ExperimentResult(config=config, isolated=isolated, federated=federated, timings=timings)
