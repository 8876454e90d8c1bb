"""SCAFFOLD and FedNova, written on Flower's FedAvg: their aggregation on crafted
replies, SCAFFOLD's control variates over rounds of partial participation, the
correction in local training, and both strategies end to end on real MNIST."""

import json
import random

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict

from fedcore.data.mnist import MnistData, load_mnist
from fedcore.data.partition import ClientPartition, partition_clients
from fedcore.experiment.config import ExperimentConfig
from fedcore.experiment.specs import ConfigError
from fedcore.flower.behind import Behind
from fedcore.flower.fednova import LOCAL_STEPS, normalized_steps
from fedcore.flower.scaffold import CLIENT_CONTROL, CONTROL, CONTROL_CHANGE, ClientControl
from fedcore.flower.strategies import RunLog, build_strategy, flower_strategy
from fedcore.learning import fast_path
from fedcore.learning.local import local_sgd_steps, train_on_partition
from fedcore.learning.models import build_model
from fedcore.learning.textbook import reference_train
from fedcore.learning.train import train

from .test_cli import run_cli
from .test_secure_aggregation import run_in_process
from .test_strategies import task_identity  # noqa: F401  (a fixture)


class Grid:
    """What a strategy's `configure_train` asks of Flower's grid: the node ids."""

    def __init__(self, nodes: int) -> None:
        self.nodes = list(range(1, nodes + 1))

    def get_node_ids(self) -> list[int]:
        return self.nodes


def instruction(node: int) -> Message:
    config = ConfigRecord({"server-round": 1})
    return Message(RecordDict({"config": config}), dst_node_id=node, message_type="train")


def crafted_reply(node: int, weights, examples: int, steps: int, change=None) -> Message:
    """A reply as our ClientApp sends it: the model, its metrics, and (SCAFFOLD) the
    control change."""
    metrics = {"num-examples": examples, "uniform-weight": 1, LOCAL_STEPS: steps}
    records = {
        "arrays": ArrayRecord({"w": Array(np.asarray(weights, dtype=np.float32))}),
        "metrics": MetricRecord(metrics),
        "client": ConfigRecord({"client": node, "epoch-losses": [0.5]}),
    }
    if change is not None:
        records[CONTROL_CHANGE] = ArrayRecord({"w": Array(np.asarray(change, dtype=np.float32))})
    return Message(RecordDict(records), reply_to=instruction(node))


def aggregate(strategy: str, replies: list[Message], **settings) -> np.ndarray:
    """The strategy's first round from `replies`, the global model zeros."""
    config = ExperimentConfig(num_clients=len(replies), split="iid", strategy=strategy, **settings)
    inner = flower_strategy(config)
    start = ArrayRecord({"w": Array(np.zeros(2, dtype=np.float32))})
    list(inner.configure_train(1, start, ConfigRecord(), Grid(len(replies))))
    arrays, _ = inner.aggregate_train(1, replies)
    return arrays["w"].numpy()


MODELS = {1: [1.0, 2.0], 2: [3.0, -1.0]}
EXAMPLES = {1: 100, 2: 300}


@pytest.mark.usefixtures("task_identity")
def test_scaffolds_first_round_is_fedavgs():
    def replies(change):
        return [crafted_reply(n, w, EXAMPLES[n], 10, change) for n, w in MODELS.items()]

    fedavg = aggregate("fedavg", replies(None))
    assert np.array_equal(aggregate("scaffold", replies([0.5, -0.5])), fedavg)  # bit for bit
    assert np.allclose(fedavg, [2.5, -0.25])  # the example-weighted mean
    # eta_g: x + eta_g * mean(y_i - x), from x = 0
    assert np.allclose(aggregate("scaffold:lr=0.5", replies([0.5, -0.5])), 0.5 * fedavg)


@pytest.mark.usefixtures("task_identity")
def test_fednova_is_fedavg_for_equal_steps_and_normalizes_unequal_ones():
    def replies(steps):
        return [crafted_reply(n, w, EXAMPLES[n], steps[n]) for n, w in MODELS.items()]

    fedavg = aggregate("fedavg", replies({1: 10, 2: 10}))
    assert np.allclose(aggregate("fednova", replies({1: 10, 2: 10}), momentum=0.0), fedavg)
    assert np.allclose(aggregate("fednova", replies({1: 10, 2: 10}), momentum=0.9), fedavg)
    # momentum 0: a = (10, 30), d_i = (x - y_i) / a_i = -(0.1, 0.2) and -(0.1, -1/30),
    # p = (1/4, 3/4), tau_eff = 25: x - 25 * sum p_i d_i = 25 * (0.1, 0.025)
    fednova = aggregate("fednova", replies({1: 10, 2: 30}), momentum=0.0)
    assert np.allclose(fednova, [2.5, 0.625]) and not np.allclose(fednova, fedavg)


def test_fednovas_normalized_steps_with_momentum():
    assert normalized_steps(10, 0.0) == 10
    # (10 - 0.9 (1 - 0.9^10) / 0.1) / 0.1 = (10 - 5.8618940391) / 0.1
    assert normalized_steps(10, 0.9) == pytest.approx(41.381059609)
    config = ExperimentConfig(strategy="fednova", momentum=0.5)
    assert flower_strategy(config).momentum == 0.5  # the clients' own


def toy_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 784, generator=generator), torch.randint(0, 10, (n,), generator=generator)


@pytest.mark.usefixtures("task_identity")
def test_scaffolds_control_variates_under_partial_participation():
    """Four clients, two sampled a round: each client's c_i follows option II, and the
    server's c is the mean of all four c_i (those never sampled hold zeros)."""
    config = ExperimentConfig(num_clients=4, split="iid", strategy="scaffold", fraction_train=0.5)
    recording = build_strategy(config, RunLog(), Behind(False))
    scaffold, grid = recording.inner, Grid(4)
    contexts = {n: Context(0, n, {}, RecordDict(), {}) for n in grid.nodes}
    data = {n: toy_data(40 + 20 * n, n) for n in grid.nodes}
    lr, sampled = 0.05, set()
    x = ArrayRecord(build_model(0).state_dict())
    model_bytes = sum(a.nbytes for a in x.to_numpy_ndarrays())
    random.seed(3)
    for server_round in (1, 2, 3):
        replies = []
        for message in recording.configure_train(server_round, x, ConfigRecord(), grid):
            node = message.metadata.dst_node_id
            sampled.add(node)
            control = ClientControl.of(message, contexts[node])
            assert all(np.array_equal(control.server[k], v) for k, v in scaffold.control.items())
            model = build_model(0)
            model.load_state_dict(message.content["arrays"].to_torch_state_dict())
            (xs, ys), batch = data[node], 16
            train(model, xs, ys, epochs=2, batch_size=batch, learning_rate=lr, momentum=0.9,
                  seed=server_round, correction=control.correction(model))  # fmt: skip
            steps = 2 * -(-len(xs) // batch)
            sent = message.content["arrays"].to_torch_state_dict()
            change = control.update(sent, model.state_dict(), steps, lr, contexts[node])
            kept = contexts[node].state[CLIENT_CONTROL].to_torch_state_dict()
            for key, own in control.own.items():
                expected = (
                    own - control.server[key] + (sent[key] - model.state_dict()[key]) / (steps * lr)
                )
                torch.testing.assert_close(kept[key], expected)
                torch.testing.assert_close(change[key].numpy(), (kept[key] - own).numpy())
            content = RecordDict(
                {
                    "arrays": ArrayRecord(model.state_dict()),
                    "metrics": MetricRecord({"num-examples": len(xs), LOCAL_STEPS: steps}),
                    "client": ConfigRecord({"client": node, "epoch-losses": [0.0]}),
                    CONTROL_CHANGE: change,
                }
            )
            replies.append(Message(content, reply_to=message))
        assert recording.log.rounds[server_round].bytes_sent == 2 * 2 * model_bytes  # x and c
        x, _ = recording.aggregate_train(server_round, replies)
        assert recording.log.rounds[server_round].bytes_received == 2 * 2 * model_bytes
        for key, c in scaffold.control.items():
            mean = np.mean(
                [
                    contexts[n].state[CLIENT_CONTROL][key].numpy()
                    if CLIENT_CONTROL in contexts[n].state
                    else np.zeros_like(c)
                    for n in grid.nodes
                ],
                axis=0,
            )
            np.testing.assert_allclose(c, mean, rtol=1e-4, atol=1e-6)
        assert any(np.abs(c).max() > 0 for c in scaffold.control.values())
    assert sampled == {2, 3, 4}  # (seed 3) client 1 never trained: its zeros count in the mean


def test_scaffold_is_refused_with_local_dp():
    with pytest.raises(ConfigError, match="LocalDpMod"):
        ExperimentConfig(strategy="scaffold", privacy="local")
    ExperimentConfig(strategy="fednova", privacy="local")  # FedNova's reply is one ArrayRecord


@pytest.mark.parametrize("loop", [train, reference_train])
def test_a_zero_correction_changes_nothing(loop):
    """(That both loops apply a nonzero one alike: `tests/test_training.py`.)"""
    x, y = toy_data(100, 2)
    settings = {"epochs": 2, "batch_size": 32, "learning_rate": 0.05, "momentum": 0.9, "seed": 4}
    corrected, plain = build_model(1), build_model(1)
    zeros = [torch.zeros_like(p) for p in corrected.parameters()]
    assert loop(corrected, x, y, correction=zeros, **settings) == loop(plain, x, y, **settings)
    for a, b in zip(corrected.parameters(), plain.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("local_steps", [0, 3])
def test_local_sgd_steps_counts_the_steps_training_takes(monkeypatch, local_steps):
    """SCAFFOLD's K and FedNova's tau: the steps `train_on_partition` takes."""
    calls = []
    backprop = fast_path._backprop
    monkeypatch.setattr(fast_path, "_backprop", lambda *a: calls.append(1) or backprop(*a))
    xs, ys = toy_data(100, 0)
    data = MnistData(train_x=xs, train_y=ys, test_x=xs[:1], test_y=ys[:1])
    partition = ClientPartition(client=1, excluded=(), indices=torch.arange(100))
    config = ExperimentConfig(local_epochs=2, batch_size=32, local_steps=local_steps)
    train_on_partition(build_model(0), data, partition, config, server_round=1)
    assert len(calls) == local_sgd_steps(100, config) == (6 if local_steps else 8)


def federated(engine, mnist_dir, **settings):
    config = ExperimentConfig(
        data_dir=str(mnist_dir), num_clients=3, num_rounds=2, local_epochs=1, **settings
    )
    result = engine.submit(config, "federated", use_cache=False).result().federated
    assert result.failures == []
    return result.history


def test_scaffold_end_to_end_keeps_node_state_across_rounds(engine, mnist_dir, tmp_path):
    """Through the engine (the CLI) and through Flower's runtime in this process (same
    numbers): round 1, with zero control variates, is FedAvg's; round 2 is not. A
    client's round-2 model is what training with `c - c_i` gives, c_i its change of
    round 1: the runtime kept it in the node state (with c_i lost, `c` alone, it
    would be another model)."""
    out = tmp_path / "scaffold.json"
    done = run_cli("--phase", "federated", "--strategy", "scaffold", "--clients", "3",
                   "--rounds", "2", "--epochs", "1", "--no-cache", "--data-dir", str(mnist_dir),
                   "--out", str(out))  # fmt: skip
    assert done.returncode == 0, done.stderr
    history = json.loads(out.read_text())["federated"]["history"]
    config = ExperimentConfig(data_dir=str(mnist_dir), strategy="scaffold", num_rounds=2,
                              local_epochs=1)  # fmt: skip
    seen = {}  # (client, round) -> (the message, c_i's change), as the server received them

    def observe(sent, reply):
        key = (int(reply.content["client"]["client"]), int(sent.content["config"]["server-round"]))
        seen[key] = (sent, reply.content[CONTROL_CHANGE].to_torch_state_dict(), reply)

    in_process = run_in_process(config, observe=observe)
    assert [h["loss"] for h in history] == [h.loss for h in in_process.history]
    fedavg = federated(engine, mnist_dir, strategy="fedavg")
    assert history[1]["accuracy"] == fedavg[1].accuracy and history[1]["loss"] == fedavg[1].loss
    assert history[2]["loss"] != fedavg[2].loss and history[2]["accuracy"] > 0.85
    # c rides with every model, and every reply carries c_i's change
    assert history[1]["bytes_sent"] == 2 * fedavg[1].bytes_sent == 2 * 3 * 101_770 * 4
    assert history[2]["bytes_received"] == 2 * fedavg[2].bytes_received

    data = load_mnist(config)
    partition = partition_clients(data.train_y, config)[0]
    _, own, _ = seen[(1, 1)]  # c_i after round 1: zeros plus its change
    sent, _, reply = seen[(1, 2)]
    c = sent.content[CONTROL].to_torch_state_dict()
    trained = reply.content["arrays"].to_torch_state_dict()

    def round_two(correction):
        model = build_model(config.seed, config.model)
        model.load_state_dict(sent.content["arrays"].to_torch_state_dict())
        chosen = [correction[name] for name, _ in model.named_parameters()]
        train_on_partition(model, data, partition, config, 2, correction=chosen)
        return model.state_dict()

    kept = round_two({key: c[key] - own[key] for key in c})
    assert all(torch.equal(kept[key], trained[key]) for key in trained)
    lost = round_two(c)
    assert not all(torch.equal(lost[key], trained[key]) for key in trained)


def test_fednova_end_to_end_on_unequal_clients(engine, mnist_dir):
    fednova = federated(engine, mnist_dir, strategy="fednova", split="sizes")
    fedavg = federated(engine, mnist_dir, strategy="fedavg", split="sizes")
    assert fednova[1].loss != fedavg[1].loss  # unequal steps: not FedAvg's mean
    assert fednova[2].accuracy > 0.85
    assert fednova[1].bytes_sent == fedavg[1].bytes_sent  # nothing but the model on the wire
