"""The baselines beside the federated model: centralized (pooled data) and the
isolated models scored on each other's data; rounds to a target; sampling with a minimum."""

import pytest
import torch

from fedcore.data.mnist import load_mnist
from fedcore.data.partition import missing_subsets, partition_clients
from fedcore.experiment.config import ExperimentConfig
from fedcore.flower.rounds import RoundRecorder
from fedcore.learning.baselines import centralized_result, fit_centralized_model
from fedcore.learning.evaluation import cross_accuracy, digit_accuracy
from fedcore.learning.local import batch_order_seed
from fedcore.learning.models import build_model
from fedcore.learning.train import train
from fedcore.report import tables
from fedcore.report.figures import run_charts


def test_centralized_baseline_is_training_on_the_concatenated_data(small_config):
    config = small_config.replace(num_rounds=2, batch_size=256)  # 2 x 1 epochs over the pool
    data = load_mnist(config)
    partitions = partition_clients(data.train_y, config)
    model, losses = fit_centralized_model(data, partitions, config)
    assert len(losses) == config.num_rounds * config.local_epochs == 2

    x = torch.cat([data.train_x[p.indices] for p in partitions])
    y = torch.cat([data.train_y[p.indices] for p in partitions])
    assert len(x) == sum(p.size for p in partitions) > 40_000
    expected = build_model(config.seed, config.model)
    expected_losses = train(
        expected, x, y, epochs=2, batch_size=256, learning_rate=config.learning_rate,
        momentum=config.momentum, seed=batch_order_seed(config.seed, 0, 1),
    )  # fmt: skip
    assert losses == expected_losses
    for ours, theirs in zip(model.parameters(), expected.parameters(), strict=True):
        assert torch.equal(ours, theirs)
    report = centralized_result(model, losses, data, partitions, missing_subsets(partitions))
    # it saw every digit: no missing-digit subset collapses, unlike an isolated model
    assert report.accuracy > 0.9 and min(report.subset_accuracy.values()) > 0.85


def test_every_all_run_carries_the_baselines(small_run, small_config):
    result, _ = small_run
    centralized = result.centralized
    assert centralized is not None
    assert centralized.epochs == small_config.num_rounds * small_config.local_epochs
    assert centralized.train_size == sum(c.train_size for c in result.isolated)
    assert centralized.accuracy > max(c.accuracy for c in result.isolated)
    assert result.label_counts == [c.label_counts for c in result.isolated]
    table = tables.accuracies(result.isolated, result.federated, centralized)
    pooled = table[table.model == tables.CENTRALIZED].set_index("test_set")["accuracy"]
    assert pooled[tables.ALL_DIGITS] == centralized.accuracy and len(pooled) == 4
    chart = run_charts(result)["test-accuracy"]().to_dict()  # the report's chart shows it too
    assert tables.CENTRALIZED in chart["encoding"]["color"]["scale"]["domain"]
    cross = result.cross_accuracy
    assert len(cross) == len(cross[0]) == 3
    for i, row in enumerate(cross):  # best on its own kind of data
        assert row[i] == max(row)
        assert row[i] > 0.85 and min(row) < 0.75


def test_cross_accuracy_weights_each_digit_by_the_clients_label_mix():
    perfect_on_0 = [[10 if (t == 0 and p == 0) else 0 for p in range(10)] for t in range(10)]
    for t in range(1, 10):
        perfect_on_0[t][0] = 10  # every other digit taken for a 0
    assert digit_accuracy(perfect_on_0) == [1.0] + [0.0] * 9
    only_zeros, half_zeros = [5] + [0] * 9, [5, 5] + [0] * 8
    assert cross_accuracy([perfect_on_0], [only_zeros, half_zeros]) == [[1.0, 0.5]]


def test_rounds_to_target(federated_small, small_config):
    federated, _ = federated_small
    assert federated.rounds_to_target is None  # 97% is not reached in 1 round of 1 epoch
    reached = small_config.replace(target_accuracy=50.0)
    recorder = RoundRecorder(reached, None)
    recorder.history = federated.history
    assert recorder.rounds_to_target() == 1


@pytest.mark.parametrize(("fraction", "minimum", "per_round"), [(0.1, 1, 1), (0.1, 3, 3)])
def test_fraction_with_a_minimum_samples_the_same_clients_for_a_seed(
    engine, mnist_dir, fraction, minimum, per_round
):
    config = ExperimentConfig(
        data_dir=str(mnist_dir), num_clients=10, split="iid", num_rounds=2, local_epochs=1,
        batch_size=256, fraction_train=fraction, min_train_clients=minimum,
    )  # fmt: skip
    first = engine.submit(config, "federated", use_cache=False).result().federated
    again = engine.submit(config, "federated", use_cache=False).result().federated
    sampled = [sorted(r.client_loss) for r in first.history[1:]]
    assert [len(clients) for clients in sampled] == [per_round, per_round]
    assert sampled == [sorted(r.client_loss) for r in again.history[1:]]
    assert first == again
