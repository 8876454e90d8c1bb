"""Faults end in one clear message and leave nothing half written."""

import os
import signal
import subprocess
import sys
import uuid

import pytest
import torch
from fedcore.cache import ResultCache

from fedcore import storage
from fedcore.processes import processes_with_env, stop_processes
from fedcore.storage import atomic_write_text

from .conftest import REPO


def test_atomic_write_leaves_the_old_file_when_interrupted(tmp_path, monkeypatch):
    target = tmp_path / "results.json"
    target.write_text("old")

    def crash(*_):
        raise KeyboardInterrupt  # as if the user pressed Ctrl-C between write and rename

    monkeypatch.setattr(storage.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # temp file removed


def test_cache_ignores_a_damaged_entry(tmp_path):
    cache = ResultCache(tmp_path)
    cache.put("federated", "key", {"accuracy": 0.9})
    path = next((tmp_path / "federated").iterdir())
    path.write_bytes(path.read_bytes()[:20])  # truncated, e.g. by a crash of another tool
    fresh = ResultCache(tmp_path)
    assert fresh.get("federated", "key") is None
    value, cached = fresh.get_or_compute("federated", "key", lambda: {"accuracy": 0.8})
    assert (value, cached) == ({"accuracy": 0.8}, False)
    assert ResultCache(tmp_path).get("federated", "key") == {"accuracy": 0.8}


def test_cache_round_trips_model_weights(tmp_path):
    weights = {"w": torch.arange(6.0).reshape(2, 3)}
    ResultCache(tmp_path).put("isolated", "k", {"weights": weights, "losses": [0.5]})
    entry = ResultCache(tmp_path).get("isolated", "k")
    assert torch.equal(entry["weights"]["w"], weights["w"]) and entry["losses"] == [0.5]


def test_interrupted_run_writes_no_results(mnist_dir, tmp_path):
    """Ctrl-C while the isolated models train and Ray starts: exit 130, one line, no file."""
    out = tmp_path / "results.json"
    marker = uuid.uuid4().hex
    process = subprocess.Popen(
        [sys.executable, "-m", "fedcore", "run", "--phase", "all", "--rounds", "1",
         "--epochs", "20", "--data-dir", str(mnist_dir), "--out", str(out)],
        cwd=REPO, env=os.environ | {"FEDCORE_TEST_RUN": marker},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        # Round 0 (the untrained model's accuracy) is reported seconds before any
        # client can finish round 1: the run is surely mid-way.
        for line in process.stderr:
            if line.startswith("round 0/1"):
                break
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        stop_processes(processes_with_env("FEDCORE_TEST_RUN", marker))
    assert process.returncode == 130
    assert stderr.strip() == "fedcore: interrupted; no results were written"
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_ray_that_cannot_start_is_one_line(mnist_dir):
    env = os.environ | {"RAY_TMPDIR": "/proc/no-such-dir"}  # Ray cannot create its session
    done = subprocess.run(
        [sys.executable, "-m", "fedcore", "run", "--phase", "federated", "--data-dir",
         str(mnist_dir), "--epochs", "1", "--rounds", "1"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("fedcore: federated run failed: Flower's simulation engine (Ray) failed")
    assert "/proc/no-such-dir" in last
    assert "Traceback" not in done.stderr
