"""Altair charts: functions from the tables in `fedcore.tables` to charts.

Every chart colours models the same way (`model_colors`): one colour per
client, and a dark one for the federated model, so a reader follows
"Client 2" from the split to the confusion matrices without a legend hunt.
"""

from __future__ import annotations

import altair as alt
import pandas as pd

from fedcore.tables import ALL_DIGITS, FEDERATED, TRAINED_ALONE, TRAINED_TOGETHER, client_name

PALETTE = ["#4c78a8", "#f58518", "#54a24b", "#b279a2", "#e45756",
           "#72b7b2", "#eeca3b", "#9d755d", "#ff9da6", "#bab0ac"]  # fmt: skip
FEDERATED_COLOR = "#1b1b3a"
MISSING_COLOR = "#d62728"
PERCENT = ".1%"


def model_colors(num_clients: int, federated: bool = True) -> alt.Scale:
    domain = [client_name(i) for i in range(1, num_clients + 1)]
    colors = PALETTE[:num_clients]
    if federated:
        domain, colors = [*domain, FEDERATED], [*colors, FEDERATED_COLOR]
    return alt.Scale(domain=domain, range=colors)


def label_counts_chart(counts: pd.DataFrame, num_clients: int) -> alt.Chart:
    """How many training images of each digit every client holds (gaps: excluded digits)."""
    data = counts.assign(model=counts["client"].map(client_name))
    return (
        alt.Chart(data, title="Training images per digit, per client")
        .mark_bar()
        .encode(
            x=alt.X("digit:O", title="digit", axis=alt.Axis(labelAngle=0)),
            xOffset=alt.XOffset("model:N", sort=None),
            y=alt.Y("count:Q", title="training images"),
            color=alt.Color(
                "model:N", title="client", scale=model_colors(num_clients, federated=False)
            ),
            tooltip=["model:N", "digit:O", "count:Q", alt.Tooltip("excluded:N", title="excluded")],
        )
        .properties(width=560, height=220)
    )


def sample_digits_chart(pixels: pd.DataFrame) -> alt.FacetChart:
    """A few training images of every client, drawn from their pixels."""
    inked = pixels[pixels["ink"] > 0.05]  # blank pixels are the white background
    return (
        alt.Chart(inked)
        .mark_rect()
        .encode(
            x=alt.X("col:O", axis=None, scale=alt.Scale(domain=list(range(28)))),
            y=alt.Y("row:O", axis=None, scale=alt.Scale(domain=list(range(28)))),
            color=alt.Color("ink:Q", scale=alt.Scale(scheme="greys", domain=[0, 1]), legend=None),
            tooltip=["client:N", "label:O"],
        )
        .properties(width=56, height=56)
        .facet(
            row=alt.Row("client:N", title=None, header=alt.Header(labelAngle=0, labelAlign="left")),
            column=alt.Column("sample:O", title=None, header=alt.Header(labels=False)),
        )
        .properties(title="Sample training images per client")
    )


def loss_chart(losses: pd.DataFrame, num_clients: int, title: str) -> alt.Chart:
    return (
        alt.Chart(losses, title=title)
        .mark_line(point=True)
        .encode(
            x=alt.X("epoch:Q", title="epoch", axis=alt.Axis(tickMinStep=1, format="d")),
            y=alt.Y("loss:Q", title="mean training loss"),
            color=alt.Color(
                "model:N", title="model", scale=model_colors(num_clients, federated=False)
            ),
            tooltip=["model:N", "epoch:Q", alt.Tooltip("loss:Q", format=".4f")],
        )
        .properties(width=420, height=240)
    )


def federated_loss_chart(losses: pd.DataFrame, num_clients: int) -> alt.LayerChart:
    """Each client's local loss, epoch after epoch across rounds; rules mark new rounds."""
    lines = (
        alt.Chart(losses)
        .mark_line(point=True)
        .encode(
            x=alt.X(
                "step:Q", title="local epoch (all rounds)", axis=alt.Axis(tickMinStep=1, format="d")
            ),
            y=alt.Y("loss:Q", title="mean training loss"),
            color=alt.Color(
                "model:N", title="model", scale=model_colors(num_clients, federated=False)
            ),
            detail="round:O",
            tooltip=["model:N", "round:O", "epoch:Q", alt.Tooltip("loss:Q", format=".4f")],
        )
    )
    starts = losses.groupby("round", as_index=False)["step"].min()
    rules = alt.Chart(starts).mark_rule(strokeDash=[4, 4], color="#999").encode(x="step:Q")
    return alt.layer(rules, lines, title="Clients' training loss in each round").properties(
        width=420, height=240
    )


def accuracy_chart(accuracies: pd.DataFrame, num_clients: int) -> alt.Chart:
    """Every model on the full test set and on each missing-digit subset."""
    order = [ALL_DIGITS, *sorted(set(accuracies["test_set"]) - {ALL_DIGITS})]
    return (
        alt.Chart(accuracies, title="Test accuracy: all digits, and each set of missing digits")
        .mark_bar()
        .encode(
            x=alt.X("test_set:N", title="test set", sort=order, axis=alt.Axis(labelAngle=0)),
            xOffset=alt.XOffset("model:N", sort=None),
            y=alt.Y(
                "accuracy:Q",
                title="accuracy",
                axis=alt.Axis(format="%"),
                scale=alt.Scale(domain=[0, 1]),
            ),
            color=alt.Color("model:N", title="model", scale=model_colors(num_clients)),
            stroke=alt.condition("datum.missing", alt.value(MISSING_COLOR), alt.value(None)),
            strokeWidth=alt.condition("datum.missing", alt.value(2), alt.value(0)),
            tooltip=[
                "model:N",
                "test_set:N",
                alt.Tooltip("accuracy:Q", format=PERCENT),
                alt.Tooltip("missing:N", title="never seen by this model"),
            ],
        )
        .properties(width=560, height=260)
    )


def confusion_chart(
    cells: pd.DataFrame, normalized: bool = True, columns: int = 4
) -> alt.FacetChart:
    """Confusion matrices, one per model; rows of digits a model never saw are outlined."""
    value = "rate" if normalized else "count"
    base = alt.Chart().encode(
        x=alt.X("predicted:O", title="predicted"),
        y=alt.Y("true:O", title="true digit"),
    )
    heat = base.mark_rect().encode(
        color=alt.Color(
            f"{value}:Q",
            title="share of row" if normalized else "images",
            scale=alt.Scale(scheme="blues", type="linear" if normalized else "sqrt"),
        ),
        tooltip=[
            "model:N",
            "true:O",
            "predicted:O",
            alt.Tooltip("count:Q", title="images"),
            alt.Tooltip("rate:Q", title="share of row", format=PERCENT),
            alt.Tooltip("missing_row:N", title="digit never seen"),
        ],
    )
    outline = base.transform_filter("datum.missing_row").mark_rect(
        fill=None, stroke=MISSING_COLOR, strokeWidth=1.5
    )
    text = base.mark_text(fontSize=8).encode(
        text=alt.Text(f"{value}:Q", format=".0%" if normalized else "d"),
        color=alt.condition(
            f"datum.{value} > {0.5 if normalized else 600}", alt.value("white"), alt.value("#333")
        ),
        opacity=alt.condition(f"datum.{value} > 0", alt.value(1), alt.value(0)),
    )
    return (
        alt.layer(heat, outline, text, data=cells)
        .properties(width=210, height=210)
        .facet(facet=alt.Facet("model:N", title=None, sort=None), columns=columns)
        .properties(
            title="Confusion matrices (red outline: digits the model never saw in training)"
        )
    )


def _accuracy_per_round(data: pd.DataFrame, title: str, series: str, legend: str) -> alt.Chart:
    """Accuracy (y) after each round (x, 0 = initial weights), one line per `series`."""
    return (
        alt.Chart(data, title=title)
        .mark_line(point=True)
        .encode(
            x=alt.X("round:O", title="round (0 = before training)", axis=alt.Axis(labelAngle=0)),
            y=alt.Y("accuracy:Q", axis=alt.Axis(format="%"), scale=alt.Scale(domain=[0, 1])),
            color=alt.Color(f"{series}:N", title=legend),
            tooltip=[f"{series}:N", "round:O", alt.Tooltip("accuracy:Q", format=PERCENT)],
        )
        .properties(width=420, height=260)
    )


def history_chart(history: pd.DataFrame) -> alt.Chart:
    """Global accuracy after each round (0 = initial weights), overall and per subset."""
    return _accuracy_per_round(
        history, "Global model accuracy per round", "test_set", "test set"
    ).encode(
        strokeWidth=alt.condition(
            f"datum.test_set == '{ALL_DIGITS}'", alt.value(3.5), alt.value(1.5)
        )
    )


def runs_history_chart(history: pd.DataFrame) -> alt.Chart:
    """Several runs' global accuracy after each round, overlaid: `run, round, accuracy`."""
    return _accuracy_per_round(history, "Global accuracy per round, run by run", "run", "run")


def story_chart(story: pd.DataFrame) -> alt.LayerChart:
    """The point of it all: accuracy on the digits a client never saw, alone vs together."""
    base = alt.Chart(story).encode(
        y=alt.Y("client:N", title=None, sort=None),
        yOffset=alt.YOffset("model:N", sort=[TRAINED_ALONE, TRAINED_TOGETHER]),
        x=alt.X(
            "accuracy:Q",
            title="accuracy on the digits the client never saw",
            axis=alt.Axis(format="%"),
            scale=alt.Scale(domain=[0, 1]),
        ),
    )
    bars = base.mark_bar().encode(
        color=alt.Color(
            "model:N",
            title=None,
            scale=alt.Scale(domain=[TRAINED_ALONE, TRAINED_TOGETHER], range=["#bbbbbb", "#2ca02c"]),
            legend=alt.Legend(orient="bottom"),
        ),
        tooltip=["client:N", "model:N", alt.Tooltip("accuracy:Q", format=PERCENT)],
    )
    labels = base.mark_text(align="left", dx=4).encode(text=alt.Text("accuracy:Q", format=PERCENT))
    return alt.layer(
        bars, labels, title="Isolated vs federated, on each client's missing digits"
    ).properties(width=520, height=alt.Step(22))
