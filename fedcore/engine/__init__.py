"""The run engine: every experiment of the app, the CLI and the benchmarks runs here.

Its modules, from the caller down:

- supervisor.py: `Engine`, in the caller's process: a queue in which its callers
  take turns, identical requests merged, results kept in memory, Stop per caller,
  time limits, recovery when the engine process dies;
- cost.py: what a run will cost on this machine, estimated from its settings;
- protocol.py: the messages between the two processes (one dataclass each);
- service.py: the engine process, one job at a time, by phases (isolated
  models, the Flower run, the centralized baseline) side by side;
- pool.py, worker.py: the pools of warm worker processes that train;
- flower_runtime.py: Flower's in-memory runtime with a backend on that pool
  (the only module that uses Flower's internals);
- child.py: starting child processes that die with their parent, and ending
  them by process group or pidfd, never by a bare process id;
- cache.py: the disk cache of results; sweep.py: sweeps of many settings.
"""

from fedcore.engine.supervisor import (
    PHASES,
    Engine,
    EngineError,
    Phase,
    RunHandle,
    RunStatus,
    RunStopped,
    run_experiment,
    shared_engine,
)

__all__ = [
    "PHASES",
    "Engine",
    "EngineError",
    "Phase",
    "RunHandle",
    "RunStatus",
    "RunStopped",
    "run_experiment",
    "shared_engine",
]
