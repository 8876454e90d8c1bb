"""Run the phases of one experiment and time them."""

from __future__ import annotations

import threading
import time
from typing import Literal

from fedcore.config import ExperimentConfig
from fedcore.data import load_mnist
from fedcore.isolated import run_isolated
from fedcore.local_training import ClientEpochCallback
from fedcore.progress import ProgressCallback
from fedcore.results import ExperimentResult, FederatedResult

Phase = Literal["isolated", "federated", "all"]
PHASES: tuple[Phase, ...] = ("isolated", "federated", "all")


class BackgroundSimulation(threading.Thread):
    """The federated simulation in a daemon thread, with a `stop` for a caller that
    gives up (Ctrl-C): Flower's ServerApp thread, which the interpreter waits for
    at exit, then ends at its next poll, and Ray's exit hook stops the workers."""

    def __init__(self, config: ExperimentConfig, on_progress: ProgressCallback | None) -> None:
        super().__init__(name="fedcore-federated", daemon=True)
        # Ray and Flower's engine: imported only when needed, and here, before any
        # clock starts (every timing in fedcore, like the benchmarks' yardsticks,
        # leaves imports out).
        from fedcore.simulation import simulate

        self.simulate = simulate
        self.config, self.on_progress = config, on_progress
        self.stop = threading.Event()
        self.result: FederatedResult | None = None
        self.error: BaseException | None = None
        self.seconds = 0.0

    def run(self) -> None:
        start = time.perf_counter()
        try:
            self.result = self.simulate(self.config, self.on_progress, self.stop)
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

    With both, the federated simulation starts first in a background thread,
    and the isolated models train at low priority meanwhile: Ray's start-up
    (several seconds before the first round can begin) has the cores when it needs
    them, and the isolated models take the rest.
    """
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {', '.join(PHASES)}, got {phase!r}")
    background = BackgroundSimulation(config, on_progress) if phase != "isolated" else None
    begin = time.perf_counter()
    if background is not None:  # first: Ray takes longest to start
        background.start()
    try:
        data = load_mnist(config)  # now, so that Ray workers (seconds away) find it cached
        timings = {"load": time.perf_counter() - begin}
        isolated = federated = None
        if phase in ("isolated", "all"):
            start = time.perf_counter()
            isolated = run_isolated(config, data, on_epoch, low_priority=background is not None)
            timings["isolated"] = time.perf_counter() - start
        if background is not None:
            federated, timings["federated"] = background.outcome()
    except BaseException:  # Ctrl-C, bad data: the federated run ends too
        if background is not None:
            background.stop.set()
        raise
    timings["total"] = time.perf_counter() - begin
    return ExperimentResult(config=config, isolated=isolated, federated=federated, timings=timings)
