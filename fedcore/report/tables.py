"""Results as long pandas tables, the shape altair charts and users' own analysis want."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import pandas as pd
import torch

from fedcore.data.mnist import MnistData
from fedcore.data.partition import ClientPartition, client_label_counts
from fedcore.experiment.config import ExperimentConfig
from fedcore.experiment.results import (
    CentralizedResult,
    ClientLeakage,
    ClientResult,
    ExperimentResult,
    FederatedResult,
    RoundResult,
)
from fedcore.experiment.settings import BY_NAME, SETTINGS
from fedcore.experiment.specs import defense_name, format_digits
from fedcore.privacy.summary import absent_in_round, epsilon_spent, leakage_scores, named_exactly
from fedcore.report.labels import (  # the labels, also read from here (`tables.FEDERATED`)
    ALL_DIGITS,
    CENTRALIZED,
    CENTRALIZED_KEY,
    FEDERATED,
    FEDERATED_KEY,
    ISOLATED_MEAN,
    ISOLATED_MEAN_KEY,
    OWN_MISSING,
    RECEIVED,
    SENT,
    TARGET,
    TRAIN_SIZE,
    TRAINED_ALONE,
    TRAINED_TOGETHER,
    client_alone,
    client_key,
    client_name,
    percent,
    subset_digits,
    subset_name,
)


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


def label_counts(labels: torch.Tensor, partitions: Sequence[ClientPartition]) -> pd.DataFrame:
    """Long table `client, digit, count, excluded` (every digit, zeros included) for charts."""
    return label_counts_table(
        (part.client, counts, part.excluded)
        for part, counts in zip(partitions, client_label_counts(labels, partitions), strict=True)
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
    isolated: Sequence[ClientResult],
    federated: FederatedResult | None = None,
    centralized: CentralizedResult | None = None,
) -> pd.DataFrame:
    """`model, test_set, accuracy, missing`: every model on every test set.

    `missing` marks a model's own missing digits (always False for the federated
    and the centralized model, which see every client's digits).
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
    if centralized is not None:
        scores = {ALL_DIGITS: centralized.accuracy} | {
            subset_name(s): a for s, a in centralized.subset_accuracy.items()
        }
        rows += [
            {"model": CENTRALIZED, "test_set": name, "accuracy": a, "missing": False}
            for name, a in scores.items()
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
        low, high = percent(values.min(), digits=0), percent(values.max(), digits=0)
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


# ------------------------------------------------------------ the accuracy table
# One table, several renderers: the terminal (`report.text.format_table`), the HTML
# report (`report.html.accuracy_table`) and the page (`lab_summary`, built from it).

MODEL_IDS = ["key", "model", "client", "excluded"]


def accuracy_table(result: ExperimentResult) -> pd.DataFrame:
    """Every model on every test set, one row per model: each client's isolated model,
    the isolated models' mean, the federated model, the centralized baseline (those
    the results have, in that order).

    Columns: `key` (a stable id: `"client 1"`, `"isolated mean"`, `"federated"`,
    `"centralized"`), `model` (its name to read, `"Client 1 alone"`), `client` and
    `excluded` (an isolated model's client and the digits it lacks, as a tuple; None
    for the others), `train images` (None for the federated model and the mean),
    `all digits`, `own missing digits` (an isolated model on the digits its client
    lacks; None otherwise), then one column per missing-digit subset
    (`"digits 1,3,7"`, in `result.subsets` order; `subset_columns`). Accuracies are
    fractions, None where not measured, and stay the results' own Python numbers
    (dtype object), so renderers can show them exactly.
    """
    subsets = result.subsets
    rows = []

    def add(key, model, client, excluded, size, accuracy, own, scores: dict) -> None:
        rows.append([key, model, client, excluded, size, accuracy, own]
                    + [scores.get(s) for s in subsets])  # fmt: skip

    for c in result.isolated or []:
        add(client_key(c.client), client_alone(c.client), c.client, tuple(c.excluded),
            c.train_size, c.accuracy, c.missing_accuracy, c.subset_accuracy)  # fmt: skip
    if result.isolated:
        mean = sum(c.accuracy for c in result.isolated) / len(result.isolated)
        add(ISOLATED_MEAN_KEY, ISOLATED_MEAN, None, None, None, mean, None, {})
    if (f := result.federated) is not None:
        add(FEDERATED_KEY, FEDERATED, None, None, None, f.accuracy, None, f.subset_accuracy)
    if (c := result.centralized) is not None:
        add(CENTRALIZED_KEY, CENTRALIZED, None, None, c.train_size, c.accuracy, None,
            c.subset_accuracy)  # fmt: skip
    columns = [*MODEL_IDS, TRAIN_SIZE, ALL_DIGITS, OWN_MISSING, *map(subset_name, subsets)]
    return pd.DataFrame(rows, columns=columns, dtype=object)


def subset_columns(table: pd.DataFrame) -> list[str]:
    """The missing-digit subsets (`"1,3,7"`) of an `accuracy_table`, in its column order."""
    columns = list(table.columns)
    return [subset_digits(c) for c in columns[columns.index(OWN_MISSING) + 1 :]]


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
        rows.append((CENTRALIZED, accuracy, f"centralized {percent(accuracy)}", False))
    if result.isolated:
        accuracy = sum(c.accuracy for c in result.isolated) / len(result.isolated)
        rows.append((ISOLATED_MEAN, accuracy, f"isolated, mean {percent(accuracy)}", False))
    target = result.config.target_accuracy
    rows.append((TARGET, target / 100, f"target {target:g}%", True))
    return pd.DataFrame(rows, columns=["model", "accuracy", "label", "dashed"])


MEGABYTE = 1_000_000


def digit_rounds(rounds: Sequence[RoundResult]) -> pd.DataFrame:
    """`round, digit, accuracy`: the global model's test accuracy on each digit after
    each round (0 = initial weights), from `RoundResult.digit_accuracy`; rounds
    without it (older results) are left out."""
    return pd.DataFrame(
        [
            {"round": h.round, "digit": digit, "accuracy": accuracy}
            for h in rounds
            for digit, accuracy in enumerate(h.digit_accuracy)
        ],
        columns=["round", "digit", "accuracy"],
    )


def client_drift(rounds: Sequence[RoundResult]) -> pd.DataFrame:
    """`round, client, cosine, norm`: each client's update in each round: the cosine
    between it and the aggregated update (low: the client pulls away) and its L2
    norm; None where a round recorded one but not the other (no aggregate)."""
    rows = []
    for h in rounds:
        for client in sorted({*h.update_norm, *h.update_cosine}, key=int):
            rows.append(
                {
                    "round": h.round,
                    "client": int(client),
                    "cosine": h.update_cosine.get(client),
                    "norm": h.update_norm.get(client),
                }
            )
    return pd.DataFrame(rows, columns=["round", "client", "cosine", "norm"])


def communication(rounds: Sequence[RoundResult]) -> pd.DataFrame:
    """`round, direction, messages, bytes, megabytes, cumulative_megabytes`: the model
    weights sent to the sampled clients and the updates received back, per round;
    rounds that recorded nothing (round 0, older results) are left out."""
    rows = []
    totals = {SENT: 0, RECEIVED: 0}
    for h in rounds:
        if not (h.messages_sent or h.messages_received):
            continue
        for direction, messages, size in (
            (SENT, h.messages_sent, h.bytes_sent),
            (RECEIVED, h.messages_received, h.bytes_received),
        ):
            totals[direction] += size
            rows.append(
                {
                    "round": h.round,
                    "direction": direction,
                    "messages": messages,
                    "bytes": size,
                    "megabytes": size / MEGABYTE,
                    "cumulative_megabytes": totals[direction] / MEGABYTE,
                }
            )
    return pd.DataFrame(
        rows,
        columns=["round", "direction", "messages", "bytes", "megabytes", "cumulative_megabytes"],
    )


def privacy_spent(rounds: Sequence[RoundResult]) -> pd.DataFrame:
    """`round, epsilon`: the privacy spent so far after each round (differential
    privacy only; rounds without an epsilon are left out)."""
    return pd.DataFrame(
        [{"round": h.round, "epsilon": h.epsilon} for h in rounds if h.epsilon is not None],
        columns=["round", "epsilon"],
    )


def _digits_or_unseen(digits: Sequence[int] | None) -> str:
    return "(not seen)" if digits is None else format_digits(digits) or "none"


def leakage(clients: Sequence[ClientLeakage]) -> pd.DataFrame:
    """One row per client: the digits it lacks, those the curious server says it lacks
    from its update, whether they agree, and the best reconstruction's scores."""
    return pd.DataFrame(
        [
            {
                "client": client_name(c.client),
                "holds no": _digits_or_unseen(c.true_missing),
                "images that round": sum(c.label_counts),
                "none of them shows": _digits_or_unseen(absent_in_round(c)),
                "the server infers no": _digits_or_unseen(c.inferred_missing),
                "named exactly": "-" if c.inferred_missing is None else
                ("yes" if named_exactly(c) else "no"),
                "best PSNR (dB)": None if c.psnr_db is None else round(c.psnr_db, 1),
                "SSIM": None if c.ssim is None else round(c.ssim, 2),
                "images rebuilt (30 dB)": c.images_recovered,
            }
            for c in clients
        ]
    )  # fmt: skip


def leakage_counts(clients: Sequence[ClientLeakage]) -> pd.DataFrame:
    """`client, digit, images, kind`: each client's images per digit in the round
    attacked (`kind` "real") and the server's estimate ("inferred"), where it made one."""
    rows = []
    for c in clients:
        for kind, counts in (("real", c.label_counts), ("inferred", c.label_counts_inferred)):
            for digit, count in enumerate(counts or []):
                rows.append({"client": client_name(c.client), "digit": digit, "images": count,
                             "kind": kind})  # fmt: skip
    return pd.DataFrame(rows, columns=["client", "digit", "images", "kind"])


RECONSTRUCTED, MATCHED = "rebuilt", "real"


def reconstructions(clients: Sequence[ClientLeakage]) -> pd.DataFrame:
    """`client, image, row, col, ink`: each client's best reconstruction and the real
    training image it is closest to, pixel by pixel (ink in [0, 1])."""
    rows, cols = (t.flatten().tolist() for t in torch.meshgrid(
        torch.arange(28), torch.arange(28), indexing="ij"))  # fmt: skip
    frames = [
        pd.DataFrame(
            {
                "client": client_name(c.client),
                "image": image,
                "row": rows,
                "col": cols,
                "ink": [value / 255 for value in pixels],
            }
        )  # fmt: skip
        for c in clients
        if c.reconstruction is not None and c.matched is not None
        for image, pixels in ((RECONSTRUCTED, c.reconstruction), (MATCHED, c.matched))
    ]
    columns = ["client", "image", "row", "col", "ink"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def defenses(runs: Iterable[tuple[str, ExperimentResult]]) -> pd.DataFrame:
    """One row per run with the curious server's attack: its defense and local training,
    the global model's accuracy, the epsilon, and what the server learned."""
    rows = []
    for name, result in runs:
        config, federated = result.config, result.federated
        if federated is None or federated.leakage is None:
            continue
        scores = leakage_scores(federated)
        epsilon, _ = epsilon_spent(config, federated)
        rows.append({
            "run": name,
            "defense": defense_name(config.privacy_spec),
            "batch": config.batch_size,
            "images a round": config.local_steps * config.batch_size or "all",
            "epochs": config.local_epochs,
            "accuracy": percent(federated.accuracy),
            "epsilon": "-" if epsilon is None else f"{epsilon:.3g}",
            "missing digits named": f"{scores['missing_named']} of {len(federated.leakage)}",
            "best PSNR (dB)": "-" if scores["best_psnr_db"] is None
            else f"{scores['best_psnr_db']:.1f}",
            "images rebuilt": scores["images_recovered"],
        })  # fmt: skip
    return pd.DataFrame(rows)


def trust(rounds: Sequence[RoundResult], attackers: Sequence[int]) -> pd.DataFrame:
    """`round, client, role, kept`: per round, each client that sent an update, whether
    it is an attacker (`role`) and whether the rule aggregated its update (`kept`:
    "kept" or "dropped"; "all kept" for a rule that takes every update)."""
    rows = []
    for h in rounds:
        for client in sorted(h.update_norm, key=int):
            number = int(client)
            if h.kept_clients is None:
                kept = "all kept"
            else:
                kept = "kept" if number in h.kept_clients else "dropped"
            role = "attacker" if number in attackers else "honest"
            rows.append({"round": h.round, "client": number, "role": role, "kept": kept})
    return pd.DataFrame(rows, columns=["round", "client", "role", "kept"])


def attack_rounds(rounds: Sequence[RoundResult]) -> pd.DataFrame:
    """`round, measure, value`: the global model's test accuracy after each round and,
    under a backdoor, the attack's success (rounds without it leave it out)."""
    rows = []
    for h in rounds:
        rows.append({"round": h.round, "measure": "test accuracy", "value": h.accuracy})
        if h.attack_success is not None:
            rows.append(
                {"round": h.round, "measure": "backdoor success", "value": h.attack_success}
            )
    return pd.DataFrame(rows, columns=["round", "measure", "value"])


def clients_answered(rounds: Sequence[RoundResult]) -> pd.DataFrame:
    """`round, sampled, answered, missing`: clients asked to train in each round and
    those whose update came back (dropout, failures); rounds that recorded no
    messages (round 0, older results) are left out."""
    return pd.DataFrame(
        [
            {
                "round": h.round,
                "sampled": h.messages_sent,
                "answered": h.messages_received,
                "missing": h.messages_sent - h.messages_received,
            }
            for h in rounds
            if h.messages_sent
        ],
        columns=["round", "sampled", "answered", "missing"],
    )


def _megabytes(size: float) -> str:
    return f"{size / MEGABYTE:,.1f} MB"


def lab_summary(result: ExperimentResult) -> pd.DataFrame:
    """`measure, value, text`: the lab's numbers in one table (`value`: the number,
    accuracies as fractions; `text`: as the page shows it)."""
    config, rows = result.config, []

    def add(measure: str, value: float | None, text: str | None = None) -> None:
        rows.append({"measure": measure, "value": value, "text": text or percent(value)})

    models = accuracy_table(result)
    by_key = {row["key"]: row for row in models.to_dict("records")}
    if result.centralized is not None:
        epochs = result.centralized.epochs
        add(
            f"Centralized baseline (all data pooled, {epochs} epochs)",
            by_key[CENTRALIZED_KEY][ALL_DIGITS],
        )
    if result.isolated:
        scores = [
            (row[ALL_DIGITS], row["client"]) for row in by_key.values() if row["client"] is not None
        ]
        add(f"Isolated models, mean of {len(scores)}", by_key[ISOLATED_MEAN_KEY][ALL_DIGITS])
        low, high = min(scores), max(scores)
        add(f"Isolated models, lowest (client {low[1]})", low[0])
        add(f"Isolated models, highest (client {high[1]})", high[0])
    federated = result.federated
    if federated is not None:
        rule = "FedAvg" if config.strategy == "fedavg" else config.strategy
        row = by_key[FEDERATED_KEY]
        add(f"Federated ({rule}), after {config.num_rounds} rounds", row[ALL_DIGITS])
        subsets = [(digits, row[subset_name(digits)]) for digits in subset_columns(models)]
        if subsets:
            digits, accuracy = min(subsets, key=lambda kv: kv[1])
            add(f"Federated, worst missing-digit subset ({subset_name(digits)})", accuracy)
        else:
            add("Federated, worst missing-digit subset", None, "no client lacks a digit")
        reached = federated.rounds_to_target
        add(
            f"Rounds to {config.target_accuracy:g}% test accuracy",
            reached,
            str(reached) if reached is not None else f"not reached in {config.num_rounds}",
        )
        history = federated.history
        sent = sum(h.bytes_sent for h in history)
        received = sum(h.bytes_received for h in history)
        messages = sum(h.messages_sent + h.messages_received for h in history)
        if messages:
            add(
                "Communication, all rounds",
                sent + received,
                f"{_megabytes(sent)} sent, {_megabytes(received)} received, {messages} messages",
            )
        spent = [h.epsilon for h in history if h.epsilon is not None]
        if spent:
            delta = config.privacy_parameters.get("delta")
            add(
                f"Privacy spent: epsilon (delta {delta:g})" if delta else "Privacy spent: epsilon",
                spent[-1],
                f"{spent[-1]:.2f}",
            )
    total = result.timings.get("total")
    add("Wall time", total, "-" if total is None else f"{total:.1f} s")
    return pd.DataFrame(rows, columns=["measure", "value", "text"])


# ------------------------------------------------------------- runs side by side
# Shared by the app's "Compare runs" and the HTML report of several runs. A run is
# `(name, result)`; the names of the runs compared together are all different.

Run = tuple[str, ExperimentResult]
NO_EXCLUSIONS = "none"


def run_label(config: ExperimentConfig) -> str:
    """A run's main settings in words: `"dirichlet:0.1, 10 clients, mlp, 3 rounds of
    1 epoch"`, then the strategy, privacy and dropout where they are not the defaults
    (`", fedprox:mu=0.1, privacy server:noise=0.5,clip=5,delta=1e-05, dropout 0.2"`)."""
    rounds = f"{config.num_rounds} round{'s' if config.num_rounds != 1 else ''}"
    epochs = f"{config.local_epochs} epoch{'s' if config.local_epochs != 1 else ''}"
    extras = [
        config.strategy if config.strategy != "fedavg" else "",
        f"privacy {config.privacy}" if config.privacy_kind != "off" else "",
        f"dropout {config.dropout:g}" if config.dropout else "",
        f"batch {config.batch_size}" if config.batch_size != BY_NAME["batch_size"].default else "",
        f"{config.local_steps} batches a round" if config.local_steps else "",
        f"leakage {config.leakage}" if config.leakage != "off" else "",
    ]
    return ", ".join(
        [config.split, f"{config.num_clients} clients", config.model, f"{rounds} of {epochs}"]
        + [extra for extra in extras if extra]
    )


def _setting_text(config: ExperimentConfig, name: str) -> str:
    """A setting as the CLI and Flower spell it (`"1,3,7;2,5,8"`, `0.01`)."""
    value = config.to_run_config()[BY_NAME[name].key]
    return str(value) if value != "" else NO_EXCLUSIONS


def differing_settings(runs: Sequence[Run]) -> pd.DataFrame:
    """`setting, label`, then one column per run (its name): every setting whose value
    differs between the runs, as text, in the settings table's order; no rows when
    the runs have the same settings. The data folder is not compared."""
    names = [s.name for s in SETTINGS if s.name != "data_dir"]
    rows = []
    for name in names:
        values = [_setting_text(result.config, name) for _, result in runs]
        if len(set(values)) > 1:
            rows.append(
                {"setting": name, "label": BY_NAME[name].label}
                | dict(zip((run for run, _ in runs), values, strict=True))
            )
    return pd.DataFrame(rows, columns=["setting", "label", *(run for run, _ in runs)])


def runs_history(runs: Sequence[Run]) -> pd.DataFrame:
    """`run, round, accuracy`: each run's global model on the whole test set after each
    round (0 = initial weights), for `charts.runs_history_chart`; runs without a
    federated model are left out."""
    return pd.DataFrame(
        [
            {"run": name, "round": h.round, "accuracy": h.accuracy}
            for name, result in runs
            if result.federated is not None
            for h in result.federated.history
        ],
        columns=["run", "round", "accuracy"],
    )


def runs_final_accuracies(runs: Sequence[Run]) -> pd.DataFrame:
    """`model, test_set`, then one column per run (its name): the final federated model
    on all digits and on every missing-digit subset any of the runs has, then the
    centralized baseline and the isolated models' mean on all digits. A run without
    that model or subset has None; a row no run has is left out."""
    subsets: list[str] = []
    for _, result in runs:
        if result.federated is not None:
            subsets += [s for s in result.federated.subset_accuracy if s not in subsets]

    def federated(subset: str | None):
        def score(result: ExperimentResult) -> float | None:
            if result.federated is None:
                return None
            if subset is None:
                return result.federated.accuracy
            return result.federated.subset_accuracy.get(subset)

        return score

    def centralized(result: ExperimentResult) -> float | None:
        return None if result.centralized is None else result.centralized.accuracy

    def isolated_mean(result: ExperimentResult) -> float | None:
        isolated = result.isolated
        return sum(c.accuracy for c in isolated) / len(isolated) if isolated else None

    measures = [
        (FEDERATED, ALL_DIGITS, federated(None)),
        *[(FEDERATED, subset_name(s), federated(s)) for s in subsets],
        (CENTRALIZED, ALL_DIGITS, centralized),
        (ISOLATED_MEAN, ALL_DIGITS, isolated_mean),
    ]
    rows = []
    for model, test_set, score in measures:
        values = {name: score(result) for name, result in runs}
        if any(v is not None for v in values.values()):
            rows.append({"model": model, "test_set": test_set} | values)
    return pd.DataFrame(
        rows, columns=["model", "test_set", *(name for name, _ in runs)], dtype=object
    )
