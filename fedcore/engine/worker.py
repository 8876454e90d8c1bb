"""A warm worker process of the engine, forked from it with PyTorch and Flower
loaded; its ClientApp and the data stay loaded between tasks, so a run pays none of it.

Tasks arrive as `Task`s and are answered as `fedcore.engine.protocol` says: any
`TaskProgress` first, then `TaskDone` (with the wall-clock time it ran) or `TaskFailed`.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from fedcore.engine.child import Channel
from fedcore.engine.protocol import Task, TaskDone, TaskFailed, TaskProgress, WorkerReady


@functools.lru_cache(maxsize=4)
def _client_app(run_config_items: tuple[tuple[str, Any], ...]) -> Any:
    from fedcore.flower.client_app import build_client_app

    # Flower's mods log every message (LocalDpMod its noise, twice a client a round);
    # the engine reports progress and errors itself, as for the ServerApp
    logging.getLogger("flwr").setLevel(logging.WARNING)
    return build_client_app(dict(run_config_items))


def run_client_app(run_config: Mapping[str, Any], message: Any, context: Any) -> tuple[Any, Any]:
    """What Flower's Ray actor does with a message: call the ClientApp on it."""
    app = _client_app(tuple(sorted(run_config.items())))
    return app(message=message, context=context), context


def fit_isolated(config: Any, client: int, send_progress: Callable[[Any], None]) -> dict[str, Any]:
    """Train client `client`'s isolated model; its weights and losses."""
    from fedcore.data.mnist import load_mnist
    from fedcore.data.partition import partition_clients
    from fedcore.learning.baselines import fit_isolated_model

    data = load_mnist(config)
    partition = partition_clients(data.train_y, config)[client - 1]
    model, losses = fit_isolated_model(
        data, partition, config, lambda c, epoch, loss: send_progress((c, epoch, loss))
    )
    return {"weights": model.state_dict(), "losses": losses}


def fit_centralized(config: Any, send_progress: Callable[[Any], None]) -> dict[str, Any]:
    """Train the centralized baseline; its weights and losses."""
    from fedcore.data.mnist import load_mnist
    from fedcore.data.partition import partition_clients
    from fedcore.learning.baselines import fit_centralized_model

    data = load_mnist(config)
    partitions = partition_clients(data.train_y, config)
    model, losses = fit_centralized_model(
        data, partitions, config, lambda epoch, loss: send_progress((epoch, loss))
    )
    return {"weights": model.state_dict(), "losses": losses}


def serve(conn: Channel, role: str, nice: int) -> None:
    """Answer tasks until the engine closes the channel. `role` names the pool
    (the tasks are the same); `nice` lowers this worker's scheduling priority."""
    os.nice(nice)
    conn.send(WorkerReady(role))

    def progress(value: Any) -> None:
        conn.send(TaskProgress(value))

    tasks: dict[str, Callable[..., Any]] = {
        "client-app": run_client_app,
        "isolated": lambda *args: fit_isolated(*args, progress),
        "centralized": lambda *args: fit_centralized(*args, progress),
    }
    while True:
        try:
            task: Task = conn.recv()
        except EOFError:  # the engine is gone
            return
        started = time.time()
        try:
            if task.kind not in tasks:
                raise ValueError(f"unknown task {task.kind!r}")
            value = tasks[task.kind](*task.args)
        except Exception as error:
            conn.send(TaskFailed(str(error)))
        else:
            conn.send(TaskDone(value, (started, time.time())))
