"""Flower's simulation runtime on the engine's warm worker pool instead of Ray.

The pieces are Flower's own, as `flwr.simulation.run_simulation` and
`flwr-simulation` assemble them: an in-memory LinkState, an `InMemoryGrid`,
the Simulation Runtime's message loop (`vce_api.run_api`) and
`run_serverapp.run` calling the ServerApp. Only the `Backend`, which hands
each message to a ClientApp, is ours: `PoolBackend` runs the ClientApp in a
pool worker, as Flower's `RayBackend` runs it in a Ray actor. Flower's
`run_simulation` (deprecated in 1.42) always builds a `RayBackend` and shuts
Ray down after every run, which made every run pay about 7 s to start the
engine again; here the workers outlive the run.

This is the one module of fedcore that uses Flower's internals (not its public
`flwr.app`, `flwr.clientapp`, `flwr.serverapp` API), which is why `pyproject.toml`
pins `flwr` to one minor version. Check each of them when moving the pin:

- `flwr.server.superlink.fleet.vce.vce_api`: `run_api` (the runtime's message
  loop, whose 0.1 s waits on the stop event `_PromptStop` shortens), and the
  private `_register_nodes` and `_register_node_info_stores`;
- `flwr.server.superlink.fleet.vce.backend.Backend` (the base of `PoolBackend`)
  and `flwr.server.superlink.fleet.vce.metrics.VceMetrics`;
- `flwr.server.superlink.linkstate`: `LinkStateFactory`, the in-memory LinkState's
  `RunRecord`, `run_ids` and `task_store` (written directly in `_new_run`), and
  `utils.generate_rand_int_from_bytes`;
- `flwr.superlink.grid.InMemoryGrid` and `flwr.superlink.federation.NoOpFederationManager`;
- `flwr.supercore`: `object_store.ObjectStoreFactory`, `run.Run.create_empty`,
  `task_identity.TaskIdentity` (its class attributes set), and the constants
  `FLWR_IN_MEMORY_DB_NAME`, `NOOP_FEDERATION_ID`;
- `flwr.common.constant`: `RUN_ID_NUM_BYTES`, `TASK_ID_NUM_BYTES`, `SUPERLINK_NODE_ID`;
- `flwr.proto.task_pb2.Task`, `flwr.server.run_serverapp.run` (runs a loaded
  ServerApp) and `flwr.clientapp.client_app.ClientAppException`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from flwr.app import Context, Message, RecordDict
from flwr.app.user_config import UserConfig
from flwr.clientapp import ClientApp
from flwr.clientapp.client_app import ClientAppException
from flwr.common.constant import RUN_ID_NUM_BYTES, SUPERLINK_NODE_ID, TASK_ID_NUM_BYTES
from flwr.proto.task_pb2 import Task  # pylint: disable=E0611
from flwr.server.run_serverapp import run as run_server_app
from flwr.server.superlink.fleet.vce import vce_api
from flwr.server.superlink.fleet.vce.backend import Backend
from flwr.server.superlink.fleet.vce.metrics import VceMetrics
from flwr.server.superlink.linkstate import LinkStateFactory
from flwr.server.superlink.linkstate.in_memory_linkstate import RunRecord
from flwr.server.superlink.linkstate.utils import generate_rand_int_from_bytes
from flwr.serverapp import Grid, ServerApp
from flwr.supercore.constant import FLWR_IN_MEMORY_DB_NAME, NOOP_FEDERATION_ID
from flwr.supercore.object_store import ObjectStoreFactory
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity
from flwr.superlink.federation import NoOpFederationManager
from flwr.superlink.grid import InMemoryGrid

from fedcore.engine.pool import TaskError, WorkerPool

# How often the runtime looks for new messages and the ServerApp for replies.
# Flower polls every 0.1 s (it expects Ray actors that take seconds); a round
# of small clients takes less than that, so at 0.1 s the polls were a third
# of a round (see docs/benchmarks.md, round overhead).
POLL_SECONDS = 0.005
T = TypeVar("T")


class _PromptStop(threading.Event):
    """The runtime's stop event, whose waits between polls last `POLL_SECONDS`:
    Flower's message loop waits on it for 0.1 s between looks at the LinkState."""

    def wait(self, timeout: float | None = None) -> bool:
        return super().wait(None if timeout is None else min(timeout, POLL_SECONDS))


class PoolBackend(Backend):
    """A Simulation Runtime backend whose ClientApps run in the engine's worker pool.

    The workers build the ClientApp themselves (`fedcore.flower.client_app` with
    `run_config`), so only the message and the node's context cross processes.
    """

    def __init__(
        self,
        pool: WorkerPool,
        run_config: Mapping[str, Any],
        on_reply: Callable[[Message, Message], None] | None = None,
    ) -> None:
        super().__init__({})
        self.pool, self.run_config, self.on_reply = pool, dict(run_config), on_reply

    def build(self, app_fn: Callable[[], ClientApp]) -> None:
        """Nothing to build: the workers are already running."""

    @property
    def num_workers(self) -> int:
        return self.pool.size

    def is_worker_idle(self) -> bool:
        return True  # the pool queues what it cannot start yet

    def terminate(self) -> None:
        """Nothing to stop: the workers stay for the next run."""

    def process_message(self, message: Message, context: Context) -> tuple[Message, Context]:
        future = self.pool.submit("client-app", (self.run_config, message, context))
        try:
            reply, context = future.result()
        except TaskError as error:  # as Flower's Ray actor reports a ClientApp's exception
            raise ClientAppException(str(error)) from error
        if self.on_reply is not None:
            self.on_reply(message, reply)
        return reply, context


def _new_run(state_factory: LinkStateFactory) -> Run:
    run_id = generate_rand_int_from_bytes(RUN_ID_NUM_BYTES)
    run = Run.create_empty(run_id=run_id)
    run.primary_task_id = generate_rand_int_from_bytes(TASK_ID_NUM_BYTES)
    run.federation_id = NOOP_FEDERATION_ID
    state = state_factory.state()
    state.run_ids[run_id] = RunRecord(run=run)
    state.task_store[run.primary_task_id] = Task(task_id=run.primary_task_id, run_id=run_id)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, run_id, SUPERLINK_NODE_ID
    return run


def _register_nodes_in_order(num_nodes: int, state_factory: LinkStateFactory) -> dict[int, int]:
    """Node id -> partition id, with partitions in the order of the (random) node ids,
    so that a strategy sampling from the sorted node ids samples partitions the same
    way in every run."""
    node_ids = sorted(vce_api._register_nodes(num_nodes, state_factory))
    return {node_id: partition for partition, node_id in enumerate(node_ids)}


def run_on_pool(
    server_app: ServerApp,
    run_config: Mapping[str, Any],
    num_supernodes: int,
    pool: WorkerPool,
    on_reply: Callable[[Message, Message], None] | None = None,
) -> None:
    """Run `server_app` in this thread against `num_supernodes` virtual SuperNodes
    whose ClientApps run in `pool`; return when the ServerApp returns.
    `on_reply(message, reply)` sees each ClientApp's reply."""
    state_factory = LinkStateFactory(
        FLWR_IN_MEMORY_DB_NAME, NoOpFederationManager(), ObjectStoreFactory()
    )
    run = _new_run(state_factory)
    grid = InMemoryGrid(state_factory=state_factory, pull_interval=POLL_SECONDS)
    grid.set_run(run)
    nodes = _register_nodes_in_order(num_supernodes, state_factory)
    f_stop = _PromptStop()
    runtime = threading.Thread(
        target=vce_api.run_api,
        args=(
            lambda: None,  # the backend builds no ClientApp here
            lambda: PoolBackend(pool, run_config, on_reply),
            nodes,
            state_factory,
            vce_api._register_node_info_stores(nodes, run, None),
            f_stop,
            VceMetrics(),
        ),
        name="fedcore-flower-runtime",
        daemon=True,
    )
    runtime.start()
    context = Context(
        run_id=run.run_id,
        node_id=0,
        node_config=UserConfig(),
        state=RecordDict(),
        run_config=UserConfig(),
    )
    try:
        run_server_app(grid=grid, context=context, server_app_dir="", loaded_server_app=server_app)
    finally:
        # The runtime's threads notice within a second and end by themselves;
        # nothing waits for them, the result is complete.
        f_stop.set()


def run_server_main_on_pool(
    main: Callable[[Grid], T],
    run_config: Mapping[str, Any],
    num_supernodes: int,
    pool: WorkerPool,
    on_reply: Callable[[Message, Message], None] | None = None,
) -> T:
    """`main(grid)` as the main of a ServerApp run by `run_on_pool`; what it returns.
    Flower's own log is silenced: the engine reports progress and errors itself."""
    logging.getLogger("flwr").setLevel(logging.CRITICAL)
    outcome: list[T] = []
    server_app = ServerApp()

    @server_app.main()
    def _main(grid: Grid, context: Context) -> None:
        outcome.append(main(grid))

    run_on_pool(server_app, run_config, num_supernodes, pool, on_reply)
    return outcome[0]
