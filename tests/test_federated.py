import json
import subprocess
import sys

from fedcore.experiment.results import ExperimentResult

from .conftest import REPO


def test_global_model_beats_every_isolated_model_on_missing_digits(federated_small, small_run):
    result, _ = federated_small
    isolated = small_run[0].isolated
    for client in isolated:
        own = ",".join(map(str, client.excluded))
        assert result.subset_accuracy[own] > 0.5 > client.missing_accuracy
        assert result.accuracy > client.accuracy
    assert [h.round for h in result.history] == [0, 1]
    assert result.history[0].accuracy < 0.2  # the untrained model guesses
    assert result.accuracy == result.history[-1].accuracy
    assert set(result.history[1].client_loss) == {"1", "2", "3"}
    assert all(len(losses) == 1 for losses in result.history[1].client_loss.values())
    assert sum(map(sum, result.confusion)) == 10_000
    assert result.failures == []


def test_progress_reports_rounds_and_client_updates(federated_small):
    _, events = federated_small
    kinds = [(e.kind, e.server_round) for e in events]
    # the engine scores round r while round r + 1 trains: the two orders interleave
    assert [r for kind, r in kinds if kind == "round-done"] == [0, 1]
    assert [r for kind, r in kinds if kind == "round-start"] == [1]
    assert kinds.index(("round-start", 1)) < kinds.index(("client-done", 1))
    assert kinds[-1] == ("round-done", 1)
    clients = sorted(e.client for e in events if e.kind == "client-done")
    assert clients == [1, 2, 3]
    assert len(events[-1].history) == 2  # charts can fill in as rounds finish


def test_cli_all_phases_and_same_numbers_as_in_process(federated_small, mnist_dir, tmp_path):
    result, _ = federated_small
    out = tmp_path / "all.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "fedcore",
            "run",
            "--phase",
            "all",
            "--data-dir",
            str(mnist_dir),
            "--epochs",
            "1",
            "--rounds",
            "1",
            "--no-cache",
            "--out",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert "federated (global)" in done.stdout and "global accuracy per round" in done.stdout
    data = json.loads(out.read_text())
    assert set(data) == {
        "config", "isolated", "federated", "centralized", "cross_accuracy", "label_counts",
        "timings", "diverged",
    }  # fmt: skip
    assert data["diverged"] == []
    assert {"isolated", "federated", "centralized-wait", "load", "total"} <= set(data["timings"])
    assert (
        "centralized (pooled)" in done.stdout and "rounds to 97%: not reached in 1" in done.stdout
    )
    federated = data["federated"]
    assert [h["round"] for h in federated["history"]] == [0, 1]
    assert set(federated["history"][1]) >= {"round", "accuracy", "loss", "subset_accuracy"}
    loaded = ExperimentResult.load(out)
    assert loaded.federated == result  # same config, another process: the same numbers
