"""The Flower ServerApp: FedAvg rounds, then the results JSON in the results folder."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from logging import INFO
from pathlib import Path

from flwr.app import Context
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp

from fedcore.federated import Progress, run_federated
from fedcore.results import ExperimentResult
from fedcore.run_config import experiment_config, results_dir

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
    config = experiment_config(context.run_config)
    start = time.perf_counter()
    federated = run_federated(grid, config, on_progress=log_progress)
    result = ExperimentResult(
        config=config, federated=federated, timings={"federated": time.perf_counter() - start}
    )
    path = save_run_results(result, results_dir(context.run_config), context.run_id)
    log(INFO, "fedcore: results written to %s", path)
