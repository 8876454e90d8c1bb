"""Altair charts: functions from the tables in `fedcore.report.tables` to charts.

Every chart colours models the same way (`model_colors`): one colour per
client, and a dark one for the federated model, so a reader follows
"Client 2" from the split to the confusion matrices without a legend hunt.

A chart draws the clients its table holds (a run of 10,000 clients that sampled
10 a round: the clients that took part), one series each up to
`MAX_CLIENT_SERIES` clients (lines, bars) or `MAX_CLIENT_ROWS` (heatmap rows);
beyond, their mean and range (`client_summary`), and says so under its title.

A chart draws at most altair's `MAX_ROWS` rows (its `MaxRowsError` guards
every chart, and stays on): a chart of many rounds shows evenly spaced rounds,
the first and the last among them, and says so under its title (`some_rounds`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import altair as alt
import pandas as pd

from fedcore.report.labels import (
    ALL_DIGITS,
    CENTRALIZED,
    FEDERATED,
    ISOLATED_MEAN,
    RECEIVED,
    SENT,
    TARGET,
    TRAINED_ALONE,
    TRAINED_TOGETHER,
    client_name,
    client_number,
)

PALETTE = ["#4c78a8", "#f58518", "#54a24b", "#b279a2", "#e45756",
           "#72b7b2", "#eeca3b", "#9d755d", "#ff9da6", "#bab0ac"]  # fmt: skip
FEDERATED_COLOR = "#1b1b3a"
CENTRALIZED_COLOR = "#2ca02c"
MISSING_COLOR = "#d62728"
PERCENT = ".1%"
DIGIT_COLORS = alt.Scale(domain=list(range(10)), scheme="tableau10")
BARS_UP_TO = 10  # clients: bars (and numbers in cells) up to this many, a heatmap beyond
WHITE_TO_BLUE = ["#ffffff", "#08519c"]  # heatmaps: an empty cell (0 images, 0%) is blank
MAX_ROWS = 5000  # altair's own limit on one chart's rows (`alt.data_transformers`' default)
# rounds drawn one band (or one line) each that stay legible: 100, and round 0
MAX_BANDS = 101
MAX_HEATMAP_ROUNDS = 60  # columns of the digit heatmap, 8 pixels or more each
MAX_CONFUSIONS = 20  # confusion matrices drawn side by side
MAX_CLIENT_SERIES = 20  # clients drawn a line or a bar each (the page's 20); beyond, a summary
MAX_CLIENT_ROWS = 100  # clients drawn a heatmap row or a facet each; beyond, a summary or the first
MAX_CLIENT_FACETS = 20  # clients drawn a panel each (what the server learned); the first beyond
ISOLATED_MEAN_COLOR = "#8c8c8c"
ROUND_AXIS = alt.Axis(labelAngle=0, labelOverlap="greedy")  # rounds, one band each
REFERENCE_COLORS = alt.Scale(
    domain=[FEDERATED, CENTRALIZED, ISOLATED_MEAN, TARGET],
    range=[FEDERATED_COLOR, CENTRALIZED_COLOR, ISOLATED_MEAN_COLOR, MISSING_COLOR],
)


def some_rounds(
    table: pd.DataFrame, most: int | None = None, column: str = "round"
) -> tuple[pd.DataFrame, str | None]:
    """The rows of evenly spaced rounds of `table` (the first and the last always),
    as many as fit in `MAX_ROWS` rows and `most` rounds, and a note that says which
    (None, and every row, when all rounds fit). Thinned rather than averaged: each
    point drawn is a round that was measured."""
    rounds = sorted(table[column].unique()) if len(table) else []
    if len(table) <= MAX_ROWS and (most is None or len(rounds) <= most):
        return table, None
    fit = max(2, int(MAX_ROWS * len(rounds) / len(table)))  # rounds of average size that fit
    fit = min(fit, most) if most is not None else fit
    step = max(1, math.ceil((len(rounds) - 1) / (fit - 1)))
    while True:  # rounds of more rows than the average: one more round skipped between
        kept = {*rounds[::step], rounds[-1]}
        shown = table[table[column].isin(kept)]
        fits = len(shown) <= MAX_ROWS and (most is None or len(kept) <= most)
        if fits or len(kept) <= 2:
            return shown, f"{len(kept)} of {len(rounds)} rounds shown (one in {step})"
        step += 1


def titled(title: str, *notes: str | None) -> str | alt.TitleParams:
    """A chart's title, with its `notes` (what it leaves out, what it summarises)
    under it when there are any."""
    lines = [note for note in notes if note]
    return title if not lines else alt.TitleParams(title, subtitle="; ".join(lines))


def clients_in(names: pd.Series) -> list[int]:
    """The client numbers among a table's model names (`"Client 3"`), sorted."""
    return sorted({n for n in map(client_number, names.unique()) if n is not None})


def client_summary(table: pd.DataFrame, by: list[str], value: str) -> pd.DataFrame:
    """`by..., clients, mean, low, high`: `value` over the clients in each group of
    `by` (how many gave one, their mean, their lowest and highest)."""
    return (
        table.dropna(subset=[value])
        .groupby(by, as_index=False)[value]
        .agg(clients="count", mean="mean", low="min", high="max")
    )


def _mean_and_range(
    summary: pd.DataFrame, x: alt.X, y_title: str, tooltip: list, color: str = FEDERATED_COLOR
) -> tuple[alt.Chart, alt.Chart, alt.Chart]:
    """A `client_summary` drawn: the range as a band (and a rule at each point, which
    shows it where the band has one point), the mean as a line with points."""
    base = alt.Chart(summary).encode(x=x, tooltip=tooltip)
    y, y2 = alt.Y("low:Q", title=y_title), alt.Y2("high:Q")
    band = base.mark_area(opacity=0.2, color=color).encode(y=y, y2=y2)
    rule = base.mark_rule(color=color, opacity=0.6).encode(y=y, y2=y2)
    line = base.mark_line(point=alt.OverlayMarkDef(color=color), color=color).encode(
        y=alt.Y("mean:Q", title=y_title)
    )
    return band, rule, line


def _summary_tooltip(*fields: str | alt.Tooltip, digits: str = ".4f") -> list:
    return [
        *fields,
        alt.Tooltip("clients:Q", title="clients", format=","),
        alt.Tooltip("mean:Q", format=digits),
        alt.Tooltip("low:Q", format=digits, title="lowest"),
        alt.Tooltip("high:Q", format=digits, title="highest"),
    ]


def model_colors(
    clients: int | Iterable[int], federated: bool = True, centralized: bool = False
) -> alt.Scale:
    """The models' colours: client k's the palette's ((k - 1) mod 10)th wherever it is
    drawn, and dark ones for the federated and the centralized model. `clients`: the
    numbers of the clients a chart draws, or a count n for clients 1 to n."""
    numbers = range(1, clients + 1) if isinstance(clients, int) else sorted(set(clients))
    domain = [client_name(c) for c in numbers]
    colors = [PALETTE[(c - 1) % len(PALETTE)] for c in numbers]
    if federated:
        domain, colors = [*domain, FEDERATED], [*colors, FEDERATED_COLOR]
    if centralized:
        domain, colors = [*domain, CENTRALIZED], [*colors, CENTRALIZED_COLOR]
    return alt.Scale(domain=domain, range=colors)


def label_counts_chart(counts: pd.DataFrame, num_clients: int) -> alt.Chart | alt.LayerChart:
    """How many training images of each digit every client holds (gaps: excluded
    digits); beyond `MAX_CLIENT_SERIES` clients, per digit the clients' mean and range
    (`digit_summary_chart`)."""
    clients = sorted(counts["client"].unique())
    if len(clients) > MAX_CLIENT_SERIES:
        return digit_summary_chart(counts, "Training images per digit, per client")
    data = counts.assign(model=counts["client"].map(client_name))
    return (
        alt.Chart(data, title="Training images per digit, per client")
        .mark_bar()
        .encode(
            x=alt.X("digit:O", title="digit", axis=alt.Axis(labelAngle=0)),
            xOffset=alt.XOffset("model:N", sort=None),
            y=alt.Y("count:Q", title="training images"),
            color=alt.Color(
                "model:N", title="client", scale=model_colors(clients, federated=False)
            ),
            tooltip=["model:N", "digit:O", "count:Q", alt.Tooltip("excluded:N", title="excluded")],
        )
        .properties(width=560, height=220)
    )


def digit_summary_chart(counts: pd.DataFrame, title: str) -> alt.LayerChart:
    """Per digit, the training images each client holds, over every client of `counts`
    (`client, digit, count` rows, zeros included): the mean (bar), the range (rule),
    and in the tooltip how many clients hold none."""
    summary = client_summary(counts, ["digit"], "count")
    held = counts.assign(none=counts["count"] == 0).groupby("digit", as_index=False)["none"].sum()
    summary = summary.merge(held, on="digit")
    tooltip = _summary_tooltip(
        "digit:O", alt.Tooltip("none:Q", title="clients with none", format=","), digits=",.1f"
    )
    base = alt.Chart(summary).encode(
        x=alt.X("digit:O", title="digit", axis=alt.Axis(labelAngle=0)), tooltip=tooltip
    )
    bars = base.mark_bar(color=PALETTE[0]).encode(
        y=alt.Y("mean:Q", title="training images per client")
    )
    rules = base.mark_rule(color=FEDERATED_COLOR, strokeWidth=2).encode(y="low:Q", y2="high:Q")
    clients = counts["client"].nunique()
    note = f"the mean (bar) and range (line) of the {clients:,} clients"
    return alt.layer(bars, rules, title=titled(title, note)).properties(width=420, height=220)


def pixel_images(pixels: pd.DataFrame, ink: alt.Scale, tooltip: list[str], size: int) -> alt.Chart:
    """28x28 images drawn from their pixels (`row, col, ink` rows), `size` pixels wide,
    for a chart to facet by image."""
    cells = alt.Scale(domain=list(range(28)))
    return (
        alt.Chart(pixels)
        .mark_rect()
        .encode(
            x=alt.X("col:O", axis=None, scale=cells),
            y=alt.Y("row:O", axis=None, scale=cells),
            color=alt.Color("ink:Q", scale=ink, legend=None),
            tooltip=tooltip,
        )
        .properties(width=size, height=size)
    )


def sample_digits_chart(pixels: pd.DataFrame) -> alt.FacetChart:
    """A few training images of every client, drawn from their pixels."""
    inked = pixels[pixels["ink"] > 0.05]  # blank pixels are the white background
    greys = alt.Scale(scheme="greys", domain=[0, 1])
    return (
        pixel_images(inked, greys, ["client:N", "label:O"], 56)
        .facet(
            row=alt.Row("client:N", title=None, header=alt.Header(labelAngle=0, labelAlign="left")),
            column=alt.Column("sample:O", title=None, header=alt.Header(labels=False)),
        )
        .properties(title="Sample training images per client")
    )


def first_clients(
    table: pd.DataFrame, most: int = MAX_CLIENT_FACETS
) -> tuple[pd.DataFrame, str | None]:
    """The rows of the first `most` clients of `table` (its `client` column, in order),
    and a note that says so (None, and every row, when all fit)."""
    clients = list(dict.fromkeys(table["client"]))
    if len(clients) <= most:
        return table, None
    shown = table[table["client"].isin(clients[:most])]
    return shown, f"the first {most} of {len(clients):,} clients"


def reconstruction_chart(pixels: pd.DataFrame) -> alt.FacetChart:
    """Per client, the image the server reconstructed from its update beside the real
    training image it matches best, from `tables.reconstructions` (the first
    `MAX_CLIENT_FACETS` clients)."""
    white_to_black = alt.Scale(domain=[0, 1], range=["#ffffff", "#000000"])
    pixels, note = first_clients(pixels)
    return (
        pixel_images(pixels, white_to_black, ["client:N", "image:N"], 84)
        .facet(
            row=alt.Row("client:N", title=None, header=alt.Header(labelAngle=0, labelAlign="left")),
            column=alt.Column("image:N", title=None, sort=["rebuilt", "real"]),
        )
        .properties(
            title=titled(
                "What the server rebuilt from each client's update, and the real image closest",
                note,
            )
        )
    )


def leakage_counts_chart(counts: pd.DataFrame) -> alt.FacetChart:
    """Each client's images per digit against the server's estimate from its update,
    from `tables.leakage_counts`: a digit with no real bar is one the client lacks (the
    first `MAX_CLIENT_FACETS` clients)."""
    colors = alt.Scale(domain=["real", "inferred"], range=["#bab0ac", MISSING_COLOR])
    counts, note = first_clients(counts)
    return (
        alt.Chart(counts)
        .mark_bar()
        .encode(
            x=alt.X("digit:O", title="digit", axis=alt.Axis(labelAngle=0)),
            xOffset=alt.XOffset("kind:N", sort=["real", "inferred"]),
            y=alt.Y("images:Q", title="images"),
            color=alt.Color("kind:N", title=None, scale=colors),
            tooltip=["client:N", "digit:O", "kind:N", "images:Q"],
        )
        .properties(width=220, height=120)
        .facet(column=alt.Column("client:N", title=None))
        .properties(
            title=titled(
                "Images per digit: the client's, and the server's guess from its update", note
            )
        )
    )


def loss_chart(losses: pd.DataFrame, num_clients: int, title: str) -> alt.Chart | alt.LayerChart:
    """Each client's training loss, epoch by epoch (`model, epoch, loss` rows); beyond
    `MAX_CLIENT_SERIES` clients, their mean and range."""
    x = alt.X("epoch:Q", title="epoch", axis=alt.Axis(tickMinStep=1, format="d"))
    clients = clients_in(losses["model"])
    if len(clients) > MAX_CLIENT_SERIES:
        summary = client_summary(losses, ["epoch"], "loss")
        layers = _mean_and_range(summary, x, "mean training loss", _summary_tooltip("epoch:Q"))
        note = f"the mean (line) and range (band) of the {len(clients):,} clients"
        return alt.layer(*layers, title=titled(title, note)).properties(width=420, height=240)
    return (
        alt.Chart(losses, title=title)
        .mark_line(point=True)
        .encode(
            x=x,
            y=alt.Y("loss:Q", title="mean training loss"),
            color=alt.Color("model:N", title="model", scale=model_colors(clients, federated=False)),
            tooltip=["model:N", "epoch:Q", alt.Tooltip("loss:Q", format=".4f")],
        )
        .properties(width=420, height=240)
    )


def federated_loss_chart(losses: pd.DataFrame, num_clients: int) -> alt.LayerChart:
    """Each client's local loss, epoch after epoch across rounds (the clients that
    trained: a round of 10 sampled from 10,000 draws 10 lines); rules mark new rounds.
    Beyond `MAX_CLIENT_SERIES` clients over the rounds drawn, the mean and range of
    the clients that trained in each round and epoch."""
    x = alt.X("step:Q", title="local epoch (all rounds)", axis=alt.Axis(tickMinStep=1, format="d"))
    clients = clients_in(losses["model"])
    summarised = None
    if len(clients) > MAX_CLIENT_SERIES:
        losses = client_summary(losses, ["round", "epoch", "step"], "loss")
        summarised = (
            f"the mean (line) and range (band) of the {len(clients):,} clients that trained"
        )
    losses, note = some_rounds(losses, MAX_BANDS)  # a line and a rule a round
    if summarised is None:
        lines: tuple[alt.Chart, ...] = (
            alt.Chart(losses)
            .mark_line(point=True)
            .encode(
                x=x,
                y=alt.Y("loss:Q", title="mean training loss"),
                color=alt.Color(
                    "model:N", title="model", scale=model_colors(clients, federated=False)
                ),
                detail="round:O",
                tooltip=["model:N", "round:O", "epoch:Q", alt.Tooltip("loss:Q", format=".4f")],
            ),
        )
    else:
        tooltip = _summary_tooltip("round:O", "epoch:Q")
        lines = tuple(
            layer.encode(detail="round:O")
            for layer in _mean_and_range(losses, x, "mean training loss", tooltip)
        )
    starts = losses.groupby("round", as_index=False)["step"].min()
    rules = alt.Chart(starts).mark_rule(strokeDash=[4, 4], color="#999").encode(x="step:Q")
    title = titled("Clients' training loss in each round", summarised, note)
    return alt.layer(rules, *lines, title=title).properties(width=420, height=240)


def accuracy_chart(accuracies: pd.DataFrame, num_clients: int) -> alt.Chart | alt.LayerChart:
    """Every model on the full test set and on each missing-digit subset; beyond
    `MAX_CLIENT_SERIES` isolated models, their mean (a bar) and range (a rule)."""
    order = [ALL_DIGITS, *sorted(set(accuracies["test_set"]) - {ALL_DIGITS})]
    clients = clients_in(accuracies["model"])
    title = "Test accuracy: all digits, and each set of missing digits"
    if len(clients) > MAX_CLIENT_SERIES:
        return _accuracy_summary_chart(accuracies, clients, order, title)
    return (
        alt.Chart(accuracies, title=title)
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
            color=alt.Color(
                "model:N",
                title="model",
                scale=model_colors(clients, centralized=CENTRALIZED in set(accuracies["model"])),
            ),
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


def _accuracy_summary_chart(
    accuracies: pd.DataFrame, clients: list[int], order: list[str], title: str
) -> alt.LayerChart:
    """`accuracy_chart` with the isolated models as one bar (their mean) and a rule
    (their range) on each test set."""
    is_client = accuracies["model"].map(client_number).notna()
    summary = client_summary(accuracies[is_client], ["test_set"], "accuracy").rename(
        columns={"mean": "accuracy"}
    )
    rows = pd.concat(
        [summary.assign(model=ISOLATED_MEAN), accuracies[~is_client]], ignore_index=True
    )
    models = [ISOLATED_MEAN, *dict.fromkeys(accuracies[~is_client]["model"])]
    colors = {ISOLATED_MEAN: ISOLATED_MEAN_COLOR, FEDERATED: FEDERATED_COLOR,
              CENTRALIZED: CENTRALIZED_COLOR}  # fmt: skip
    x = alt.X("test_set:N", title="test set", sort=order, axis=alt.Axis(labelAngle=0))
    base = alt.Chart(rows).encode(x=x, xOffset=alt.XOffset("model:N", sort=models))
    y = alt.Y("accuracy:Q", title="accuracy", axis=alt.Axis(format="%"),
              scale=alt.Scale(domain=[0, 1]))  # fmt: skip
    bars = base.mark_bar().encode(
        y=y,
        color=alt.Color(
            "model:N",
            title="model",
            scale=alt.Scale(domain=models, range=[colors.get(m, PALETTE[0]) for m in models]),
        ),
        tooltip=[
            "model:N",
            "test_set:N",
            alt.Tooltip("accuracy:Q", format=PERCENT),
            alt.Tooltip("low:Q", format=PERCENT, title="lowest"),
            alt.Tooltip("high:Q", format=PERCENT, title="highest"),
        ],
    )
    ranges = (
        base.transform_filter("isValid(datum.low)")
        .mark_rule(color="#333")
        .encode(y="low:Q", y2="high:Q")
    )
    note = f"{ISOLATED_MEAN}: the mean (bar) and range (line) of {len(clients):,} models"
    return alt.layer(bars, ranges, title=titled(title, note)).properties(width=560, height=260)


def confusion_chart(
    cells: pd.DataFrame, normalized: bool = True, columns: int = 4
) -> alt.FacetChart:
    """Confusion matrices, one per model; rows of digits a model never saw are outlined;
    the first `MAX_CONFUSIONS` models of many."""
    models = list(dict.fromkeys(cells["model"]))
    note = None
    if len(models) > MAX_CONFUSIONS:
        cells = cells[cells["model"].isin(models[:MAX_CONFUSIONS])]
        note = f"the first {MAX_CONFUSIONS} of {len(models)} models"
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
            title=titled(
                "Confusion matrices (red outline: digits the model never saw in training)", note
            )
        )
    )


def _accuracy_per_round(data: pd.DataFrame, title: str, series: str, legend: str) -> alt.Chart:
    """Accuracy (y) after each round (x, 0 = initial weights), one line per `series`."""
    data, note = some_rounds(data, MAX_BANDS)
    return (
        alt.Chart(data, title=titled(title, note))
        .mark_line(point=True)
        .encode(
            x=alt.X("round:O", title="round (0 = before training)", axis=ROUND_AXIS),
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
    """Several runs' global accuracy after each round, overlaid (`tables.runs_history`:
    `run, round, accuracy`): one line per run, in the runs' order, the legend below
    with the runs' whole names (they say the settings)."""
    return _accuracy_per_round(
        history, "Global accuracy per round, run by run", "run", "run"
    ).encode(
        color=alt.Color(
            "run:N",
            title="run",
            sort=None,
            scale=alt.Scale(range=PALETTE),
            legend=alt.Legend(orient="bottom", direction="vertical", labelLimit=520),
        )
    )


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


# ------------------------------------------------------------------ the lab


def label_distribution_chart(counts: pd.DataFrame, num_clients: int) -> alt.Chart | alt.LayerChart:
    """Any split's training images per client and digit (`tables.split_counts`):
    a bar per client, stacked by digit, up to `BARS_UP_TO` clients; a client x
    digit heatmap of counts up to `MAX_CLIENT_ROWS`; beyond, per digit the clients'
    mean and range (`digit_summary_chart`)."""
    if num_clients > MAX_CLIENT_ROWS:
        return digit_summary_chart(counts, "Training images per client and digit")
    tooltip = [
        alt.Tooltip("client:O", title="client"),
        "digit:O",
        alt.Tooltip("count:Q", title="images"),
        alt.Tooltip("share:Q", title="share of the client's images", format=PERCENT),
    ]
    if num_clients <= BARS_UP_TO:
        return (
            alt.Chart(counts, title="Training images per client, by digit")
            .mark_bar()
            .encode(
                x=alt.X("client:O", title="client", axis=alt.Axis(labelAngle=0)),
                y=alt.Y("count:Q", title="training images", stack="zero"),
                color=alt.Color("digit:N", title="digit", scale=DIGIT_COLORS, sort=None),
                order=alt.Order("digit:Q"),
                tooltip=tooltip,
            )
            .properties(width=alt.Step(34), height=240)
        )
    step = max(6, min(18, 480 // num_clients))
    return (
        alt.Chart(counts, title="Training images per client and digit")
        .mark_rect(stroke="#eeeeee", strokeWidth=0.5)
        .encode(
            x=alt.X("digit:O", title="digit", axis=alt.Axis(labelAngle=0)),
            y=alt.Y("client:O", title="client", axis=alt.Axis(labelOverlap="greedy")),
            color=alt.Color(
                "count:Q", title="images", scale=alt.Scale(range=WHITE_TO_BLUE, interpolate="rgb")
            ),
            tooltip=tooltip,
        )
        .properties(width=alt.Step(30), height=alt.Step(step))
    )


def rounds_with_references_chart(rounds: pd.DataFrame, references: pd.DataFrame) -> alt.LayerChart:
    """The global model's test accuracy per round (`tables.federated_rounds`) against
    horizontal reference lines (`tables.reference_lines`): the centralized baseline,
    the isolated models' mean, and the target (dashed)."""
    rounds, note = some_rounds(rounds)
    width, last = 420, int(rounds["round"].max()) if len(rounds) else 1
    x = alt.X(
        "round:Q",
        title="round (0 = before training)",
        scale=alt.Scale(domain=[0, max(last, 1)], nice=False),
        axis=alt.Axis(tickMinStep=1, format="d"),
    )
    y = alt.Y(
        "accuracy:Q",
        title="test accuracy",
        axis=alt.Axis(format="%"),
        scale=alt.Scale(domain=[0, 1]),
    )
    color = alt.Color(
        "model:N", title=None, scale=REFERENCE_COLORS, legend=alt.Legend(orient="bottom")
    )
    line = (
        alt.Chart(rounds)
        .mark_line(point=True, strokeWidth=3)
        .encode(
            x=x, y=y, color=color, tooltip=["round:Q", alt.Tooltip("accuracy:Q", format=PERCENT)]
        )
    )
    rules = (
        alt.Chart(references)
        .mark_rule(strokeWidth=2)
        .encode(
            y=y,
            color=color,
            strokeDash=alt.condition("datum.dashed", alt.value([6, 4]), alt.value([1, 0])),
            tooltip=["model:N", alt.Tooltip("accuracy:Q", format=PERCENT)],
        )
    )
    # Labels: the target's at the left (it often sits next to the baseline), the
    # baseline's above its line, the isolated mean's below.
    text = alt.Chart(references).encode(y=y, text="label:N", color=color)
    labels = [
        text.transform_filter(f"datum.model == '{TARGET}'")
        .mark_text(align="left", baseline="bottom", dx=4, dy=-3)
        .encode(x=alt.value(0)),
        text.transform_filter(f"datum.model == '{CENTRALIZED}'")
        .mark_text(align="right", baseline="bottom", dx=-4, dy=-3)
        .encode(x=alt.value(width)),
        text.transform_filter(f"datum.model == '{ISOLATED_MEAN}'")
        .mark_text(align="right", baseline="top", dx=-4, dy=3)
        .encode(x=alt.value(width)),
    ]
    title = titled("Federated accuracy per round, against the baselines", note)
    return alt.layer(rules, line, *labels, title=title).properties(width=width, height=280)


def cross_accuracy_chart(cells: pd.DataFrame, num_clients: int) -> alt.LayerChart:
    """Each client's isolated model (rows) on every client's label mix (columns),
    from `tables.cross_accuracy`; the diagonal (own mix) outlined, the values written
    in the cells up to `BARS_UP_TO` clients; the first clients whose matrix fits in
    `MAX_ROWS` cells beyond (70 of 100)."""
    note = None
    if num_clients**2 > MAX_ROWS:
        shown = math.isqrt(MAX_ROWS)
        cells = cells[(cells["trained_on"] <= shown) & (cells["scored_on"] <= shown)]
        note = f"the first {shown} of {num_clients} clients"
        num_clients = shown
    base = alt.Chart(cells).encode(
        x=alt.X(
            "scored_on:O",
            title="scored on client j's label mix",
            axis=alt.Axis(labelAngle=0, labelOverlap="greedy"),
        ),
        y=alt.Y(
            "trained_on:O",
            title="model trained alone by client i",
            axis=alt.Axis(labelOverlap="greedy"),
        ),
    )
    heat = base.mark_rect(stroke="#eeeeee", strokeWidth=0.5).encode(
        color=alt.Color(
            "accuracy:Q",
            title="accuracy",
            scale=alt.Scale(domain=[0, 1], range=WHITE_TO_BLUE, interpolate="rgb"),
            legend=alt.Legend(format="%"),
        ),
        tooltip=[
            alt.Tooltip("trained_on:O", title="trained on client"),
            alt.Tooltip("scored_on:O", title="scored on client's mix"),
            alt.Tooltip("accuracy:Q", format=PERCENT),
        ],
    )
    own = base.transform_filter("datum.own").mark_rect(
        fill=None, stroke=FEDERATED_COLOR, strokeWidth=1.5
    )
    layers = [heat, own]
    if num_clients <= BARS_UP_TO:
        layers.append(
            base.mark_text(fontSize=10).encode(
                text=alt.Text("accuracy:Q", format=".0%"),
                color=alt.condition("datum.accuracy > 0.55", alt.value("white"), alt.value("#333")),
            )
        )
    step = 34 if num_clients <= BARS_UP_TO else max(8, 420 // num_clients)
    return alt.layer(
        *layers, title=titled("Train on client i alone, score on client j's label mix", note)
    ).properties(width=alt.Step(step), height=alt.Step(step))


# ------------------------------------------------------- inside the lab's rounds

NUMBERS_UP_TO = 12  # rounds: numbers written in the digit heatmap's cells up to this many


def digit_rounds_chart(cells: pd.DataFrame) -> alt.LayerChart:
    """The global model's test accuracy on each digit (rows) after each round
    (columns, 0 = before training), from `tables.digit_rounds`: when each client's
    missing digit gets learned."""
    cells, note = some_rounds(cells, MAX_HEATMAP_ROUNDS)
    rounds = cells["round"].nunique() if len(cells) else 0
    base = alt.Chart(cells).encode(
        x=alt.X("round:O", title="round (0 = before training)", axis=ROUND_AXIS),
        y=alt.Y("digit:O", title="digit", axis=alt.Axis(labelAngle=0)),
    )
    layers = [
        base.mark_rect(stroke="#eeeeee", strokeWidth=0.5).encode(
            color=alt.Color(
                "accuracy:Q",
                title="accuracy",
                scale=alt.Scale(domain=[0, 1], range=WHITE_TO_BLUE, interpolate="rgb"),
                legend=alt.Legend(format="%"),
            ),
            tooltip=["round:O", "digit:O", alt.Tooltip("accuracy:Q", format=PERCENT)],
        )
    ]
    if rounds <= NUMBERS_UP_TO:
        layers.append(
            base.mark_text(fontSize=9).encode(
                text=alt.Text("accuracy:Q", format=".0%"),
                color=alt.condition("datum.accuracy > 0.55", alt.value("white"), alt.value("#333")),
            )
        )
    step = max(8, min(34, 480 // max(rounds, 1)))
    title = titled("Test accuracy per digit, round by round", note)
    return alt.layer(*layers, title=title).properties(width=alt.Step(step), height=alt.Step(20))


def client_drift_chart(drift: pd.DataFrame, num_clients: int) -> alt.HConcatChart:
    """Client drift, from `tables.client_drift`: per round, the cosine between each
    client's update and the aggregated one (lines up to `BARS_UP_TO` clients, a
    client x round heatmap beyond), and the norm of each client's update. Beyond
    `MAX_CLIENT_ROWS` clients over the rounds drawn (a heatmap row each), both as
    the mean and range of each round's clients."""
    x = alt.X("round:O", title="round", axis=ROUND_AXIS)
    drift, note = some_rounds(drift, MAX_BANDS)
    if drift["client"].nunique() > MAX_CLIENT_ROWS:
        return _drift_summary_chart(drift, x, note)
    model = drift.assign(model=drift["client"].map(client_name))
    tooltip = [
        "model:N",
        "round:O",
        alt.Tooltip("cosine:Q", format=".3f", title="cosine to the aggregate"),
        alt.Tooltip("norm:Q", format=".3f", title="update norm"),
    ]
    if num_clients <= BARS_UP_TO:
        shown = drift["client"].unique()
        color = alt.Color("model:N", title="client", scale=model_colors(shown, federated=False))
        cosine = (
            alt.Chart(model, title="Cosine of each client's update to the aggregate")
            .mark_line(point=True)
            .encode(
                x=x,
                y=alt.Y("cosine:Q", title="cosine (low: pulls away)"),
                color=color,
                tooltip=tooltip,
            )
        )
    else:
        color = alt.Color("model:N", title="client", legend=None)
        cosine = (
            alt.Chart(model, title="Cosine of each client's update to the aggregate")
            .mark_rect(stroke="#eeeeee", strokeWidth=0.5)
            .encode(
                x=x,
                y=alt.Y("client:O", title="client", axis=alt.Axis(labelOverlap="greedy")),
                color=alt.Color(
                    "cosine:Q", title="cosine", scale=alt.Scale(scheme="redblue", domain=[-1, 1])
                ),
                tooltip=tooltip,
            )
        )
    norm = (
        alt.Chart(model, title="Norm of each client's update")
        .mark_line(point=True)
        .encode(x=x, y=alt.Y("norm:Q", title="L2 norm"), color=color, tooltip=tooltip)
    )
    drift_chart = alt.hconcat(
        cosine.properties(width=300, height=220),
        norm.properties(width=300, height=220),
        title=titled("Client drift, round by round", note),
    )
    # lines: one legend for both; a heatmap's colours are cosines, not clients
    return (
        drift_chart if num_clients <= BARS_UP_TO else drift_chart.resolve_scale(color="independent")
    )


def _drift_summary_chart(drift: pd.DataFrame, x: alt.X, note: str | None) -> alt.HConcatChart:
    """`client_drift_chart` for many clients: per round, the mean (line) and range
    (band) of the clients' cosines and of their update norms."""
    clients = drift["client"].nunique()
    panels = []
    for value, title, y_title in (
        ("cosine", "Cosine of the clients' updates to the aggregate", "cosine (low: pulls away)"),
        ("norm", "Norm of the clients' updates", "L2 norm"),
    ):
        summary = client_summary(drift, ["round"], value)
        layers = _mean_and_range(summary, x, y_title, _summary_tooltip("round:O", digits=".3f"))
        panels.append(alt.layer(*layers, title=title).properties(width=300, height=220))
    summarised = f"the mean (line) and range (band) of each round's clients ({clients:,} in all)"
    return alt.hconcat(*panels, title=titled("Client drift, round by round", summarised, note))


def communication_chart(messages: pd.DataFrame) -> alt.HConcatChart:
    """Weights sent to the clients and received back, per round (`tables.communication`):
    megabytes (bars; the running total in the tooltip) and messages."""
    messages, note = some_rounds(messages, MAX_BANDS)
    x = alt.X("round:O", title="round", axis=ROUND_AXIS)
    color = alt.Color(
        "direction:N",
        title=None,
        scale=alt.Scale(domain=[SENT, RECEIVED], range=[PALETTE[0], PALETTE[1]]),
        legend=alt.Legend(orient="bottom"),
    )
    tooltip = [
        "round:O",
        "direction:N",
        "messages:Q",
        alt.Tooltip("megabytes:Q", format=",.2f", title="MB"),
        alt.Tooltip("cumulative_megabytes:Q", format=",.2f", title="MB so far"),
    ]
    base = alt.Chart(messages).encode(
        x=x, xOffset=alt.XOffset("direction:N", sort=[SENT, RECEIVED]), color=color, tooltip=tooltip
    )
    size = base.mark_bar().encode(y=alt.Y("megabytes:Q", title="MB of weights"))
    count = base.mark_bar().encode(
        y=alt.Y("messages:Q", title="messages", axis=alt.Axis(tickMinStep=1, format="d"))
    )
    return alt.hconcat(
        size.properties(width=260, height=200, title="Megabytes per round"),
        count.properties(width=200, height=200, title="Messages per round"),
        title=titled("Communication: model weights to and from the clients", note),
    )


def privacy_chart(spent: pd.DataFrame, delta: float | None = None) -> alt.Chart:
    """The privacy spent so far (epsilon) after each round, from `tables.privacy_spent`."""
    title = "Privacy spent: epsilon after each round" + (
        f" (delta {delta:g})" if delta is not None else ""
    )
    spent, note = some_rounds(spent)
    return (
        alt.Chart(spent, title=titled(title, note))
        .mark_line(point=True, color=MISSING_COLOR)
        .encode(
            x=alt.X("round:Q", title="round", axis=alt.Axis(tickMinStep=1, format="d")),
            y=alt.Y("epsilon:Q", title="epsilon (lower: more private)"),
            tooltip=["round:Q", alt.Tooltip("epsilon:Q", format=".3f")],
        )
        .properties(width=320, height=200)
    )


TRUST_COLORS = alt.Scale(domain=["kept", "dropped", "all kept"],
                         range=[PALETTE[2], "#eeeeee", "#c7dcef"])  # fmt: skip


def trust_chart(trust: pd.DataFrame, rule: str) -> alt.LayerChart:
    """Who the rule trusted, from `tables.trust`: a client x round grid, a cell kept
    (green) or dropped (grey) by the rule, the attackers' rows marked with a cross;
    beyond `MAX_CLIENT_ROWS` clients over the rounds drawn, per round how many
    honest clients and attackers it kept and dropped."""
    trust, note = some_rounds(trust, MAX_BANDS)
    if trust["client"].nunique() > MAX_CLIENT_ROWS:
        return _trust_summary_chart(trust, rule, note)
    trust = trust.assign(model=trust["client"].map(client_name))
    x = alt.X("round:O", title="round", axis=ROUND_AXIS)
    y = alt.Y("model:N", title=None, sort=alt.SortField("client"))
    tooltip = ["model:N", "round:O", "role:N", "kept:N"]
    cells = (
        alt.Chart(trust)
        .mark_rect(stroke="#ffffff", strokeWidth=1)
        .encode(x=x, y=y, color=alt.Color("kept:N", title=rule, scale=TRUST_COLORS),
                tooltip=tooltip)
    )  # fmt: skip
    marks = (
        alt.Chart(trust[trust["role"] == "attacker"])
        .mark_point(shape="cross", color=MISSING_COLOR, size=60, filled=True)
        .encode(x=x, y=y, tooltip=tooltip)
    )
    title = titled(f"Who did {rule} trust? (red cross: an attacker)", note)
    return alt.layer(cells, marks, title=title).properties(
        width=max(160, 22 * trust["round"].nunique()),
        height=max(80, 18 * trust["client"].nunique()),
    )


def _trust_summary_chart(trust: pd.DataFrame, rule: str, note: str | None) -> alt.Chart:
    """`trust_chart` for many clients: per round, the honest clients and the attackers
    the rule kept and dropped (bars of clients, stacked)."""
    counts = trust.groupby(["round", "role", "kept"], as_index=False).size()
    counts = counts.rename(columns={"size": "clients"})
    title = titled(f"Who did {rule} trust? Clients per round, honest and attackers", note)
    return (
        alt.Chart(counts, title=title)
        .mark_bar()
        .encode(
            x=alt.X("round:O", title="round", axis=ROUND_AXIS),
            xOffset=alt.XOffset("role:N", sort=["honest", "attacker"]),
            y=alt.Y("clients:Q", title="clients", stack="zero"),
            color=alt.Color("kept:N", title=rule, scale=TRUST_COLORS),
            tooltip=["round:O", "role:N", "kept:N", alt.Tooltip("clients:Q", format=",")],
        )
        .properties(width=min(640, max(160, 22 * counts["round"].nunique())), height=200)
    )


def attack_rounds_chart(rounds: pd.DataFrame) -> alt.Chart:
    """The global model's test accuracy and the backdoor's success after each round,
    from `tables.attack_rounds`: a backdoor can succeed while the accuracy looks fine."""
    rounds, note = some_rounds(rounds)
    colors = alt.Scale(domain=["test accuracy", "backdoor success"],
                       range=[FEDERATED_COLOR, MISSING_COLOR])  # fmt: skip
    return (
        alt.Chart(rounds, title=titled("Accuracy and backdoor success per round", note))
        .mark_line(point=True)
        .encode(
            x=alt.X("round:Q", title="round", axis=alt.Axis(tickMinStep=1, format="d")),
            y=alt.Y(
                "value:Q", title=None, axis=alt.Axis(format="%"), scale=alt.Scale(domain=[0, 1])
            ),
            color=alt.Color("measure:N", title=None, scale=colors),
            tooltip=["round:Q", "measure:N", alt.Tooltip("value:Q", format=PERCENT)],
        )
        .properties(width=320, height=200)
    )


def clients_answered_chart(answers: pd.DataFrame) -> alt.LayerChart:
    """Clients asked to train in each round (ticks) and those that answered (bars),
    from `tables.clients_answered`."""
    answers, note = some_rounds(answers, MAX_BANDS)
    x = alt.X("round:O", title="round", axis=ROUND_AXIS)
    tooltip = ["round:O", "sampled:Q", "answered:Q", "missing:Q"]
    bars = (
        alt.Chart(answers)
        .mark_bar(color=PALETTE[2])
        .encode(
            x=x,
            y=alt.Y("answered:Q", title="clients", axis=alt.Axis(tickMinStep=1, format="d")),
            tooltip=tooltip,
        )
    )
    asked = (
        alt.Chart(answers)
        .mark_tick(color=FEDERATED_COLOR, thickness=2)
        .encode(x=x, y="sampled:Q", tooltip=tooltip)
    )
    title = titled("Clients that answered, per round (tick: clients asked)", note)
    return alt.layer(bars, asked, title=title).properties(width=320, height=200)


def reproduction_chart(figures: pd.DataFrame, measure: str, title: str) -> alt.Chart:
    """A reproduced table against the paper: one line a row, the published figure and
    the measured one as two marks (from `ReproducedTable.frame`). Rounds on a log
    scale: the rows span 16 to 4,278."""
    rounds = measure == "rounds"
    colors = alt.Scale(domain=["paper", "measured"], range=["#bab0ac", "#4c78a8"])
    return (
        alt.Chart(figures, title=title)
        .mark_point(filled=True, size=80)
        .encode(
            x=alt.X(
                "value:Q",
                title="rounds to the target" if rounds else "test accuracy (%)",
                scale=alt.Scale(type="log") if rounds else alt.Scale(domain=[0, 100]),
            ),
            y=alt.Y("row:N", title=None, sort=None),
            color=alt.Color("kind:N", title=None, scale=colors),
            shape=alt.Shape("kind:N", title=None, sort=["paper", "measured"]),
            tooltip=["row:N", "kind:N", alt.Tooltip("value:Q", format=".4g")],
        )
        .properties(width=420)
    )
