"""A sweep's cells as Ray tasks on an existing Ray cluster (`sweep --ray ADDRESS`).

A local sweep runs its cells one after another through one engine, which already
uses every core of this machine; a grid of hundreds of cells wants more machines.
Here each cell still runs through fedcore's own engine (`Engine`, the same numbers
as a local cell), but inside a Ray task (`num_cpus=1`: a 1-CPU node runs one cell
at a time), on whichever node of the cluster has a CPU free, and every cell left
to compute is submitted at once, so the cluster computes them side by side.

Only the computation moves. The driver (this process) still walks the cells in
order through `run_sweep`: a cell's result comes back here and is written to the
cell files as a local sweep writes it, so kept cells, resumption and the table
are one code path. The task streams the cell's progress events back (a Ray
generator) for the same progress bar.

The nodes import fedcore and read the data themselves: on this machine they share
the files and the virtual environment; on a cluster of several machines every
node needs the same fedcore and libraries (a cell from a node whose code differs
is refused: cells are keyed by this machine's code) and the MNIST files (its
`FEDCORE_DATA_DIR` as `ray start` saw it, or `--data-dir` on every node).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import queue
import socket
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from fedcore.engine.cache import code_fingerprint
from fedcore.engine.protocol import Phase
from fedcore.engine.supervisor import Engine, EngineError
from fedcore.engine.sweep import Cell, kept_result
from fedcore.experiment.config import ExperimentConfig
from fedcore.experiment.progress import Progress
from fedcore.experiment.results import ExperimentResult
from fedcore.storage import os_error_text

CONNECT_SECONDS = 5.0  # to open the cluster's port
GCS_ANSWER_SECONDS = 3.0  # then for its GCS to answer
EVENT_POLL_SECONDS = 0.2


class ClusterUnreachable(Exception):
    """The Ray cluster at the address cannot be used; the message is one line."""

    def __init__(self, address: str, why: str) -> None:
        super().__init__(f"cannot reach the Ray cluster at {address}: {why}")


# ------------------------------------------------------------------ on a node


def compute_cell(config: ExperimentConfig, phase: Phase) -> Iterator[tuple[Any, ...]]:
    """The Ray task (a generator): where it runs, then the cell's events while its
    engine computes it, then its result (or its failure) as plain data."""
    import ray

    context = ray.get_runtime_context()
    yield ("node", context.get_node_id(), socket.gethostname(), code_fingerprint())
    events: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
    with Engine() as engine:
        handle = engine.submit(config, phase)
        handle.subscribe(lambda kind, payload: events.put((kind, payload)))
        while True:
            finished = handle.wait(EVENT_POLL_SECONDS)
            while not events.empty():
                kind, payload = events.get()
                if kind == "isolated":  # the models themselves: they come with the result
                    continue
                if isinstance(payload, Progress):  # only the round it adds (the driver adds up)
                    payload = dataclasses.replace(payload, history=payload.history[-1:])
                yield ("event", kind, payload)
            if finished:
                break
        try:
            result = handle.result()
        except EngineError as error:
            yield ("failed", str(error), error.kind)
            return
    yield ("done", result.to_dict())


# ------------------------------------------------------------- on the driver


class RayCells:
    """The cells of a sweep into `folder` computed on the Ray cluster at `address`:
    `with RayCells(...).open() as cells`, then `cells.run` is the sweep's runner.

    `open` connects (`ClusterUnreachable` if it cannot, within seconds) and submits
    every cell that `folder` does not hold yet; `close` (leaving the `with`) cancels
    what has not come back and disconnects.
    """

    def __init__(self, address: str, folder: Path, cells: Sequence[Cell]) -> None:
        self.address, self.folder, self.cells = address, folder, cells
        self.nodes: dict[str, str] = {}  # cell key -> the node that computed it
        self._tasks: dict[str, Any] = {}  # cell key -> its Ray generator, until it is read
        self._ray: Any = None
        self._remote: Any = None

    def open(self) -> RayCells:
        self._ray = connect(self.address)
        try:
            self._remote = self._ray.remote(num_cpus=1)(compute_cell)
            for cell in self.cells:
                path = self.folder / "cells" / cell.file_name
                if cell.key not in self._tasks and kept_result(path, cell, _quiet) is None:
                    self._submit(cell.config, cell.phase)
        except BaseException:
            self.close()
            raise
        return self

    def __enter__(self) -> RayCells:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        ray, self._ray = self._ray, None
        if ray is None:
            return
        for task in self._tasks.values():
            with contextlib.suppress(Exception):
                ray.cancel(task)
        self._tasks.clear()
        ray.shutdown()

    def _submit(self, config: ExperimentConfig, phase: Phase) -> Any:
        task = self._remote.remote(config, phase)
        self._tasks[Cell({}, config, phase).key] = task
        return task

    def run(
        self, config: ExperimentConfig, phase: Phase, on_event: Callable[[str, Any], None]
    ) -> ExperimentResult:
        """The cell's result from its task (submitted now if it was not), its events
        passed to `on_event` meanwhile; `EngineError` if it failed."""
        key = Cell({}, config, phase).key
        task = self._tasks.get(key) or self._submit(config, phase)
        try:
            return self._read(key, task, on_event)
        except BaseException:  # failed, refused or interrupted: not left running
            with contextlib.suppress(Exception):
                self._ray.cancel(task)
            raise
        finally:
            self._tasks.pop(key, None)

    def _read(self, key: str, task: Any, on_event: Callable[[str, Any], None]) -> ExperimentResult:
        ray = self._ray
        history: tuple[Any, ...] = ()
        try:
            for ref in task:
                item = ray.get(ref)
                match item:
                    case ("node", node, host, fingerprint):
                        if fingerprint != code_fingerprint():
                            raise EngineError(
                                f"the Ray node {node[:8]} on {host} runs other code than "
                                "this machine (fedcore or a library differs); install the "
                                "same on every node"
                            )
                        self.nodes[key] = node
                    case ("event", kind, payload):
                        if isinstance(payload, Progress):  # whole history, as the engine's
                            history += payload.history
                            payload = dataclasses.replace(payload, history=history)
                        on_event(kind, payload)
                    case ("failed", error, kind):
                        raise EngineError(error, kind)
                    case ("done", data):
                        return ExperimentResult.from_dict(data)
        except ray.exceptions.RayError as error:
            raise EngineError(f"its Ray task failed: {ray_error_line(error)}") from None
        raise EngineError("its Ray task ended without a result")

    def summary(self) -> str:
        """One line: how many cells the cluster computed, on how many nodes."""
        computed, nodes = len(self.nodes), len(set(self.nodes.values()))
        if not computed:
            return f"no cell needed the Ray cluster at {self.address}"
        return (
            f"{computed} cell{'s' * (computed != 1)} computed on {nodes} "
            f"node{'s' * (nodes != 1)} of the Ray cluster at {self.address}"
        )


def _quiet(line: str) -> None:
    """Notes of `kept_result` while choosing what to submit: `run_sweep` says them."""


def ray_error_line(error: Exception) -> str:
    """A Ray failure in one line: the task's own exception if it raised one."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, BaseException):
        error = cause
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[-1] if text else ''}".rstrip(": ")


def connect(address: str) -> Any:
    """`ray`, connected to the cluster whose GCS is at `address` (HOST:PORT, as
    `ray start --head` prints it); `ClusterUnreachable` within seconds otherwise
    (ray.init itself would retry for minutes at an address that does not answer)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ClusterUnreachable(address, "give it as HOST:PORT, the address ray start printed")
    try:
        socket.create_connection((host.strip("[]"), int(port)), CONNECT_SECONDS).close()
    except OSError as error:
        raise ClusterUnreachable(address, os_error_text(error)) from None
    # Under `uv run`, Ray would otherwise package this folder and start every worker
    # through `uv run`: the nodes already share this environment (see the docstring).
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    import ray

    why = _not_a_gcs(address)
    if why:
        raise ClusterUnreachable(address, why)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # Ray's note on GPU variables
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    except Exception as error:  # e.g. another Ray version on the cluster
        raise ClusterUnreachable(address, ray_error_line(error)) from None
    return ray


def _not_a_gcs(address: str) -> str | None:
    """Why `address` is not a Ray cluster's GCS (something else listens there, such
    as the dashboard or the Ray Client port), or None. Ray's C++ client logs its
    retries on file descriptor 2: they are kept out of the user's terminal."""
    try:
        from ray._raylet import InnerGcsClient

        probe = InnerGcsClient.standalone
    except (ImportError, AttributeError):  # another Ray: ray.init will say
        return None
    with tempfile.TemporaryFile() as log, _stderr_to(log):
        try:  # Ray adds its own 5 s to connect
            probe(address, None, int(GCS_ANSWER_SECONDS * 1000))
        except Exception as error:
            return f"no Ray cluster answers there ({ray_error_line(error)})"
    return None


@contextlib.contextmanager
def _stderr_to(file: Any) -> Iterator[None]:
    saved = os.dup(2)
    try:
        os.dup2(file.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
