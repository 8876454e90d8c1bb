"""On a Ray cluster of two nodes (one CPU each) started on this machine: a sweep's
cells as Ray tasks (`sweep --ray`) give the local sweep's cells and rows, and resume;
`flwr run .` trains its ClientApps on both nodes, with the engine's numbers; an
address with no cluster behind it is one line, in seconds.

Both nodes are `ray start --block`, each leading a process group of its own, stopped
as a group (SIGTERM, then SIGKILL); every process of the cluster carries `MARKER` in
its environment, and none may outlive the module. Ray advertises this machine's own
address for a node even when told 127.0.0.1 (`resolve_ip_for_localhost`), so the
nodes talk over it: nothing leaves the machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from fedcore.deploy.processes import processes_with_env, stop_processes
from fedcore.experiment.results import ExperimentResult

from .conftest import REPO
from .test_flwr_run import BIN, flwr, local_flower_home

MARKER = "FEDCORE_TEST_RAY_CLUSTER"
SWEEP = ["--vary", "seed=1,2", "--clients", "3", "--rounds", "1", "--epochs", "1"]
# Run with the cluster's address: the alive nodes, then every actor's class and node.
FACTS = """
import json, sys, time, ray
import ray._private.state as state
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
deadline = time.monotonic() + 120
while sum(n["Alive"] for n in ray.nodes()) < int(sys.argv[2]) and time.monotonic() < deadline:
    time.sleep(0.2)
actors = [(a["ActorClassName"], a["Address"]["NodeID"]) for a in state.actors().values()]
print(json.dumps({"nodes": [n["NodeID"] for n in ray.nodes() if n["Alive"]], "actors": actors}))
"""


@dataclass(frozen=True)
class Cluster:
    address: str
    env: dict[str, str]  # the nodes' environment
    folder: Path  # Ray's --temp-dir: its sessions and logs

    def facts(self, nodes: int = 0) -> dict:
        """The cluster's alive nodes and its actors (after waiting for `nodes` nodes)."""
        done = subprocess.run(
            [sys.executable, "-c", FACTS, self.address, str(nodes)],
            env=self.env, capture_output=True, text=True, timeout=180,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.splitlines()[-1])

    def logs(self) -> str:
        return "".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in self.folder.glob("*.log"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_node(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("w") as out:
        return subprocess.Popen(
            [str(BIN / "ray"), "start", *args, "--num-cpus", "1", "--block",
             "--disable-usage-stats"],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


def stop_group(process: subprocess.Popen, timeout: float = 20.0) -> None:
    """SIGTERM to the node's process group; SIGKILL to what is left of it once its
    leader has exited or after `timeout`. The leader is reaped only after that, so the
    group's id cannot have been given to another process meanwhile."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT):
            break
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def leftovers(folder: Path, timeout: float = 15.0) -> list[psutil.Process]:
    """The cluster's processes still alive after `timeout` (an engine that a node's
    worker started leaves within half a second of that worker)."""
    deadline = time.monotonic() + timeout
    while (left := processes_with_env(MARKER, str(folder))) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


@pytest.fixture(scope="module")
def cluster(mnist_dir) -> Cluster:
    """A head and a worker node, one CPU each, on this machine; stopped afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="fedcore-ray-", dir="/tmp"))  # short: socket paths
    port = free_port()
    env = os.environ | {
        MARKER: str(folder),
        "FEDCORE_DATA_DIR": str(mnist_dir),
        # a cache of the nodes' own: what the cluster computes, it computes
        "FEDCORE_CACHE_DIR": str(folder / "cache"),
        "RAY_USAGE_STATS_ENABLED": "0",
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
    }
    nodes = []
    try:
        head = [
            "--head", "--port", str(port), "--node-ip-address", "127.0.0.1",
            "--include-dashboard=false", "--ray-client-server-port", str(free_port()),
            "--dashboard-agent-listen-port", str(free_port()), "--temp-dir", str(folder),
        ]  # fmt: skip
        nodes.append(start_node(head, env, folder / "head.log"))
        deadline = time.monotonic() + 60
        while True:
            assert nodes[0].poll() is None, (folder / "head.log").read_text()
            try:
                socket.create_connection(("127.0.0.1", port), 1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, (folder / "head.log").read_text()
                time.sleep(0.2)
        worker = ["--address", f"127.0.0.1:{port}", "--node-ip-address", "127.0.0.1",
                  "--dashboard-agent-listen-port", str(free_port())]  # fmt: skip
        nodes.append(start_node(worker, env, folder / "worker.log"))
        ready = Cluster(f"127.0.0.1:{port}", env, folder)
        assert len(ready.facts(nodes=2)["nodes"]) == 2, ready.logs()
        yield ready
    finally:
        for node in reversed(nodes):
            stop_group(node)
        left = leftovers(folder)
        stop_processes(left)
        shutil.rmtree(folder, ignore_errors=True)
        assert not left, f"left running: {[p.pid for p in left]}"


def sweep(out: Path, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fedcore", "sweep", *SWEEP, "--out", str(out), *extra],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def cell_files(out: Path) -> dict[str, dict]:
    """Each cell file by name, its numbers without the timings."""
    return {
        path.name: ExperimentResult.load(path).to_dict() | {"timings": None}
        for path in sorted((out / "cells").glob("*.json"))
    }


def rows(out: Path) -> list[dict]:
    table = json.loads((out / "sweep.json").read_text())
    assert table["finished"] == table["cells"] == 2
    return [row | {"wall_seconds": None} for row in table["rows"]]


def test_sweep_on_the_cluster_equals_the_local_sweep_and_resumes(cluster, tmp_path, mnist_dir):
    env = os.environ | {"FEDCORE_DATA_DIR": str(mnist_dir)}
    on_ray = sweep(tmp_path / "ray", "--ray", cluster.address, env=env)
    assert on_ray.returncode == 0, on_ray.stderr + cluster.logs()
    # two cells, one CPU per node: they ran side by side, one on each node
    assert f"2 cells computed on 2 nodes of the Ray cluster at {cluster.address}" in on_ray.stderr
    assert "seed=2: done" in on_ray.stderr and "Traceback" not in on_ray.stderr
    local = sweep(tmp_path / "local", env=env)
    assert local.returncode == 0, local.stderr
    assert rows(tmp_path / "ray") == rows(tmp_path / "local")
    computed = cell_files(tmp_path / "ray")
    assert computed == cell_files(tmp_path / "local")  # same keys (file names), same numbers
    assert len(computed) == 2
    assert {c["config"]["seed"] for c in computed.values()} == {1, 2}
    written = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "ray" / "cells").iterdir()}

    again = sweep(tmp_path / "ray", "--ray", cluster.address, env=env)
    assert again.returncode == 0, again.stderr
    assert again.stderr.count("kept from an earlier run") == 2
    assert f"no cell needed the Ray cluster at {cluster.address}" in again.stderr
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "ray" / "cells").iterdir()} == written
    assert rows(tmp_path / "ray") == rows(tmp_path / "local")


@pytest.fixture
def flwr_home_on_cluster(cluster, tmp_path, mnist_dir):
    """A fresh Flower home whose local SuperLink starts with RAY_ADDRESS set: its
    simulations' `ray.init()` joins the cluster (Flower 1.42's federation config has
    no address); the SuperLink and its processes stopped after."""
    with local_flower_home(tmp_path / "flwr-home", mnist_dir, RAY_ADDRESS=cluster.address) as env:
        yield env


def test_flwr_run_trains_on_both_nodes_with_the_engines_numbers(
    cluster, flwr_home_on_cluster, tmp_path, federated_small
):
    results = tmp_path / "results"
    done = flwr(
        flwr_home_on_cluster, "run", ".", "--stream",
        "--federation-config", "num-supernodes=3 client-resources-num-cpus=1",
        "--run-config", f"local-epochs=1 num-server-rounds=1 results-dir='{results}'",
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "fedcore round 1/1" in output and "results written to" in output
    facts = cluster.facts()
    actors = {node for name, node in facts["actors"] if name == "ClientAppActor"}
    assert actors == set(facts["nodes"]) and len(actors) == 2  # one ClientApp actor per node
    latest = json.loads((results / "latest.json").read_text())
    expected, _ = federated_small
    assert latest["federated"]["accuracy"] == expected.accuracy
    assert latest["federated"]["confusion"] == expected.confusion


def test_no_cluster_at_the_address_is_one_line_in_seconds(tmp_path):
    closed = free_port()
    with socket.socket() as other:  # listens, but is no Ray cluster
        other.bind(("127.0.0.1", 0))
        other.listen()
        silent = f"127.0.0.1:{other.getsockname()[1]}"
        for address, why in [
            (f"127.0.0.1:{closed}", "Connection refused"),
            ("head-node", "give it as HOST:PORT, the address ray start printed"),
            (silent, "no Ray cluster answers there (RpcError: "),
        ]:
            started = time.monotonic()
            done = sweep(tmp_path / "out", "--ray", address)
            assert time.monotonic() - started < 30
            assert done.returncode == 1, done.stderr
            line = f"fedcore: sweep: cannot reach the Ray cluster at {address}: {why}"
            assert done.stderr.startswith(line), done.stderr
            assert done.stderr.count("\n") == 1 and done.stdout == ""
    # `reproduce` shares the sweep's driver, and its --ray
    done = subprocess.run(
        [sys.executable, "-m", "fedcore", "reproduce", "mcmahan2017-table1", "--rows",
         "2nn,iid,B=10,C=0.1", "--out", str(tmp_path / "table"), "--ray", f"127.0.0.1:{closed}"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert (done.returncode, done.stderr) == (
        1,
        f"fedcore: sweep: cannot reach the Ray cluster at 127.0.0.1:{closed}: Connection refused\n",
    )
