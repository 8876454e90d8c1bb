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

Nothing here signals a bare process id, which the system may have given to
another process once its own ended and was reaped: the engine leads a process
group of its own, which its workers join, and `SpawnedChild` signals that
group only while the engine is not reaped yet (its id, and so the group's, is
still ours); a forked worker is signalled through a pidfd, which names that
one process for good.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

_open_channels: weakref.WeakSet[Channel] = weakref.WeakSet()
# How long `SpawnedChild.reap` waits for the processes of a killed group to be
# reaped by the system (they are orphans then: init reaps them in milliseconds).
GROUP_GONE_SECONDS = 10.0


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

    def shutdown(self) -> None:
        """End the conversation both ways: the peer reads end-of-file, and so does a
        thread of ours blocked in `recv` (which closing the socket would not wake)."""
        with (
            contextlib.suppress(OSError),  # closed already
            socket.socket(fileno=os.dup(self._conn.fileno())) as sock,
        ):
            sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._conn.close()


class SpawnedChild:
    """A spawned child that leads a process group of its own (its forked workers join
    it), so that `kill` ends all of them at once. The group is signalled only while
    the leader is not reaped: until then no other process can be given its id."""

    def __init__(self, popen: subprocess.Popen) -> None:
        self._popen = popen
        self.pid = popen.pid
        self._pidfd = os.pidfd_open(popen.pid)  # ours: the child is not reaped yet
        self._lock = threading.Lock()  # kill and reap, one at a time
        self.returncode: int | None = None  # set once reaped

    def exited(self, timeout: float | None = None) -> bool:
        """Whether the leader has exited, waiting up to `timeout` (None: until it has);
        it is left unreaped."""
        ready, _, _ = select.select([self._pidfd], [], [], timeout)
        return bool(ready)

    def kill(self) -> None:
        """SIGKILL the leader and every process of its group (a no-op once reaped)."""
        with self._lock:
            if self.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)

    def reap(self, grace: float) -> int:
        """Wait for the leader to exit (killing the group if it has not after `grace`
        seconds), kill whatever of its group outlived it, reap it, and wait until no
        process of the group is left. Its exit code (negative: the signal)."""
        if not self.exited(grace):
            self.kill()
        self.exited()
        self.kill()  # the leader is a zombie now: its workers, if any are left
        with self._lock:
            self.returncode = self._popen.wait()
            os.close(self._pidfd)
        _wait_until_group_gone(self.pid)
        return self.returncode


def _wait_until_group_gone(group: int) -> None:
    """Until no process of `group` is left (its killed workers reaped by the
    system), for up to `GROUP_GONE_SECONDS`. Signal 0 only asks: should the id have
    been given to another group meanwhile, nothing happens to it."""
    deadline = time.monotonic() + GROUP_GONE_SECONDS
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except OSError:  # no such group any more (or, reused, not ours to ask)
            return
        time.sleep(0.01)


def spawn_child(module: str, env: Mapping[str, str] | None = None) -> tuple[SpawnedChild, Channel]:
    """Start `python -m module FD` in a session (so a process group) of its own;
    return the process and our end of its channel. `env`: variables it gets where
    ours do not set them.

    Its own group keeps a terminal's Ctrl-C from reaching it: the caller decides
    what a Ctrl-C stops. Its own session gives it its own scheduling group where
    Linux groups by session (autogroup): the CPU is shared between sessions first
    and by nice only within one, so the engine's nice-19 pool yields to the
    engine's own federated run but not, starved, to whatever busy process shares
    the caller's session (a `marimo run` server's kernels: docs/benchmarks.md,
    "Under load")."""
    ours, theirs = socket.socketpair()
    process = subprocess.Popen(
        [sys.executable, "-m", module, str(theirs.fileno())],
        pass_fds=[theirs.fileno()],
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        env={**(env or {}), **os.environ},
    )
    theirs.close()
    return SpawnedChild(process), Channel(ours.detach())


class ForkedChild:
    """A forked worker, killed through a pidfd opened while it was surely ours."""

    def __init__(self, process: BaseProcess) -> None:
        self._process = process
        self.pid = process.pid
        self._pidfd: int | None = os.pidfd_open(process.pid)
        self._lock = threading.Lock()  # the pidfd is closed by `join`, maybe meanwhile

    @property
    def exitcode(self) -> int | None:
        return self._process.exitcode

    def kill(self) -> None:
        with self._lock:
            if self._pidfd is not None:
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)

    def join(self) -> None:
        self._process.join()
        with self._lock:
            if self._pidfd is not None:
                os.close(self._pidfd)
                self._pidfd = None


def fork_child(target: Callable[[Channel], None]) -> tuple[ForkedChild, Channel]:
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
    return ForkedChild(process), Channel(ours.detach())


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
