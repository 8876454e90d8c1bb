"""Flower's strategies by name: each runs on real MNIST and aggregates as defined;
FedProx's proximal term; differential privacy with Flower's accountant; dropout;
what the rounds record (per-digit accuracy, drift, bytes)."""

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from fedcore.experiment.config import ExperimentConfig
from fedcore.experiment.specs import STRATEGIES, ConfigError
from fedcore.flower.behind import Behind
from fedcore.flower.strategies import RecordingStrategy, RunLog, flower_strategy
from fedcore.learning.evaluation import digit_accuracy
from fedcore.learning.models import build_model
from fedcore.learning.textbook import reference_train
from fedcore.learning.train import train


@pytest.fixture
def task_identity(monkeypatch):
    """What a ServerApp process has: Flower stamps it on every message it makes."""
    for name, value in (("_task_id", 1), ("_run_id", 1), ("_node_id", 0)):
        monkeypatch.setattr(TaskIdentity, name, value)


def reply(client: int, weights, examples: int = 100) -> Message:
    """A ClientApp's reply, as ours sends it, holding `weights`."""
    instruction = Message(
        RecordDict({"config": ConfigRecord({"server-round": 1})}),
        dst_node_id=client,
        message_type="train",
    )
    content = RecordDict(
        {
            "arrays": ArrayRecord({"w": Array(np.asarray(weights, dtype=np.float32))}),
            "metrics": MetricRecord({"num-examples": examples, "uniform-weight": 1}),
            "client": ConfigRecord({"client": client, "epoch-losses": [0.5]}),
        }
    )
    return Message(content, reply_to=instruction)


# Five clients; client 5 is far from the others (an outlier).
CLIENT_WEIGHTS = {1: [1.0, 1.0], 2: [2.0, 1.5], 3: [3.0, 2.0], 4: [4.0, 2.5], 5: [40.0, -30.0]}


def aggregate(strategy: str, examples=None, background=False) -> tuple[np.ndarray, RunLog]:
    config = ExperimentConfig(num_clients=5, split="iid", strategy=strategy)
    log, behind = RunLog(), Behind(background)
    recording = RecordingStrategy(flower_strategy(config), log, behind)
    recording._global[1] = ArrayRecord({"w": Array(np.zeros(2, dtype=np.float32))})
    examples = examples or {c: 100 for c in CLIENT_WEIGHTS}
    replies = [reply(c, w, examples[c]) for c, w in reversed(CLIENT_WEIGHTS.items())]
    arrays, _ = recording.aggregate_train(1, replies)
    behind.catch_up()
    behind.close()
    return arrays.to_numpy_ndarrays()[0], log


def test_updates_measured_while_the_next_round_trains_equal_those_measured_in_line(
    task_identity,
):
    """The engine measures the updates in a thread of their own (`Behind`): the same
    norms and cosines, in the same client order, once caught up."""
    in_line, background = aggregate("fedavg")[1], aggregate("fedavg", background=True)[1]
    norms = in_line.rounds[1].update_norm
    assert list(norms) == ["1", "2", "3", "4", "5"] and norms["5"] > 40
    assert background.rounds[1].update_norm == norms
    assert background.rounds[1].update_cosine == in_line.rounds[1].update_cosine


def test_fedavg_is_the_example_weighted_mean(task_identity):
    examples = {1: 100, 2: 100, 3: 100, 4: 100, 5: 600}
    merged, _ = aggregate("fedavg", examples)
    expected = sum(np.array(w) * examples[c] for c, w in CLIENT_WEIGHTS.items()) / 1000
    assert np.allclose(merged, expected)


def test_fedmedian_is_the_coordinate_wise_median(task_identity):
    merged, _ = aggregate("fedmedian")
    assert np.allclose(merged, np.median(np.array(list(CLIENT_WEIGHTS.values())), axis=0))
    assert np.allclose(merged, [3.0, 1.5])  # the outlier pulls nothing


def test_fedtrimmedavg_drops_the_extremes(task_identity):
    merged, _ = aggregate("fedtrimmedavg:beta=0.2")  # 1 of 5 cut at each end, per coordinate
    values = np.sort(np.array(list(CLIENT_WEIGHTS.values())), axis=0)
    assert np.allclose(merged, values[1:-1].mean(axis=0))
    assert np.allclose(merged, [3.0, 1.5])


def krum_scores() -> np.ndarray:
    """Krum's score of each client: the sum of its n - f - 2 = 2 smallest squared
    distances to the others (f = 1)."""
    points = np.array(list(CLIENT_WEIGHTS.values()))
    distances = ((points[:, None] - points[None]) ** 2).sum(axis=2)
    return np.array([np.sort(row[row > 0])[:2].sum() for row in distances])


def test_krum_picks_the_client_closest_to_the_others(task_identity):
    merged, log = aggregate("krum:f=1")
    points = np.array(list(CLIENT_WEIGHTS.values()))
    best = int(np.argmin(krum_scores()))
    assert np.allclose(merged, points[best])
    assert log.rounds[1].update_cosine[str(best + 1)] == pytest.approx(1.0)
    assert log.rounds[1].kept == [best + 1]  # whom it kept, as Flower's selection chose


def test_multikrum_averages_the_m_best_scored(task_identity):
    merged, log = aggregate("multikrum:f=1,m=3")
    points = np.array(list(CLIENT_WEIGHTS.values()))
    chosen = np.argsort(krum_scores())[:3]
    assert 4 not in chosen  # never the outlier
    assert np.allclose(merged, points[chosen].mean(axis=0))
    assert log.rounds[1].kept == sorted(int(c) + 1 for c in chosen)
    assert aggregate("fedmedian")[1].rounds[1].kept is None  # it keeps coordinates, not clients


def test_recording_drift_and_bytes(task_identity):
    _, log = aggregate("fedavg")
    entry = log.rounds[1]
    assert entry.update_norm["5"] == pytest.approx(50.0)  # |(40, -30)|
    assert entry.update_cosine["5"] > 0.9  # the outlier dominates the plain mean...
    assert entry.update_cosine["1"] < entry.update_cosine["5"]
    assert entry.messages_received == 5 and entry.bytes_received == 5 * 2 * 4  # 2 float32 each
    assert list(entry.client_loss) == ["1", "2", "3", "4", "5"]  # client order


# each rule with its default parameters, but those that would not work for 3 clients
# (beta 0.2 trims none of 3: a config error)
ON_THREE_CLIENTS = {"fedtrimmedavg": "fedtrimmedavg:beta=0.34"}


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_every_strategy_runs_a_round_on_mnist(engine, small_config, strategy):
    config = small_config.replace(strategy=ON_THREE_CLIENTS.get(strategy, strategy), batch_size=256)
    federated = engine.submit(config, "federated", use_cache=False).result().federated
    assert federated.failures == []
    assert federated.history[1].messages_sent == 3 == federated.history[1].messages_received
    records = 2 if strategy == "scaffold" else 1  # SCAFFOLD's control variate rides along
    assert federated.history[1].bytes_sent == records * 3 * 101_770 * 4  # the MLP, float32
    # one round of 1 epoch: every rule moves the model well above chance (the
    # adaptive ones, with Flower's default server learning rates, less far)
    assert federated.accuracy > federated.history[0].accuracy + 0.1, federated.accuracy


def test_fedprox_with_mu_zero_is_fedavg(engine, small_config):
    fedavg = engine.submit(small_config.replace(strategy="fedavg"), "federated", use_cache=False)
    prox0 = engine.submit(
        small_config.replace(strategy="fedprox:mu=0"), "federated", use_cache=False
    )
    prox1 = engine.submit(
        small_config.replace(strategy="fedprox:mu=1"), "federated", use_cache=False
    )
    assert prox0.result().federated.confusion == fedavg.result().federated.confusion
    assert prox0.result().federated.accuracy == fedavg.result().federated.accuracy
    assert prox1.result().federated.confusion != fedavg.result().federated.confusion


@pytest.mark.parametrize("kind", ["mlp", "2nn"])
def test_proximal_term_fast_path_equals_the_reference_loop(kind):
    generator = torch.Generator().manual_seed(0)
    x, y = (
        torch.randn(150, 784, generator=generator),
        torch.randint(0, 10, (150,), generator=generator),
    )
    settings = {"epochs": 2, "batch_size": 32, "learning_rate": 0.05, "momentum": 0.9, "seed": 4}
    fast, reference, plain = build_model(1, kind), build_model(1, kind), build_model(1, kind)
    start = [p.detach().clone() for p in fast.parameters()]
    fast_losses = train(fast, x, y, proximal_mu=0.5, **settings)
    reference_losses = reference_train(reference, x, y, proximal_mu=0.5, **settings)
    train(plain, x, y, **settings)
    assert fast_losses == pytest.approx(reference_losses, rel=1e-5)
    for a, b in zip(fast.parameters(), reference.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-5)

    def moved(model):
        return sum((p - p0).pow(2).sum() for p, p0 in zip(model.parameters(), start, strict=True))

    assert moved(fast) < moved(plain)  # the proximal term holds the weights near the start


def test_privacy_reports_flowers_accountants_epsilon(engine, small_config):
    from flwr.supercore.privacy_accounting import (
        GaussianPrivacyEvent,
        NeighboringRelation,
        PrivacyConfig,
        SamplingMethod,
    )
    from flwr.supercore.privacy_accounting.rdp_accountant import RdpAccountant

    config = small_config.replace(num_rounds=2, privacy="server:noise=1.2,clip=5,delta=1e-4")
    federated = engine.submit(config, "federated", use_cache=False).result().federated
    accountant = RdpAccountant(
        PrivacyConfig(
            target_delta=1e-4,
            population_size=3,
            neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
            sampling_method=SamplingMethod.NO_AMPLIFICATION,
        )
    )
    expected = []
    for _ in range(2):
        accountant.compose(
            GaussianPrivacyEvent(noise_multiplier=1.2, sample_size=3, population_size=3)
        )
        expected.append(accountant.get_privacy_spent().epsilon)
    assert [r.epsilon for r in federated.history[1:]] == pytest.approx(expected)
    assert federated.history[0].epsilon is None and expected[1] > expected[0] > 0
    again = engine.submit(config, "federated", use_cache=False).result().federated
    assert again.confusion == federated.confusion  # the noise is drawn from the seed
    client_side = (
        engine.submit(
            config.replace(privacy="client:noise=1.2,clip=5,delta=1e-4"),
            "federated",
            use_cache=False,
        )
        .result()
        .federated
    )
    assert [r.epsilon for r in client_side.history[1:]] == pytest.approx(expected)
    assert client_side.failures == []


def test_privacy_needs_fedavgs_aggregation():
    with pytest.raises(ConfigError, match="privacy server:.* needs fedavg or fedprox"):
        ExperimentConfig(strategy="fedmedian", privacy="server")


def test_dropout_is_reproducible_from_the_seed(engine, mnist_dir):
    config = ExperimentConfig(
        data_dir=str(mnist_dir), num_clients=6, split="iid", num_rounds=3, local_epochs=1,
        batch_size=512, dropout=0.5,
    )  # fmt: skip
    first = engine.submit(config, "federated", use_cache=False).result().federated
    again = engine.submit(config, "federated", use_cache=False).result().federated
    other = engine.submit(config.replace(seed=7), "federated", use_cache=False).result().federated
    assert first.failures and all("dropped out" in f for f in first.failures)
    assert first.failures == again.failures and first.accuracy == again.accuracy
    assert first.failures != other.failures
    answered = sum(len(r.client_loss) for r in first.history[1:])
    assert answered + len(first.failures) == 3 * 6  # every sampled client, answered or not


def test_round_views(federated_small):
    federated, _ = federated_small
    final = federated.history[-1]
    assert final.digit_accuracy == digit_accuracy(federated.confusion)  # the heatmap's last column
    assert len(final.digit_accuracy) == 10
    assert set(final.update_norm) == set(final.update_cosine) == {"1", "2", "3"}
    assert all(0 < c <= 1 for c in final.update_cosine.values())
    assert final.bytes_received == final.bytes_sent == 3 * 101_770 * 4
    assert federated.history[0].messages_sent == 0  # round 0: the initial model, no messages
