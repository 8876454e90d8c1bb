"""The Flower ServerApp: the strategy's rounds, then the results JSON in the results folder."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from logging import ERROR, INFO
from pathlib import Path

from flwr.app import Context
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp

from fedcore.data.mnist import DataError
from fedcore.experiment.progress import FederatedRunError, Progress
from fedcore.experiment.results import ExperimentResult
from fedcore.experiment.specs import ConfigError
from fedcore.flower.rounds import run_federated
from fedcore.flower.run_config import experiment_config, results_dir

app = ServerApp()


def log_progress(event: Progress) -> None:
    if event.kind == "round-done":
        last = event.history[-1]
        subsets = ", ".join(f"[{k}] {v:.1%}" for k, v in last.subset_accuracy.items())
        log(
            INFO,
            "fedcore round %d/%d: accuracy %.1f%%, %s",
            last.round,
            event.num_rounds,
            100 * last.accuracy,
            subsets,
        )
    elif event.kind == "client-failed":
        log(INFO, "fedcore: %s", event.detail)


def save_run_results(result: ExperimentResult, folder: Path, run_id: int) -> Path:
    """`<folder>/<UTC time>-run<id>.json`, and the same as `latest.json`, both atomic."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    path = result.save(folder / f"{stamp}-run{run_id}.json")
    result.save(folder / "latest.json")
    return path.resolve()


@app.main()
def main(grid: Grid, context: Context) -> None:
    try:
        config = experiment_config(context.run_config)
        start = time.perf_counter()
        federated = run_federated(grid, config, on_progress=log_progress)
    except (ConfigError, DataError, FederatedRunError) as error:
        # One clear line first; Flower then marks the run failed.
        kind = "invalid setting" if isinstance(error, ConfigError) else "run failed"
        log(ERROR, "fedcore: %s: %s", kind, error)
        raise RuntimeError(f"fedcore: {kind}: {error}") from None
    result = ExperimentResult(
        config=config, federated=federated, timings={"federated": time.perf_counter() - start}
    )
    path = save_run_results(result, results_dir(context.run_config), context.run_id)
    log(INFO, "fedcore: results written to %s", path)
