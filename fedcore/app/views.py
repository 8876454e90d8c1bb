"""Pieces of the page made from settings and results: callouts, the lab's tables and
charts, the views inside the rounds. The notebook places them under its words."""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence

import marimo as mo
import pandas as pd

from fedcore.experiment.results import ClientResult, ExperimentResult
from fedcore.experiment.settings import BY_NAME
from fedcore.experiment.specs import default_exclusions, defense_name, format_digits
from fedcore.privacy.summary import epsilon_spent
from fedcore.report import charts, labels, tables, text
from fedcore.report.labels import percent


def refusal(error: Exception, what: str = "These settings") -> mo.Html:
    """Settings the config refused, in its words: a callout, not a traceback."""
    reason = html.escape(str(error).rstrip("."), quote=False)  # it may quote the address
    return mo.callout(mo.md(f"**{what} cannot run:** {reason}."), kind="danger")


def shown(*parts: object) -> list[object]:
    """The parts that are there: a view that does not apply is None, and marimo would
    write "None" for it."""
    return [part for part in parts if part is not None]


def warning_list(title: str, lines: Sequence[str], kind: str = "warn") -> mo.Html | None:
    """`title` (markdown) and one bullet per line (text, escaped), as a warning; None
    without lines."""
    if not lines:
        return None
    bullets = "\n".join(f"- {html.escape(x, quote=False)}" for x in lines)
    return mo.callout(mo.md(f"{title}\n\n{bullets}"), kind=kind)


def failures_callout(failures: Sequence[str]) -> mo.Html | None:
    """The client updates that failed in a federated run, if any."""
    return warning_list("**Some client updates failed:**", failures)


def diverged_callout(result: ExperimentResult) -> mo.Html | None:
    """The models of a run that diverged or did not learn (`ExperimentResult.diverged`),
    if any: their numbers mean nothing, and the page says so above them."""
    return warning_list(
        "**This run diverged or did not learn:** its accuracies are those of a model that "
        f"guesses: {html.escape(labels.diverged_hint(result.config))}.",
        result.diverged,
        kind="danger",
    )


def excluded_by_all_warning(digits: Sequence[int]) -> mo.Html | None:
    """The story's settings leave `digits` to no client: say so before anything runs."""
    if not digits:
        return None
    return mo.callout(
        mo.md(
            f"**Every client excludes {format_digits(digits)}.** No model, federated or not, "
            "can learn a digit that no client has: expect 0% on it everywhere."
        ),
        kind="warn",
    )


def unlearnable_warning(digits: Sequence[int]) -> mo.Html | None:
    """A lab run's split left `digits` in nobody's data: say why they score 0%."""
    if not digits:
        return None
    return mo.callout(
        mo.md(
            f"**No client has any image of {', '.join(map(str, digits))}.** No model, "
            "federated or centralized, can learn a digit that is in nobody's data: expect "
            "0% on it everywhere."
        ),
        kind="warn",
    )


def isolated_lines(isolated: Sequence[ClientResult]) -> str:
    """One line per client's own model: its accuracy, and on the digits it never saw."""
    return "\n".join(
        f"- **Client {r.client}** (never saw {', '.join(map(str, r.excluded)) or 'nothing'}): "
        f"{percent(r.accuracy)} on all test digits, "
        + (
            f"**{percent(r.missing_accuracy)}** on its missing digits"
            if r.excluded
            else "no missing digits"
        )
        for r in isolated
    )


def cycled_exclusions(num_clients: int) -> str:
    """`"1,3,7 for clients 1, 4; 2,5,8 for client 2; ..."`: the lab's exclusions."""
    groups: dict[tuple[int, ...], list[str]] = {}
    for client, digits in enumerate(default_exclusions(num_clients), start=1):
        groups.setdefault(digits, []).append(str(client))
    return "; ".join(
        f"{format_digits(d)} for client{'s' if len(c) > 1 else ''} {', '.join(c)}"
        for d, c in groups.items()
    )


def settings_help(names: Sequence[str]) -> mo.Html:
    """What the settings `names` mean, from the settings table."""
    return mo.md("\n".join(f"- **{BY_NAME[n].label}**: {BY_NAME[n].help}." for n in names))


def lab_summary_table(result: ExperimentResult) -> mo.Html:
    """The lab's results, one measure a row (`tables.lab_summary`), as a markdown table."""
    return mo.md(text.summary_markdown(tables.lab_summary(result)))


def lab_charts(result: ExperimentResult) -> list[object]:
    """The lab's accuracy per round against the baselines, and its cross matrix if any."""
    drawn: list[object] = [
        charts.rounds_with_references_chart(
            tables.federated_rounds(result.federated.history), tables.reference_lines(result)
        )
    ]
    if result.cross_accuracy is not None:
        drawn.append(
            charts.cross_accuracy_chart(
                tables.cross_accuracy(result.cross_accuracy), result.config.num_clients
            )
        )
    return drawn


def round_views(result: ExperimentResult) -> list[object]:
    """What the strategy recorded in each round, a chart each. Results saved before a
    measure was recorded have empty tables: a line says so instead of its chart."""
    config, history = result.config, result.federated.history

    def chart_or_note(table: pd.DataFrame, draw: Callable, missing: str) -> object:
        return draw(table) if len(table) else mo.md(f"_{missing}_")

    views = [
        chart_or_note(tables.digit_rounds(history), charts.digit_rounds_chart,
                      "No accuracy per digit in these results (saved before it was recorded)."),
        chart_or_note(tables.client_drift(history),
                      lambda drift: charts.client_drift_chart(drift, config.num_clients),
                      "No client updates recorded in these results (saved before they were)."),
        chart_or_note(tables.communication(history), charts.communication_chart,
                      "No communication recorded in these results (saved before it was)."),
    ]  # fmt: skip
    if config.privacy_kind != "off":
        delta = config.privacy_parameters["delta"]
        views.append(
            chart_or_note(
                tables.privacy_spent(history),
                lambda spent: charts.privacy_chart(spent, delta),
                "No epsilon recorded in these results.",
            )  # fmt: skip
        )
    if config.attacker_clients or result.federated.history[-1].kept_clients is not None:
        views[:0] = attack_views(result)  # first: under an attack, what matters most
    answers = tables.clients_answered(history)
    if config.dropout or result.federated.failures or answers.missing.any():
        views.append(
            chart_or_note(
                answers,
                charts.clients_answered_chart,
                "How many clients answered is not recorded in these results.",
            )  # fmt: skip
        )
    return views


def attack_views(result: ExperimentResult) -> list[object]:
    """Under an attack or a rule that chooses updates: whom the rule trusted each round
    (attackers marked) and the accuracy (and a backdoor's success) per round."""
    config, history = result.config, result.federated.history
    trust = tables.trust(history[1:], config.attacker_clients)
    views: list[object] = [charts.attack_rounds_chart(tables.attack_rounds(history))]
    if len(trust):
        views.insert(0, charts.trust_chart(trust, config.strategy_name))
    return views


# What each defense hides from the curious server, and what it does not (the chapter).
DEFENSE_NOTES = {
    "off": "No defense: the server reads every client's update as it was sent.",
    "secagg": "**SecAgg+** (Flower's `SecAggPlusWorkflow` and `secaggplus_mod`): the clients "
    "mask their updates so that the server can only add them up. It sees no client's own "
    "update, so it has nothing of any one client to attack; the round records hold no "
    "per-client update norm or cosine, for the same reason. The sum itself is no secret: "
    "with few clients, it still says much about all of them together.",
    "local": "**Local DP** (Flower's `LocalDpMod`): each client clips its update and adds "
    "Gaussian noise *before* sending it, so the server only ever sees noisy updates. Its "
    "epsilon bounds what one update reveals; every round a client sends another.",
    "server": "**Central DP** (Flower's server-side fixed clipping): the server clips the "
    "updates and adds noise to their *sum*. That protects the released model, not the "
    "updates: the server still reads each one in the clear, as this attack does.",
    "client": "**Central DP with client-side clipping**: the clients clip, the server adds "
    "noise to the sum. The model is protected; the clipped updates reach the server in "
    "the clear.",
}


def chapter_summary(result: ExperimentResult) -> str:
    """One line: the defense, the global model's accuracy, the epsilon it spent."""
    config, federated = result.config, result.federated
    epsilon, bounds = epsilon_spent(config, federated)
    spent = f"; epsilon {epsilon:.3g} for {bounds}" if epsilon is not None else ""
    return (f"Defense {defense_name(config.privacy_spec)}: the global model reaches "
            f"{percent(federated.accuracy)} on the test set{spent}.")  # fmt: skip


def leakage_views(result: ExperimentResult) -> list[object]:
    """What the curious server learned of each client from its first update: a table
    against the truth, the label counts it estimated, and the images it rebuilt."""
    leaked = result.federated.leakage or []
    config = result.config
    views: list[object] = [
        mo.md(DEFENSE_NOTES[config.privacy_kind]),
        mo.ui.table(tables.leakage(leaked), selection=None, show_download=False),
    ]
    counts = tables.leakage_counts(leaked)
    if (counts["kind"] == "inferred").any():
        views.append(charts.leakage_counts_chart(counts))
    pixels = tables.reconstructions(leaked)
    if len(pixels):
        views.append(charts.reconstruction_chart(pixels))
    elif config.model in ("cnn", "lenet") and config.leakage == "analytic":
        note = "a CNN's first layer is a convolution: try the optimise attack"
        views.append(mo.md(f"_No reconstruction: {note}._"))
    return views


def row(*elements: object, gap: float = 2) -> mo.Html:
    """Controls side by side, wrapping on a narrow page; a None is left out."""
    return mo.hstack(shown(*elements), justify="start", gap=gap, wrap=True)


def data_error(error: Exception) -> mo.Html:
    """MNIST could not be loaded: why, and how to point the page at a local copy."""
    return mo.callout(
        mo.md(
            f"**MNIST could not be loaded.** {html.escape(str(error), quote=False)}\n\n"
            "Offline? Start the app with `FEDCORE_DATA_DIR=/path/to/mnist` "
            "(a folder with the four IDX files), or pass `-- --data-dir /path/to/mnist`."
        ),
        kind="danger",
    )
