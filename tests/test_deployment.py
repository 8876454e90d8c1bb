"""The Flower app unchanged on Flower's deployment engine: SuperLink + SuperNodes on loopback."""

import json
import subprocess
import sys

from .conftest import REPO
from .processes import processes_with_env, stop_processes


def test_local_deployment_runs_the_experiment_and_cleans_up(mnist_dir, tmp_path, federated_small):
    home = tmp_path / "flwr-home"
    out = tmp_path / "deployment.json"
    try:
        done = subprocess.run(
            [sys.executable, "scripts/local_deployment.py", "--supernodes", "3",
             "--data-dir", str(mnist_dir), "--flwr-home", str(home), "--timeout", "420",
             "--run-config", "num-server-rounds=1 local-epochs=1", "--out", str(out)],
            cwd=REPO, capture_output=True, text=True, timeout=480,
        )  # fmt: skip
        output = done.stdout + done.stderr
        assert done.returncode == 0, output
        assert output.count("SuperNode ") >= 3 and "stopped" in output
        result = json.loads(out.read_text())
        federated = result["federated"]
        assert [h["round"] for h in federated["history"]] == [0, 1]
        assert set(federated["history"][1]["client_loss"]) == {"1", "2", "3"}
        # Same config as the in-process simulation: the same numbers.
        expected, _ = federated_small
        assert federated["accuracy"] == expected.accuracy
        assert federated["subset_accuracy"] == expected.subset_accuracy
    finally:
        # The script stops what it started; anything left is a failure (and is stopped).
        leftover = processes_with_env("FLWR_HOME", str(home))
        stop_processes(leftover)
        assert leftover == []
