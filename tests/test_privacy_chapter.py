"""The privacy chapter's settings, results and command: the defenses by name, the
curious server's results checked on load, `python -m fedcore privacy` end to end."""

import json
import subprocess
import sys

import pytest
import torch

from fedcore.experiment.config import ExperimentConfig
from fedcore.experiment.results import ExperimentResult, ResultsError
from fedcore.experiment.specs import ConfigError, defense_name, parse_defense
from fedcore.learning.local import round_sample
from fedcore.privacy.summary import named_exactly

from .conftest import REPO


def privacy_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fedcore", "privacy", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.parametrize(
    ("text", "privacy", "named"),
    [
        ("none", "off", "none"),
        ("secagg", "secagg", "secagg"),
        ("local-dp:epsilon=5", "local:epsilon=5,clip=1,delta=1e-05",
         "local-dp:epsilon=5,clip=1,delta=1e-05"),
        ("central-dp:noise=2,clip=3", "server:noise=2,clip=3,delta=1e-05",
         "central-dp:noise=2,clip=3,delta=1e-05"),
    ],
)  # fmt: skip
def test_a_defense_is_the_privacy_setting_under_the_chapters_name(text, privacy, named):
    spec = parse_defense(text)
    assert str(spec) == privacy
    assert defense_name(spec) == named


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("nope", "unknown defense 'nope'"),
        ("central-dp:foo=1", "central-dp takes noise=..., clip=..., delta=..."),
        ("local-dp:epsilon=-1", "epsilon must be > 0, got -1"),
    ],
)
def test_a_mistyped_defense_says_what_is_wrong(text, says):
    with pytest.raises(ConfigError, match=says.replace(".", r"\.")):
        parse_defense(text)


def test_a_mistyped_defense_is_one_line_on_the_command_line():
    done = privacy_cli("--defense", "secagg:shares=x")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fedcore: invalid setting: defense "), lines


def test_defense_and_privacy_together_are_refused():
    done = privacy_cli("--defense", "secagg", "--privacy", "server")
    assert done.returncode == 2
    assert "give one" in done.stderr and "Traceback" not in done.stderr


def test_secagg_needs_fedavg_and_no_attack():
    with pytest.raises(ConfigError, match="SecAgg"):
        ExperimentConfig(privacy="secagg", strategy="krum")
    with pytest.raises(ConfigError, match="SecAgg"):
        ExperimentConfig(privacy="secagg", attack="label-flip", attackers="1")
    assert ExperimentConfig(privacy="local", strategy="krum").privacy_kind == "local"


def test_the_leakage_setting_takes_its_choices_only():
    with pytest.raises(ConfigError, match="leakage must be one of off, analytic, optimise"):
        ExperimentConfig(leakage="everything")


def test_local_steps_draw_that_many_batches_afresh_each_round():
    config = ExperimentConfig(local_steps=3, batch_size=4)
    first, again = round_sample(100, config, 1, 1), round_sample(100, config, 1, 1)
    assert len(first) == 12 and torch.equal(first, again)  # seeded
    assert not torch.equal(first, round_sample(100, config, 1, 2))  # a new draw each round
    assert len(round_sample(5, config, 1, 1)) == 12  # a small partition is drawn through again
    assert round_sample(100, ExperimentConfig(), 1, 1) == slice(None)  # 0: all its images


def leakage_entry(**changes):
    entry = {
        "client": 1, "round": 1, "true_missing": [1, 3, 7], "inferred_missing": [1, 3, 7],
        "label_counts": [5] * 10, "label_counts_inferred": [5] * 10, "psnr_db": 50.0,
        "ssim": 0.99, "method": "analytic", "reconstruction": [0] * 784, "matched": [0] * 784,
    }  # fmt: skip
    return entry | changes


def results_with_leakage(small_config, entries):
    """A real small run's results JSON, with the leakage setting and `entries`."""
    from fedcore.experiment.results import FederatedResult, RoundResult

    history = [
        RoundResult(round=r, accuracy=0.5, loss=1.0, subset_accuracy={"1,3,7": 0.5})
        for r in range(2)
    ]
    federated = FederatedResult(
        history=history, accuracy=0.5, loss=1.0, subset_accuracy={"1,3,7": 0.5},
        confusion=[[0] * 10 for _ in range(10)],
    )  # fmt: skip
    config = small_config.replace(
        leakage="analytic", num_clients=2, excluded_digits=((1, 3, 7),) * 2
    )
    data = ExperimentResult(config=config, federated=federated).to_dict()
    data["federated"]["leakage"] = entries
    return json.dumps(data).encode()


@pytest.mark.parametrize(
    ("entries", "problem"),
    [
        ([leakage_entry()], "federated.leakage: 1 values for 2 clients"),
        ([leakage_entry(), leakage_entry(client=3)],
         "federated.leakage[1].client: 3, not client 2"),
        ([leakage_entry(), leakage_entry(client=2, psnr_db=500.0)],
         "federated.leakage[1].psnr_db: 500.0 is not a PSNR in [0, 100] dB"),
        ([leakage_entry(), leakage_entry(client=2, reconstruction=[0] * 10)],
         "federated.leakage[1].reconstruction: 10 pixels, not a 28x28 image (784)"),
        ([leakage_entry(), leakage_entry(client=2, matched=[300] * 784)],
         "federated.leakage[1].matched[0]: 300 is not a pixel value 0-255"),
        ([leakage_entry(), leakage_entry(client=2, round=0)],
         "federated.leakage[1].inferred_missing: given only for an update attacked"),
        ([leakage_entry(), leakage_entry(client=2, psnr_db=None)],
         "federated.leakage[1].reconstruction: given only with its PSNR, and its match"),
        ([leakage_entry(), leakage_entry(client=2, images_recovered=51)],
         "federated.leakage[1].images_recovered: more than the images it trained on"),
        ([leakage_entry(), leakage_entry(client=2, inferred_missing="<script>")],
         "federated.leakage[1].inferred_missing: not a list"),
    ],
)  # fmt: skip
def test_leakage_in_a_results_file_is_checked_on_load(small_config, entries, problem):
    with pytest.raises(ResultsError) as raised:
        ExperimentResult.read("r.json", results_with_leakage(small_config, entries))
    assert str(raised.value) == f"r.json: {problem}"


def test_leakage_in_a_results_file_round_trips(small_config):
    data = results_with_leakage(small_config, [leakage_entry(), leakage_entry(client=2)])
    result = ExperimentResult.read("r.json", data)
    assert result.federated.leakage[1].client == 2
    assert result.federated.leakage[0].inferred_missing == [1, 3, 7]


# ------------------------------------------------ the curious server, end to end


@pytest.fixture(scope="module")
def attacked(engine, small_config):
    """The story's split, 1 round of 1 epoch, the curious server's analytic attacks,
    under each defense: what it learned (computed once for the tests below)."""

    def run(**changes):
        config = small_config.replace(leakage="analytic", **changes)
        return engine.submit(config, "federated", use_cache=False).result()

    return run


def test_the_curious_server_names_each_hospitals_missing_digits(attacked):
    federated = attacked().federated
    assert [c.true_missing for c in federated.leakage] == [[1, 3, 7], [2, 5, 8], [4, 6, 9]]
    for client in federated.leakage:
        assert client.round == 1
        assert client.inferred_missing == client.true_missing, client
        assert sum(client.label_counts_inferred) == sum(client.label_counts)


def test_one_step_of_one_image_gives_the_image_away(attacked):
    federated = attacked(local_steps=1, batch_size=1).federated
    for client in federated.leakage:
        assert client.psnr_db > 40 and client.ssim > 0.99, client
        assert client.method == "analytic" and sum(client.label_counts) == 1
        assert named_exactly(client)  # the nine digits its one image is not
        assert client.images_recovered == 1


def test_secagg_shows_the_server_no_update_and_keeps_the_accuracy(attacked):
    plain, secure = attacked().federated, attacked(privacy="secagg").federated
    assert abs(secure.accuracy - plain.accuracy) < 0.002  # the masked sum, quantised
    assert all(c.inferred_missing is None and c.psnr_db is None for c in secure.leakage)
    assert all(c.round == 0 for c in secure.leakage)
    assert not any(h.update_norm or h.update_cosine for h in secure.history)


def test_local_dp_lowers_what_an_update_gives_away(attacked):
    exposed = attacked(local_steps=1, batch_size=1).federated
    noised = attacked(local_steps=1, batch_size=1, privacy="local:epsilon=1").federated
    assert max(c.psnr_db for c in noised.leakage) < min(c.psnr_db for c in exposed.leakage) - 20


def test_the_privacy_command_writes_its_json(mnist_dir, tmp_path):
    out = tmp_path / "privacy.json"
    done = privacy_cli("--rounds", "1", "--epochs", "1", "--defense", "local-dp:epsilon=2",
                       "--data-dir", str(mnist_dir), "--no-cache", "--out", str(out))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "what the server learned (leakage analytic" in done.stdout
    data = json.loads(out.read_text())
    assert data["defense"] == "local-dp:epsilon=2,clip=1,delta=1e-05"
    assert data["epsilon"] == 2 and 0 <= data["accuracy"] <= 1
    assert [c["client"] for c in data["clients"]] == [1, 2, 3]
    for client in data["clients"]:
        assert set(client) >= {"client", "true_missing", "inferred_missing",
                               "label_counts_inferred", "psnr_db", "ssim"}  # fmt: skip


def test_a_run_that_did_not_learn_is_told_what_its_settings_make_likely():
    from fedcore.report.labels import diverged_hint

    assert "epsilon" in diverged_hint(ExperimentConfig(privacy="local"))
    assert "noise" in diverged_hint(ExperimentConfig(privacy="server"))
    assert "sign-flip" in diverged_hint(ExperimentConfig(attack="sign-flip", attackers="1"))
    assert "1 image(s) a round" in diverged_hint(ExperimentConfig(local_steps=1, batch_size=1))
    assert "--lr" in diverged_hint(ExperimentConfig())


def test_the_report_says_what_the_server_learned(attacked):
    from fedcore.report.figures import run_charts
    from fedcore.report.html import report_html

    result = attacked()
    assert {"server-label-counts", "server-reconstructions"} <= set(run_charts(result))
    page = report_html([("story", result)])
    assert "<h3>What the server learned</h3>" in page
    assert "client 2: holds no 2,5,8; the server infers no 2,5,8" in page
