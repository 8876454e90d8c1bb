"""Work on a finished round that the next round need not wait for: the global model's
scores and the updates' norms, done while the clients train the next round.

Flower's strategies run a round's server work in line: aggregate, score the new
model, then send the next round. At McMahan et al.'s scale (10 clients of 600 images,
the 2NN) scoring 10,000 test images and measuring every update took as long as
training, with every client idle (see docs/benchmarks.md, a round at scale). What
does not feed the next round goes here instead, run in order in one thread, so the
records come out as they would have in line.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class Behind:
    """Tasks run at once (`background` False), or in one thread of their own, in the
    order given; a task's failure is raised by the `catch_up` that waits for it."""

    def __init__(self, background: bool) -> None:
        self._thread = ThreadPoolExecutor(1, "fedcore-behind") if background else None
        self._pending: list[Future] = []

    def run(self, task: Callable[..., T], *args: Any) -> T | None:
        """`task(*args)`: its value when run at once; None when left for the thread."""
        if self._thread is None:
            return task(*args)
        self._pending.append(self._thread.submit(task, *args))
        return None

    def catch_up(self, leave: int = 0) -> None:
        """Wait for every task but the last `leave` given."""
        while len(self._pending) > leave:
            self._pending.pop(0).result()

    def close(self) -> None:
        """Drop what has not started; wait for what has."""
        if self._thread is not None:
            self._thread.shutdown(wait=True, cancel_futures=True)
