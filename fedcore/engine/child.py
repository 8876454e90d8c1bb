"""Child processes that talk to their parent over a socket pair, and die with it.

The engine process is started as `python -m fedcore.engine.service FD`
(`spawn_child`), not with `multiprocessing`: spawn would re-import the
caller's `__main__` (marimo's server, pytest, ...), and fork would copy a web
server's threads. The engine's workers are forked from the engine once it has
imported PyTorch and Flower (`fork_child`): they start with everything loaded,
in milliseconds, instead of each spending seconds on the same imports.

A child exits when its parent does, even when the parent is killed: a
watchdog thread sees it re-parented within half a second. (Linux's
`PR_SET_PDEATHSIG` would fire when the *thread* that started the child ends,
and a web server starts the engine from a session's thread.)
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

_open_channels: weakref.WeakSet[Channel] = weakref.WeakSet()


class Channel:
    """Objects over a socket, with plain pickle: `multiprocessing`'s own pickler would
    send PyTorch tensors as shared-memory handles that only its own children can open."""

    def __init__(self, fd: int) -> None:
        self._conn = Connection(fd)
        _open_channels.add(self)

    def send(self, value: object) -> None:
        self._conn.send_bytes(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))

    def recv(self) -> Any:
        return pickle.loads(self._conn.recv_bytes())

    def close(self) -> None:
        self._conn.close()


def spawn_child(module: str) -> tuple[subprocess.Popen, Channel]:
    """Start `python -m module FD`; return the process and our end of its channel."""
    ours, theirs = socket.socketpair()
    process = subprocess.Popen(
        [sys.executable, "-m", module, str(theirs.fileno())],
        pass_fds=[theirs.fileno()],
        stdin=subprocess.DEVNULL,
    )
    theirs.close()
    return process, Channel(ours.detach())


def fork_child(target: Callable[[Channel], None]) -> tuple[BaseProcess, Channel]:
    """Fork this process and run `target(channel)` in the child; our end of the channel.

    Call it before this process starts threads of its own (a fork copies only
    the calling thread, and any lock another thread held stays locked).
    """
    ours, theirs = socket.socketpair()
    process = multiprocessing.get_context("fork").Process(
        target=_run_forked, args=(theirs, target), daemon=True
    )
    process.start()
    theirs.close()
    return process, Channel(ours.detach())


def _run_forked(sock: socket.socket, target: Callable[[Channel], None]) -> None:
    for inherited in list(_open_channels):  # the parent's other channels are not ours
        inherited.close()
    _exit_with_parent()
    target(Channel(sock.detach()))


def _exit_with_parent() -> None:
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="fedcore-parent-watch", daemon=True).start()


def connect_to_parent(argv: list[str]) -> Channel:
    """In a spawned child: exit when the parent is gone; the channel named on the
    command line."""
    _exit_with_parent()
    return Channel(int(argv[1]))
