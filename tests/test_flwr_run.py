"""`flwr run .` end to end, on a local SuperLink in a temporary FLWR_HOME."""

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fedcore.deploy.processes import processes_with_env, stop_processes

from .conftest import REPO

BIN = Path(sys.executable).parent


@contextlib.contextmanager
def local_flower_home(home: Path, mnist_dir: Path, supernodes: int | None = None, **env_extra):
    """The environment of a fresh Flower home at `home` (offline, this environment's
    `flwr`, `env_extra` added), its local simulation set to `supernodes` SuperNodes of
    one CPU each (None: left as it is); the local SuperLink that `flwr run` starts
    there, and every process of it, stopped by process id after."""
    env = os.environ | {
        "FLWR_HOME": str(home),
        "FEDCORE_DATA_DIR": str(mnist_dir),
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",  # use this environment, offline
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        **env_extra,
    }
    try:
        if supernodes is not None:
            configured = flwr(
                env, "federation", "simulation-config", "--num-supernodes", str(supernodes),
                "--client-resources-num-cpus", "1",
            )  # fmt: skip
            assert configured.returncode == 0, configured.stdout + configured.stderr
        yield env
    finally:
        stopped = stop_processes(processes_with_env("FLWR_HOME", str(home)))
        assert stopped, "expected a local SuperLink to stop"
        assert processes_with_env("FLWR_HOME", str(home)) == []


@pytest.fixture(scope="module")
def flwr_home(tmp_path_factory, mnist_dir):
    """A fresh Flower home with a 3-SuperNode local simulation; everything stopped after."""
    with local_flower_home(tmp_path_factory.mktemp("flwr-home"), mnist_dir, 3) as env:
        yield env


def flwr(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "flwr"), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )


def test_flwr_run_writes_results_and_matches_in_process(flwr_home, tmp_path, federated_small):
    results = tmp_path / "results"
    done = flwr(
        flwr_home,
        "run",
        ".",
        "--stream",
        "--run-config",
        f"local-epochs=1 num-server-rounds=1 results-dir='{results}'",
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "fedcore round 1/1" in output and "results written to" in output
    latest = json.loads((results / "latest.json").read_text())
    assert latest["config"]["local_epochs"] == 1 and latest["config"]["num_rounds"] == 1
    runs = [p for p in results.iterdir() if p.name != "latest.json"]
    assert len(runs) == 1 and json.loads(runs[0].read_text()) == latest
    # The same config through `flwr run` and in-process: the same numbers.
    expected, _ = federated_small
    assert latest["federated"]["accuracy"] == expected.accuracy
    assert latest["federated"]["confusion"] == expected.confusion


def test_flwr_run_takes_the_labs_settings(flwr_home, tmp_path, engine, small_config):
    """A split through flwr-datasets in every Ray worker, the 2NN, a backdoor attacker,
    and the same numbers."""
    results = tmp_path / "results"
    lab = "split='classes:2' model='2nn' exclude='' batch-size=128 attack='backdoor:target=0'"
    lab += " attackers='2,'"
    done = flwr(
        flwr_home, "run", ".", "--stream", "--run-config",
        f"local-epochs=1 num-server-rounds=1 {lab} results-dir='{results}'",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    latest = json.loads((results / "latest.json").read_text())
    config = small_config.replace(
        split="classes:2", model="2nn", excluded_digits=(), batch_size=128,
        attack="backdoor:target=0", attackers="2,",
    )  # fmt: skip
    assert latest["config"] == config.to_dict() | {"data_dir": latest["config"]["data_dir"]}
    expected = engine.submit(config, "federated", use_cache=False).result().federated
    assert latest["federated"]["accuracy"] == expected.accuracy
    assert latest["federated"]["subset_accuracy"] == expected.subset_accuracy
    assert latest["federated"]["attack_success"] == expected.attack_success is not None


def test_mistyped_key_is_rejected(flwr_home):
    done = flwr(flwr_home, "run", ".", "--run-config", "local-epoch=1")
    assert done.returncode != 0
    assert "Invalid run configuration" in done.stdout + done.stderr
    log = (Path(flwr_home["FLWR_HOME"]) / "local-superlink" / "superlink.log").read_text()
    assert "Key 'local-epoch' is not present" in log


def test_invalid_value_fails_the_run_with_one_clear_line(flwr_home, tmp_path):
    results = tmp_path / "results"
    done = flwr(
        flwr_home, "run", ".", "--stream", "--run-config", f"local-epochs=0 results-dir='{results}'"
    )
    output = done.stdout + done.stderr
    assert "fedcore: invalid setting: local_epochs must be between 1 and 20, got 0" in output
    assert not results.exists()
