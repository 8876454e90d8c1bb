"""What a deploy leaves behind when it is killed (SIGKILL, a crash, a lost machine),
named so that the next one can find it and remove it.

Everything a federation makes carries its owner, the process that made it:
network namespaces and temporary folders are named `fedcore-pid<PID>-...`; the
processes it starts carry `FEDCORE_DEPLOY_OWNER=<PID>` in their environment, and
nginx (which overwrites its environment with its process title) has the tag in
its configuration file's name. `remove_stale()` removes what belongs to owners
that are gone, before a deploy starts; what a running owner made is never
touched. (An owner's pid taken by another process since keeps its leftovers until
that process ends too.)
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import subprocess
import tempfile
from collections import defaultdict
from pathlib import Path

import psutil

from fedcore.deploy.processes import stop_processes, with_descendants

OWNER_ENV = "FEDCORE_DEPLOY_OWNER"
TAGGED = re.compile(r"fedcore-pid(\d+)-")
_serial = itertools.count(1)  # several federations may live in one process


def tag(pid: int | None = None) -> str:
    """The prefix of every name this process (or `pid`) gives: `fedcore-pid<PID>`."""
    return f"fedcore-pid{os.getpid() if pid is None else pid}"


def federation_tag() -> str:
    """A prefix for one federation of this process: `fedcore-pid<PID>-f<N>`."""
    return f"{tag()}-f{next(_serial)}"


def _owner(name: str) -> int | None:
    match = TAGGED.search(name)
    return int(match.group(1)) if match else None


def _gone(pid: int) -> bool:
    """Whether owner `pid` has ended (a zombie, not yet reaped by its parent, has)."""
    if pid == os.getpid():
        return False
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def namespaces() -> list[str]:
    """Every fedcore network namespace on this machine (none without root and `ip`)."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return []
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=30)
    return [line.split()[0] for line in listed.stdout.splitlines() if line.startswith("fedcore-")]


def _folders() -> list[Path]:
    """Our own temporary folders (never a link, never another user's)."""
    found = []
    for path in Path(tempfile.gettempdir()).glob("fedcore-pid*-*"):
        with contextlib.suppress(OSError):
            info = path.lstat()
            if path.is_dir() and not path.is_symlink() and info.st_uid == os.geteuid():
                found.append(path)
    return found


def _processes() -> dict[int, list[psutil.Process]]:
    """Processes by owner: Flower's by their environment, nginx by its title."""
    owned: dict[int, list[psutil.Process]] = defaultdict(list)
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            owner = process.environ().get(OWNER_ENV, "")
            if owner.isdigit():
                owned[int(owner)].append(process)
            elif process.name() == "nginx" and (pid := _owner(" ".join(process.cmdline()))):
                owned[pid].append(process)
    return owned


def remove_stale() -> list[str]:
    """Remove what owners that are gone left behind; one line per owner, saying what."""
    netns: dict[int, list[str]] = defaultdict(list)
    for name in namespaces():
        if (pid := _owner(name)) is not None:
            netns[pid].append(name)
    folders: dict[int, list[Path]] = defaultdict(list)
    for path in _folders():
        if (pid := _owner(path.name)) is not None:
            folders[pid].append(path)
    processes = _processes()
    owners = sorted(p for p in {*netns, *folders, *processes} if _gone(p))
    lines = []
    for pid in owners:
        # Processes first (they hold the namespaces and write into the folders).
        stopped = stop_processes(with_descendants([p.pid for p in processes.get(pid, [])]))
        removed_ns = sum(_delete_namespace(ns) for ns in netns.get(pid, []))
        for path in folders.get(pid, []):
            shutil.rmtree(path, ignore_errors=True)
        what = ", ".join([
            _count(len(set(stopped)), "process", "processes"),
            _count(removed_ns, "network namespace", "network namespaces"),
            _count(len(folders.get(pid, [])), "temporary folder", "temporary folders"),
        ])  # fmt: skip
        lines.append(f"deploy: removed what deploy pid {pid} (gone) left behind: {what}")
    return lines


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _delete_namespace(name: str) -> bool:
    done = subprocess.run(["ip", "netns", "delete", name], capture_output=True, timeout=30)
    return done.returncode == 0  # a deploy starting beside us may have removed it first
