"""`python -m fedcore deploy`: the Flower app unchanged on Flower's deployment engine,
secure by default (TLS, registered SuperNodes), each data holder in a network
namespace where that is possible. Afterwards no process and no namespace of it is left.

The faults (an unregistered SuperNode, one killed in a round, the SuperLink
restarted, a link cut) are in test_deploy_faults.py.
"""

import json
import os
import re
import subprocess
import sys

import pytest

from fedcore.deploy.network import Namespaces
from fedcore.deploy.processes import processes_with_env, stop_processes

from .conftest import REPO

NO_DATA = "data-dir: data folder not found (set a folder that holds the four MNIST IDX files)"


def namespaces() -> set[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in listed.splitlines() if line.startswith("fedcore-")}


@pytest.fixture
def deploy(mnist_dir, tmp_path):
    """Run `python -m fedcore deploy`; afterwards no process or namespace of it may be left."""
    workdir = tmp_path / "work"
    out = tmp_path / "deployment.json"
    before = namespaces()

    def run(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "fedcore", "deploy", "--supernodes", "3",
             "--data-dir", str(mnist_dir), "--workdir", str(workdir), "--timeout", "150",
             "--run-config", "num-server-rounds=1 local-epochs=1", "--out", str(out), *extra],
            cwd=REPO, capture_output=True, text=True, timeout=200,
            env=os.environ | {"FLWR_TELEMETRY_ENABLED": "0"},
        )  # fmt: skip

    yield run, out, workdir
    leftover = processes_with_env("FLWR_HOME", str(workdir / "flwr-home"))
    stop_processes(leftover)  # the command must have stopped everything it started
    assert leftover == []
    assert namespaces() - before == set()


def test_secure_by_default_and_a_failing_client_is_named_without_its_paths(deploy, tmp_path):
    run, out, _ = deploy
    missing = tmp_path / "no-mnist-here"
    done = run("--node-data-dir", f"1={missing}")
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "TLS on" in output and "SuperNode authentication on" in output
    assert len(re.findall(r"registered as node \d+", output)) == 3
    if Namespaces.available():  # as root: each data holder in a namespace of its own
        assert "in network namespace fedcore-" in output and "dials 10.213.2.1:9091" in output
        assert "removed the network namespaces" in output
    federated = json.loads(out.read_text())["federated"]
    assert federated["failures"] == [f"client 2 failed in round 1: {NO_DATA}"]
    assert str(missing) not in json.dumps(federated["failures"])
    assert set(federated["history"][1]["client_loss"]) == {"1", "3"}
    assert federated["accuracy"] > federated["history"][0]["accuracy"] + 0.2  # two trained


def test_every_client_failing_stops_with_one_line_and_no_older_results(deploy, tmp_path):
    run, out, workdir = deploy
    # Results of an earlier run where this run writes its own: none of them may be reported.
    earlier = workdir / "results" / "run-1"
    earlier.mkdir(parents=True)
    for name in ("latest.json", "20200101-000000-run1.json"):
        (earlier / name).write_text('{"federated": {"accuracy": 0.99}}')
    missing = tmp_path / "gone"
    done = run("--network", "loopback", *[f"--node-data-dir={i}={missing}" for i in range(3)])
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    failed = [line for line in done.stderr.splitlines() if line.startswith("deploy: ")]
    assert len(failed) == 1, done.stderr
    assert failed[0].startswith("deploy: fedcore: run failed: round 1: every client failed (")
    for client in (1, 2, 3):  # in the order they failed
        assert f"client {client} failed in round 1: {NO_DATA}" in failed[0]
    assert str(missing) not in failed[0]
    assert not out.exists()
