"""The Flower app unchanged on Flower's deployment engine: SuperLink + SuperNodes on loopback."""

import json
import subprocess
import sys

import pytest

from fedcore.processes import processes_with_env, stop_processes

from .conftest import REPO


@pytest.fixture
def deploy(mnist_dir, tmp_path):
    """Run scripts/local_deployment.py; afterwards no process of it may be left."""
    home = tmp_path / "flwr-home"
    out = tmp_path / "deployment.json"

    def run(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "scripts/local_deployment.py", "--supernodes", "3",
             "--data-dir", str(mnist_dir), "--flwr-home", str(home), "--timeout", "420",
             "--run-config", "num-server-rounds=1 local-epochs=1", "--out", str(out), *extra],
            cwd=REPO, capture_output=True, text=True, timeout=480,
        )  # fmt: skip

    yield run, out
    leftover = processes_with_env("FLWR_HOME", str(home))
    stop_processes(leftover)  # the script must have stopped everything it started
    assert leftover == []


def test_local_deployment_gives_the_simulation_numbers(deploy, federated_small):
    run, out = deploy
    done = run()
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert output.count("SuperNode ") >= 3 and "stopped" in output
    federated = json.loads(out.read_text())["federated"]
    assert [h["round"] for h in federated["history"]] == [0, 1]
    assert set(federated["history"][1]["client_loss"]) == {"1", "2", "3"}
    expected, _ = federated_small  # the same config, in-process
    assert federated["accuracy"] == expected.accuracy
    assert federated["subset_accuracy"] == expected.subset_accuracy


def test_a_failing_client_is_named_and_the_others_go_on(deploy, tmp_path):
    run, out = deploy
    missing = tmp_path / "no-mnist-here"
    done = run("--node-data-dir", f"1={missing}")
    assert done.returncode == 0, done.stdout + done.stderr
    federated = json.loads(out.read_text())["federated"]
    assert federated["failures"] == [
        f"client 2 failed in round 1: {missing}: data folder not found "
        "(set a folder that holds the four MNIST IDX files)"
    ]
    assert set(federated["history"][1]["client_loss"]) == {"1", "3"}
    assert (
        federated["accuracy"] > federated["history"][0]["accuracy"] + 0.2
    )  # the two others trained


def test_every_client_failing_stops_the_run_cleanly(deploy, tmp_path):
    run, out = deploy
    missing = tmp_path / "gone"
    done = run(*[f"--node-data-dir={i}={missing}" for i in range(3)])
    output = done.stdout + done.stderr
    assert done.returncode == 1
    assert (
        "fedcore: run failed: round 1: every client failed (client 1 failed in round 1: " in output
    )
    assert not out.exists()
