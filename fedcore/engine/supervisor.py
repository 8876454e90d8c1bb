"""The caller's side of the run engine: one orchestrator for the app, the CLI and
the benchmarks.

`Engine` starts the engine process (service.py) at once, so that it is warm
by the time the first run is asked for, and keeps, in the caller's process:

- a queue: the engine runs one job at a time (its worker pool already uses
  every core); the others wait, and know their place. Callers take turns: each
  request names its owner (a session of the page), the owner served longest
  ago goes next, and an owner keeps one request queued at most (a new one
  replaces it). Requests without an owner (a script, the CLI, a sweep) are one
  owner together, and may queue any number;
- identical requests merged: two sessions asking for the same settings get
  the same job, computed once;
- finished results in memory, so a setting already computed comes back at once;
- Stop, per caller: it ends that caller's handle at once; the job ends only
  when no handle waits for it any more (the engine is asked to end it, within
  a fraction of a second, and if it has not after `STOP_GRACE_SECONDS` the
  engine's process group is killed and a fresh engine starts);
- a wall-clock limit per request, if it asks for one: a job still running
  when its time is up fails with one line;
- recovery: if the engine process dies, its job fails with one line and the
  next job starts a new engine. The caller (a web server) never goes down
  with it.

The engine leads a process group (and session) of its own, its workers in it;
it is only ever killed as that group (`fedcore.engine.child.SpawnedChild`). `close()`
returns once the engine and its workers are gone.

The two processes talk in the messages of `fedcore.engine.protocol`.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import itertools
import logging
import sys
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from fedcore.engine.child import Channel, SpawnedChild, spawn_child
from fedcore.engine.cost import cli_command, duration_text, estimate_seconds
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

# "stopped" and "replaced" may be one handle's own end while its job goes on for others
State = Literal["queued", "running", "done", "failed", "stopped", "replaced"]
Owner = Hashable
STOP_GRACE_SECONDS = 1.5
log = logging.getLogger("fedcore.engine")
MEMORY_RESULTS = 256  # finished results kept in memory, most recent first

# NumPy's OpenBLAS starts a thread per core, which spins for a while after each
# threaded call (the update norms' dot products): in the engine that took a third of
# a core from the ClientApps every round (docs/benchmarks.md, a round at scale). The
# engine's cores are for its workers; and one thread sums in one order everywhere.
# glibc's malloc hands a freed buffer of a model's size (800 KB for the 2NN, several
# a client task) back to the system and faults fresh pages in for the next: with
# these thresholds (its own largest mmap threshold, and a trim threshold four times
# that) it keeps them, and the engine's processes fault a fraction as often
# (docs/benchmarks.md).
ENGINE_ENVIRONMENT = {
    "OPENBLAS_NUM_THREADS": "1",
    "GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=134217728",
}


class EngineError(RuntimeError):
    """A run failed; the message says why in one line. `kind`: "setting", "data"
    (the user can fix it) or "run" (a client, the engine, a process)."""

    def __init__(self, message: str, kind: str = "run") -> None:
        super().__init__(message)
        self.kind = kind


class RunStopped(Exception):
    """This caller's run was stopped or replaced before it finished."""


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
    handles: list[RunHandle] = field(default_factory=list)  # the callers still waiting
    time_limit: float | None = None  # seconds from its start; None: no limit
    ending: tuple[State, str | None] | None = None  # asked to end: how it ends
    started: float = 0.0
    epochs: dict[int, int] = field(default_factory=dict)
    history: tuple[RoundResult, ...] = ()
    detail: str = ""
    isolated: list[ClientResult] | None = None
    result: ExperimentResult | None = None
    error: str | None = None
    error_kind: str = "run"

    @property
    def finished(self) -> bool:
        return self.state in ("done", "failed", "stopped")


class RunHandle:
    """One caller's view of a run. Several handles may share one job; each ends
    on its own (`stop`), and the job ends when the last one does."""

    def __init__(self, engine: Engine, job: _Job, owner: Owner) -> None:
        self._engine, self._job, self.owner = engine, job, owner
        self.ended: State | None = None  # this caller's own end: "stopped" or "replaced"
        self.listeners: list[Listener] = []

    def status(self) -> RunStatus:
        return self._engine._status(self)

    def done(self) -> bool:
        """Finished for this caller: the job ended, or this handle did."""
        return self.ended is not None or self._job.finished

    def wait(self, timeout: float | None = None) -> bool:
        """Until the run has finished (done, failed or stopped); False on timeout."""
        with self._engine._changed:
            return self._engine._changed.wait_for(self.done, timeout)

    def isolated(self) -> list[ClientResult] | None:
        """The isolated models' results, as soon as that phase is done (before the run)."""
        return self._job.isolated

    def result(self, timeout: float | None = None) -> ExperimentResult:
        """The result; `RunStopped` if stopped or replaced, `EngineError` if it failed."""
        if not self.wait(timeout):
            raise TimeoutError("the run has not finished yet")
        if self.ended == "replaced":
            raise RunStopped("the run was replaced by a newer request of the same owner")
        if self.ended is not None or self._job.state == "stopped":
            raise RunStopped("the run was stopped")
        if self._job.state == "failed":
            raise EngineError(self._job.error or "the run failed", self._job.error_kind)
        assert self._job.result is not None
        return self._job.result

    def subscribe(self, listener: Listener) -> None:
        """Call `listener(kind, payload)` for each event from now on, while this handle
        waits: `"epoch"` (client, epoch, loss), `"progress"` (a `Progress`), `"isolated"`."""
        with self._engine._changed:
            self.listeners.append(listener)

    def stop(self) -> None:
        """This caller no longer waits for the run (its Stop button, or it shows
        another): the handle ends at once; the job goes on while another caller waits
        for it, and is dropped when nobody does. A finished run stays as it is."""
        self._engine._end_handle(self, "stopped")


class Engine:
    """Runs experiments in an engine process of its own; see the module docstring."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._queue: list[_Job] = []  # in the order asked; `_queue_order` says who goes next
        self._jobs: dict[str, _Job] = {}  # queued or running, by key
        self._running: _Job | None = None
        self._results: collections.OrderedDict[str, ExperimentResult] = collections.OrderedDict()
        # Each owner's handles on queued jobs, and its turn: the moment it began to
        # wait, or it was last served while it still waits (lower goes first).
        self._waiting: dict[Owner, list[RunHandle]] = {}
        self._turns: dict[Owner, int] = {}
        self._turn = itertools.count()
        self._process: SpawnedChild | None = None
        self._conn: Channel | None = None
        self._reader: threading.Thread | None = None
        self._worker_pids: list[int] = []
        self._closed = False
        self.jobs_started = 0  # jobs sent to the engine process (computations)
        with self._changed:
            self._start_process()

    # ------------------------------------------------------------- the public side

    def submit(
        self,
        config: ExperimentConfig,
        phase: Phase = "all",
        use_cache: bool = True,
        *,
        owner: Owner = None,
        time_limit: float | None = None,
    ) -> RunHandle:
        """A handle on the run of `config`: finished at once if it is in memory,
        the running or queued job if someone already asked for it, else a new job.

        `owner` (a session of the page) takes turns with the other owners and keeps
        one request queued: a queued request of the same owner for other settings
        is replaced (its handle ends "replaced"). `time_limit`: seconds the job may
        run before it fails (the largest of its callers' limits; None: no limit).
        """
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
                return RunHandle(self, job, owner)
            job = self._jobs.get(key)
            if job is None:
                job = _Job(key, config, phase, use_cache, time_limit=time_limit)
                self._jobs[key] = job
                self._queue.append(job)
            elif job.time_limit is not None:
                job.time_limit = None if time_limit is None else max(job.time_limit, time_limit)
            handle = RunHandle(self, job, owner)
            job.handles.append(handle)
            if job.state == "queued":
                if owner is not None:
                    for earlier in list(self._waiting.get(owner, [])):
                        if earlier._job is not job:
                            self._end(earlier, "replaced")
                self._wait_in_turn(handle)
                self._dispatch()
            return handle

    @property
    def pids(self) -> list[int]:
        """The engine process and its workers (empty while none runs)."""
        with self._changed:
            if self._process is None or self._process.returncode is not None:
                return []
            return [self._process.pid, *self._worker_pids]

    def close(self) -> None:
        """Stop every run and end the engine: it is asked to (it stops its job, kills
        and reaps its workers and exits), and killed as a group if it has not after
        `STOP_GRACE_SECONDS`. Returns once the engine and its workers are gone."""
        with self._changed:
            self._closed = True
            jobs = [*self._queue, *([self._running] if self._running else [])]
            self._queue.clear()
            self._waiting.clear()
            self._turns.clear()
            for job in jobs:
                job.ending = ("stopped", None)
                if not job.finished:
                    self._finish(job, "stopped")
            self._running = None
            conn, reader = self._conn, self._reader
        if conn is not None:
            conn.shutdown()  # the engine reads end-of-file, and so does our reader
        if reader is not None:
            reader.join()  # it reaps the engine (killed if need be), then waits for its group

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # ------------------------------------------------------------ the engine process

    def _start_process(self) -> None:
        process, conn = spawn_child("fedcore.engine.service", ENGINE_ENVIRONMENT)
        self._process, self._conn, self._worker_pids = process, conn, []
        self._reader = threading.Thread(
            target=self._listen, args=(process, conn), name="fedcore-engine-reader", daemon=True
        )
        self._reader.start()

    def _listen(self, process: SpawnedChild, conn: Channel) -> None:
        """The engine's messages, until it ends; then its job's end, and a new engine:
        warmed at once only if this one had started (said `Ready`), else when a job
        asks for it, so that an engine that cannot start is not restarted in a loop."""
        started = False
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
            started = started or isinstance(message, Ready)
            with self._changed:
                try:
                    self._handle(message)
                except Exception as error:  # this thread must live on
                    self._reject(f"the engine's {message_name(message)!r} message", error)
                self._changed.notify_all()
        with self._changed:
            lost = self._running  # sent to this engine, if any: nothing else is sent meanwhile
            if self._process is process:
                self._process, self._conn = None, None  # the next job needs a new engine
        code = process.reap(STOP_GRACE_SECONDS)  # and every worker of its group
        conn.close()
        with self._changed:
            if lost is not None and self._running is lost:
                self._running = None
                if lost.ending is not None:
                    self._finish(lost, *lost.ending)
                elif not lost.finished:
                    how = f"signal {-code}" if code < 0 else f"exit code {code}"
                    self._finish(
                        lost,
                        "failed",
                        f"the engine process ended unexpectedly ({how}); "
                        "the run was lost, the next one starts a new engine",
                    )
            self._dispatch(warm=started)
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
        self._send(Cancel(job.id))  # the engine may still be running it
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
                self._finish(job, *(job.ending or ("stopped", None)))
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
        for handle in job.handles:
            for listener in handle.listeners:
                listener(kind, payload)

    def _send(self, message: Run | Cancel) -> None:
        if self._conn is not None:
            with contextlib.suppress(OSError):  # a dead engine: its reader fails the job
                self._conn.send(message)

    # ------------------------------------------------------------------ turns

    def _wait_in_turn(self, handle: RunHandle) -> None:
        if handle.owner not in self._waiting:
            self._waiting[handle.owner] = []
            self._turns[handle.owner] = next(self._turn)
        self._waiting[handle.owner].append(handle)

    def _stop_waiting(self, handle: RunHandle, served: bool = False) -> None:
        """`handle` no longer waits in the queue; its owner's turn ends with its last
        queued request, or, `served`, comes round again after the others'."""
        waiting = self._waiting.get(handle.owner)
        if waiting is None or handle not in waiting:
            return
        waiting.remove(handle)
        if not waiting:
            del self._waiting[handle.owner], self._turns[handle.owner]
        elif served:
            self._turns[handle.owner] = next(self._turn)

    def _queue_order(self) -> list[_Job]:
        """The queued jobs in the order they will run (as things stand): the one
        whose owners' turn is earliest first; serving it sends its owners behind."""
        turns, turn = dict(self._turns), itertools.count(next(self._turn))
        left, order = list(self._queue), []
        while left:
            job = min(left, key=lambda j: (min(turns.get(h.owner, j.id) for h in j.handles), j.id))
            left.remove(job)
            order.append(job)
            for handle in job.handles:
                if any(h.owner == handle.owner for j in left for h in j.handles):
                    turns[handle.owner] = next(turn)
        return order

    def _dispatch(self, warm: bool = False) -> None:
        """Send the next job (by turns) to the engine, if it is free, starting an
        engine first if there is none (`warm`: even with nothing queued, to be ready
        for the next). If one cannot start, the queued jobs fail with the reason
        instead of waiting for ever (the next request tries again)."""
        if self._running is not None or self._closed:
            return
        if self._process is None and (self._queue or warm):
            try:
                self._start_process()
            except OSError as error:
                log.error("the engine process could not start: %s", error)
                for job in list(self._queue):
                    self._end_job(job, "failed", f"the engine process could not start: {error}")
                return
        if not self._queue:
            return
        job = self._queue_order()[0]
        self._queue.remove(job)
        for handle in job.handles:
            self._stop_waiting(handle, served=True)
        job.state, job.started = "running", time.monotonic()
        self._running = job
        self.jobs_started += 1
        owners = ", ".join(sorted({str(h.owner) for h in job.handles if h.owner is not None}))
        log.info(
            "run %d started: %s %s (estimate %s%s)",
            job.id,
            job.phase,
            job.config.summary(),
            duration_text(estimate_seconds(job.config, job.phase)),
            f", for {owners}" if owners else "",
        )
        self._send(Run(job.id, job.config, job.phase, job.use_cache))
        if job.time_limit is not None:
            threading.Thread(
                target=self._enforce_time_limit, args=(job,), name="fedcore-time-limit",
                daemon=True,
            ).start()  # fmt: skip

    def _finish(self, job: _Job, state: State, error: str | None = None) -> None:
        job.state, job.error = state, error
        if job.started:
            seconds = time.monotonic() - job.started
            why = f": {error}" if error else f" ({job.detail})" if state == "done" else ""
            log.info("run %d %s after %.1f s%s", job.id, state, seconds, why)
        if self._jobs.get(job.key) is job:
            del self._jobs[job.key]
        self._changed.notify_all()

    # ------------------------------------------------------- ending handles and jobs

    def _end_handle(self, handle: RunHandle, how: State) -> None:
        with self._changed:
            self._end(handle, how)

    def _end(self, handle: RunHandle, how: State) -> None:
        """`handle` ends (`how`: "stopped" or "replaced") unless its run has finished;
        its job ends with it if no other handle waits for it."""
        if handle.done():
            return
        handle.ended = how
        job = handle._job
        job.handles.remove(handle)
        self._stop_waiting(handle)
        if not job.handles:
            self._end_job(job, "stopped")
        self._changed.notify_all()

    def _end_job(self, job: _Job, state: State, error: str | None = None) -> None:
        """End `job` for every caller: at once if queued; if running, the engine is
        asked to end it, and killed if it has not within `STOP_GRACE_SECONDS`. A new
        request for the same settings meanwhile gets a new job."""
        if job.finished or job.ending is not None:
            return
        job.ending = (state, error)
        if self._jobs.get(job.key) is job:
            del self._jobs[job.key]
        if job.state == "queued":
            self._queue.remove(job)
            for handle in job.handles:
                self._stop_waiting(handle)
            self._finish(job, state, error)
            return
        self._send(Cancel(job.id))
        threading.Thread(
            target=self._kill_if_still_running, args=(job,), name="fedcore-stop", daemon=True
        ).start()

    def _kill_if_still_running(self, job: _Job) -> None:
        with self._changed:
            if self._changed.wait_for(lambda: job.finished, STOP_GRACE_SECONDS):
                return
            if self._running is job and self._process is not None:
                self._process.kill()  # the reader ends the job and starts a new engine

    def _enforce_time_limit(self, job: _Job) -> None:
        """Fail `job` once it has run longer than its limit (which a later caller may
        have raised or lifted meanwhile)."""
        with self._changed:
            while not job.finished and job.ending is None and job.time_limit is not None:
                left = job.started + job.time_limit - time.monotonic()
                if left <= 0:
                    self._end_job(job, "failed", time_limit_message(job))
                    return
                self._changed.wait(left)

    def _status(self, handle: RunHandle) -> RunStatus:
        job = handle._job
        with self._changed:
            state = handle.ended or job.state
            place = self._queue_order().index(job) + 1 if state == "queued" else 0
            detail = job.detail
            if state == "queued":
                detail = f"queued: place {place} (callers take turns with the engine)"
            elif handle.ended == "replaced":
                detail = "replaced by a newer request of the same owner"
            return RunStatus(
                state=state,
                place=place,
                epochs_done=sum(job.epochs.values()),
                epochs_total=job.config.num_clients * job.config.local_epochs,
                history=job.history,
                num_rounds=job.config.num_rounds,
                detail=detail,
                error=job.error if state == "failed" else None,
            )


def time_limit_message(job: _Job) -> str:
    """Why a job that ran out of time failed, and how to run it without a limit."""
    assert job.time_limit is not None
    limit = f"{job.time_limit / 60:g} min" if job.time_limit >= 60 else f"{job.time_limit:g} s"
    return (
        f"the run was stopped after {limit}, the longest a run may take here; the "
        f"command line has no such limit: {cli_command(job.config, job.phase)}"
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
    """One experiment on an engine of its own, stopped afterwards (scripts, the CLI):
    it returns (or raises) once the engine and its workers are gone.

    Raises `EngineError` when the run fails; Ctrl-C stops every process it started.
    """
    with Engine() as engine:
        handle = engine.submit(config, phase, use_cache=use_cache)
        if listener is not None:
            handle.subscribe(listener)
        return handle.result()
