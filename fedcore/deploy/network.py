"""Where the SuperLink and each data holder run, and which address each one dials.

`Loopback`: every process on one loopback (127.0.0.1), on free ports: that of a
network namespace of its own where this process may make one (root, `ip`), which no
other process of this machine reaches; this machine's own otherwise, where every
local process reaches every port, the SuperLink's own and the operator's side of
the proxy among them (Flower 1.42's SuperLink listens on TCP only, so only a
namespace keeps them to the federation).

`Namespaces`: the SuperLink in a network namespace of its own and every data holder
in another, each holder joined to the SuperLink by one veth pair (a virtual cable)
with a /30 network of its own: 10.213.<i+1>.1 on the SuperLink's end, 10.213.<i+1>.2
on holder i's end. Nothing else is in these namespaces, so no traffic leaves them,
and `cut(i)` takes holder i's cable down as a network outage would. `close()`
removes the namespaces (and with them the cables) on every exit path; their names
say whose they are (`fedcore.deploy.leftovers`), for the next deploy to remove
them if this one is killed.

Three ports on the SuperLink's side: `superlink_port`, the one the data holders
dial (the front door, `fedcore.deploy.proxy`, or the SuperLink itself with
`--insecure`); `internal_port`, the SuperLink behind the front door, on loopback
only; `operator_port`, where `flwr` reaches the control side, on loopback only.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable

from fedcore.deploy.leftovers import tag

SUPERLINK_PORT = 9091  # inside the namespaces, which are ours alone
INTERNAL_PORT = 9092
OPERATOR_PORT = 9093
SUPERNODE_PORT = 9094  # each SuperNode's Runtime API, on its namespace's loopback
SUBNET = "10.213"


class NetworkError(RuntimeError):
    """The network the federation needs cannot be set up."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ip(*args: str, netns: str | None = None) -> None:
    command = ["ip", *(["-n", netns] if netns else []), *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise NetworkError(f"`{' '.join(command)}` failed: {done.stderr.strip()}")


def _in(ns: str | None, command: list[str]) -> list[str]:
    return command if ns is None else ["ip", "netns", "exec", ns, *command]


def _listening(ns: str | None, port: int) -> bool:
    if ns is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            return False
    probe = _in(ns, ["bash", "-c", f"exec 3<>/dev/tcp/127.0.0.1/{port}"])
    return subprocess.run(probe, capture_output=True, timeout=10).returncode == 0


class Loopback:
    """Everything on one loopback: a namespace's (`tag` given) or this machine's."""

    public_host = "127.0.0.1"

    def __init__(self, holders: int, tag: str | None = None) -> None:
        self.holders = holders
        self.link_ns = f"{tag}-loopback" if tag else None
        self.holder_ns = [self.link_ns] * holders
        self.created: list[str] = []
        self.superlink_port = free_port()
        self.internal_port = free_port()
        self.operator_port = free_port()
        self.supernode_ports = [free_port() for _ in range(holders)]

    def create(self) -> None:
        if self.link_ns is not None:
            _ip("netns", "add", self.link_ns)
            self.created.append(self.link_ns)
            _ip("link", "set", "lo", "up", netns=self.link_ns)

    def close(self) -> None:
        for ns in self.created:
            _ip("netns", "delete", ns)
        self.created = []

    def certificate_addresses(self) -> list[str]:
        return ["127.0.0.1"]

    def superlink_address(self, holder: int) -> str:
        return f"127.0.0.1:{self.superlink_port}"

    def supernode_port(self, holder: int) -> int:
        return self.supernode_ports[holder]

    def spare_port(self) -> int:
        return free_port()

    def in_superlink(self, command: list[str]) -> list[str]:
        return _in(self.link_ns, command)

    def in_holder(self, holder: int, command: list[str]) -> list[str]:
        return _in(self.link_ns, command)

    def listening(self, port: int, holder: int | None = None) -> bool:
        return _listening(self.link_ns, port)

    def cut(self, holder: int) -> None:
        raise NetworkError("cutting a link needs network namespaces (--netns)")

    restore = cut


class Namespaces:
    """The SuperLink and each data holder in network namespaces of their own."""

    public_host = "0.0.0.0"  # in its own namespace: our veth ends and loopback only
    superlink_port = SUPERLINK_PORT
    internal_port = INTERNAL_PORT
    operator_port = OPERATOR_PORT

    def __init__(self, holders: int, tag: str) -> None:
        self.holders = holders
        # `tag` names the federation and its process (several may run side by side)
        self.link_ns = f"{tag}-link"
        self.holder_ns = [f"{tag}-holder{i}" for i in range(holders)]
        # Each end is named inside its own namespace: no clash between federations.
        self.link_end = [f"to-holder{i}" for i in range(holders)]
        self.holder_end = ["to-superlink"] * holders
        self.created: list[str] = []

    @staticmethod
    def available() -> bool:
        """Whether this process may create network namespaces (tried, then removed)."""
        if os.geteuid() != 0 or shutil.which("ip") is None:
            return False
        probe = f"{tag()}-probe"
        try:
            _ip("netns", "add", probe)
        except (NetworkError, OSError, subprocess.TimeoutExpired):
            return False
        _ip("netns", "delete", probe)
        return True

    def create(self) -> None:
        try:
            for ns in (self.link_ns, *self.holder_ns):
                _ip("netns", "add", ns)
                self.created.append(ns)
                _ip("link", "set", "lo", "up", netns=ns)
            for i in range(self.holders):
                _ip("link", "add", self.link_end[i], "type", "veth",
                    "peer", "name", self.holder_end[i], "netns", self.holder_ns[i],
                    netns=self.link_ns)  # fmt: skip
                _ip("addr", "add", f"{SUBNET}.{i + 1}.1/30", "dev", self.link_end[i],
                    netns=self.link_ns)  # fmt: skip
                _ip("link", "set", self.link_end[i], "up", netns=self.link_ns)
                _ip("addr", "add", f"{SUBNET}.{i + 1}.2/30", "dev", self.holder_end[i],
                    netns=self.holder_ns[i])  # fmt: skip
                _ip("link", "set", self.holder_end[i], "up", netns=self.holder_ns[i])
        except (NetworkError, OSError, subprocess.TimeoutExpired):
            self.close()
            raise

    def close(self) -> None:
        """Remove every namespace made here (their veth ends go with them)."""
        errors = []
        for ns in reversed(self.created):
            try:
                _ip("netns", "delete", ns)
            except (NetworkError, subprocess.TimeoutExpired) as error:
                errors.append(str(error))
        self.created = []
        if errors:
            raise NetworkError("; ".join(errors))

    def certificate_addresses(self) -> list[str]:
        return ["127.0.0.1", *(f"{SUBNET}.{i + 1}.1" for i in range(self.holders))]

    def superlink_address(self, holder: int) -> str:
        return f"{SUBNET}.{holder + 1}.1:{self.superlink_port}"

    def supernode_port(self, holder: int) -> int:
        return SUPERNODE_PORT

    def spare_port(self) -> int:
        return SUPERNODE_PORT + 1

    def in_superlink(self, command: list[str]) -> list[str]:
        return _in(self.link_ns, command)

    def in_holder(self, holder: int, command: list[str]) -> list[str]:
        return _in(self.holder_ns[holder], command)

    def listening(self, port: int, holder: int | None = None) -> bool:
        return _listening(self.link_ns if holder is None else self.holder_ns[holder], port)

    def reachable(self, holder: int) -> bool:
        """Whether holder `holder` can open a connection to the SuperLink now."""
        host, port = self.superlink_address(holder).split(":")
        probe = f"exec 3<>/dev/tcp/{host}/{port}"
        command = ["ip", "netns", "exec", self.holder_ns[holder], "timeout", "2", "bash", "-c"]
        return subprocess.run([*command, probe], capture_output=True, timeout=10).returncode == 0

    def cut(self, holder: int) -> None:
        """Take holder `holder`'s cable down (the SuperLink's end)."""
        _ip("link", "set", self.link_end[holder], "down", netns=self.link_ns)

    def restore(self, holder: int) -> None:
        _ip("link", "set", self.link_end[holder], "up", netns=self.link_ns)


def wait_until_listening(
    network: Loopback | Namespaces | None,
    port: int,
    alive: Callable[[], bool],
    deadline: float,
    holder: int | None = None,
    what: str = "the SuperLink",
) -> None:
    """Until something listens on `port` (of `network`, or of this machine's loopback
    if None); fail at once if `alive()` turns false."""
    while time.monotonic() < deadline:
        if not alive():
            raise NetworkError(f"{what} exited before it listened on port {port}")
        if network.listening(port, holder) if network else _listening(None, port):
            return
        time.sleep(0.2)
    raise TimeoutError(f"{what} did not listen on port {port} in time")
