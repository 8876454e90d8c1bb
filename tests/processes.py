"""Find and stop what a test started, by process id, even when the test failed.

`flwr run` starts a SuperLink that outlives the command, which starts
`flower-superexec`, `flwr-simulation` and Ray's processes. All of them inherit
the environment, so a unique `FLWR_HOME` marks every one of them.
"""

from __future__ import annotations

import contextlib

import psutil


def processes_with_env(key: str, value: str) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter():
        try:
            if process.pid != psutil.Process().pid and process.environ().get(key) == value:
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def stop_processes(processes: list[psutil.Process], timeout: float = 15.0) -> list[int]:
    """Terminate, wait, then kill what is left; return the ids that were stopped."""
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.terminate()
    _, alive = psutil.wait_procs(processes, timeout=timeout)
    for process in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(alive, timeout=timeout)
    return [p.pid for p in processes]
