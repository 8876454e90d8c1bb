"""Results as long pandas tables, the shape altair charts and users' own analysis want."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import pandas as pd
import torch

from fedcore.config import format_digits
from fedcore.data import MnistData
from fedcore.partition import ClientPartition
from fedcore.results import ClientResult, ExperimentResult, FederatedResult, RoundResult

FEDERATED = "Federated"
ALL_DIGITS = "all digits"
TRAINED_ALONE = "trained alone"
TRAINED_TOGETHER = "trained together (FedAvg)"
# the lab's accuracy-per-round chart: the federated line and its reference lines
CENTRALIZED = "Centralized (all data pooled)"
ISOLATED_MEAN = "Isolated (mean)"
TARGET = "Target"


def client_name(client: int) -> str:
    return f"Client {client}"


def subset_name(digits: str) -> str:
    """`"1,3,7"` -> `"digits 1,3,7"`, as the test sets are labelled in charts."""
    return f"digits {digits}"


def label_counts_table(
    per_client: Iterable[tuple[int, Sequence[int], Sequence[int]]],
) -> pd.DataFrame:
    """`client, digit, count, excluded` from (client, counts per digit, excluded digits)."""
    return pd.DataFrame(
        [
            {"client": client, "digit": digit, "count": count, "excluded": digit in excluded}
            for client, counts, excluded in per_client
            for digit, count in enumerate(counts)
        ],
        columns=["client", "digit", "count", "excluded"],
    )


def sample_digits(
    data: MnistData, partitions: Sequence[ClientPartition], per_client: int = 6, seed: int = 0
) -> pd.DataFrame:
    """Pixels of a few training images per client: `client, sample, label, row, col, ink`."""
    generator = torch.Generator().manual_seed(seed)
    frames = []
    for part in partitions:
        picks = part.indices[torch.randperm(part.size, generator=generator)[:per_client]]
        images = data.train_images(picks)
        rows, cols = torch.meshgrid(torch.arange(28), torch.arange(28), indexing="ij")
        for sample, (index, image) in enumerate(zip(picks.tolist(), images, strict=True)):
            frames.append(
                pd.DataFrame(
                    {
                        "client": client_name(part.client),
                        "sample": sample,
                        "label": int(data.train_y[index]),
                        "row": rows.flatten().numpy(),
                        "col": cols.flatten().numpy(),
                        "ink": image.flatten().numpy(),
                    }
                )
            )
    return pd.concat(frames, ignore_index=True)


def isolated_losses(results: Sequence[ClientResult]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"model": client_name(r.client), "epoch": epoch, "loss": loss}
            for r in results
            for epoch, loss in enumerate(r.loss, start=1)
        ]
    )


def accuracies(
    isolated: Sequence[ClientResult], federated: FederatedResult | None = None
) -> pd.DataFrame:
    """`model, test_set, accuracy, missing`: every model on every test set.

    `missing` marks a model's own missing digits (always False for the federated model).
    """
    rows = []
    for r in isolated:
        own = format_digits(sorted(r.excluded))
        rows.append(
            {
                "model": client_name(r.client),
                "test_set": ALL_DIGITS,
                "accuracy": r.accuracy,
                "missing": False,
            }
        )
        rows += [
            {
                "model": client_name(r.client),
                "test_set": subset_name(s),
                "accuracy": a,
                "missing": s == own,
            }
            for s, a in r.subset_accuracy.items()
        ]
    if federated is not None:
        rows.append(
            {
                "model": FEDERATED,
                "test_set": ALL_DIGITS,
                "accuracy": federated.accuracy,
                "missing": False,
            }
        )
        rows += [
            {"model": FEDERATED, "test_set": subset_name(s), "accuracy": a, "missing": False}
            for s, a in federated.subset_accuracy.items()
        ]
    return pd.DataFrame(rows)


def confusion(
    model: str, matrix: Sequence[Sequence[int]], missing: Sequence[int] = ()
) -> pd.DataFrame:
    """`model, true, predicted, count, rate, missing_row`: one row per cell of the matrix."""
    counts = torch.tensor(matrix, dtype=torch.float64)
    totals = counts.sum(dim=1, keepdim=True).clamp(min=1)
    rates = counts / totals
    return pd.DataFrame(
        [
            {
                "model": model,
                "true": t,
                "predicted": p,
                "count": int(counts[t, p]),
                "rate": float(rates[t, p]),
                "missing_row": t in missing,
            }
            for t in range(10)
            for p in range(10)
        ]
    )


def isolated_confusions(results: Sequence[ClientResult]) -> pd.DataFrame:
    """Every isolated model's confusion matrix, its missing digits' rows marked."""
    return pd.concat(
        [confusion(client_name(r.client), r.confusion, r.excluded) for r in results],
        ignore_index=True,
    )


def history(rounds: Sequence[RoundResult]) -> pd.DataFrame:
    """`round, test_set, accuracy`: the global model after each round (0 = initial).

    Takes the rounds rather than a finished result, so a chart can fill in live.
    """
    rows = []
    for h in rounds:
        rows.append({"round": h.round, "test_set": ALL_DIGITS, "accuracy": h.accuracy})
        rows += [
            {"round": h.round, "test_set": subset_name(s), "accuracy": a}
            for s, a in h.subset_accuracy.items()
        ]
    return pd.DataFrame(rows)


def federated_client_losses(federated: FederatedResult) -> pd.DataFrame:
    """`model, round, epoch, step, loss`: each client's local training, round after round."""
    rows = []
    for h in federated.history:
        for client, losses in h.client_loss.items():
            for epoch, loss in enumerate(losses, start=1):
                rows.append(
                    {
                        "model": client_name(int(client)),
                        "round": h.round,
                        "epoch": epoch,
                        "step": (h.round - 1) * len(losses) + epoch,
                        "loss": loss,
                    }
                )
    return pd.DataFrame(rows, columns=["model", "round", "epoch", "step", "loss"])


def story_spans(story: pd.DataFrame) -> tuple[str, str]:
    """How the isolated and the federated models score on the missing digits, in
    words: `("0%", "94% to 97%")`."""

    def span(values: pd.Series) -> str:
        low, high = f"{values.min():.0%}", f"{values.max():.0%}"
        return low if low == high else f"{low} to {high}"

    return (
        span(story[story.model == TRAINED_ALONE].accuracy),
        span(story[story.model == TRAINED_TOGETHER].accuracy),
    )


def story(isolated: Sequence[ClientResult], federated: FederatedResult) -> pd.DataFrame:
    """Per client: its isolated model vs the federated model on the digits it never saw."""
    rows = []
    for r in isolated:
        if not r.excluded:
            continue
        own = format_digits(sorted(r.excluded))
        label = f"{client_name(r.client)} (never saw {own})"
        rows.append({"client": label, "model": TRAINED_ALONE, "accuracy": r.missing_accuracy})
        rows.append(
            {
                "client": label,
                "model": TRAINED_TOGETHER,
                "accuracy": federated.subset_accuracy[own],
            }
        )
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ the lab


def split_counts(counts: Sequence[Sequence[int]]) -> pd.DataFrame:
    """`client, digit, count, share, excluded` from a client x digit matrix of training
    images (any split; `ExperimentResult.label_counts`). `share`: of the client's
    images; `excluded`: the client has no image of that digit."""
    rows = []
    for client, per_digit in enumerate(counts, start=1):
        total = max(sum(per_digit), 1)
        rows += [
            {
                "client": client,
                "digit": digit,
                "count": int(count),
                "share": count / total,
                "excluded": count == 0,
            }
            for digit, count in enumerate(per_digit)
        ]
    return pd.DataFrame(rows, columns=["client", "digit", "count", "share", "excluded"])


def cross_accuracy(matrix: Sequence[Sequence[float]]) -> pd.DataFrame:
    """`trained_on, scored_on, accuracy, own`: client i's isolated model (row i of
    `ExperimentResult.cross_accuracy`) on test images drawn with client j's label mix."""
    return pd.DataFrame(
        [
            {"trained_on": i, "scored_on": j, "accuracy": accuracy, "own": i == j}
            for i, row in enumerate(matrix, start=1)
            for j, accuracy in enumerate(row, start=1)
        ],
        columns=["trained_on", "scored_on", "accuracy", "own"],
    )


def federated_rounds(rounds: Sequence[RoundResult]) -> pd.DataFrame:
    """`round, model, accuracy`: the global model on the whole test set after each round."""
    return pd.DataFrame(
        [{"round": h.round, "model": FEDERATED, "accuracy": h.accuracy} for h in rounds],
        columns=["round", "model", "accuracy"],
    )


def reference_lines(result: ExperimentResult) -> pd.DataFrame:
    """`model, accuracy, label, dashed`: what the federated model is measured against:
    the centralized baseline, the isolated models' mean and the target (dashed)."""
    rows = []
    if result.centralized is not None:
        accuracy = result.centralized.accuracy
        rows.append((CENTRALIZED, accuracy, f"centralized {accuracy:.1%}", False))
    if result.isolated:
        accuracy = sum(c.accuracy for c in result.isolated) / len(result.isolated)
        rows.append((ISOLATED_MEAN, accuracy, f"isolated, mean {accuracy:.1%}", False))
    target = result.config.target_accuracy
    rows.append((TARGET, target / 100, f"target {target:g}%", True))
    return pd.DataFrame(rows, columns=["model", "accuracy", "label", "dashed"])


def lab_summary(result: ExperimentResult) -> pd.DataFrame:
    """`measure, value, text`: the lab's numbers in one table (`value`: the number,
    accuracies as fractions; `text`: as the page shows it)."""
    config, rows = result.config, []

    def add(measure: str, value: float | None, text: str | None = None) -> None:
        rows.append({"measure": measure, "value": value, "text": text or f"{value:.1%}"})

    if result.centralized is not None:
        c = result.centralized
        add(f"Centralized baseline (all data pooled, {c.epochs} epochs)", c.accuracy)
    if result.isolated:
        scores = [(r.accuracy, r.client) for r in result.isolated]
        add(f"Isolated models, mean of {len(scores)}", sum(a for a, _ in scores) / len(scores))
        low, high = min(scores), max(scores)
        add(f"Isolated models, lowest (client {low[1]})", low[0])
        add(f"Isolated models, highest (client {high[1]})", high[0])
    federated = result.federated
    if federated is not None:
        add(f"Federated (FedAvg), after {config.num_rounds} rounds", federated.accuracy)
        if federated.subset_accuracy:
            digits, accuracy = min(federated.subset_accuracy.items(), key=lambda kv: kv[1])
            add(f"Federated, worst missing-digit subset ({subset_name(digits)})", accuracy)
        else:
            add("Federated, worst missing-digit subset", None, "no client lacks a digit")
        reached = federated.rounds_to_target
        add(
            f"Rounds to {config.target_accuracy:g}% test accuracy",
            reached,
            str(reached) if reached is not None else f"not reached in {config.num_rounds}",
        )
    total = result.timings.get("total")
    add("Wall time", total, "-" if total is None else f"{total:.1f} s")
    return pd.DataFrame(rows, columns=["measure", "value", "text"])
