"""The caller's side of the run engine: one orchestrator for the app, the CLI and
the benchmarks.

`Engine` starts the engine process (service.py) at once, so that it is warm
by the time the first run is asked for, and keeps, in the caller's process:

- a queue: the engine runs one job at a time (its worker pool already uses
  every core); the others wait, and know their place;
- identical requests merged: two sessions asking for the same settings get
  the same job, computed once;
- finished results in memory, so a setting already computed comes back at once;
- Stop: the engine is asked to end the job (it does within a fraction of a
  second), and if it has not after `STOP_GRACE_SECONDS` the engine's processes
  are killed by process id and a fresh engine starts;
- recovery: if the engine process dies, its job fails with one line and the
  next job starts a new engine. The caller (a web server) never goes down
  with it.

The two processes talk in the messages of `fedcore.engine.protocol`.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import itertools
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from fedcore.engine.protocol import (
    PHASES,
    Cancel,
    Cancelled,
    Done,
    Event,
    Failed,
    Phase,
    Ready,
    Run,
    ToSupervisor,
    message_name,
)
from fedcore.experiment.config import ExperimentConfig
from fedcore.experiment.results import ClientResult, ExperimentResult, RoundResult

State = Literal["queued", "running", "done", "failed", "stopped"]
STOP_GRACE_SECONDS = 1.5
log = logging.getLogger("fedcore.engine")
MEMORY_RESULTS = 256  # finished results kept in memory, most recent first


class EngineError(RuntimeError):
    """A run failed; the message says why in one line. `kind`: "setting", "data"
    (the user can fix it) or "run" (a client, the engine, a process)."""

    def __init__(self, message: str, kind: str = "run") -> None:
        super().__init__(message)
        self.kind = kind


class RunStopped(Exception):
    """The run was stopped before it finished; nothing of it was kept."""


@dataclass(frozen=True)
class RunStatus:
    """A snapshot of a run, for a progress bar or a status line."""

    state: State
    place: int  # while queued: 1 = next to run
    epochs_done: int  # isolated models: epochs finished, all clients together
    epochs_total: int
    history: tuple[RoundResult, ...]  # federated rounds finished (0 = initial model)
    num_rounds: int
    detail: str  # the last thing that happened, in words
    error: str | None = None


Listener = Callable[[str, Any], None]  # listener(kind, payload), on the engine's thread


@dataclass(eq=False)
class _Job:
    key: str
    config: ExperimentConfig
    phase: Phase
    use_cache: bool
    id: int = field(default_factory=itertools.count().__next__)
    state: State = "queued"
    subscribers: int = 0
    stop_requested: bool = False
    started: float = 0.0
    epochs: dict[int, int] = field(default_factory=dict)
    history: tuple[RoundResult, ...] = ()
    detail: str = ""
    isolated: list[ClientResult] | None = None
    result: ExperimentResult | None = None
    error: str | None = None
    error_kind: str = "run"
    listeners: list[Listener] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.state in ("done", "failed", "stopped")


class RunHandle:
    """One caller's view of a run. Several handles may share one job."""

    def __init__(self, engine: Engine, job: _Job) -> None:
        self._engine, self._job = engine, job
        self._released = False

    def status(self) -> RunStatus:
        return self._engine._status(self._job)

    def done(self) -> bool:
        return self._job.finished

    def wait(self, timeout: float | None = None) -> bool:
        """Until the run has finished (done, failed or stopped); False on timeout."""
        with self._engine._changed:
            return self._engine._changed.wait_for(lambda: self._job.finished, timeout)

    def isolated(self) -> list[ClientResult] | None:
        """The isolated models' results, as soon as that phase is done (before the run)."""
        return self._job.isolated

    def result(self, timeout: float | None = None) -> ExperimentResult:
        """The result; `RunStopped` if stopped, `EngineError` if it failed."""
        if not self.wait(timeout):
            raise TimeoutError("the run has not finished yet")
        if self._job.state == "stopped":
            raise RunStopped("the run was stopped")
        if self._job.state == "failed":
            raise EngineError(self._job.error or "the run failed", self._job.error_kind)
        assert self._job.result is not None
        return self._job.result

    def subscribe(self, listener: Listener) -> None:
        """Call `listener(kind, payload)` for each event from now on: `"epoch"`
        (client, epoch, loss), `"progress"` (a `Progress`), `"isolated"`."""
        with self._engine._changed:
            self._job.listeners.append(listener)

    def stop(self) -> None:
        """End the run for everyone who waits for it."""
        self._engine._stop(self._job)

    def release(self) -> None:
        """This caller no longer needs the run: if nobody else does, it is dropped."""
        if not self._released:
            self._released = True
            self._engine._release(self._job)


class Engine:
    """Runs experiments in an engine process of its own; see the module docstring."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._queue: collections.deque[_Job] = collections.deque()
        self._jobs: dict[str, _Job] = {}  # queued or running, by key
        self._running: _Job | None = None
        self._results: collections.OrderedDict[str, ExperimentResult] = collections.OrderedDict()
        self._process: Any = None
        self._conn: Any = None
        self._worker_pids: list[int] = []
        self._closed = False
        self.jobs_started = 0  # jobs sent to the engine process (computations)
        with self._changed:
            self._start_process()

    # ------------------------------------------------------------- the public side

    def submit(
        self, config: ExperimentConfig, phase: Phase = "all", use_cache: bool = True
    ) -> RunHandle:
        """A handle on the run of `config`: finished at once if it is in memory,
        the running or queued job if someone already asked for it, else a new job."""
        if phase not in PHASES:
            raise ValueError(f"phase must be one of {', '.join(PHASES)}, got {phase!r}")
        key = f"{phase}|{use_cache}|{config.cache_key()}"
        with self._changed:
            if self._closed:
                raise EngineError("the engine is closed")
            if use_cache and key in self._results:
                self._results.move_to_end(key)
                result = self._results[key]
                job = _Job(key, config, phase, use_cache, state="done", result=result)
                job.isolated = result.isolated
            elif key in self._jobs:
                job = self._jobs[key]
            else:
                job = _Job(key, config, phase, use_cache)
                self._jobs[key] = job
                self._queue.append(job)
                self._dispatch()
            job.subscribers += 1
            return RunHandle(self, job)

    @property
    def pids(self) -> list[int]:
        """The engine process and its workers (empty while none runs)."""
        with self._changed:
            if self._process is None or self._process.poll() is not None:
                return []
            return [self._process.pid, *self._worker_pids]

    def close(self) -> None:
        """Stop every run and every process of the engine (by process id)."""
        with self._changed:
            self._closed = True
            for job in [*self._queue, *([self._running] if self._running else [])]:
                job.stop_requested = True
            self._queue.clear()
            self._kill_process()
            for job in list(self._jobs.values()):
                self._finish(job, "stopped")
            self._running = None

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # ------------------------------------------------------------ the engine process

    def _start_process(self) -> None:
        from fedcore.engine.child import spawn_child

        process, conn = spawn_child("fedcore.engine.service")
        self._process, self._conn, self._worker_pids = process, conn, []
        threading.Thread(
            target=self._listen, args=(process, conn), name="fedcore-engine-reader", daemon=True
        ).start()

    def _kill_process(self) -> None:
        """SIGKILL the engine and its workers, by process id, and wait for the engine."""
        if self._process is None:
            return
        for pid in [self._process.pid, *self._worker_pids]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self._process.wait()
        self._conn.close()
        self._process = None

    def _listen(self, process: Any, conn: Any) -> None:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                break
            except Exception as error:  # read but not unpickled: the next one may be
                with self._changed:
                    self._reject("a message from the engine", error)
                    self._changed.notify_all()
                continue
            with self._changed:
                try:
                    self._handle(message)
                except Exception as error:  # this thread must live on
                    self._reject(f"the engine's {message_name(message)!r} message", error)
                self._changed.notify_all()
        code = process.wait()
        with self._changed:
            if self._process is process:  # died by itself, not killed by us
                self._process = None
            job = self._running
            if job is not None and not job.finished:
                if job.stop_requested:
                    self._finish(job, "stopped")
                else:
                    how = f"signal {-code}" if code < 0 else f"exit code {code}"
                    self._finish(
                        job,
                        "failed",
                        f"the engine process ended unexpectedly ({how}); "
                        "the run was lost, the next one starts a new engine",
                    )
            if self._running is job:
                self._running = None
            if not self._closed:
                self._start_process()
                self._dispatch()
            self._changed.notify_all()

    def _reject(self, what: str, error: Exception) -> None:
        """A message that could not be handled (e.g. an engine running other code than
        this process after an upgrade) fails its job with one line instead of
        leaving it waiting forever; `what` names the message."""
        job = self._running
        if job is None or job.finished:
            return
        log.error("run %d: a message from the engine could not be read: %r", job.id, error)
        self._finish(job, "failed", f"{what} could not be read ({error})")
        with contextlib.suppress(OSError):
            self._conn.send(Cancel(job.id))  # the engine may still be running it
        self._running = None
        self._dispatch()

    def _handle(self, message: ToSupervisor) -> None:
        if isinstance(message, Ready):
            self._worker_pids = list(message.worker_pids)
            return
        if not isinstance(message, Event | Done | Failed | Cancelled):
            raise TypeError(f"unknown message {type(message).__name__}")
        job = self._running
        if job is None or message.job != job.id:
            return  # a job stopped meanwhile
        match message:
            case Event(kind=kind, payload=payload):
                self._on_event(job, kind, payload)
                return
            case Done(result=data):
                result = ExperimentResult.from_dict(data)
                job.result = result
                job.detail = ", ".join(f"{k} {v:.1f} s" for k, v in result.timings.items())
                if job.use_cache:
                    self._results[job.key] = result
                    while len(self._results) > MEMORY_RESULTS:
                        self._results.popitem(last=False)
                self._finish(job, "done")
            case Failed(kind=kind, error=error):
                job.error_kind = kind
                self._finish(job, "failed", error)
            case Cancelled():
                self._finish(job, "stopped")
        self._running = None
        self._dispatch()

    def _on_event(self, job: _Job, kind: str, payload: Any) -> None:
        if kind == "epoch":
            client, epoch, _ = payload
            job.epochs[client] = epoch
            job.detail = f"client {client}: epoch {epoch}/{job.config.local_epochs}"
        elif kind == "progress":  # the engine sends only the round an event adds
            job.history += payload.history
            payload = replace(payload, history=job.history)
            if payload.kind == "client-done":
                job.detail = (
                    f"round {payload.server_round}: client {payload.client} sent its update"
                )
            elif payload.kind == "client-failed":
                job.detail = f"round {payload.server_round}: {payload.detail}"
        elif kind == "isolated":
            job.isolated = payload
        elif kind == "centralized-epoch":
            epoch, _ = payload
            job.detail = f"centralized baseline: epoch {epoch}/{job.config.total_local_epochs}"
        for listener in job.listeners:
            listener(kind, payload)

    def _dispatch(self) -> None:
        """Send the next queued job to the engine, if it is free."""
        if self._running is not None or not self._queue or self._closed:
            return
        if self._process is None:
            self._start_process()
        job = self._queue.popleft()
        job.state, job.started = "running", time.monotonic()
        self._running = job
        self.jobs_started += 1
        log.info("run %d started: %s %s", job.id, job.phase, job.config.summary())
        with contextlib.suppress(OSError):  # a dead engine: its reader fails the job
            self._conn.send(Run(job.id, job.config, job.phase, job.use_cache))

    def _finish(self, job: _Job, state: State, error: str | None = None) -> None:
        job.state, job.error = state, error
        if job.started:
            seconds = time.monotonic() - job.started
            why = f": {error}" if error else f" ({job.detail})" if state == "done" else ""
            log.info("run %d %s after %.1f s%s", job.id, state, seconds, why)
        if self._jobs.get(job.key) is job:
            del self._jobs[job.key]
        self._changed.notify_all()

    # ------------------------------------------------------------ stop and release

    def _stop(self, job: _Job) -> None:
        with self._changed:
            if job.finished:
                return
            job.stop_requested = True
            if job.state == "queued":
                self._queue.remove(job)
                self._finish(job, "stopped")
                return
            self._conn.send(Cancel(job.id))
        threading.Thread(target=self._kill_if_still_running, args=(job,), daemon=True).start()

    def _kill_if_still_running(self, job: _Job) -> None:
        with self._changed:
            if self._changed.wait_for(lambda: job.finished, STOP_GRACE_SECONDS):
                return
            if self._running is job:
                self._kill_process()  # the reader marks it stopped and starts a new engine

    def _release(self, job: _Job) -> None:
        with self._changed:
            job.subscribers -= 1
            abandoned = job.subscribers <= 0 and not job.finished
        if abandoned:
            self._stop(job)

    def _status(self, job: _Job) -> RunStatus:
        with self._changed:
            place = self._queue.index(job) + 1 if job.state == "queued" else 0
            detail = job.detail
            if job.state == "queued":
                detail = f"queued: place {place} (another run is using the engine)"
            return RunStatus(
                state=job.state,
                place=place,
                epochs_done=sum(job.epochs.values()),
                epochs_total=job.config.num_clients * job.config.local_epochs,
                history=job.history,
                num_rounds=job.config.num_rounds,
                detail=detail,
                error=job.error,
            )


_shared: Engine | None = None
_shared_lock = threading.Lock()


def shared_engine() -> Engine:
    """The one engine of this process (a web server's sessions share it), started
    on first use and closed at exit."""
    global _shared
    with _shared_lock:
        if _shared is None:
            if not log.handlers:  # one line per run in the server's log
                handler = logging.StreamHandler(sys.stderr)
                handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
                log.addHandler(handler)
                log.setLevel(logging.INFO)
            _shared = Engine()
            atexit.register(_shared.close)
        return _shared


def run_experiment(
    config: ExperimentConfig,
    phase: Phase = "all",
    listener: Listener | None = None,
    use_cache: bool = True,
) -> ExperimentResult:
    """One experiment on an engine of its own, stopped afterwards (scripts, the CLI).

    Raises `EngineError` when the run fails; Ctrl-C stops every process it started.
    """
    with Engine() as engine:
        handle = engine.submit(config, phase, use_cache=use_cache)
        if listener is not None:
            handle.subscribe(listener)
        return handle.result()
