"""The messages between the engine's two processes: one frozen dataclass each.

The supervisor (`fedcore.engine.supervisor`, in the caller's process) sends:

- `Run`: compute one job; the engine runs one at a time, in the order sent.
- `Cancel`: end a job early (also one not started yet: it never starts).

Closing the channel ends the engine: its job under way stops, its workers are
killed and reaped, and it exits.

The engine process (`fedcore.engine.service`) sends:

- `Ready`: once, at start, its workers' pids, for the supervisor to report
  (`Engine.pids`); to stop them it kills the engine's process group, never
  these ids, which the system may give to others once a worker is gone;
- `Event`: what a running job did (an epoch, a round, the isolated models), for
  the caller's progress bars; `kind` and `payload` are what a listener gets;
- then exactly one of `Done` (the result), `Failed` (why, in one line) or
  `Cancelled` (after a `Cancel`) ends the job.

Each job message names its job, so a late message of a job already stopped is
dropped. What crosses the pipe is pickled (`fedcore.engine.child.Channel`) and
kept small and plain: the settings, a result as a dict (`ExperimentResult.to_dict`,
which the supervisor reads back, so a reply it cannot read fails that run only),
an event with only the round it adds.

The engine process and its warm workers (`fedcore.engine.pool`,
`fedcore.engine.worker`) talk the same way: a worker says `WorkerReady` once
its imports are done, then answers each `Task` with any number of
`TaskProgress` and one `TaskDone` or `TaskFailed`.

The phases a job may ask for live here too, as they are part of `Run`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from fedcore.experiment.config import ExperimentConfig

Phase = Literal["isolated", "federated", "centralized", "story", "all"]
# What each phase computes: "story" is what the story page shows (no centralized
# baseline, which would cost it time); "all" adds the baseline.
PHASE_PARTS: dict[Phase, frozenset[str]] = {
    "isolated": frozenset({"isolated"}),
    "federated": frozenset({"federated"}),
    "centralized": frozenset({"centralized"}),
    "story": frozenset({"isolated", "federated"}),
    "all": frozenset({"isolated", "federated", "centralized"}),
}
PHASES: tuple[Phase, ...] = tuple(PHASE_PARTS)

# ------------------------------------------------------ supervisor -> engine


@dataclass(frozen=True)
class Run:
    """Compute `config`'s `phase`; `use_cache=False` neither reads nor writes the disk cache."""

    job: int
    config: ExperimentConfig
    phase: Phase
    use_cache: bool


@dataclass(frozen=True)
class Cancel:
    """Stop `job` as soon as possible; the engine answers `Cancelled`."""

    job: int


# ------------------------------------------------------ engine -> supervisor


@dataclass(frozen=True)
class Ready:
    """The engine has started its workers (their pids, to report them)."""

    worker_pids: tuple[int, ...]


@dataclass(frozen=True)
class Event:
    """Progress of a running job: `"epoch"` (client, epoch, loss), `"progress"` (a
    `Progress` with only the round it adds), `"isolated"` (the isolated models'
    results), `"centralized-epoch"` (epoch, loss)."""

    job: int
    kind: str
    payload: Any


@dataclass(frozen=True)
class Done:
    """The job's result, as `ExperimentResult.to_dict()` (plain data across versions)."""

    job: int
    result: dict[str, Any]


@dataclass(frozen=True)
class Failed:
    """The job failed: `kind` is "setting", "data" (the user can fix it) or "run"."""

    job: int
    kind: str
    error: str


@dataclass(frozen=True)
class Cancelled:
    """The job ended after a `Cancel`; nothing of it is kept."""

    job: int


ToSupervisor = Ready | Event | Done | Failed | Cancelled


def message_name(message: object) -> str:
    """How log lines and errors name a message: `Done(...)` is 'done'."""
    return type(message).__name__.lower()


# ------------------------------------------------------- engine <-> workers


@dataclass(frozen=True)
class WorkerReady:
    """A worker has its imports done and takes tasks (`role`: its pool)."""

    role: str


@dataclass(frozen=True)
class Task:
    """Run `kind` ("client-app", "isolated" or "centralized") with `args` in a worker."""

    kind: str
    args: tuple[Any, ...]


@dataclass(frozen=True)
class TaskProgress:
    """Something a running task did (an epoch and its loss), for the caller's listener."""

    value: Any


@dataclass(frozen=True)
class TaskDone:
    """The task's value, and the wall-clock `(start, end)` it ran (the pool's busy time)."""

    value: Any
    ran: tuple[float, float]


@dataclass(frozen=True)
class TaskFailed:
    """The task raised; `error` is its message."""

    error: str
