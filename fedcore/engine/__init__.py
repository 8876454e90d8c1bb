"""The run engine: every experiment of the app, the CLI and the benchmarks runs here.

Its modules, from the caller down:

- supervisor.py: `Engine`, in the caller's process: a queue, identical requests
  merged, results kept in memory, Stop, recovery when the engine process dies;
- protocol.py: the messages between the two processes (one dataclass each);
- service.py: the engine process, one job at a time, by phases (isolated
  models, the Flower run, the centralized baseline) side by side;
- pool.py, worker.py: the pools of warm worker processes that train;
- flower_runtime.py: Flower's in-memory runtime with a backend on that pool
  (the only module that uses Flower's internals);
- child.py: starting child processes that die with their parent;
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
