"""A warm worker process of the engine, forked from it with PyTorch and Flower
loaded; its ClientApp and the data stay loaded between tasks, so a run pays none of it.

Tasks arrive as `(kind, args)` and are answered with `("ok", value, (start,
end))` (wall-clock seconds the task ran) or `("error", message)`; a task may
send `("progress", value)` messages first.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from fedcore.engine.child import Channel


@functools.lru_cache(maxsize=4)
def _client_app(run_config_items: tuple[tuple[str, Any], ...]) -> Any:
    from fedcore.flower.client_app import build_client_app

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
    conn.send(("ready", role))
    while True:
        try:
            kind, args = conn.recv()
        except EOFError:  # the engine is gone
            return
        started = time.time()
        try:
            if kind == "client-app":
                value = run_client_app(*args)
            elif kind == "isolated":
                value = fit_isolated(*args, lambda v: conn.send(("progress", v)))
            elif kind == "centralized":
                value = fit_centralized(*args, lambda v: conn.send(("progress", v)))
            else:
                raise ValueError(f"unknown task {kind!r}")
        except Exception as error:
            conn.send(("error", str(error)))
        else:
            conn.send(("ok", value, (started, time.time())))
