"""Sweeps: the grid, its table, and resuming after Ctrl-C without recomputing a cell."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from fedcore.deploy.processes import processes_with_env, stop_processes
from fedcore.engine.sweep import grid
from fedcore.experiment.config import ExperimentConfig
from fedcore.experiment.from_text import parse_vary
from fedcore.experiment.specs import ConfigError

from .conftest import REPO


def test_parse_vary_takes_flags_keys_and_field_names():
    setting, values = parse_vary("local-epochs=1,5")
    assert (setting.name, values) == ("local_epochs", [1, 5])
    assert parse_vary("--epochs=2")[0].name == "local_epochs"
    assert parse_vary("learning_rate=0.1,0.01")[1] == [0.1, 0.01]
    assert parse_vary("split=exclude,dirichlet:0.1,shards")[1] == [
        "exclude",
        "dirichlet:0.1",
        "shards",
    ]
    assert parse_vary("exclude=1,3,7;2,5,8;4,6,9|1;2;3")[1] == ["1,3,7;2,5,8;4,6,9", "1;2;3"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("epochs", "write NAME=VALUE"),
        ("colour=red", "no such setting"),
        ("local-epochs=1,x", "local-epochs takes int values"),
        ("local-epochs=1,1", "given twice"),
        ("data-dir=/a,/b", "one data folder"),
    ],
)
def test_bad_vary_says_what_is_wrong(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_vary(text)


def test_grid_is_the_product_and_is_checked_before_anything_runs():
    base = ExperimentConfig(local_epochs=1)
    cells = grid(base, [parse_vary("split=exclude,iid,dirichlet:0.1"), parse_vary("seed=1,2")])
    assert len(cells) == 6
    assert [c.config.split for c in cells[::2]] == ["exclude", "iid", "dirichlet:0.1"]
    assert cells[2].config.excluded_digits == ()  # iid: no exclusions
    assert cells[1].name == "split=exclude seed=2"
    assert len({c.file_name for c in cells}) == 6
    clients = grid(base, [parse_vary("num-clients=3,5")])
    assert len(clients[1].config.excluded_digits) == 5  # the reference exclusions, cycled
    with pytest.raises(ConfigError, match="cell min-train-clients=5: min_train_clients"):
        grid(base, [parse_vary("min-train-clients=1,5")])


def sweep_command(out, mnist_dir):
    return [
        sys.executable, "-m", "fedcore", "sweep", "--vary", "num-server-rounds=1,6",
        "--phase", "federated", "--epochs", "1", "--data-dir", str(mnist_dir), "--out", str(out),
    ]  # fmt: skip


def sweep_rows(out):
    try:
        return json.loads((out / "sweep.json").read_text())["rows"]
    except (OSError, ValueError):  # not written yet, or being replaced
        return []


def test_sweep_writes_its_table_and_resumes_after_an_interrupt(mnist_dir, tmp_path):
    out = tmp_path / "sweep"
    marker = uuid.uuid4().hex
    env = os.environ | {"FEDCORE_TEST_RUN": marker, "FEDCORE_CACHE_DIR": str(tmp_path / "cache")}
    first = subprocess.Popen(
        sweep_command(out, mnist_dir), cwd=REPO, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not sweep_rows(out) and time.monotonic() < deadline:  # cell 1 in the table
            time.sleep(0.05)
        (finished,) = list((out / "cells").glob("*.json"))  # cell 1; cell 2 is running
        stamp = finished.stat().st_mtime_ns
        first.send_signal(signal.SIGINT)
        _, stderr = first.communicate(timeout=60)
        assert first.returncode == 130, stderr
        assert "sweep interrupted after 1 of 2 cells" in stderr
        assert len(json.loads((out / "sweep.json").read_text())["rows"]) == 1
        time.sleep(1)  # a worker notices its engine is gone within half a second
        assert processes_with_env("FEDCORE_TEST_RUN", marker) == []

        again = subprocess.run(
            sweep_command(out, mnist_dir), cwd=REPO, env=env, capture_output=True, text=True,
            timeout=300,
        )  # fmt: skip
    finally:
        stop_processes(processes_with_env("FEDCORE_TEST_RUN", marker))
    assert again.returncode == 0, again.stderr
    assert "1/2  num-server-rounds=1: kept from an earlier run" in again.stderr
    assert finished.stat().st_mtime_ns == stamp  # not computed again
    rows = list(csv.DictReader((out / "sweep.csv").open()))
    assert [r["num-server-rounds"] for r in rows] == ["1", "6"]
    assert [r["rounds"] for r in rows] == ["1", "6"]
    assert set(rows[0]) >= {
        "federated_accuracy", "rounds_to_97pct", "subset_1,3,7", "worst_subset", "wall_seconds"
    }  # fmt: skip
    assert 0.8 < float(rows[0]["federated_accuracy"]) < float(rows[1]["federated_accuracy"])
    table = json.loads((out / "sweep.json").read_text())
    assert table["finished"] == table["cells"] == 2
    assert table["rows"][1]["federated_accuracy"] == pytest.approx(
        float(rows[1]["federated_accuracy"])
    )
