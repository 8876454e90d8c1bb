"""Faults end in one clear message and leave nothing half written."""

import os
import signal
import subprocess
import sys
import uuid

import pytest
import torch

from fedcore import storage
from fedcore.deploy.processes import processes_with_env, stop_processes
from fedcore.engine import cache as engine_cache
from fedcore.engine.cache import ResultCache
from fedcore.storage import atomic_write_text

from .conftest import REPO, default_sigint


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


def test_result_files_get_ordinary_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "results.json", "{}")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600


def test_cache_ignores_a_damaged_entry(tmp_path):
    cache = ResultCache(tmp_path)
    cache.put("federated", "key", {"accuracy": 0.9})
    path = next((tmp_path / "federated").iterdir())
    path.write_bytes(path.read_bytes()[:20])  # truncated, e.g. by a crash of another tool
    fresh = ResultCache(tmp_path)
    assert fresh.get("federated", "key") is None
    fresh.put("federated", "key", {"accuracy": 0.8})
    assert ResultCache(tmp_path).get("federated", "key") == {"accuracy": 0.8}


def test_a_cached_result_does_not_outlive_the_code(tmp_path, monkeypatch):
    ResultCache(tmp_path).put("federated", "key", {"accuracy": 0.9})
    assert ResultCache(tmp_path).get("federated", "key") == {"accuracy": 0.9}
    monkeypatch.setattr(engine_cache, "code_fingerprint", lambda: "other code or libraries")
    assert ResultCache(tmp_path).get("federated", "key") is None


def test_the_fingerprint_covers_the_code_and_the_libraries(tmp_path, monkeypatch):
    engine_cache.code_fingerprint.cache_clear()
    original = engine_cache.code_fingerprint()
    copy = tmp_path / "fedcore"
    copy.mkdir()
    for path in engine_cache.FEDCORE_ROOT.rglob("*.py"):
        target = copy / path.relative_to(engine_cache.FEDCORE_ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    monkeypatch.setattr(engine_cache, "FEDCORE_ROOT", copy)
    engine_cache.code_fingerprint.cache_clear()
    assert engine_cache.code_fingerprint() == original
    changed_file = copy / "learning" / "train.py"
    changed_file.write_text(changed_file.read_text() + "\n# changed\n")
    engine_cache.code_fingerprint.cache_clear()
    changed = engine_cache.code_fingerprint()
    monkeypatch.setattr(engine_cache, "version", lambda name: "0.0" if name == "torch" else "1")
    engine_cache.code_fingerprint.cache_clear()
    assert len({original, changed, engine_cache.code_fingerprint()}) == 3
    engine_cache.code_fingerprint.cache_clear()


def test_cache_round_trips_model_weights(tmp_path):
    weights = {"w": torch.arange(6.0).reshape(2, 3)}
    ResultCache(tmp_path).put("isolated", "k", {"weights": weights, "losses": [0.5]})
    entry = ResultCache(tmp_path).get("isolated", "k")
    assert torch.equal(entry["weights"]["w"], weights["w"]) and entry["losses"] == [0.5]


def test_interrupted_run_writes_no_results_and_leaves_no_process(mnist_dir, tmp_path):
    """Ctrl-C mid-run: exit 130, one line, no file, and every process it started gone
    by the time it exits."""
    out = tmp_path / "results.json"
    marker = uuid.uuid4().hex
    process = subprocess.Popen(
        [sys.executable, "-m", "fedcore", "run", "--phase", "all", "--rounds", "2",
         "--epochs", "5", "--no-cache", "--data-dir", str(mnist_dir), "--out", str(out)],
        cwd=REPO, env=os.environ | {"FEDCORE_TEST_RUN": marker},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint,
    )  # fmt: skip
    try:
        # Round 0 (the untrained model's accuracy) is reported before any
        # client can finish round 1: the run is surely mid-way.
        for line in process.stderr:
            if line.startswith("round 0/2"):
                break
        started = [p.pid for p in processes_with_env("FEDCORE_TEST_RUN", marker)]
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
        left = processes_with_env("FEDCORE_TEST_RUN", marker)  # the CLI waited for them
    finally:
        stop_processes(processes_with_env("FEDCORE_TEST_RUN", marker))
    assert process.returncode == 130
    assert stderr.strip() == "fedcore: interrupted; no results were written"
    assert not out.exists() and list(tmp_path.iterdir()) == []
    assert len(started) >= 4  # the engine and its workers were running
    assert left == [], f"still running after the CLI exited: {left}"


def test_the_cli_returns_only_after_its_engine_and_workers_are_gone(mnist_dir, tmp_path):
    marker = uuid.uuid4().hex
    try:
        done = subprocess.run(
            [sys.executable, "-m", "fedcore", "run", "--phase", "isolated", "--rounds", "1",
             "--epochs", "1", "--no-cache", "--data-dir", str(mnist_dir)],
            cwd=REPO, env=os.environ | {"FEDCORE_TEST_RUN": marker},
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        left = processes_with_env("FEDCORE_TEST_RUN", marker)
    finally:
        stop_processes(processes_with_env("FEDCORE_TEST_RUN", marker))
    assert done.returncode == 0, done.stderr
    assert left == [], f"still running after the CLI returned: {left}"
