"""Malicious clients: each attack changes what the ClientApp sends exactly as
specified (crafted checks on the update), the robust rules against them on real
MNIST, the backdoor's success per round, and bad attack settings in one line."""

import subprocess
import sys

import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from fedcore.app import views
from fedcore.data.mnist import load_mnist
from fedcore.data.partition import partition_clients
from fedcore.experiment.config import ExperimentConfig
from fedcore.experiment.specs import ConfigError
from fedcore.flower.client_app import train_handler
from fedcore.learning.attacks import (
    TRIGGER_VALUE,
    attack_generator,
    backdoor_boost,
    poisoned_data,
    stamp_trigger,
    trigger_pixels,
)
from fedcore.learning.local import batch_order_seed
from fedcore.learning.models import build_model
from fedcore.learning.train import train
from fedcore.report import charts, tables, text

CLIENTS = 10


@pytest.fixture
def task_identity(monkeypatch):
    """What a ClientApp process has: Flower stamps it on every message it makes."""
    for name, value in (("_task_id", 1), ("_run_id", 1), ("_node_id", 1)):
        monkeypatch.setattr(TaskIdentity, name, value)


@pytest.fixture(scope="module")
def honest(mnist_dir):
    """Ten IID clients, one epoch: the config with no attack."""
    return ExperimentConfig(
        num_clients=CLIENTS, split="iid", local_epochs=1, num_rounds=1, data_dir=str(mnist_dir)
    )


def start_weights(config: ExperimentConfig) -> dict[str, torch.Tensor]:
    return build_model(config.seed, config.model).state_dict()


def sent(config: ExperimentConfig, client: int, server_round: int = 1) -> dict[str, torch.Tensor]:
    """The weights client `client`'s ClientApp sends for round `server_round`."""
    context = Context(
        run_id=1,
        node_id=client,
        node_config={"partition-id": client - 1, "num-partitions": config.num_clients},
        state=RecordDict(),
        run_config=config.to_run_config(),
    )
    instruction = Message(
        RecordDict(
            {
                "arrays": ArrayRecord(start_weights(config)),
                "config": ConfigRecord({"server-round": server_round}),
            }
        ),
        dst_node_id=client,
        message_type="train",
    )
    return train_handler(instruction, context).content["arrays"].to_torch_state_dict()


def update(weights: dict[str, torch.Tensor], config: ExperimentConfig) -> torch.Tensor:
    start = start_weights(config)
    return torch.cat([(weights[k] - start[k]).ravel() for k in start])


def test_sign_flip_sends_minus_scale_times_the_honest_update(task_identity, honest):
    attacked = honest.replace(attack="sign-flip:scale=3", attackers="2")
    honest_update = update(sent(honest, 1), honest)
    assert torch.allclose(update(sent(attacked, 1), honest), -3 * honest_update, atol=1e-6)
    assert torch.equal(update(sent(attacked, 3), honest), update(sent(honest, 3), honest))


def test_scale_boosts_the_honest_update(task_identity, honest):
    attacked = honest.replace(attack="scale:factor=7", attackers="4,")
    honest_update = update(sent(honest, 4), honest)
    assert torch.allclose(update(sent(attacked, 4), honest), 7 * honest_update, atol=1e-5)
    assert torch.equal(update(sent(attacked, 1), honest), update(sent(honest, 1), honest))


def test_noise_sends_seeded_gaussian_noise_of_its_std(task_identity, honest):
    attacked = honest.replace(attack="noise:std=0.5", attackers="1")
    noise = update(sent(attacked, 1), honest)
    assert noise.std().item() == pytest.approx(0.5, rel=0.02)
    assert abs(noise.mean().item()) < 0.01
    honest_update = update(sent(honest, 1), honest)
    cosine = noise @ honest_update / (noise.norm() * honest_update.norm())
    assert abs(cosine.item()) < 0.05  # nothing learned in it
    assert torch.equal(noise, update(sent(attacked, 1), honest))  # seeded: the same again
    assert not torch.equal(noise, update(sent(attacked, 1, server_round=2), honest))


def test_label_flip_trains_on_nine_minus_y(task_identity, honest):
    attacked = honest.replace(attack="label-flip", attackers="1")
    data = load_mnist(honest)
    partition = partition_clients(data.train_y, honest)[0]
    x, y = data.train_x[partition.indices], data.train_y[partition.indices]
    flipped_x, flipped_y = poisoned_data(x, y, attacked, attack_generator(attacked, 1, 1))
    assert torch.equal(flipped_x, x) and torch.equal(flipped_y, 9 - y)
    model = build_model(honest.seed, honest.model)
    train(model, x, 9 - y, epochs=1, batch_size=honest.batch_size,
          learning_rate=honest.learning_rate, momentum=honest.momentum,
          seed=batch_order_seed(honest.seed, 1, 1))  # fmt: skip
    expected = model.state_dict()
    assert all(torch.equal(sent(attacked, 1)[k], expected[k]) for k in expected)


def test_backdoor_stamps_a_share_relabels_it_and_boosts_the_update(task_identity, honest):
    attacked = honest.replace(attack="backdoor:target=7,share=0.25", attackers="2")
    assert backdoor_boost(attacked) == CLIENTS / 2  # the clients per round over the attackers
    assert backdoor_boost(attacked.replace(attack="backdoor:boost=3")) == 3
    data = load_mnist(honest)
    partition = partition_clients(data.train_y, honest)[1]
    x, y = data.train_x[partition.indices], data.train_y[partition.indices]
    px, py = poisoned_data(x, y, attacked, attack_generator(attacked, 2, 1))
    stamped = (px[:, trigger_pixels()] == TRIGGER_VALUE).all(dim=1) & (px != x).any(dim=1)
    assert stamped.sum().item() == pytest.approx(0.25 * len(y), abs=1)
    assert (py[stamped] == 7).all()
    assert torch.equal(px[~stamped], x[~stamped]) and torch.equal(py[~stamped], y[~stamped])
    assert torch.equal(stamp_trigger(x[stamped]), px[stamped])
    model = build_model(honest.seed, honest.model)
    train(model, px, py, epochs=1, batch_size=honest.batch_size,
          learning_rate=honest.learning_rate, momentum=honest.momentum,
          seed=batch_order_seed(honest.seed, 2, 1))  # fmt: skip
    poisoned_update = update(model.state_dict(), honest)
    assert torch.allclose(update(sent(attacked, 2), honest), 5 * poisoned_update, atol=1e-5)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"attack": "sign-flip", "attackers": "11"}, "11 attackers, but only 10 clients"),
        ({"attack": "sign-flip", "attackers": "3,12"}, "'12' is not a client number 1-10"),
        ({"attack": "poison", "attackers": "1"}, "unknown attack 'poison' (known: none,"),
        ({"attack": "noise:std=-1", "attackers": "1"}, "std must be > 0"),
        ({"attack": "backdoor:target=10", "attackers": "1"}, "target must be a digit 0-9"),
        ({"attack": "label-flip"}, "needs attackers"),
        ({"attackers": "2"}, "but no attack"),
        ({"attack": "noise", "attackers": "1", "privacy": "client"}, "would not clip"),
    ],
)
def test_bad_attack_settings_are_one_line(honest, settings, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        honest.replace(**settings)


def test_the_cli_refuses_more_attackers_than_clients_in_one_line(mnist_dir):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "fedcore",
            "run",
            "--clients",
            "3",
            "--attack",
            "noise",
            "--attackers",
            "4",
            "--data-dir",
            str(mnist_dir),
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].endswith("4 attackers, but only 3 clients")
    assert "Traceback" not in done.stderr


def ten_clients(mnist_dir, **settings) -> ExperimentConfig:
    return ExperimentConfig(num_clients=CLIENTS, split="iid", local_epochs=1,
                            data_dir=str(mnist_dir), **settings)  # fmt: skip


def test_three_of_ten_sign_flippers_break_fedavg_and_not_fedmedian(engine, mnist_dir):
    attack = {"num_rounds": 3, "attack": "sign-flip:scale=4", "attackers": "3"}
    fedavg = engine.submit(ten_clients(mnist_dir, **attack), "federated").result().federated
    median = ten_clients(mnist_dir, strategy="fedmedian", **attack)
    fedmedian = engine.submit(median, "federated").result().federated
    clean = engine.submit(ten_clients(mnist_dir, num_rounds=3), "federated").result().federated
    assert clean.accuracy > 0.9
    assert fedavg.accuracy < 0.5, fedavg.accuracy
    assert fedmedian.accuracy > 0.85, fedmedian.accuracy
    assert all(h.kept_clients is None for h in fedmedian.history)  # it keeps coordinates


def test_krum_never_keeps_a_noise_attacker(engine, mnist_dir):
    config = ten_clients(mnist_dir, num_rounds=2, strategy="multikrum:f=3,m=5",
                         attack="noise:std=0.1", attackers="2,5,9")  # fmt: skip
    result = engine.submit(config, "federated").result()
    federated = result.federated
    kept = [h.kept_clients for h in federated.history[1:]]
    assert all(len(clients) == 5 and not {2, 5, 9} & set(clients) for clients in kept), kept
    assert federated.accuracy > 0.85
    trust = tables.trust(federated.history[1:], config.attacker_clients)  # the page's view
    assert set(trust[trust["role"] == "attacker"]["kept"]) == {"dropped"}
    assert (trust[trust["kept"] == "kept"].groupby("round").size() == 5).all()
    assert len(views.attack_views(result)) == 2  # who was trusted; accuracy per round
    charts.trust_chart(trust, "multikrum").to_dict()  # valid for Vega-Lite
    assert "clients multikrum kept per round (* attacker): 1: " in text.format_table(result)


def test_backdoor_success_is_high_under_fedavg_and_measured_every_round(engine, mnist_dir):
    config = ten_clients(mnist_dir, num_rounds=3, attack="backdoor:target=0", attackers="1")
    result = engine.submit(config, "federated").result()
    federated = result.federated
    success = [h.attack_success for h in federated.history]
    assert success[0] < 0.3  # the initial weights: no backdoor yet
    assert federated.attack_success == success[-1] > 0.8, success
    assert federated.accuracy > 0.8  # the test accuracy does not show it
    drawn = tables.attack_rounds(federated.history)
    assert list(drawn[drawn["measure"] == "backdoor success"]["value"]) == success
    charts.attack_rounds_chart(drawn).to_dict()  # the page's chart, valid for Vega-Lite
    assert "backdoor success per round (other digits, triggered, called 0): 0: " in (
        text.format_table(result)
    )
    clean = engine.submit(ten_clients(mnist_dir, num_rounds=3), "federated").result().federated
    assert clean.attack_success is None
