import errno
import json
import os
import subprocess
import sys

import pytest

from fedcore.cli.main import main
from fedcore.experiment.results import ExperimentResult

from .conftest import REPO


def run_cli(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fedcore", "run", *args],
        cwd=REPO,
        env=os.environ | (env_extra or {}),
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_isolated_phase_end_to_end(mnist_dir, tmp_path):
    out = tmp_path / "results.json"
    done = run_cli(
        "--phase", "isolated", "--data-dir", str(mnist_dir), "--epochs", "1", "--out", str(out)
    )
    assert done.returncode == 0, done.stderr
    assert "isolated 1 (-1,3,7)" in done.stdout and "own missing" in done.stdout
    data = json.loads(out.read_text())
    assert set(data) == {
        "config", "isolated", "cross_accuracy", "label_counts", "timings", "diverged"
    }  # fmt: skip
    assert data["diverged"] == []  # one epoch: every isolated model learned
    assert data["config"]["local_epochs"] == 1
    first = data["isolated"][0]
    assert set(first) == {
        "client",
        "excluded",
        "train_size",
        "loss",
        "accuracy",
        "missing_accuracy",
        "subset_accuracy",
        "confusion",
        "label_counts",
    }
    assert first["client"] == 1 and first["excluded"] == [1, 3, 7]
    assert 0 <= first["accuracy"] <= 1 and first["missing_accuracy"] <= 0.01
    assert set(first["subset_accuracy"]) == {"1,3,7", "2,5,8", "4,6,9"}
    counts = first["label_counts"]
    assert len(counts) == 10 and sum(counts) == first["train_size"]
    assert all(counts[d] == 0 for d in (1, 3, 7)) and all(counts[d] > 1000 for d in (0, 2, 9))


def test_custom_clients_and_exclusions(mnist_dir, tmp_path):
    out = tmp_path / "results.json"
    done = run_cli(
        "--phase",
        "isolated",
        "--data-dir",
        str(mnist_dir),
        "--epochs",
        "1",
        "--clients",
        "2",
        "--exclude",
        "0,1;",
        "--seed",
        "3",
        "--out",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    data = json.loads(out.read_text())
    assert [c["excluded"] for c in data["isolated"]] == [[0, 1], []]
    assert data["isolated"][1]["missing_accuracy"] is None
    assert set(data["isolated"][0]["subset_accuracy"]) == {"0,1"}


def test_bad_setting_is_one_line_and_exit_2(mnist_dir):
    done = run_cli("--phase", "isolated", "--data-dir", str(mnist_dir), "--exclude", "1,3,7;2,5,8")
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "fedcore: invalid setting: excluded digits are given for 2 clients, but there are 3 clients"
    )


def test_missing_data_folder_is_one_line_and_exit_1(tmp_path):
    done = run_cli("--phase", "isolated", "--data-dir", str(tmp_path / "none"), "--epochs", "1")
    assert done.returncode == 1
    assert done.stderr.strip().startswith("fedcore: data error: ")
    assert "data folder not found" in done.stderr and "Traceback" not in done.stderr


def test_mistyped_flag_is_rejected():
    done = run_cli("--epoch", "1")
    assert done.returncode == 2
    assert "unrecognized arguments: --epoch" in done.stderr


@pytest.mark.parametrize("where", ["under a file", "a folder"])
def test_an_out_that_cannot_be_written_fails_before_the_run(mnist_dir, tmp_path, where):
    blocker = tmp_path / "file"
    blocker.write_text("")
    out, why = {
        "under a file": (blocker / "results.json", f"Not a directory: {blocker}"),
        "a folder": (tmp_path, f"Is a directory: {tmp_path}"),
    }[where]
    done = run_cli("--phase", "isolated", "--data-dir", str(mnist_dir), "--out", str(out))
    assert done.returncode == 2
    assert (
        done.stderr.strip() == f"fedcore: --out {out}: cannot be written ({why}); nothing was run"
    )
    assert done.stdout == ""  # no run, no table


def test_a_results_file_that_cannot_be_saved_after_the_run_is_one_line(
    mnist_dir, tmp_path, monkeypatch, capsys
):
    """The disk may fill up during the run, after --out was found writable."""
    out = tmp_path / "results.json"

    def full(self, path):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(ExperimentResult, "save", full)
    code = main(["run", "--phase", "isolated", "--epochs", "1", "--data-dir", str(mnist_dir),
                 "--out", str(out)])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 1
    assert "isolated 1 (-1,3,7)" in captured.out  # the numbers were shown
    assert captured.err.strip().splitlines()[-1] == (
        f"fedcore: results not written (No space left on device: {out})"
    )
    assert "Traceback" not in captured.err


def test_a_report_that_cannot_be_written_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    done = subprocess.run(
        [sys.executable, "-m", "fedcore", "report", str(REPO / "tests/data/golden-reference.json"),
         "-o", str(blocker / "report.html")],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip() == f"fedcore: report: cannot write (Not a directory: {blocker})"


def test_an_isolated_baseline_beyond_its_limit_is_refused_before_anything_trains(mnist_dir):
    done = run_cli("--phase", "story", "--clients", "200", "--split", "iid",
                   "--data-dir", str(mnist_dir), "--no-cache")  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip().splitlines() == [
        "fedcore: invalid setting: the isolated baseline (phases isolated, story and all) "
        "trains, scores and keeps one model per client: up to 100 clients, not 200; "
        "run --phase federated or --phase centralized"
    ]
