import pytest
import torch
from torch.nn import functional as F

from fedcore.learning.evaluation import (
    _use_onednn,
    confusion_matrix,
    evaluate,
    predict,
    subset_accuracy,
)
from fedcore.learning.models import build_model
from fedcore.learning.textbook import reference_train
from fedcore.learning.train import train


def toy_data(n: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    y = torch.randint(0, 10, (n,), generator=generator)
    x = torch.randn(n, 784, generator=generator) * 0.1
    x[torch.arange(n), y * 10] += 3.0  # a learnable signal
    return x, y


def test_build_model_is_seeded_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a, b = build_model(7), build_model(7)
    assert torch.rand(1) == before
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert not torch.equal(next(build_model(8).parameters()), next(a.parameters()))


def test_train_is_deterministic_and_learns():
    x, y = toy_data()
    settings = dict(epochs=3, batch_size=32, learning_rate=0.05, momentum=0.9, seed=1)
    a, b = build_model(0), build_model(0)
    losses_a = train(a, x, y, **settings)
    losses_b = train(b, x, y, **settings)
    assert losses_a == losses_b and len(losses_a) == 3
    assert losses_a[-1] < losses_a[0] * 0.7
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert train(build_model(0), x, y, **(settings | {"seed": 2})) != losses_a


def test_train_reports_each_epoch():
    x, y = toy_data(128)
    seen = []
    losses = train(
        build_model(0),
        x,
        y,
        epochs=2,
        batch_size=50,
        learning_rate=0.01,
        momentum=0.0,
        seed=0,
        on_epoch=lambda epoch, loss: seen.append((epoch, loss)),
    )
    assert seen == list(enumerate(losses, start=1))


@pytest.mark.parametrize("kind", ["mlp", "2nn", "logreg"])
@pytest.mark.parametrize("corrected", [False, True])
def test_train_matches_autograd_and_torch_optim_sgd(kind, corrected):
    """The written-out passes and update, and `reference_train`, are torch.optim.SGD
    with momentum on the batch-mean cross-entropy, batches in the same seeded order
    (a short last batch too); a correction (SCAFFOLD's c - c_i) is subtracted, times
    the learning rate, after each step."""
    x, y = toy_data(300)
    ours, textbook, reference = build_model(3, kind), build_model(3, kind), build_model(3, kind)
    generator = torch.Generator().manual_seed(1)
    correction = [0.1 * torch.randn(p.shape, generator=generator) for p in ours.parameters()]
    settings = dict(epochs=3, batch_size=32, learning_rate=0.05, momentum=0.9, seed=5)
    settings["correction"] = correction if corrected else None
    losses = train(ours, x, y, **settings)
    textbook_losses = reference_train(textbook, x, y, **settings)
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.05, momentum=0.9)
    generator = torch.Generator().manual_seed(5)
    expected = []
    for _ in range(3):
        order = torch.randperm(300, generator=generator)
        total = 0.0
        for start in range(0, 300, 32):
            batch = order[start : start + 32]
            optimizer.zero_grad()
            loss = F.cross_entropy(reference(x[batch]), y[batch])
            loss.backward()
            optimizer.step()
            if corrected:
                with torch.no_grad():
                    for p, c in zip(reference.parameters(), correction, strict=True):
                        p -= 0.05 * c
            total += loss.item() * len(batch)
        expected.append(total / 300)
    assert losses == pytest.approx(expected, rel=1e-5)
    assert textbook_losses == pytest.approx(expected, rel=1e-6)
    for p, q, r in zip(
        ours.parameters(), textbook.parameters(), reference.parameters(), strict=True
    ):
        torch.testing.assert_close(p, r, rtol=0, atol=1e-5)
        torch.testing.assert_close(q, r, rtol=0, atol=1e-6)


def test_confusion_and_subset_accuracy():
    y_true = torch.tensor([0, 1, 1, 3, 3, 3])
    y_pred = torch.tensor([0, 2, 1, 3, 8, 8])
    confusion = confusion_matrix(y_true, y_pred)
    assert confusion.shape == (10, 10) and int(confusion.sum()) == 6
    assert confusion[1, 2] == 1 and confusion[3, 8] == 2
    assert subset_accuracy(confusion, [1, 3]) == 2 / 5
    assert subset_accuracy(confusion, [5]) == 0.0  # no test images: 0, not a crash


def test_evaluate_reports_subsets():
    x, y = toy_data(300)
    model = build_model(0)
    train(model, x, y, epochs=5, batch_size=32, learning_rate=0.05, momentum=0.9, seed=0)
    report = evaluate(model, x, y, [(1, 3), (2,)])
    assert set(report.subset_accuracy) == {"1,3", "2"}
    assert 0.9 < report.accuracy <= 1.0
    assert sum(map(sum, report.confusion)) == 300


@pytest.mark.parametrize("kind", ["mlp", "2nn", "logreg"])
def test_an_mlp_is_scored_by_onednn_as_by_its_own_forward_pass(kind):
    """`predict` runs the MLPs' linear layers through oneDNN: the same logits up to
    float rounding, the same digits, and the same bits every time."""
    x, y = toy_data(2000)
    model = build_model(3, kind)
    train(model, x, y, epochs=1, batch_size=32, learning_rate=0.05, momentum=0.9, seed=0)
    logits, digits = predict(model, x)
    with torch.no_grad():
        expected = model(x)
    assert _use_onednn(model)  # else predict is model(x) and this proves nothing
    assert torch.allclose(logits, expected, rtol=0, atol=1e-5)
    assert not logits.is_mkldnn and logits.shape == (2000, 10)
    assert torch.equal(digits, expected.argmax(dim=1))
    again, _ = predict(model, x)
    assert torch.equal(logits, again)


@pytest.mark.parametrize("parts", [2, 3, 7])
def test_scoring_in_slices_on_threads_gives_the_logits_of_one_pass(parts):
    """The global model is scored in slices, one a core: the same bits as one pass."""
    x, y = toy_data(2001)
    model = build_model(5, "2nn")
    train(model, x, y, epochs=1, batch_size=32, learning_rate=0.05, momentum=0.9, seed=0)
    whole, digits = predict(model, x)
    sliced, sliced_digits = predict(model, x, parts)
    assert torch.equal(sliced, whole) and torch.equal(sliced_digits, digits)
    assert not sliced.requires_grad  # each thread scores without autograd
    assert evaluate(model, x, y, [[1, 2]], parts) == evaluate(model, x, y, [[1, 2]])
