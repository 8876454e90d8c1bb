"""Sweeps: the grid, its table, resuming after Ctrl-C without recomputing a cell, one
sweep per folder, and kept cells checked against their settings."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from fedcore.deploy.processes import processes_with_env, stop_processes
from fedcore.engine.sweep import Cell, SweepFolderError, claim_folder, grid, kept_result, run_sweep
from fedcore.experiment.config import ExperimentConfig
from fedcore.experiment.from_text import parse_vary
from fedcore.experiment.results import ExperimentResult
from fedcore.experiment.specs import ConfigError

from .conftest import REPO, default_sigint


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
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint,
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


def isolated_cells(mnist_dir, seeds="1,2,3"):
    base = ExperimentConfig(data_dir=str(mnist_dir), local_epochs=1)
    return grid(base, [parse_vary(f"seed={seeds}")], "isolated")


def test_a_folder_holds_one_sweep_and_another_is_refused_before_it_runs(mnist_dir, tmp_path):
    out = tmp_path / "sweep"
    mine = isolated_cells(mnist_dir)
    claim_folder(out, mine)
    table = (out / "sweep.json").read_text()
    assert json.loads(table)["finished"] == 0 and (out / "sweep.csv").exists()
    claim_folder(out, mine)  # the same sweep again: resumed
    other = grid(ExperimentConfig(local_epochs=1), [parse_vary("num-server-rounds=1,6")])
    with pytest.raises(SweepFolderError) as refused:
        claim_folder(out, other)
    assert str(refused.value) == (
        f"{out} holds the table of another sweep (3 cells of phase isolated, the first seed=1); "
        "give another --out, or move sweep.json and sweep.csv away"
    )
    assert (out / "sweep.json").read_text() == table  # untouched
    (out / "sweep.json").write_text("[1, 2")
    with pytest.raises(SweepFolderError, match="sweep.json is not a sweep table fedcore can read"):
        claim_folder(out, mine)
    (out / "sweep.json").unlink()
    with pytest.raises(SweepFolderError, match=r"sweep.csv is not this sweep's table \(no sweep"):
        claim_folder(out, mine)  # a CSV of someone else's, maybe


def test_the_cli_refuses_a_second_sweep_into_a_folder_in_one_line(mnist_dir, tmp_path):
    out = tmp_path / "sweep"
    claim_folder(out, isolated_cells(mnist_dir))
    done = subprocess.run(
        sweep_command(out, mnist_dir), cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"fedcore: sweep: {out} holds the table of another sweep (3 cells of phase isolated, "
        "the first seed=1); give another --out, or move sweep.json and sweep.csv away"
    )
    blocker = tmp_path / "file"
    blocker.write_text("")
    done = subprocess.run(
        sweep_command(blocker / "sweep", mnist_dir), cwd=REPO, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"fedcore: --out {blocker / 'sweep'}: cannot be written (Not a directory: {blocker}); "
        "nothing was run"
    )


def test_kept_cells_are_checked_against_their_settings(engine, mnist_dir, tmp_path):
    out = tmp_path / "sweep"
    cells = isolated_cells(mnist_dir)
    notes = []

    def run(config, phase, on_event):
        return engine.submit(config, phase).result()

    def sweep():
        states = []
        claim_folder(out, cells)
        rows = list(
            run_sweep(cells, out, run, lambda *cell: states.append(cell[2]), on_note=notes.append)
        )
        return [state for state in states if state != "running"], rows

    assert sweep()[0] == ["done", "done", "done"] and notes == []
    paths = [out / "cells" / cell.file_name for cell in cells]
    paths[1].write_bytes(paths[0].read_bytes())  # seed 1's result under seed 2's name
    paths[2].write_text("{not json")
    states, rows = sweep()
    assert states == ["kept", "done", "done"]
    assert notes[0] == (
        f"{paths[1]} holds another computation (seed 1, not 2); computing cell seed=2 again"
    )
    assert notes[1].startswith(f"{paths[2]}") and notes[1].endswith("; computing cell seed=3 again")
    assert len(notes) == 2 and [r["seed"] for r in rows] == [1, 2, 3]
    assert ExperimentResult.load(paths[1]).config.seed == 2  # computed again, in its place
    story = Cell(cells[0].values, cells[0].config, "story")  # the same settings, more phases
    assert kept_result(paths[0], story, notes.append) is None
    assert notes[2] == (
        f"{paths[0]} holds another computation (no federated); computing cell seed=1 again"
    )


def test_of_two_sweeps_claiming_a_folder_at_once_one_is_refused(mnist_dir, tmp_path, monkeypatch):
    out = tmp_path / "sweep"
    real_open = os.open

    def another_sweep_first(path, flags, *args):  # it claims between our check and our create
        if str(path).endswith("sweep.json") and flags & os.O_EXCL:
            Path(path).write_text("")
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", another_sweep_first)
    with pytest.raises(SweepFolderError, match="was claimed by another sweep just now"):
        claim_folder(out, isolated_cells(mnist_dir))
    assert (out / "sweep.json").read_text() == ""  # the other's claim, not overwritten
