"""Child processes that talk to their parent over a socket pair, and die with it.

The engine process and its workers are started as `python -m MODULE FD ...`, not
with `multiprocessing`: spawn would re-import the parent's `__main__` (marimo's
server, pytest, ...) in every child, and fork would copy a web server's threads.
A child exits when its parent does, even when the parent is killed: a
watchdog thread sees it re-parented within half a second. (Linux's
`PR_SET_PDEATHSIG` would fire when the *thread* that started the child ends,
and a web server starts the engine from a session's thread.)
"""

from __future__ import annotations

import os
import pickle
import socket
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection
from typing import Any


class Channel:
    """Objects over a socket, with plain pickle: `multiprocessing`'s own pickler would
    send PyTorch tensors as shared-memory handles that only its own children can open."""

    def __init__(self, fd: int) -> None:
        self._conn = Connection(fd)

    def send(self, value: object) -> None:
        self._conn.send_bytes(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))

    def recv(self) -> Any:
        return pickle.loads(self._conn.recv_bytes())

    def close(self) -> None:
        self._conn.close()


def spawn_child(
    module: str, args: tuple[str, ...] = (), env: dict[str, str] | None = None
) -> tuple[subprocess.Popen, Channel]:
    """Start `python -m module FD *args`; return the process and our end of its channel."""
    ours, theirs = socket.socketpair()
    process = subprocess.Popen(
        [sys.executable, "-m", module, str(theirs.fileno()), *args],
        pass_fds=[theirs.fileno()],
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
    )
    theirs.close()
    return process, Channel(ours.detach())


def connect_to_parent(argv: list[str]) -> Channel:
    """In the child: exit when the parent is gone; the channel named on the command line."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="fedcore-parent-watch", daemon=True).start()
    return Channel(int(argv[1]))
