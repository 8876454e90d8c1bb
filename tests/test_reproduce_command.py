"""`python -m fedcore reproduce` on real MNIST with small settings: a 2-row preset of
McMahan et al.'s Table 1 with few rounds, written beside the paper's figures and
resumed without recomputing; and `stop_at_target`, which rounds-to-target rows use."""

from __future__ import annotations

import csv
import subprocess
import sys

from fedcore.experiment.results import ExperimentResult

from .conftest import REPO

ROWS = "2nn,iid,B=10,C=0.1;2nn,non-iid,B=inf,C=0.2"


def reproduce(out, mnist_dir, *extra):
    return subprocess.run(
        [sys.executable, "-m", "fedcore", "reproduce", "mcmahan2017-table1", "--rows", ROWS,
         "--lrs", "0.1", "--max-rounds", "2", "--data-dir", str(mnist_dir), "--out", str(out),
         *extra],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def test_a_two_row_table_is_written_beside_the_papers_figures_and_resumes(tmp_path, mnist_dir):
    out = tmp_path / "reproduced"
    done = reproduce(out, mnist_dir)
    assert done.returncode == 0, done.stderr
    assert "mcmahan2017-table1 written to" in done.stdout
    with (out / "mcmahan2017-table1.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert [(r["row"], r["paper"]) for r in rows] == [
        ("2nn,iid,E=1,B=10,C=0.1", "87.0"),
        ("2nn,non-iid,E=1,B=inf,C=0.2", "1528.0"),
    ]
    for r in rows:  # 97% is out of reach in 2 rounds: no figure, and the row says why
        assert (r["clients"], r["rounds"], r["learning_rate"], r["seeds"]) == (
            "100",
            "2",
            "0.1",
            "1",
        )
        assert (
            r["measured"] == "" and "97% not reached within 2 rounds in 1 of 1 seeds" in r["note"]
        )
        assert float(r["wall_seconds"]) > 0
    assert {r["split"] for r in rows} == {"iid", "shards:2"}
    markdown = (out / "mcmahan2017-table1.md").read_text()
    assert "| 2nn,iid,E=1,B=10,C=0.1 | 87 | — |" in markdown
    assert "Table 1, 2NN E=1, NON-IID, B=∞, C=0.2" in markdown
    assert "--rows '2nn,iid,B=10,C=0.1;2nn,non-iid,B=inf,C=0.2'" in markdown
    cells = sorted((out / "mcmahan2017-table1" / "cells").iterdir())
    assert len(cells) == 2
    written = [cell.stat().st_mtime_ns for cell in cells]

    again = reproduce(out, mnist_dir)  # every cell kept: nothing runs again
    assert again.returncode == 0, again.stderr
    assert "kept from an earlier run" in again.stderr
    assert [cell.stat().st_mtime_ns for cell in cells] == written

    other = reproduce(out, mnist_dir, "--seeds", "2")  # another sweep: refused, nothing lost
    assert other.returncode == 2
    assert "holds the table of another sweep" in other.stderr
    assert [cell.stat().st_mtime_ns for cell in cells] == written


def test_a_bad_table_or_row_is_one_line(tmp_path, mnist_dir):
    for args, message in [
        (["nope", "--out", str(tmp_path)], "fedcore: reproduce: unknown table 'nope'"),
        (["mcmahan2017-table1", "--rows", "3nn", "--out", str(tmp_path)], "no row word '3nn'"),
    ]:
        done = subprocess.run(
            [sys.executable, "-m", "fedcore", "reproduce", *args],
            cwd=REPO, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 2 and message in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_a_run_stops_after_the_round_that_reached_the_target(engine, small_config, tmp_path):
    config = small_config.replace(
        local_epochs=1, num_rounds=20, target_accuracy=50.0, stop_at_target="yes"
    )
    result = engine.submit(config, "federated").result()
    reached = result.federated.rounds_to_target
    assert reached is not None and reached < 20
    assert [entry.round for entry in result.federated.history] == list(range(reached + 1))
    assert result.federated.accuracy >= 0.5
    loaded = ExperimentResult.load(result.save(tmp_path / "r.json"))  # valid on load
    assert loaded.federated.rounds_to_target == reached
    # Without stop_at_target the same run goes on to its last round
    full = engine.submit(config.replace(stop_at_target="no", num_rounds=reached + 1), "federated")
    assert len(full.result().federated.history) == reached + 2
