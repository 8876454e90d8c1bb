"""Flower's simulation runtime on the engine's warm worker pool instead of Ray.

The pieces are Flower's own, as `flwr.simulation.run_simulation` and
`flwr-simulation` assemble them: an in-memory LinkState, an `InMemoryGrid`, the
nodes registered as the Simulation Runtime registers them, each node's context
in Flower's `DeprecatedRunInfoStore`, and `run_serverapp.run` calling the
ServerApp. Only the loop that carries messages from the LinkState to the
ClientApps and back is ours (`PoolRuntime`), for three reasons:

- Flower's runtime (`vce_api.run_api`) asks the LinkState for each node's next
  message in turn, every 0.1 s, and each ask scans every stored message: at 100
  nodes and 10 messages a round that is 1,000 checks a look, which at a look every
  few milliseconds took a core's worth of CPU from the clients, and at 10,000 nodes
  a single look takes longer than a round (see docs/benchmarks.md, a round at scale).
  Here the grid says when it pushed and to which nodes, and only those are asked.
- it keeps a context for every node from the start; here a node's context is made
  when its first message arrives, so memory grows with the clients that took part;
- its backend runs a ClientApp in a Ray actor, and `run_simulation` (deprecated in
  1.42) starts and stops Ray in every run, about 7 s each; here the ClientApps run
  in the engine's pool, whose workers outlive the run.

This is the one module of fedcore that uses Flower's internals (not its public
`flwr.app`, `flwr.clientapp`, `flwr.serverapp` API), which is why `pyproject.toml`
pins `flwr` to one minor version. Check each of them when moving the pin:

- `flwr.server.superlink.fleet.vce.vce_api`: the private `_register_nodes`, and how
  its `worker` turns a ClientApp's exception into an error reply (copied in
  `_error_reply`);
- `flwr.compat.client.run_info_store.DeprecatedRunInfoStore` (a node's contexts);
- `flwr.server.superlink.linkstate`: `LinkStateFactory`, `get_message_ins`,
  `store_message_res`, the in-memory LinkState's `RunRecord`, `run_ids` and
  `task_store` (written directly in `_new_run`), and `utils.generate_rand_int_from_bytes`;
- `flwr.superlink.grid.InMemoryGrid` (`push_messages` returns the ids of the messages
  it stored) and `flwr.superlink.federation.NoOpFederationManager`;
- `flwr.supercore`: `object_store.ObjectStoreFactory`, `run.Run.create_empty`,
  `task_identity.TaskIdentity` (its class attributes set), and the constants
  `FLWR_IN_MEMORY_DB_NAME`, `NOOP_FEDERATION_ID`;
- `flwr.common.constant`: `RUN_ID_NUM_BYTES`, `TASK_ID_NUM_BYTES`, `SUPERLINK_NODE_ID`,
  `PARTITION_ID_KEY`, `NUM_PARTITIONS_KEY`;
- `flwr.proto.task_pb2.Task`, `flwr.server.run_serverapp.run` (runs a loaded
  ServerApp) and `flwr.clientapp.client_app.ClientAppException`.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from typing import Any, TypeVar
from uuid import uuid4

from flwr.app import Context, Error, Message, RecordDict
from flwr.app.user_config import UserConfig
from flwr.clientapp.client_app import ClientAppException
from flwr.common.constant import (
    NUM_PARTITIONS_KEY,
    PARTITION_ID_KEY,
    RUN_ID_NUM_BYTES,
    SUPERLINK_NODE_ID,
    TASK_ID_NUM_BYTES,
    ErrorCode,
)
from flwr.compat.client.run_info_store import DeprecatedRunInfoStore
from flwr.proto.task_pb2 import Task  # pylint: disable=E0611
from flwr.server.run_serverapp import run as run_server_app
from flwr.server.superlink.fleet.vce import vce_api
from flwr.server.superlink.linkstate import LinkState, LinkStateFactory
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

STOP_CHECK_SECONDS = 0.1  # how often an idle runtime looks whether the run has ended
T = TypeVar("T")


class PushingGrid(InMemoryGrid):
    """Flower's in-memory grid that also tells the runtime which nodes it has just
    sent messages to, and the ServerApp when a reply has come (`replies_arrived`,
    which `fedcore.flower.rounds.ReportingGrid` waits on instead of looking for
    replies every `pull_interval`)."""

    def __init__(
        self,
        *args: Any,
        pushed: queue.SimpleQueue[set[int]],
        replied: threading.Event,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._pushed, self.replies_arrived = pushed, replied
        self._node_ids: list[int] | None = None

    def get_node_ids(self) -> Iterable[int]:
        """The virtual SuperNodes, registered once and never offline: their ids without
        Flower's check of every node's heartbeat in every call (at 10,000 nodes, twice
        a round, longer than the round's training)."""
        if self._node_ids is None:
            self._node_ids = list(super().get_node_ids())
        return list(self._node_ids)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        messages = list(messages)
        ids = list(super().push_messages(messages))
        self._pushed.put({m.metadata.dst_node_id for m in messages})
        return ids


def _error_reply(message: Message, error: BaseException) -> Message:
    """The reply Flower's Simulation Runtime gives for a ClientApp that failed
    (`vce_api.worker`): a ClientApp's exception as `ClientAppException`."""
    if isinstance(error, TaskError):
        error, code = ClientAppException(str(error)), ErrorCode.CLIENT_APP_RAISED_EXCEPTION
    else:
        code = ErrorCode.UNKNOWN
    reason = str(type(error)) + ":<'" + str(error) + "'>"
    return Message(Error(code=code, reason=reason), reply_to=message)


class PoolRuntime:
    """The Simulation Runtime's job, with ClientApps in `pool`: take each message the
    ServerApp pushed, run the node's ClientApp on it with the node's context, keep the
    context it returns and store the reply. The workers build the ClientApp
    themselves (`fedcore.flower.client_app` with `run_config`), so only the message
    and the node's context cross processes. `on_reply(message, reply)` sees each
    ClientApp's reply."""

    def __init__(
        self,
        state: LinkState,
        run: Run,
        nodes: Mapping[int, int],
        pool: WorkerPool,
        run_config: Mapping[str, Any],
        on_reply: Callable[[Message, Message], None] | None = None,
    ) -> None:
        self.state, self.run, self.nodes, self.pool = state, run, nodes, pool
        self.run_config, self.on_reply = dict(run_config), on_reply
        self.pushed: queue.SimpleQueue[set[int]] = queue.SimpleQueue()
        self.replied = threading.Event()
        self.stop = threading.Event()
        self._stores: dict[int, DeprecatedRunInfoStore] = {}  # the nodes that took part

    def _store(self, node_id: int) -> DeprecatedRunInfoStore:
        if node_id not in self._stores:
            node_config = {
                PARTITION_ID_KEY: self.nodes[node_id],
                NUM_PARTITIONS_KEY: len(self.nodes),
            }
            store = DeprecatedRunInfoStore(node_id=node_id, node_config=node_config)
            store.register_context(run_id=self.run.run_id, run=self.run, app_dir=None)
            self._stores[node_id] = store
        return self._stores[node_id]

    def serve(self) -> None:
        """Hand every pushed message to the pool until `stop` is set: each push's in the
        order of the nodes' partitions, as Flower's runtime takes them."""
        while not self.stop.is_set():
            try:
                node_ids = self.pushed.get(timeout=STOP_CHECK_SECONDS)
            except queue.Empty:
                continue
            for node_id in sorted(node_ids, key=self.nodes.__getitem__):
                self._submit(node_id)

    def _submit(self, node_id: int) -> None:
        for message in self.state.get_message_ins(node_id=node_id, limit=None):
            context = self._store(node_id).retrieve_context(run_id=message.metadata.run_id)
            future = self.pool.submit("client-app", (self.run_config, message, context))
            future.add_done_callback(lambda done, sent=message: self._finish(sent, done))

    def _finish(self, message: Message, done: Future) -> None:
        """A ClientApp's outcome: its context kept, its reply (or the error) stored."""
        try:
            reply, context = done.result()
        except Exception as error:  # the ClientApp raised, or its worker died
            reply = _error_reply(message, error)
        else:
            self._store(message.metadata.dst_node_id).update_context(
                message.metadata.run_id, context=context
            )
            if self.on_reply is not None:
                self.on_reply(message, reply)
        reply.metadata.__dict__["_message_id"] = str(uuid4())  # as Flower's runtime does
        self.state.store_message_res(reply)
        self.replied.set()


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
    nodes = _register_nodes_in_order(num_supernodes, state_factory)
    runtime = PoolRuntime(state_factory.state(), run, nodes, pool, run_config, on_reply)
    grid = PushingGrid(state_factory=state_factory, pushed=runtime.pushed, replied=runtime.replied)
    grid.set_run(run)
    thread = threading.Thread(target=runtime.serve, name="fedcore-flower-runtime", daemon=True)
    thread.start()
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
        # The runtime's thread notices within STOP_CHECK_SECONDS and ends by itself;
        # nothing waits for it, the result is complete.
        runtime.stop.set()


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
