"""Stop what we started, by process id: Flower's SuperLink outlives `flwr run`, and
SuperNodes and Ray start processes of their own."""

from __future__ import annotations

import contextlib

import psutil


def processes_with_env(key: str, value: str) -> list[psutil.Process]:
    """Every other process whose environment has `key=value` (children inherit it)."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.pid != psutil.Process().pid and process.environ().get(key) == value:
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def with_descendants(pids: list[int]) -> list[psutil.Process]:
    tree: list[psutil.Process] = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            parent = psutil.Process(pid)
            tree += [parent, *parent.children(recursive=True)]
    return tree


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
