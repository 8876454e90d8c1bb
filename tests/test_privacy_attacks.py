"""A curious server's attacks on real MNIST updates: label leakage names the story's
missing digits, analytic inversion rebuilds images from MLP updates, the
optimisation attack rebuilds one image, and the image scores behave."""

from __future__ import annotations

import math

import pytest
import torch

from fedcore.data.mnist import load_mnist
from fedcore.data.partition import partition_clients
from fedcore.experiment.config import ExperimentConfig
from fedcore.learning.local import batch_order_seed
from fedcore.learning.models import build_model
from fedcore.learning.train import train
from fedcore.privacy import (
    Recipe,
    analytic_inversion,
    best_match,
    infer_labels,
    optimisation_attack,
    psnr_db,
    ssim,
)
from fedcore.privacy.inversion import looks_single, simulate_update


@pytest.fixture(scope="module")
def data(small_config):
    return load_mnist(small_config)


def trained(model_name, x, y, *, batch_size, seed=42, state=None):
    """(before, after) of one client's round of plain SGD from the seeded model."""
    model = build_model(seed, model_name)
    if state is not None:
        model.load_state_dict(state)
    before = {key: value.clone() for key, value in model.state_dict().items()}
    train(model, x, y, epochs=1, batch_size=batch_size, learning_rate=0.01, momentum=0.9, seed=0)
    return before, {key: value.clone() for key, value in model.state_dict().items()}


# ------------------------------------------------------------------ labels


def test_label_leakage_names_the_story_missing_digits_in_rounds_one_and_two(data, small_config):
    config: ExperimentConfig = small_config
    partitions = partition_clients(data.train_y, config)
    recipe = Recipe.from_config(config)
    assert recipe == Recipe(0.01, 0.9, 64, 1, 0)
    assert [p.excluded for p in partitions] == [(1, 3, 7), (2, 5, 8), (4, 6, 9)]
    state = build_model(config.seed, config.model).state_dict()
    for server_round in (1, 2):
        afters, sizes = [], []
        for partition in partitions:
            model = build_model(config.seed, config.model)
            model.load_state_dict(state)
            before = {key: value.clone() for key, value in model.state_dict().items()}
            x, y = data.train_x[partition.indices], data.train_y[partition.indices]
            train(
                model,
                x,
                y,
                epochs=1,
                batch_size=64,
                learning_rate=0.01,
                momentum=0.9,
                seed=batch_order_seed(config.seed, partition.client, server_round),
            )
            after = model.state_dict()
            found = infer_labels(before, after, partition.size, recipe, data.test_x, data.test_y)
            assert found.missing == partition.excluded, (server_round, partition.client)
            true = torch.bincount(y, minlength=10)
            assert sum(found.counts) == partition.size
            assert all(found.counts[d] == 0 for d in partition.excluded)
            error = (torch.tensor(found.counts) - true).abs().float().mean()
            assert error < 0.25 * partition.size / 10, (server_round, partition.client, error)
            # the evidence: a missing digit's output row never went up, a held one's did
            assert all(found.rises[d] == 0 for d in partition.excluded)
            assert min(r for d, r in enumerate(found.rises) if true[d] > 0) > 10
            # without public images: the same digits, the count split evenly
            blind = infer_labels(before, after, partition.size, recipe)
            assert blind.missing == partition.excluded
            afters.append({key: value.clone() for key, value in after.items()})
            sizes.append(partition.size)
        state = {  # FedAvg
            key: sum(a[key] * n for a, n in zip(afters, sizes, strict=True)) / sum(sizes)
            for key in state
        }


def test_the_bias_sign_alone_would_name_a_held_digit(data, small_config):
    """Why the sign test also reads the output weights: client 3 holds 2,268 ones,
    yet round 1 moves the 1s' bias down (the seeded model over-predicts 1s)."""
    partition = partition_clients(data.train_y, small_config)[2]
    x, y = data.train_x[partition.indices], data.train_y[partition.indices]
    model = build_model(small_config.seed)
    before = {key: value.clone() for key, value in model.state_dict().items()}
    train(
        model,
        x,
        y,
        epochs=1,
        batch_size=64,
        learning_rate=0.01,
        momentum=0.9,
        seed=batch_order_seed(42, 3, 1),
    )
    found = infer_labels(before, model.state_dict(), len(x), Recipe())
    assert int((y == 1).sum()) > 2000
    assert found.bias_change[1] < 0 and found.rises[1] > 0
    assert 1 not in found.missing and found.missing == (4, 6, 9)


# ------------------------------------------------------------------ inversion


def test_analytic_inversion_recovers_a_batch_of_one_exactly(data):
    x, y = data.train_x[7:8], data.train_y[7:8]
    for model_name in ("mlp", "2nn"):
        before, after = trained(model_name, x, y, batch_size=1)
        candidates = analytic_inversion(before, after, model_name)
        assert candidates is not None and candidates.shape[1] == 784
        assert len(candidates) == 1  # every active unit gives the same image: deduplicated
        assert psnr_db(candidates[0], x[0]) > 40
    before, after = trained("cnn", x, y, batch_size=1)
    assert analytic_inversion(before, after, "cnn") is None


def test_analytic_inversion_of_a_batch_of_eight_still_recovers_images(data):
    """Measured: every one of the 8 images comes back at ~110-120 dB (float rounding),
    from units that only one image of the batch activated."""
    x, y = data.train_x[:8], data.train_y[:8]
    before, after = trained("mlp", x, y, batch_size=8)
    candidates = analytic_inversion(before, after, "mlp")
    match = best_match(candidates, x)
    assert match.psnr_db > 40 and match.ssim > 0.99
    recovered = [best_match(candidates, x[j : j + 1]).psnr_db for j in range(8)]
    assert sum(score > 30 for score in recovered) >= 6, recovered
    # ranked: the exact recoveries first, flagged as single images; the mixes after
    single = looks_single(candidates)
    assert single.sum() >= 6 and bool(single[: int(single.sum())].all())
    flagged = [best_match(candidates[i : i + 1], x) for i in range(int(single.sum()))]
    assert all(m.psnr_db > 80 for m in flagged)
    assert len({m.truth for m in flagged}) == len(flagged)  # distinct images, no duplicates


def test_simulated_update_is_the_clients_own(data):
    """The attack's differentiable replay gives the weights `train()` gives."""
    x, y = data.train_x[:8], data.train_y[:8]
    recipe = Recipe(batch_size=4, local_steps=2)
    model = build_model(3)
    before = {key: value.clone() for key, value in model.state_dict().items()}
    order = torch.randperm(8, generator=torch.Generator().manual_seed(0))
    train(model, x, y, epochs=1, batch_size=4, learning_rate=0.01, momentum=0.9, seed=0)
    start = {key: value.clone().requires_grad_(True) for key, value in before.items()}
    update = simulate_update(build_model(3), start, x[order], y[order], recipe)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(before[key] + update[key].detach(), value, atol=1e-6, rtol=0)


def test_optimisation_attack_rebuilds_one_image_from_one_step(data):
    """Measured: ~60 dB in 300 iterations (well under a second on one core)."""
    x, y = data.train_x[100:101], data.train_y[100:101]
    before, after = trained("mlp", x, y, batch_size=1)
    steps = []
    images = optimisation_attack(
        before,
        after,
        "mlp",
        y,
        Recipe(batch_size=1, local_steps=1),
        iterations=300,
        seed=0,
        on_step=lambda i, n: steps.append((i, n)),
    )
    assert images.shape == (1, 784) and steps[-1] == (300, 300) and len(steps) == 300
    assert psnr_db(images[0], x[0]) > 35
    assert ssim(images[0], x[0]) > 0.9
    # the attack needs the update: from an unrelated image's update it finds that one
    other_before, other_after = trained("mlp", data.train_x[5:6], data.train_y[5:6], batch_size=1)
    stray = optimisation_attack(
        other_before,
        other_after,
        "mlp",
        data.train_y[5:6],
        Recipe(batch_size=1, local_steps=1),
        iterations=100,
        seed=0,
    )
    assert psnr_db(stray[0], x[0]) < 20


def test_optimisation_attack_stops_when_asked(data):
    x, y = data.train_x[:2], data.train_y[:2]
    before, after = trained("mlp", x, y, batch_size=2)
    calls = []
    images = optimisation_attack(
        before,
        after,
        "mlp",
        y,
        Recipe(batch_size=2, local_steps=1),
        iterations=1000,
        on_step=lambda i, n: calls.append(i),
        should_stop=lambda: len(calls) >= 5,
    )
    assert calls == [1, 2, 3, 4, 5] and images.shape == (2, 784)
    assert images.min() >= -1 and images.max() <= 1


# ------------------------------------------------------------------ scores


def test_image_scores(data):
    a, b = data.train_x[0], data.train_x[1]
    assert psnr_db(a, a) == math.inf and ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    assert ssim(a, b) < 0.5 and psnr_db(a, b) < 15
    # [0, 1] pixels: a uniform shift of 0.1 pixels (0.2 normalized) is 20 dB, off the clamp
    gray = torch.zeros(784)
    assert psnr_db(gray, gray + 0.2) == pytest.approx(20.0)
    assert ssim(a.reshape(28, 28), a) == pytest.approx(1.0)
    # flat images of 0.5 and 0.6: only the luminance term, (2 mu mu' + C1) / (mu^2 + mu'^2 + C1)
    c1 = 0.01**2
    assert ssim(gray, gray + 0.2) == pytest.approx((0.6 + c1) / (0.61 + c1), abs=1e-9)
    truth = data.train_x[:2000]
    candidates = torch.stack([b + 0.01 * torch.randn(784), truth[1234], a.flip(0)])
    match = best_match(candidates, truth)
    assert (match.candidate, match.truth, match.psnr_db) == (1, 1234, math.inf)
    assert match.ssim == pytest.approx(1.0)
    with pytest.raises(ValueError):
        best_match(torch.empty(0, 784), truth)
