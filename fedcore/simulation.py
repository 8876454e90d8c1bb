"""In-process federated runs for the notebook and the CLI, on Flower's simulation engine.

The same ServerApp logic (`run_federated`) and the same ClientApp handler as
`flwr run .`, run by Flower's Simulation Runtime with the Ray backend: the
ServerApp in a thread of this process (so progress callbacks reach the UI
directly), each ClientApp in a Ray worker process that loads the data once.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp
from flwr.simulation import run_simulation

from fedcore.client_app import build_client_app
from fedcore.config import ConfigError, ExperimentConfig
from fedcore.data import DataError
from fedcore.federated import run_federated
from fedcore.progress import FederatedRunError, ProgressCallback
from fedcore.results import FederatedResult


class SimulationError(FederatedRunError):
    """The simulation engine could not run (Ray failed to start, a worker died, ...)."""


os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # silences a Ray notice
# Ray pre-starts idle workers that Flower's actors (with their own runtime env)
# never use: about 2 CPU-seconds of imports on a 2-core machine, for nothing.
os.environ.setdefault("RAY_prestart_worker_first_driver", "0")


def backend_config() -> dict[str, Any]:
    """One CPU per ClientApp, so clients train in parallel, one per core."""
    return {
        "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
        "init_args": {
            "num_cpus": os.cpu_count() or 1,
            "logging_level": "ERROR",
            "log_to_driver": False,
            "include_dashboard": False,
        },
    }


def simulate(
    config: ExperimentConfig,
    on_progress: ProgressCallback | None = None,
    stop: threading.Event | None = None,
) -> FederatedResult:
    """Run FedAvg over `config.num_clients` virtual SuperNodes and return the result.

    Setting `stop` (the caller gave up, e.g. on Ctrl-C) ends the run at the next poll.
    """
    outcome: list[FederatedResult] = []
    # Flower runs the ServerApp in a non-daemon thread, which the interpreter
    # waits for at exit; `stop` tells it to stop waiting for replies, also
    # when the engine dies, so the process can exit.
    stop = stop or threading.Event()
    server_app = ServerApp()

    @server_app.main()
    def _main(grid: Grid, context: Context) -> None:
        outcome.append(run_federated(grid, config, on_progress, stop))

    flwr_logger = logging.getLogger("flwr")
    level = flwr_logger.level
    flwr_logger.setLevel(logging.CRITICAL)  # we report progress and errors ourselves
    try:
        run_simulation(
            server_app=server_app,
            # Absolute data folder: Ray workers need not share this process's cwd.
            client_app=build_client_app(
                config.to_run_config() | {"data-dir": config.resolved_data_dir()}
            ),
            num_supernodes=config.num_clients,
            backend_config=backend_config(),
        )
    except (FederatedRunError, DataError, ConfigError):
        raise  # our own, already clear (raised in the ServerApp thread)
    except SystemExit as error:  # Flower exits the process on some runtime failures
        raise SimulationError(
            f"Flower's simulation engine stopped (exit code {error.code})"
        ) from error
    except Exception as error:  # Ray failing to start, a worker dying, ...
        cause = error
        while cause.__cause__ or cause.__context__:  # Flower wraps it twice: show the root
            cause = cause.__cause__ or cause.__context__
        raise SimulationError(
            f"Flower's simulation engine (Ray) failed: {type(cause).__name__}: {cause}"
        ) from error
    finally:
        stop.set()
        flwr_logger.setLevel(level)
    if not outcome:
        raise SimulationError("the simulation ended without a result")
    return outcome[0]
