"""A pool of warm worker processes, each taking one task at a time, in order.

The engine keeps two: one for the ClientApps of the federated run and one, at
the lowest scheduling priority (nice 19), for the isolated models, which so
train on the cycles the federated run leaves idle and never delay a round.
Workers are killed through their pidfds (`fedcore.engine.child.ForkedChild`),
never by a bare process id.
"""

from __future__ import annotations

import functools
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from fedcore.engine.child import Channel, ForkedChild, fork_child
from fedcore.engine.protocol import Task, TaskDone, TaskProgress
from fedcore.engine.worker import serve

CLOSING_CHECK_SECONDS = 0.1  # how often a thread waiting for a task looks for `close`


class TaskError(RuntimeError):
    """A task raised in its worker; the message is the worker's error text."""


class WorkerDied(RuntimeError):
    """A worker process ended while it held a task."""


def covered_seconds(intervals: list[tuple[float, float]], since: float = 0.0) -> float:
    """The length of the union of `(start, end)` intervals, after `since`."""
    total, reach = 0.0, since
    for start, end in sorted(intervals):
        start = max(start, reach)
        if end > start:
            total, reach = total + end - start, end
    return total


@dataclass
class _Queued:
    """A task waiting for a worker, with the future its caller holds."""

    kind: str
    args: tuple[Any, ...]
    future: Future
    on_progress: Callable[[Any], None] | None


def _fail(queued: _Queued, why: str) -> None:
    """A queued task that no worker will run: `WorkerDied`, unless it was cancelled."""
    if queued.future.set_running_or_notify_cancel():
        queued.future.set_exception(WorkerDied(why))


class WorkerPool:
    """`size` worker processes for tasks of `role` ("federated" or "isolated"),
    started at once and kept warm; `nice` lowers their scheduling priority."""

    def __init__(self, size: int, role: str, nice: int = 0) -> None:
        self.size = size
        self._queue: queue.SimpleQueue[_Queued] = queue.SimpleQueue()
        self.broken: str | None = None  # why, once a worker died
        self.busy: list[tuple[float, float]] = []  # (start, end) of every task done
        self._closing = False
        work = functools.partial(serve, role=role, nice=nice)
        self._workers = [fork_child(work) for _ in range(size)]
        self._threads = [
            threading.Thread(
                target=self._serve, args=(process, conn), name="fedcore-pool", daemon=True
            )
            for process, conn in self._workers
        ]
        for thread in self._threads:
            thread.start()

    @property
    def pids(self) -> list[int]:
        return [process.pid for process, _ in self._workers]

    def submit(
        self, kind: str, args: tuple[Any, ...], on_progress: Callable[[Any], None] | None = None
    ) -> Future:
        future: Future = Future()
        if self.broken:
            future.set_exception(WorkerDied(self.broken))
        else:
            self._queue.put(_Queued(kind, args, future, on_progress))
        return future

    def _serve(self, process: ForkedChild, conn: Channel) -> None:
        task = None
        try:
            conn.recv()  # WorkerReady: imports done
            while (task := self._next_task()) is not None:
                if not task.future.set_running_or_notify_cancel():
                    continue  # cancelled while queued
                conn.send(Task(task.kind, task.args))
                while isinstance(reply := conn.recv(), TaskProgress):
                    if task.on_progress is not None:
                        task.on_progress(reply.value)
                if isinstance(reply, TaskDone):
                    self.busy.append(reply.ran)
                    task.future.set_result(reply.value)
                else:  # TaskFailed
                    task.future.set_exception(TaskError(reply.error))
                task = None
        except (EOFError, OSError):
            process.join()
            self.broken = f"a worker process (pid {process.pid}) died: exit code {process.exitcode}"
            if task is not None:
                task.future.set_exception(WorkerDied(self.broken))
            while not self._queue.empty():  # nobody else will take these
                _fail(self._queue.get(), self.broken)

    def _next_task(self) -> _Queued | None:
        """The next task; None once the pool is closing."""
        while not self._closing:
            try:
                return self._queue.get(timeout=CLOSING_CHECK_SECONDS)
            except queue.Empty:
                continue
        return None

    def busy_seconds(self, since: float) -> float:
        """Wall-clock seconds since `since` (a `time.time()`) in which at least one
        worker ran a task: the tasks' own time, without what waits around them."""
        return covered_seconds(self.busy, since)

    def close(self) -> None:
        """Kill every worker and reap it: none is left once this returns.

        Each channel is shut down, not closed, while its thread may be blocked reading
        it: the thread then reads end-of-file and ends (a connection closed under a
        thread reading it has no handle left, and the read fails with a `TypeError`
        that nothing here catches); it is closed once its thread has ended. A thread
        waiting for a task sees the pool closing within `CLOSING_CHECK_SECONDS`."""
        self._closing = True
        for process, conn in self._workers:
            conn.shutdown()
            process.kill()
        for thread in self._threads:
            thread.join()
        for process, conn in self._workers:
            process.join()
            conn.close()
        while not self._queue.empty():  # taken by no worker: nobody will run them now
            _fail(self._queue.get(), "the engine's pool was closed")
