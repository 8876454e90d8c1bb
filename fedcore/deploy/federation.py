"""A federation on Flower's deployment engine, on this machine: one `flower-superlink`,
one `flower-supernode` per data holder, and `flwr run` for each run.

Secure by default: TLS with a CA and certificates made for this federation
(`fedcore.deploy.pki`); SuperNode authentication (`--enable-supernode-auth`), each
SuperNode's public key registered with `flwr supernode register` before it starts;
and the SuperLink behind a front door (nginx, `fedcore.deploy.proxy`) that lets the
SuperNodes through and opens the control side to the operator's certificate only.
`secure=False` is Flower's `--insecure` (no TLS, no front door, any SuperNode may
join, anyone may run anything).

The data holders run on loopback or each in a network namespace of its own
(`fedcore.deploy.network`). Every process started here is stopped by process id
(with its children), and every namespace removed, when the federation closes,
whatever happened before; what a killed federation leaves is named after its
process, for the next deploy to remove (`fedcore.deploy.leftovers`).

The methods that break things (`kill_supernode`, `restart_superlink`, `cut_link`)
are what the fault tests use.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from fedcore.deploy import proxy
from fedcore.deploy.leftovers import OWNER_ENV, federation_tag
from fedcore.deploy.network import Loopback, Namespaces, wait_until_listening
from fedcore.deploy.pki import NodeKey, make_federation_credentials, make_node_key, write_exclusive
from fedcore.deploy.processes import processes_with_env, stop_processes, with_descendants

ROOT = Path(__file__).resolve().parents[2]  # the Flower app (`flwr run .`)
BIN = Path(sys.executable).parent
CONNECTION = "fedcore-deploy"
STARTED_RUN = re.compile(r"Successfully started run (\d+)")
FEDCORE_ERROR = re.compile(r"(fedcore: (?:run failed|invalid setting): .*)")
PROGRESS = re.compile(r"fedcore round|\[ROUND|Waiting for nodes")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def plain(line: str) -> str:
    """A log line without colours and Flower's `INFO :` prefix."""
    return re.sub(r"^\s*[A-Z]+\s*:\s*", "", ANSI.sub("", line)).strip()


class DeploymentError(RuntimeError):
    """The federation could not be set up or a run could not be started."""


def holder_name(holder: int) -> str:
    """The name a data holder's SuperNode is registered under (Flower: letters, digits, -)."""
    return f"client-{holder + 1}"


@dataclass
class Holder:
    """One data holder: its partition, data folder, key and SuperNode process."""

    index: int
    data_dir: str
    key: NodeKey | None = None
    node_id: int | None = None
    process: subprocess.Popen | None = None

    @property
    def name(self) -> str:
        return holder_name(self.index)


@dataclass
class RunOutcome:
    """What one `flwr run` gave: its run id, its own results (or the reason it has none)."""

    run_id: int | None
    results: dict[str, Any] | None
    results_path: Path | None
    error: str | None  # one line when the run failed, timed out or gave no results
    output: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.results is not None


@dataclass
class DeployedRun:
    """A `flwr run ... --stream` in progress; its output is read as it comes."""

    process: subprocess.Popen
    results_dir: Path
    started: float
    deadline: float
    echo: Callable[[str], None] | None = None  # each output line as it comes
    lines: list[str] = field(default_factory=list)
    _changed: threading.Condition = field(default_factory=threading.Condition)

    def __post_init__(self) -> None:
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if self.echo is not None:
                self.echo(line)
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, pattern: str, timeout: float) -> re.Match | None:
        """The first output line matching `pattern`, waiting up to `timeout` seconds."""
        regex = re.compile(pattern)
        end = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines:
                    if match := regex.search(line):
                        return match
                left = end - time.monotonic()
                if left <= 0 or (self.process.poll() is not None and not self._reader.is_alive()):
                    return None
                self._changed.wait(min(left, 0.5))

    def finish(self) -> RunOutcome:
        """Wait (until the deadline) for the run to end; its own results, or why none."""
        timed_out = False
        try:
            self.process.wait(timeout=max(0.0, self.deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            timed_out = True
            stop_processes(with_descendants([self.process.pid]))
        self._reader.join(timeout=10)
        output = "".join(self.lines)
        seconds = time.monotonic() - self.started
        started = STARTED_RUN.search(output)
        run_id = int(started.group(1)) if started else None
        # Only this run's file: `<stamp>-run<id>.json`, in a folder only this run writes to.
        own = sorted(self.results_dir.glob(f"*-run{run_id}.json")) if run_id else []
        error = None
        if timed_out:
            progress = [plain(line) for line in self.lines if PROGRESS.search(line)]
            where = f" (last: {progress[-1]})" if progress else ""
            error = f"run {run_id} timed out after {seconds:.0f} s and was stopped{where}"
        elif not own:
            failed = FEDCORE_ERROR.search(output)
            if failed:
                error = failed.group(1).strip()
            elif run_id is None:
                last = [line.strip() for line in self.lines if line.strip()]
                error = "flwr run did not start a run: " + (last[-1] if last else "no output")
            else:
                error = f"run {run_id} ended without results (exit code {self.process.returncode})"
        results = json.loads(own[-1].read_text()) if own and not timed_out else None
        return RunOutcome(run_id, results, own[-1] if results else None, error, output, seconds)


class Federation:
    """A SuperLink and `supernodes` SuperNodes; a context manager that cleans up."""

    def __init__(
        self,
        supernodes: int,
        data_dir: str | Path,
        *,
        secure: bool = True,
        namespaces: bool = False,
        node_data_dirs: dict[int, str] | None = None,
        log_dir: Path | None = None,
        workdir: Path | None = None,
        timeout: float = 900.0,
        persistent: bool = False,
    ) -> None:
        self.secure = secure
        # The SuperLink's state in a database file, so that registrations outlive a
        # restart (`restart_superlink`). Otherwise Flower's in-memory state: under
        # load the file (SQLite) answers concurrent requests with "database is
        # locked" (HTTP 500), and a 500 on one of the ServerApp's calls ends its run.
        self.persistent = persistent
        self.data_dir = str(Path(data_dir).resolve())
        dirs = node_data_dirs or {}
        self.holders = [Holder(i, str(dirs.get(i, self.data_dir))) for i in range(supernodes)]
        self.deadline = time.monotonic() + timeout
        self.tag = federation_tag()  # names its owner, this process
        self.network: Loopback | Namespaces = (
            Namespaces(supernodes, self.tag)
            if namespaces
            else Loopback(supernodes, self.tag if Namespaces.available() else None)
        )
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix=f"{self.tag}-")).resolve()
        self.logs = Path(log_dir or self.workdir / "logs").resolve()
        self.pki = self.workdir / "pki"
        self.home = self.workdir / "flwr-home"
        self.proxy: subprocess.Popen | None = None
        self.superlink: subprocess.Popen | None = None
        self.others: list[subprocess.Popen] = []  # intruders and whatever else was started
        self.runs = 0
        self.stopped: list[int] = []  # process ids, once closed
        self.env = os.environ | {
            "FLWR_HOME": str(self.home),
            "FLWR_TELEMETRY_ENABLED": "0",
            "FEDCORE_DATA_DIR": self.data_dir,
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONUNBUFFERED": "1",
            OWNER_ENV: str(os.getpid()),
        }

    # ------------------------------------------------------------------ set up, tear down

    def __enter__(self) -> Federation:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        self.workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.logs.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.secure and proxy.nginx() is None:
            raise DeploymentError(
                "the SuperLink's front door needs nginx (Debian: apt-get install nginx); "
                "--insecure runs without it, on loopback only"
            )
        self.network.create()
        if self.secure:
            self.credentials = make_federation_credentials(
                self.pki, self.network.certificate_addresses()
            )
            for holder in self.holders:
                holder.key = make_node_key(self.workdir / "keys", holder.name)
        self.start_superlink()
        if self.secure:
            self.start_proxy()
        self._write_connection()
        if self.secure:
            self._register(self.holders)
        for holder in self.holders:
            self.start_supernode(holder.index)

    def close(self) -> list[int]:
        """Stop every process started here (by id, with children); remove namespaces."""
        processes = [p for p in (self.superlink, self.proxy, *self.others) if p is not None]
        processes += [h.process for h in self.holders if h.process is not None]
        # Only those not reaped yet: a reaped process's id may be another's by now.
        alive = [p.pid for p in processes if p.poll() is None]
        stopped = stop_processes(with_descendants(alive))
        for process in processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=15)
        # A child whose parent died first (a SuperNode's runner) carries our FLWR_HOME.
        stopped += stop_processes(processes_with_env("FLWR_HOME", str(self.home)))
        self.stopped += stopped
        self.superlink, self.proxy, self.others = None, None, []
        for holder in self.holders:
            holder.process = None
        try:
            self.network.close()
        finally:
            if self._own_workdir:
                shutil.rmtree(self.workdir, ignore_errors=True)
        return stopped

    def _left(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the federation's time is up")
        return left

    # ------------------------------------------------------------------ processes

    def _popen(self, command: list[str], log_name: str) -> subprocess.Popen:
        with open(self.logs / log_name, "a") as log:
            return subprocess.Popen(
                command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip

    def start_superlink(self) -> subprocess.Popen:
        """The SuperLink: behind the front door on loopback only, or (`--insecure`)
        where the SuperNodes dial."""
        net = self.network
        host, port = ("127.0.0.1", net.internal_port) if self.secure else (
            net.public_host, net.superlink_port)  # fmt: skip
        command = [
            str(BIN / "flower-superlink"),
            "--host", host,
            "--port", str(port),
            "--disable-runtime-dependency-installation",
        ]  # fmt: skip
        if self.persistent:
            command += ["--database", str(self.workdir / "superlink.db")]
        if self.secure:
            command += [
                "--ssl-ca-certfile", str(self.credentials.ca_cert),
                "--ssl-certfile", str(self.credentials.cert),
                "--ssl-keyfile", str(self.credentials.key),
                "--enable-supernode-auth",
            ]  # fmt: skip
        else:
            command.append("--insecure")
        self.superlink = self._popen(self.network.in_superlink(command), "superlink.log")
        process = self.superlink
        wait_until_listening(
            self.network, port, lambda: process.poll() is None,
            time.monotonic() + min(self._left(), 120),
        )  # fmt: skip
        return process

    def start_proxy(self) -> subprocess.Popen:
        """nginx: the front door where the SuperNodes dial, and the operator's side
        where `flwr` runs (both on the SuperLink's side here, one nginx)."""
        net = self.network
        door = proxy.front_door(
            f"{net.public_host}:{net.superlink_port}",
            f"127.0.0.1:{net.internal_port}",
            self.pki,
            self.logs,
        )
        operator = proxy.operator_side(
            f"127.0.0.1:{net.operator_port}", f"127.0.0.1:{net.superlink_port}",
            proxy.SUPERLINK_NAME, self.pki,
        )  # fmt: skip
        state = self.workdir / "nginx"
        state.mkdir(mode=0o700, exist_ok=True)
        # The tag in the file's name is in nginx's process title: whose it is.
        conf = write_exclusive(
            self.workdir / f"nginx-{self.tag}.conf",
            proxy.config(door + operator, state, self.logs).encode(),
        )
        command = proxy.command(conf, self.logs / "nginx-error.log")
        self.proxy = self._popen(net.in_superlink(command), "nginx.log")
        process = self.proxy
        for port in (net.superlink_port, net.operator_port):
            wait_until_listening(
                net, port, lambda: process.poll() is None,
                time.monotonic() + min(self._left(), 60), what="nginx (the front door)",
            )  # fmt: skip
        return process

    def stop_superlink(self) -> None:
        if self.superlink is not None:
            stop_processes(with_descendants([self.superlink.pid]))
            self.superlink.wait(timeout=15)
            self.superlink = None

    def restart_superlink(self) -> None:
        """Stop the SuperLink (SIGTERM, its ServerApp runner too) and start it again:
        same address, certificate and database, so registrations and SuperNodes stay."""
        if not self.persistent:
            raise DeploymentError("a restart keeps the registrations only with persistent=True")
        self.stop_superlink()
        self.start_superlink()

    def supernode_command(
        self, holder: int, key: NodeKey | None, port: int | None = None
    ) -> list[str]:
        h = self.holders[holder]
        node_config = (
            f"partition-id={holder} num-partitions={len(self.holders)} data-dir='{h.data_dir}'"
        )
        command = [
            str(BIN / "flower-supernode"),
            "--superlink", self.network.superlink_address(holder),
            "--port", str(port or self.network.supernode_port(holder)),
            "--node-config", node_config,
        ]  # fmt: skip
        if self.secure:
            command += ["--root-certificates", str(self.credentials.ca_cert)]
            if key is not None:
                command += ["--auth-supernode-private-key", str(key.private)]
        else:
            command.append("--insecure")
        return self.network.in_holder(holder, command)

    def start_supernode(self, holder: int) -> subprocess.Popen:
        """Start (or start again) data holder `holder`'s SuperNode, with its own key."""
        h = self.holders[holder]
        if h.process is not None and h.process.poll() is None:
            raise DeploymentError(f"{h.name}'s SuperNode is running already")
        if h.process is not None:  # a SuperNode that died: its children may not have
            stop_processes(with_descendants([h.process.pid]))
        h.process = self._popen(self.supernode_command(holder, h.key), f"{h.name}.log")
        return h.process

    def kill_supernode(self, holder: int) -> None:
        """SIGKILL holder `holder`'s SuperNode and its children, as a crash would."""
        h = self.holders[holder]
        if h.process is None:
            return
        tree = with_descendants([h.process.pid])
        for process in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.send_signal(signal.SIGKILL)
        psutil.wait_procs(tree, timeout=15)
        h.process.wait(timeout=15)

    def start_intruder(self, holder: int, name: str = "intruder") -> subprocess.Popen:
        """A SuperNode with a key of its own that nobody registered, claiming to be
        `holder`'s partition (secure federations only)."""
        key = make_node_key(self.workdir / "intruder", name)
        port = self.network.spare_port()  # beside the holder's own SuperNode
        process = self._popen(self.supernode_command(holder, key, port), f"{name}.log")
        self.others.append(process)
        return process

    def cut_link(self, holder: int) -> None:
        self.network.cut(holder)

    def restore_link(self, holder: int) -> None:
        self.network.restore(holder)

    # ------------------------------------------------------------------ the flwr CLI

    @property
    def control_address(self) -> str:
        """Where `flwr` reaches the control side: the operator's side of the proxy (or,
        `--insecure`, the SuperLink), on the loopback of the SuperLink's side. Plain
        HTTP on loopback: the hop to the front door is TLS with the operator's
        certificate, which `flwr` itself cannot present."""
        net = self.network
        return f"127.0.0.1:{net.operator_port if self.secure else net.superlink_port}"

    def _write_connection(self) -> None:
        """`[superlink.fedcore-deploy]` in `$FLWR_HOME/config.toml`, by Flower's own writer
        (a child process, so that this process's FLWR_HOME stays as it is)."""
        code = (
            "from flwr.cli.flower_config import init_flwr_config, write_superlink_connection\n"
            "from flwr.cli.typing import SuperLinkConnection\n"
            "init_flwr_config()\n"
            f"write_superlink_connection(SuperLinkConnection(name={CONNECTION!r}, "
            f"address={self.control_address!r}, insecure=True))\n"
        )
        self._flwr_check([sys.executable, "-c", code], "writing the SuperLink connection")

    def _flwr_check(self, command: list[str], what: str) -> str:
        done = subprocess.run(
            command, cwd=ROOT, env=self.env, capture_output=True, text=True,
            timeout=min(self._left(), 120),
        )  # fmt: skip
        if done.returncode != 0:
            last = (done.stderr.strip() or done.stdout.strip()).splitlines()
            raise DeploymentError(f"{what} failed: {last[-1] if last else done.returncode}")
        return done.stdout

    def control(self, *args: str) -> dict[str, Any]:
        """`flwr <args> <connection> --format json`, as the operator: its JSON reply."""
        command = [str(BIN / "flwr"), *args, CONNECTION, "--format", "json"]
        return _last_json(self._flwr_check(self.network.in_superlink(command), f"flwr {args[0]}"))

    def _register(self, holders: list[Holder]) -> None:
        """`flwr supernode register <key>.pub` for each holder, all at once."""
        running = []
        for h in holders:
            assert h.key is not None
            command = self.network.in_superlink([
                str(BIN / "flwr"), "supernode", "register", str(h.key.public), CONNECTION,
                "--name", h.name, "--format", "json",
            ])  # fmt: skip
            running.append((h, subprocess.Popen(
                command, cwd=ROOT, env=self.env, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True,
            )))  # fmt: skip
        errors = []
        for h, process in running:
            try:
                out, err = process.communicate(timeout=min(self._left(), 120))
            except subprocess.TimeoutExpired:
                stop_processes(with_descendants([process.pid]))
                errors.append(f"{h.name}: timed out")
                continue
            payload = _last_json(out)
            if process.returncode != 0 or not payload.get("success"):
                errors.append(f"{h.name}: {(err.strip() or out.strip()).splitlines()[-1:]}")
            else:
                h.node_id = int(payload["node-id"])
        if errors:
            raise DeploymentError("registering SuperNodes failed: " + "; ".join(errors))

    def start_run(
        self,
        run_config: str = "",
        timeout: float | None = None,
        echo: Callable[[str], None] | None = None,
    ) -> DeployedRun:
        """`flwr run . <connection> --stream` with `run_config`; results go to a folder
        that only this run writes to."""
        self.runs += 1
        results_dir = self.workdir / "results" / f"run-{self.runs}"
        overrides = f"{run_config} results-dir='{results_dir}'".strip()
        command = self.network.in_superlink(
            [str(BIN / "flwr"), "run", ".", CONNECTION, "--stream", "--run-config", overrides]
        )
        left = self._left() if timeout is None else min(self._left(), timeout)
        process = subprocess.Popen(
            command, cwd=ROOT, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        self.others.append(process)
        now = time.monotonic()
        return DeployedRun(process, results_dir, now, now + left, echo)

    def run(self, run_config: str = "", timeout: float | None = None) -> RunOutcome:
        return self.start_run(run_config, timeout).finish()

    def log(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace") if path.is_file() else ""


def _last_json(text: str) -> dict[str, Any]:
    for line in reversed(text.strip().splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    try:
        value = json.loads(text[text.index("{") :])
        return value if isinstance(value, dict) else {}
    except ValueError:
        return {}
