"""Results as long pandas tables, the shape altair charts and users' own analysis want."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import pandas as pd
import torch

from fedcore.config import format_digits
from fedcore.data import MnistData
from fedcore.partition import ClientPartition
from fedcore.results import ClientResult, FederatedResult, RoundResult

FEDERATED = "Federated"
ALL_DIGITS = "all digits"
TRAINED_ALONE = "trained alone"
TRAINED_TOGETHER = "trained together (FedAvg)"


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
