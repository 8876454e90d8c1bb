"""A run's results as plain text: the terminal table of `python -m fedcore run`, and
markdown for the page, both rendered from the tables of `fedcore.report.tables`."""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence

import pandas as pd

from fedcore.experiment.config import ExperimentConfig
from fedcore.experiment.results import ExperimentResult, FederatedResult
from fedcore.report import labels, tables
from fedcore.report.labels import percent

NAME_WIDTH = 24  # the model column; a name is cut to one less, so a space always follows
MAX_LISTED_CLIENTS = 20  # clients given a line each; beyond, those the server attacked, the first


def _pct(value: float | None) -> str:
    return percent(value, width=5)  # " 95.8%": the terminal's columns line up


def accuracy_text(table: pd.DataFrame) -> list[str]:
    """The lines of an `accuracy_table` in the terminal: one row per model, one column
    per test set (the isolated models' mean: its accuracy on all digits only)."""
    subsets = tables.subset_columns(table)
    widths = [max(10, len(s) + 4) for s in subsets]
    header = (
        f"{labels.TEXT_MODEL:<{NAME_WIDTH}}{labels.TEXT_TRAIN:>7}{labels.TEXT_FULL:>8}"
        f"{labels.TEXT_OWN_MISSING:>13}"
        + "".join(f"{'[' + s + ']':>{w}}" for s, w in zip(subsets, widths, strict=True))
    )
    lines = [header, "-" * len(header)]
    names = {
        labels.ISOLATED_MEAN_KEY: labels.TEXT_ISOLATED_MEAN,
        labels.FEDERATED_KEY: labels.TEXT_FEDERATED,
        labels.CENTRALIZED_KEY: labels.TEXT_CENTRALIZED,
    }
    for row in table.to_dict("records"):
        if row["key"] == labels.ISOLATED_MEAN_KEY:
            name = names[row["key"]]
            lines.append(f"{name:<{NAME_WIDTH}}{'':>7}{_pct(row[labels.ALL_DIGITS]):>8}")
            continue
        if row["client"] is not None:
            name = labels.text_isolated(row["client"], row["excluded"])[: NAME_WIDTH - 1]
        else:
            name = names[row["key"]]
        size = "" if row[labels.TRAIN_SIZE] is None else row[labels.TRAIN_SIZE]
        lines.append(
            f"{name:<{NAME_WIDTH}}{size!s:>7}{_pct(row[labels.ALL_DIGITS]):>8}"
            f"{_pct(row[labels.OWN_MISSING]):>13}"
            + "".join(
                f"{_pct(row[labels.subset_name(s)]):>{w}}"
                for s, w in zip(subsets, widths, strict=True)
            )
        )
    return lines


def attack_lines(config: ExperimentConfig, federated: FederatedResult) -> list[str]:
    """Who attacked, how often the backdoor worked, and whom the rule kept (attackers
    starred), round by round; nothing without an attack or a rule that chooses."""
    attackers = config.attacker_clients  # sorted
    lines = []
    if attackers:
        who = ", ".join(str(c) for c in attackers)
        lines.append(f"attack: {config.attack} by client(s) {who} of {config.num_clients}")
    if federated.attack_success is not None:
        target = int(config.attack_parameters["target"])
        rounds = ", ".join(f"{h.round}: {percent(h.attack_success)}" for h in federated.history)
        lines.append(f"backdoor success per round (other digits, triggered, called {target}): "
                     f"{rounds}")  # fmt: skip
    kept = [h for h in federated.history if h.kept_clients is not None]
    if kept:
        rounds = "; ".join(
            f"{h.round}: " + ",".join(f"{c}*" if c in attackers else str(c) for c in h.kept_clients)
            for h in kept
        )
        lines.append(f"clients {config.strategy_name} kept per round (* attacker): {rounds}")
    return lines


def digits_text(digits: Sequence[int] | None) -> str:
    if digits is None:
        return "nothing (it saw no update of this client's own)"
    return ",".join(map(str, digits)) or "none"


def leakage_lines(config: ExperimentConfig, federated: FederatedResult) -> list[str]:
    """What the curious server concluded from each client's first update, against the
    truth; nothing without the leakage setting."""
    if federated.leakage is None:
        return []
    lines = [f"what the server learned (leakage {config.leakage}, privacy {config.privacy}):"]
    clients = federated.leakage
    if len(clients) > MAX_LISTED_CLIENTS:  # the clients whose update it attacked, the first
        attacked = [c for c in clients if c.round > 0]
        clients = attacked[:MAX_LISTED_CLIENTS]
        lines.append(
            f"  ({len(attacked):,} of the {len(federated.leakage):,} clients sent an update it "
            f"attacked; the first {len(clients)} of them here, every client in the results file)"
        )
    for c in clients:
        image = (
            f"best reconstruction {c.psnr_db:.1f} dB PSNR, SSIM {c.ssim:.2f} ({c.method}); "
            f"{c.images_recovered} of its {sum(c.label_counts)} images rebuilt to 30 dB"
            if c.psnr_db is not None and c.ssim is not None
            else "no reconstruction"
        )
        lines.append(
            f"  client {c.client}: holds no {digits_text(c.true_missing)}; the server infers "
            f"no {digits_text(c.inferred_missing)}; {image}"
        )
    return lines


def format_table(result: ExperimentResult) -> str:
    """A short text table: one row per model, one column per test set; then the
    federated model's rounds, the models that diverged, the settings and the time taken."""
    lines = accuracy_text(tables.accuracy_table(result))
    config, federated = result.config, result.federated
    if federated is not None:
        rounds = ", ".join(f"{h.round}: {percent(h.accuracy)}" for h in federated.history)
        lines.append(f"global accuracy per round: {rounds}")
        reached = federated.rounds_to_target
        lines.append(
            f"rounds to {config.target_accuracy:g}%: "
            + (str(reached) if reached is not None else f"not reached in {config.num_rounds}")
        )
        lines += attack_lines(config, federated)
        lines += leakage_lines(config, federated)
        lines += [f"failure: {failure}" for failure in federated.failures]
    if result.diverged:
        lines += [f"warning: {line}" for line in result.diverged]
        lines.append(
            "warning: a model that diverged or did not learn scores what a guess scores; "
            + labels.diverged_hint(config)
        )
    timing = ", ".join(f"{phase} {seconds:.1f} s" for phase, seconds in result.timings.items())
    lines.append(f"config: {config.summary()}")
    lines.append(f"time: {timing}")
    return "\n".join(lines)


def markdown_table(
    head: Sequence[str], rows: Iterable[Sequence[object]], bold: int | None = None
) -> str:
    """A table as markdown, the first column left-aligned and the others right-aligned;
    every cell escaped (`<`, `&` and `|` too: names and settings come from files people
    hand us); `bold`: the index of a column written in bold."""

    def line(values: Sequence[object], bold: int | None = None) -> str:
        cells = [html.escape(str(v)).replace("|", "\\|") for v in values]
        if bold is not None:
            cells[bold] = f"**{cells[bold]}**"
        return "| " + " | ".join(cells) + " |"

    rule = "| :--- |" + "".join(" ---: |" for _ in head[1:])
    return "\n".join([line(head), rule, *(line(row, bold) for row in rows)])


def summary_markdown(summary: pd.DataFrame) -> str:
    """`tables.lab_summary` as the page's markdown: `| model or measure | result |`,
    the results in bold."""
    rows = zip(summary.measure, summary.text, strict=True)
    return markdown_table(["model or measure", "result"], rows, bold=1)
