"""The run engine: every experiment of the app, the CLI and the benchmarks runs here.

- `Engine` (supervisor.py), in the caller's process: a queue, identical
  requests merged, results kept in memory, Stop, and recovery when the engine
  process dies.
- The engine process (service.py): one job at a time, isolated models and the
  Flower run side by side on a pool of warm worker processes (pool.py,
  worker.py), Flower's in-memory runtime with a backend on that pool
  (flower_runtime.py), and the disk cache (cache.py).
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
