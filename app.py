import marimo

__generated_with = "0.25.2"
app = marimo.App(width="medium", app_title="fedcore: a federated learning lab")


@app.cell(hide_code=True)
def _():
    import html
    import time

    import marimo as mo

    from fedcore.cli.main import settings_from_cli
    from fedcore.data.mnist import DataError, load_mnist
    from fedcore.data.partition import partition_clients
    from fedcore.engine import shared_engine
    from fedcore.experiment.config import (
        PRIVACY,
        SIZE_LAWS,
        SPLITS,
        STRATEGIES,
        ConfigError,
        ExperimentConfig,
        default_exclusions,
        format_digits,
        format_spec,
    )
    from fedcore.experiment.results import ExperimentResult, ResultsError
    from fedcore.experiment.settings import APP_LIMITS_WHY, BY_NAME, control_range
    from fedcore.report import charts, tables
    from fedcore.report.figures import run_charts, to_png, to_svg
    from fedcore.report.html import report_html
    from fedcore.report.tables import label_counts

    # Every run goes to the engine: processes of its own, shared by every session
    # of this server, started now so that it is warm by the first run. It queues
    # runs, merges identical ones and keeps their results.
    engine = shared_engine()
    return (
        APP_LIMITS_WHY,
        BY_NAME,
        ConfigError,
        DataError,
        ExperimentConfig,
        ExperimentResult,
        PRIVACY,
        ResultsError,
        SIZE_LAWS,
        SPLITS,
        STRATEGIES,
        charts,
        control_range,
        default_exclusions,
        engine,
        format_digits,
        format_spec,
        html,
        label_counts,
        load_mnist,
        mo,
        partition_clients,
        report_html,
        run_charts,
        settings_from_cli,
        tables,
        time,
        to_png,
        to_svg,
    )


@app.cell(hide_code=True)
def _(mo):
    mo.md(
        r"""
        # Learning together without sharing data

        Three hospitals each hold a part of the MNIST handwritten digits, and each
        has **never seen some digits**: hospital 1 has no 1, 3 or 7; hospital 2 no
        2, 5 or 8; hospital 3 no 4, 6 or 9. A model trained by one hospital alone
        cannot recognise digits it never saw. With **federated learning**
        ([Flower](https://flower.ai), FedAvg) the hospitals train one shared model
        by exchanging *model weights*, never images, and that model learns every
        digit.

        Everything below runs for real: PyTorch training, Flower's simulation
        engine, evaluation on the 10,000 MNIST test images. Move a control and
        the page follows; settings you have already run come back at once.
        """
    )
    return


@app.cell(hide_code=True)
def _(mo, settings_from_cli):
    # `marimo run app.py -- --rounds 1 --epochs 1` (or `marimo export html ... -- ...`)
    cli = settings_from_cli(dict(mo.cli_args()))
    defaults = cli.config
    mo.stop(
        cli.error is not None,
        mo.callout(mo.md(f"**Command-line settings rejected:** {cli.error}"), kind="danger"),
    )
    return (defaults,)


@app.cell(hide_code=True)
def _(BY_NAME, control_range, defaults, mo):
    def control(name, start_from=None):
        """A setting's control: label, range and step from the settings table, its
        value from `start_from` (a config; the page's defaults if not given)."""
        setting = BY_NAME[name]
        value = getattr(defaults if start_from is None else start_from, name)
        if setting.choices:
            return mo.ui.dropdown(list(setting.choices), value=value, label=setting.label)
        start, stop, step = control_range(setting)
        # a value from the command line or the page's address may pass the page's range
        start, stop = min(start, value), max(stop, value)
        if setting.control == "slider":
            return mo.ui.slider(
                start, stop, step=step, value=value, debounce=True, show_value=True,
                label=setting.label,
            )  # fmt: skip
        return mo.ui.number(start, stop, step=step, value=value, label=setting.label)

    clients_slider = control("num_clients")
    rounds_slider = control("num_rounds")
    epochs_slider = control("local_epochs")
    lr_input = control("learning_rate")
    batch_input = control("batch_size")
    momentum_input = control("momentum")
    seed_input = control("seed")
    fraction_slider = control("fraction_train")
    get_exclusions, set_exclusions = mo.state(defaults.excluded_digits)
    return (
        batch_input,
        clients_slider,
        control,
        epochs_slider,
        fraction_slider,
        get_exclusions,
        lr_input,
        momentum_input,
        rounds_slider,
        seed_input,
        set_exclusions,
    )


@app.cell(hide_code=True)
def _(clients_slider, default_exclusions, get_exclusions, mo, set_exclusions):
    # One selector per client; changing the client count keeps earlier picks.
    _kept = get_exclusions()
    _defaults = default_exclusions(clients_slider.value)
    _initial = [_kept[i] if i < len(_kept) else _defaults[i] for i in range(clients_slider.value)]
    exclusion_pickers = mo.ui.array(
        [
            mo.ui.multiselect(
                options=[str(d) for d in range(10)],
                value=[str(d) for d in digits],
                label=f"Client {i} never sees",
            )
            for i, digits in enumerate(_initial, start=1)
        ],
        on_change=lambda picks: set_exclusions(
            tuple(tuple(sorted(int(d) for d in p)) for p in picks) + get_exclusions()[len(picks) :]
        ),
    )
    return (exclusion_pickers,)


@app.cell(hide_code=True)
def _(
    batch_input,
    clients_slider,
    epochs_slider,
    exclusion_pickers,
    fraction_slider,
    lr_input,
    mo,
    momentum_input,
    rounds_slider,
    seed_input,
):
    mo.vstack(
        [
            mo.md("## The setup"),
            mo.hstack([clients_slider, rounds_slider, epochs_slider], justify="start", gap=2),
            mo.md("Which digits does each client **not** have?"),
            mo.hstack(list(exclusion_pickers), wrap=True, justify="start"),
            mo.accordion(
                {
                    "Advanced: optimiser, seed, client sampling": mo.hstack(
                        [lr_input, batch_input, momentum_input, seed_input, fraction_slider],
                        wrap=True,
                        justify="start",
                    )
                }
            ),
        ]
    )
    return


@app.cell(hide_code=True)
def _(
    ConfigError,
    ExperimentConfig,
    clients_slider,
    defaults,
    exclusion_pickers,
    format_digits,
    mo,
    seed_input,
):
    # The split's own settings, apart: the data and split sections below depend
    # only on these, so rounds, epochs or the learning rate do not redraw them.
    try:
        split_config = ExperimentConfig(
            num_clients=clients_slider.value,
            excluded_digits=tuple(
                tuple(sorted(int(d) for d in p)) for p in exclusion_pickers.value
            ),
            seed=int(seed_input.value),
            data_dir=defaults.data_dir,
        )
    except ConfigError as _error:
        split_config = None
        _message = mo.callout(mo.md(f"**These settings cannot run:** {_error}."), kind="danger")
    else:
        _message = None
        if split_config.excluded_by_all:
            _message = mo.callout(
                mo.md(
                    f"**Every client excludes {format_digits(split_config.excluded_by_all)}.** "
                    "No model, federated or not, can learn a digit that no client has: "
                    "expect 0% on it everywhere."
                ),
                kind="warn",
            )
    _message
    return (split_config,)


@app.cell(hide_code=True)
def _(
    ConfigError,
    batch_input,
    epochs_slider,
    fraction_slider,
    lr_input,
    mo,
    momentum_input,
    rounds_slider,
    split_config,
):
    mo.stop(split_config is None)
    try:
        config = split_config.replace(
            num_rounds=rounds_slider.value,
            local_epochs=epochs_slider.value,
            batch_size=int(batch_input.value),
            learning_rate=float(lr_input.value),
            momentum=float(momentum_input.value),
            fraction_train=round(float(fraction_slider.value), 2),
        )
    except ConfigError as _error:
        mo.stop(True, mo.callout(mo.md(f"**These settings cannot run:** {_error}."), kind="danger"))
    return (config,)


@app.cell(hide_code=True)
def _(DataError, load_mnist, mo, split_config):
    mo.stop(split_config is None)
    try:
        with mo.status.spinner(title="Loading MNIST"):
            data = load_mnist(split_config)
    except DataError as _error:
        mo.stop(
            True,
            mo.callout(
                mo.md(
                    f"**MNIST could not be loaded.** {_error}\n\n"
                    "Offline? Start the app with `FEDCORE_DATA_DIR=/path/to/mnist` "
                    "(a folder with the four IDX files), or pass `-- --data-dir /path/to/mnist`."
                ),
                kind="danger",
            ),
        )
    return (data,)


@app.cell(hide_code=True)
def _(data, label_counts, mo, partition_clients, split_config):
    partitions = partition_clients(data.train_y, split_config)
    counts = label_counts(data.train_y, partitions)
    _empty = [p.client for p in partitions if p.size == 0]
    mo.stop(
        bool(_empty),
        mo.callout(mo.md(f"**Client(s) {_empty} are left with no training data.**"), kind="danger"),
    )
    return counts, partitions


@app.cell(hide_code=True)
def _(charts, counts, data, mo, partitions, split_config, tables):
    _sizes = ", ".join(f"client {p.client}: {p.size:,}" for p in partitions)
    mo.vstack(
        [
            mo.md(
                f"""
                ## 1. The split
                The 60,000 training images are shuffled (seed {split_config.seed}) and cut
                into {split_config.num_clients} equal parts; then each client's excluded
                digits are removed. Training images per client: {_sizes}.
                """
            ),
            charts.label_counts_chart(counts, split_config.num_clients),
            charts.sample_digits_chart(tables.sample_digits(data, partitions, per_client=6)),
        ]
    )
    return


@app.cell(hide_code=True)
def _(mo):
    session_runs = []  # this session's run, released when its settings change
    get_isolated_ready, set_isolated_ready = mo.state(None)
    get_run_finished, set_run_finished = mo.state(None)
    retry_button = mo.ui.button(label="Run again", kind="success")
    return (
        get_isolated_ready,
        get_run_finished,
        retry_button,
        session_runs,
        set_isolated_ready,
        set_run_finished,
    )


@app.cell(hide_code=True)
def _(mo, tables):
    # "Compare runs" keeps every run finished on this page (the story's, the lab's)
    # and every results file loaded: `(name, result)`, in the order they came.
    get_kept_runs, set_kept_runs = mo.state([])
    get_pinned_runs, set_pinned_runs = mo.state([])  # the names pinned, kept across redraws

    def keep_run(source, result, file=None):
        """Keep a finished run, named by where it comes from and its settings
        (`"lab 2: dirichlet:0.1, 10 clients, mlp, 3 rounds of 1 epoch"`); the same
        result again is not kept twice."""
        kept = get_kept_runs()
        if any(other == result for _, other in kept):
            return
        origin = f"{source} {len(kept) + 1}" + (f" ({file})" if file else "")
        set_kept_runs([*kept, (f"{origin}: {tables.run_label(result.config)}", result)])

    return get_kept_runs, get_pinned_runs, keep_run, set_pinned_runs


@app.cell(hide_code=True)
def _(charts, mo, retry_button, tables, time):
    def bar(done, total, label):
        share = 100 * done / max(total, 1)
        return mo.Html(
            '<div style="display:flex;align-items:center;gap:0.8em">'
            '<div style="width:16em;height:0.6em;border-radius:0.3em;background:#e5e7eb">'
            f'<div style="width:{share:.0f}%;height:100%;border-radius:0.3em;'
            'background:#4c78a8"></div></div>'
            f"<span>{label}</span></div>"
        )

    def run_view(status, stop_button):
        """The run's place in the queue or its progress, with a Stop button."""
        if status.state == "queued":
            return mo.callout(
                mo.vstack(
                    [
                        mo.md(
                            f"**Queued: place {status.place}.** Another run is using the "
                            "engine; this one starts as soon as it ends."
                        ),
                        stop_button,
                    ]
                ),
                kind="neutral",
            )
        parts = [
            mo.md(f"**Training** ({status.detail or 'starting'})"),
            bar(
                status.epochs_done,
                status.epochs_total,
                f"each client alone: {status.epochs_done}/{status.epochs_total} epochs",
            ),
        ]
        if status.history:
            done = status.history[-1].round
            parts.append(
                bar(
                    done,
                    status.num_rounds,
                    f"together, with Flower: round {done}/{status.num_rounds}, "
                    f"global accuracy {status.history[-1].accuracy:.1%}",
                )
            )
            parts.append(charts.history_chart(tables.history(status.history)))
        parts.append(stop_button)
        return mo.vstack(parts)

    def end_view(status, again=None):
        """One line when a run did not finish, and a way to run it again (`again`:
        the story's "Run again" button unless told otherwise)."""
        if status.state == "stopped":
            text = "**Stopped.** Nothing of this run was kept."
        elif status.state == "failed":
            text = f"**The run failed:** {status.error}"
        else:
            return None
        kind = "warn" if status.state == "stopped" else "danger"
        return mo.callout(
            mo.vstack([mo.md(text), retry_button if again is None else again]), kind=kind
        )

    def watch_run(run, stop_button, set_isolated_ready, set_run_finished, again=None):
        """In a thread: show the run's progress, and tell the cells below when
        the isolated models and the whole run are ready."""
        thread = mo.current_thread()
        shown, isolated_told = None, False
        while not thread.should_exit:
            status = run.status()
            if not isolated_told and run.isolated() is not None:
                isolated_told = True
                set_isolated_ready(run)
            if run.done():
                mo.output.replace(end_view(status, again))
                set_run_finished(run)
                return
            if status != shown:
                mo.output.replace(run_view(status, stop_button))
                shown = status
            time.sleep(0.2)

    return end_view, watch_run


@app.cell(hide_code=True)
def _(
    config,
    end_view,
    engine,
    mo,
    retry_button,
    session_runs,
    set_isolated_ready,
    set_run_finished,
    watch_run,
):
    retry_button.value  # "Run again" submits the same settings anew
    for _previous in session_runs:
        _previous.release()  # nobody else waiting for it: the engine drops it
    run = engine.submit(config, "story")
    session_runs[:] = [run]
    stop_button = mo.ui.button(label="Stop", kind="danger", on_click=lambda _: run.stop())
    if run.done():
        _view = end_view(run.status())
    elif mo.app_meta().request is None:  # exported or run as a script: wait here
        run.wait()
        _view = end_view(run.status())
    else:
        mo.Thread(
            target=watch_run, args=(run, stop_button, set_isolated_ready, set_run_finished)
        ).start()
        _view = mo.md("")
    _view
    return run, stop_button


@app.cell(hide_code=True)
def _(get_isolated_ready, mo, run):
    get_isolated_ready()  # drawn as soon as the isolated models are ready
    isolated = run.isolated()
    mo.stop(isolated is None)
    return (isolated,)


@app.cell(hide_code=True)
def _(mo):
    normalized_switch = mo.ui.switch(value=True, label="Confusion matrices as shares of each row")
    return (normalized_switch,)


@app.cell(hide_code=True)
def _(charts, config, isolated, mo, normalized_switch, tables):
    _lines = "\n".join(
        f"- **Client {r.client}** (never saw {', '.join(map(str, r.excluded)) or 'nothing'}): "
        f"{r.accuracy:.1%} on all test digits, "
        + (
            f"**{r.missing_accuracy:.1%}** on its missing digits"
            if r.excluded
            else "no missing digits"
        )
        for r in isolated
    )
    mo.vstack(
        [
            mo.md(f"## 2. Each client alone\n\n{_lines}"),
            charts.loss_chart(
                tables.isolated_losses(isolated),
                config.num_clients,
                "Training loss, each client alone",
            ),
            charts.accuracy_chart(tables.accuracies(isolated), config.num_clients),
            mo.md(
                "A model never predicts a digit it never saw: its row in the confusion "
                "matrix (outlined in red) spreads over look-alike digits instead."
            ),
            normalized_switch,
            charts.confusion_chart(
                tables.isolated_confusions(isolated), normalized=normalized_switch.value
            ),
        ]
    )
    return


@app.cell(hide_code=True)
def _(get_run_finished, keep_run, mo, run):
    get_run_finished()  # drawn when the whole run is done
    mo.stop(run.status().state != "done")
    federated = run.result().federated
    keep_run("story", run.result())
    return (federated,)


@app.cell(hide_code=True)
def _(charts, config, federated, mo, normalized_switch, tables):
    _rounds = ", ".join(f"{h.accuracy:.1%}" for h in federated.history)
    _failures = (
        mo.callout(
            mo.md(
                "**Some client updates failed:**\n\n"
                + "\n".join(f"- {f}" for f in federated.failures)
            ),
            kind="warn",
        )
        if federated.failures
        else mo.md("")
    )
    mo.vstack(
        [
            mo.md(
                f"""
                ## 3. Together, with Flower
                {config.num_clients} Flower ClientApps train locally for
                {config.local_epochs} epoch(s) per round; the ServerApp averages their
                weights (FedAvg, weighted by number of images) for {config.num_rounds}
                round(s) and tests the global model after each. Global accuracy by
                round (0 = before training): {_rounds}.
                """
            ),
            _failures,
            mo.hstack(
                [
                    charts.history_chart(tables.history(federated.history)),
                    charts.federated_loss_chart(
                        tables.federated_client_losses(federated), config.num_clients
                    ),
                ],
                justify="start",
                wrap=True,
            ),
            charts.confusion_chart(
                tables.confusion(tables.FEDERATED, federated.confusion, config.excluded_by_all),
                normalized=normalized_switch.value,
            ),
        ]
    )
    return


@app.cell(hide_code=True)
def _(charts, config, federated, isolated, mo, tables):
    _story = tables.story(isolated, federated)
    if _story.empty:
        _summary = mo.md("## 4. Alone vs together\n\n_No client excludes any digit._")
    else:
        _alone, _together = tables.story_spans(_story)
        _summary = mo.vstack(
            [
                mo.md(
                    f"""
                    ## 4. Alone vs together
                    On the digits a client never saw, its own model scores
                    {_alone}; the federated model, trained on the same private data
                    without any image leaving its client, scores {_together}.
                    """
                ),
                charts.story_chart(_story),
            ]
        )
    mo.vstack(
        [
            _summary,
            charts.accuracy_chart(tables.accuracies(isolated, federated), config.num_clients),
            mo.md(
                """
                ---
                The same experiment runs headless (`python -m fedcore run --phase all`)
                and from the Flower CLI (`flwr run .`); see the README.
                """
            ),
        ]
    )
    return


@app.cell(hide_code=True)
def _(federated, mo, report_html, run, run_charts, tables, to_png, to_svg):
    # Every download is made when clicked, not when the page is drawn.
    _result = run.result()
    _charts = run_charts(_result)

    def _report():
        return report_html([("fedcore run", _result)]).encode()

    def _figure(name, kind):
        def render():
            chart = _charts[name]()
            return to_svg(chart).encode() if kind == "svg" else to_png(chart)

        return render

    _tables = {
        "accuracies.csv": lambda: tables.accuracies(_result.isolated or [], federated),
        "accuracy-per-round.csv": lambda: tables.history(federated.history),
        "client-losses.csv": lambda: tables.federated_client_losses(federated),
    }
    mo.vstack(
        [
            mo.md(
                "## 5. Share\n\nA report that opens anywhere, offline too (one HTML file, "
                "every chart inside), the results as JSON, the tables as CSV, and each "
                "chart as SVG or PNG for papers and slides."
            ),
            mo.hstack(
                [
                    mo.download(_report, "fedcore-report.html", "text/html", label="Report (HTML)"),
                    mo.download(
                        lambda: _result.to_json().encode(),
                        "fedcore-results.json",
                        "application/json",
                        label="Results (JSON)",
                    ),
                    *[
                        mo.download(
                            lambda make=make: make().to_csv(index=False).encode(),
                            name,
                            "text/csv",
                            label=name,
                        )
                        for name, make in _tables.items()
                    ],
                ],
                justify="start",
                wrap=True,
            ),
            mo.accordion(
                {
                    "Each chart as SVG or PNG": mo.vstack(
                        [
                            mo.hstack(
                                [
                                    mo.md(name.replace("-", " ")),
                                    mo.download(
                                        _figure(name, "svg"),
                                        f"{name}.svg",
                                        "image/svg+xml",
                                        label="SVG",
                                    ),
                                    mo.download(
                                        _figure(name, "png"),
                                        f"{name}.png",
                                        "image/png",
                                        label="PNG",
                                    ),
                                ],
                                justify="start",
                            )
                            for name in _charts
                        ]
                    )
                }
            ),
        ]
    )
    return


@app.cell(hide_code=True)
def _(mo):
    mo.md(
        r"""
        ---
        # The lab

        The story used one split of the data and one model. Here you choose them,
        and each run computes three models on the same split, all scored on the
        same 10,000 test images: every client's model **trained alone** (for the
        local epochs of one round), the **federated** model (FedAvg through
        Flower), and the **centralized baseline**: one model trained on every
        client's images pooled in one place, for rounds × local epochs epochs
        (as many passes as a client makes over its own data in the whole run),
        with the same optimiser. Pooling the data is what federated learning
        avoids; the baseline is the upper bound a federated model can hope to
        reach.

        **Splits.** The 60,000 training images are shuffled with the seed, then
        cut by one of [Flower Datasets](https://flower.ai/docs/datasets/)' partitioners:

        - `exclude`: equal random (IID) parts, then each client's excluded digits
          removed: the story's split. The lab cycles the story's exclusions
          (client 1 lacks 1, 3, 7; client 2 lacks 2, 5, 8; client 3 lacks 4, 6, 9;
          client 4 lacks 1, 3, 7 again, ...).
        - `iid`: equal random parts: every client sees every digit, in about the
          same proportions.
        - `dirichlet:ALPHA`: label skew as in NIID-Bench (Li et al., *Federated
          Learning on Non-IID Data Silos: An Experimental Study*, ICDE 2022): the
          images of each digit are shared among the clients in proportions drawn
          from a Dirichlet distribution Dir(alpha). A small alpha (0.1) leaves
          most clients with a few digits; a large one (100) is close to IID.
        - `classes:K`: NIID-Bench's #C=K: each client holds K digits, picked at
          random, and each digit's images are divided equally among the clients
          that hold it (a digit no client picked is in nobody's data).
        - `shards:K`: the pathological non-IID split of McMahan et al.
          (*Communication-Efficient Learning of Deep Networks from Decentralized
          Data*, AISTATS 2017): the images sorted by digit and cut into equal
          shards, K shards per client (they gave 100 clients 2 shards of 300
          images), so a client holds at most K digits.
        - `sizes:LAW`: IID digits but unequal sizes: client i holds a share of the
          images proportional to i (linear), i squared (square) or e to the i
          (exponential).

        **Models.** `mlp`: 784-128-10 with ReLU (101,770 weights), the story's.
        `2nn`: McMahan et al.'s 2NN, two hidden layers of 200 ReLU units
        (199,210 weights). `cnn`: McMahan et al.'s CNN for MNIST, two 5x5
        convolutions (32 and 64 channels) each followed by 2x2 max pooling, a
        512-unit layer and the 10 outputs (1,663,370 weights): the most accurate,
        and much slower on a CPU.
        """
    )
    return


@app.cell(hide_code=True)
def _(BY_NAME, ConfigError, default_exclusions, defaults, mo):
    # The lab's settings live in the page's address, under their run-config keys
    # (`?split=classes:2&num-clients=4&num-server-rounds=2&local-epochs=1`; the CLI's
    # flag names, `clients=4`, are read too): read when the page opens, written when
    # the lab runs, so a link opens the same lab settings.
    # (`strategy=fedprox:mu=0.1&privacy=server:noise=0.5,clip=5,delta=1e-05&dropout=0.2`
    # too; the strategy before the privacy that needs it.)
    LAB_SETTINGS = ("split", "model", "strategy", "privacy", "num_clients", "num_rounds",
                    "local_epochs", "fraction_train", "min_train_clients", "dropout",
                    "target_accuracy", "seed")  # fmt: skip
    # marimo's own parameters, not settings
    NOT_SETTINGS = {"file", "kiosk", "mode", "view-as", "show-code", "access_token"}

    def lab_config_with(base, **changes):
        """`base` with some lab settings changed; the exclude split's exclusions
        cycled to the number of clients, as the lab's controls make them."""
        merged = {"split": base.split, "num_clients": base.num_clients} | changes
        exclude = str(merged["split"]).strip().lower().partition(":")[0] == "exclude"
        return base.replace(
            **changes,
            excluded_digits=default_exclusions(merged["num_clients"]) if exclude else (),
        )

    def lab_settings_from_url(params):
        """The lab's starting settings from the page's address, and one line for each
        parameter that could not be used (its default is used instead)."""
        names = {BY_NAME[n].key: n for n in LAB_SETTINGS}
        names |= {BY_NAME[n].flag.removeprefix("--"): n for n in LAB_SETTINGS}
        given, problems = {}, []
        for key in params:
            if key in NOT_SETTINGS:
                continue
            if key not in names:
                known = ", ".join(BY_NAME[n].key for n in LAB_SETTINGS)
                problems.append(f"`{key}` is not a lab setting (the lab's: {known})")
                continue
            given[names[key]] = (key, params.get_all(key)[-1])
        config = lab_config_with(defaults)
        for name in LAB_SETTINGS:  # in this order: the clients before the minimum of them
            if name not in given:
                continue
            key, text = given[name]
            kind = BY_NAME[name].kind
            try:
                try:
                    value = kind(text.strip())
                except ValueError:
                    what = "a whole number" if kind is int else "a number"
                    raise ConfigError(f"{name} must be {what}, got {text!r}") from None
                config = lab_config_with(config, **{name: value})
            except ConfigError as error:
                problems.append(f"`{key}={text}`: {str(error).rstrip('.')}")
        return config, problems

    def lab_url(config):
        """The lab's settings of `config` as the page's address spells them."""
        values = {}
        for name in LAB_SETTINGS:
            value = getattr(config, name)
            values[BY_NAME[name].key] = f"{value:g}" if isinstance(value, float) else str(value)
        return values

    def write_lab_url(config):
        """Put the lab's settings of `config` in the page's address."""
        params = mo.query_params()
        for name in LAB_SETTINGS:
            alias = BY_NAME[name].flag.removeprefix("--")
            if alias != BY_NAME[name].key and alias in params:
                params.remove(alias)  # the key below says it
        for key, text in lab_url(config).items():
            params[key] = text

    lab_defaults, lab_url_problems = lab_settings_from_url(mo.query_params())
    return lab_defaults, lab_url_problems, write_lab_url


@app.cell(hide_code=True)
def _(BY_NAME, PRIVACY, SPLITS, STRATEGIES, control, lab_defaults, mo):
    # Labels, ranges and defaults come from the settings table, as the story's; the
    # values from the page's address, if it gives them.
    lab_split_kind = mo.ui.dropdown(
        list(SPLITS), value=lab_defaults.split_kind, label=BY_NAME["split"].label
    )
    lab_strategy = mo.ui.dropdown(
        list(STRATEGIES), value=lab_defaults.strategy_name, label=BY_NAME["strategy"].label
    )
    lab_privacy = mo.ui.dropdown(
        list(PRIVACY), value=lab_defaults.privacy_kind, label=BY_NAME["privacy"].label
    )
    lab_dropout = control("dropout", lab_defaults)
    lab_model = control("model", lab_defaults)
    lab_clients = control("num_clients", lab_defaults)
    lab_rounds = control("num_rounds", lab_defaults)
    lab_epochs = control("local_epochs", lab_defaults)
    lab_fraction = control("fraction_train", lab_defaults)
    lab_min_clients = control("min_train_clients", lab_defaults)
    lab_target = control("target_accuracy", lab_defaults)
    lab_seed = control("seed", lab_defaults)
    lab_run_button = mo.ui.run_button(label="Run the lab", kind="success")
    return (
        lab_clients,
        lab_dropout,
        lab_epochs,
        lab_fraction,
        lab_min_clients,
        lab_model,
        lab_privacy,
        lab_rounds,
        lab_run_button,
        lab_seed,
        lab_split_kind,
        lab_strategy,
        lab_target,
    )


@app.cell(hide_code=True)
def _(PRIVACY, STRATEGIES, format_spec, lab_defaults, lab_privacy, lab_strategy, mo):
    # The strategy's and the privacy's parameters, as written after the colon
    # (`mu=0.1`): the table's defaults, or the address's for the kind it gave;
    # none for a kind without parameters.
    def _parameters(table, name, given_name, given, label):
        if not table[name]:
            return None
        values = given if name == given_name else table[name]
        text = format_spec(name, values).partition(":")[2]
        return mo.ui.text(value=text, label=label, full_width=False)

    lab_strategy_parameters = _parameters(
        STRATEGIES,
        lab_strategy.value,
        lab_defaults.strategy_name,
        lab_defaults.strategy_parameters,
        "its parameters",
    )
    lab_privacy_parameters = _parameters(
        PRIVACY,
        lab_privacy.value,
        lab_defaults.privacy_kind,
        lab_defaults.privacy_parameters,
        "noise, clip, delta",
    )
    return lab_privacy_parameters, lab_strategy_parameters


@app.cell(hide_code=True)
def _(SIZE_LAWS, SPLITS, lab_defaults, lab_split_kind, mo):
    # The split's parameter: its type, default and meaning from SPLITS.
    _spec = SPLITS[lab_split_kind.value]
    if _spec is None:
        lab_split_parameter = None
    else:
        _kind_type, _default, _meaning = _spec
        if lab_split_kind.value == lab_defaults.split_kind:
            _default = lab_defaults.split_parameter  # the address's, or `-- --split ...`
        if _kind_type is str:
            lab_split_parameter = mo.ui.dropdown(list(SIZE_LAWS), value=_default, label=_meaning)
        else:
            lab_split_parameter = mo.ui.number(
                value=_default, step=0.01 if _kind_type is float else 1, label=_meaning
            )
    return (lab_split_parameter,)


@app.cell(hide_code=True)
def _(
    APP_LIMITS_WHY,
    BY_NAME,
    default_exclusions,
    format_digits,
    lab_clients,
    lab_dropout,
    lab_epochs,
    lab_fraction,
    lab_min_clients,
    lab_model,
    lab_privacy,
    lab_privacy_parameters,
    lab_rounds,
    lab_run_button,
    lab_seed,
    lab_split_kind,
    lab_split_parameter,
    lab_strategy,
    lab_strategy_parameters,
    lab_target,
    lab_url_problems,
    mo,
):
    _split = (
        [lab_split_kind] if lab_split_parameter is None else [lab_split_kind, lab_split_parameter]
    )
    _url = []
    if lab_url_problems:
        _url.append(
            mo.callout(
                mo.md(
                    "**Some settings in the page's address were not used** (the defaults "
                    "are):\n\n" + "\n".join(f"- {p}" for p in lab_url_problems)
                ),
                kind="warn",
            )
        )
    _exclusions = None
    if lab_split_kind.value == "exclude":
        _groups = {}
        for _client, _digits in enumerate(default_exclusions(lab_clients.value), start=1):
            _groups.setdefault(_digits, []).append(str(_client))
        _exclusions = mo.md(
            "Excluded digits (the story's, cycled): "
            + "; ".join(
                f"{format_digits(d)} for client{'s' if len(c) > 1 else ''} {', '.join(c)}"
                for d, c in _groups.items()
            )
            + "."
        )
    mo.vstack(
        [
            mo.md("## The lab's settings"),
            *_url,
            mo.hstack([*_split, lab_model], justify="start", gap=2, wrap=True),
            *([_exclusions] if _exclusions is not None else []),
            mo.hstack([lab_clients, lab_rounds, lab_epochs], justify="start", gap=2, wrap=True),
            mo.hstack(
                [
                    element
                    for element in (
                        lab_strategy,
                        lab_strategy_parameters,
                        lab_privacy,
                        lab_privacy_parameters,
                        lab_dropout,
                    )
                    if element is not None
                ],
                justify="start",
                gap=2,
                wrap=True,
            ),
            mo.accordion(
                {
                    "More: clients per round, target accuracy, seed": mo.hstack(
                        [lab_fraction, lab_min_clients, lab_target, lab_seed],
                        justify="start",
                        wrap=True,
                    ),
                    "What the strategy, privacy and dropout mean": mo.md(
                        "\n".join(
                            f"- **{BY_NAME[name].label}**: {BY_NAME[name].help}."
                            for name in ("strategy", "privacy", "dropout")
                        )
                    ),
                }
            ),
            mo.md(f"<small>{APP_LIMITS_WHY}</small>"),
            lab_run_button,
        ]
    )
    return


@app.cell(hide_code=True)
def _(
    BY_NAME,
    ConfigError,
    default_exclusions,
    defaults,
    lab_clients,
    lab_dropout,
    lab_epochs,
    lab_fraction,
    lab_min_clients,
    lab_model,
    lab_privacy,
    lab_privacy_parameters,
    lab_rounds,
    lab_seed,
    lab_split_kind,
    lab_split_parameter,
    lab_strategy,
    lab_strategy_parameters,
    lab_target,
    mo,
):
    def _value(name, element):
        """A control's value as the setting's type; None (an empty field) stays
        None for the config to refuse."""
        value = element.value
        if value is None or isinstance(value, str):
            return value
        if BY_NAME[name].kind is int:
            return int(value) if float(value).is_integer() else value
        return round(float(value), 6)  # a slider's 0.30000000000000004

    _kind = lab_split_kind.value
    if lab_split_parameter is None:
        _split = _kind
    elif isinstance(lab_split_parameter.value, int | float):
        _split = f"{_kind}:{lab_split_parameter.value:g}"
    else:  # an emptied field reads "?", which the config refuses with the parameter's meaning
        _split = f"{_kind}:{lab_split_parameter.value or '?'}"

    def _spec(kind, parameters):
        """`"fedprox"` and `"mu=0.5"` -> `"fedprox:mu=0.5"`; the config checks and
        normalises it (`format_spec`)."""
        text = "" if parameters is None else parameters.value.strip()
        return f"{kind.value}:{text}" if text else kind.value

    try:
        lab_config = defaults.replace(
            split=_split,
            strategy=_spec(lab_strategy, lab_strategy_parameters),
            privacy=_spec(lab_privacy, lab_privacy_parameters),
            dropout=_value("dropout", lab_dropout),
            excluded_digits=default_exclusions(lab_clients.value) if _kind == "exclude" else (),
            model=lab_model.value,
            num_clients=_value("num_clients", lab_clients),
            num_rounds=_value("num_rounds", lab_rounds),
            local_epochs=_value("local_epochs", lab_epochs),
            fraction_train=_value("fraction_train", lab_fraction),
            min_train_clients=_value("min_train_clients", lab_min_clients),
            target_accuracy=_value("target_accuracy", lab_target),
            seed=_value("seed", lab_seed),
        )
    except ConfigError as _error:
        lab_config = None
        _message = mo.callout(
            mo.md(f"**These lab settings cannot run:** {str(_error).rstrip('.')}."), kind="danger"
        )
    else:
        _message = None
    _message
    return (lab_config,)


@app.cell(hide_code=True)
def _(mo):
    lab_runs = []  # the lab's run in this session, released when another is asked for
    get_lab_request, set_lab_request = mo.state(None)  # the settings "Run the lab" sent
    get_lab_finished, set_lab_finished = mo.state(None)
    return get_lab_finished, get_lab_request, lab_runs, set_lab_finished, set_lab_request


@app.cell(hide_code=True)
def _(lab_config, lab_run_button, set_lab_request, write_lab_url):
    # Only the button starts a run: moving a control neither starts nor stops one.
    if lab_run_button.value and lab_config is not None:
        set_lab_request(lab_config)
        write_lab_url(lab_config)  # a link to the page now opens these settings
    return


@app.cell(hide_code=True)
def _(get_lab_request, lab_config, mo):
    _shown = get_lab_request()
    mo.md(
        "_The settings above are not those of the run below: press **Run the lab** to run them._"
    ) if _shown is not None and lab_config is not None and _shown != lab_config else None
    return


@app.cell(hide_code=True)
def _(end_view, engine, get_lab_request, lab_runs, mo, set_lab_finished, watch_run):
    lab_request = get_lab_request()
    mo.stop(lab_request is None)
    lab_run = engine.submit(lab_request, "all")
    for _previous in lab_runs:  # after submitting: the same settings again keep their run
        _previous.release()
    lab_runs[:] = [lab_run]
    lab_stop_button = mo.ui.button(label="Stop", kind="danger", on_click=lambda _: lab_run.stop())
    _again = mo.md("Press **Run the lab** to run it again.")
    if lab_run.done():
        _view = end_view(lab_run.status(), _again)
    elif mo.app_meta().request is None:  # exported or run as a script: wait here
        lab_run.wait()
        _view = end_view(lab_run.status(), _again)
    else:
        mo.Thread(
            target=watch_run,
            args=(lab_run, lab_stop_button, lambda _run: None, set_lab_finished, _again),
        ).start()
        _view = mo.md("")
    _view
    return lab_run, lab_stop_button


@app.cell(hide_code=True)
def _(get_lab_finished, keep_run, lab_run, mo):
    get_lab_finished()  # drawn when the lab's run is done
    mo.stop(lab_run.status().state != "done")
    lab_result = lab_run.result()
    keep_run("lab", lab_result)
    return (lab_result,)


@app.cell(hide_code=True)
def _(charts, lab_result, mo, tables):
    _config = lab_result.config
    _n = _config.num_clients
    _summary = tables.lab_summary(lab_result)
    _table = mo.md(
        "\n".join(
            ["| model or measure | result |", "| :--- | ---: |"]
            + [f"| {m} | **{t}** |" for m, t in zip(_summary.measure, _summary.text, strict=True)]
        )
    )
    _failures = lab_result.federated.failures
    _warnings = []
    if lab_result.unlearnable_digits:
        _missing = ", ".join(map(str, lab_result.unlearnable_digits))
        _warnings.append(
            mo.callout(
                mo.md(
                    f"**No client has any image of {_missing}.** "
                    "No model, federated or centralized, can learn a digit that is in "
                    "nobody's data: expect 0% on it everywhere."
                ),
                kind="warn",
            )
        )
    if _failures:
        _warnings.append(
            mo.callout(
                mo.md(
                    "**Some client updates failed:**\n\n" + "\n".join(f"- {f}" for f in _failures)
                ),
                kind="warn",
            )
        )
    _charts = [
        charts.rounds_with_references_chart(
            tables.federated_rounds(lab_result.federated.history),
            tables.reference_lines(lab_result),
        )
    ]
    if lab_result.cross_accuracy is not None:
        _charts.append(
            charts.cross_accuracy_chart(tables.cross_accuracy(lab_result.cross_accuracy), _n)
        )
    _cross_note = (
        [
            mo.md(
                "The cross matrix: row i is client i's model, trained alone; column j scores it "
                "on test images drawn with client j's mix of digits (its accuracy on each "
                "digit, weighted by client j's training images of that digit). The outlined "
                "diagonal is each model on data like its own; off the diagonal, on the "
                "others' data."
            )
        ]
        if len(_charts) > 1
        else []
    )
    mo.vstack(
        [
            mo.md(
                f"""
                ## The lab's results
                {_n} clients, split `{_config.split}`, model `{_config.model}`,
                {_config.num_rounds} round(s) of {_config.local_epochs} local epoch(s).
                The same run from the command line:
                `python -m fedcore run {_config.summary()}`
                """
            ),
            *_warnings,
            mo.hstack(
                [
                    _table,
                    charts.label_distribution_chart(
                        tables.split_counts(lab_result.label_counts), _n
                    ),
                ],
                align="start",
                gap=2,
                widths="equal",
            ),
            *_cross_note,
            mo.hstack(_charts, justify="start", align="start", gap=2, wrap=True),
        ]
    )
    return


@app.cell(hide_code=True)
def _(charts, lab_result, mo, tables):
    # Inside the rounds: what the strategy recorded in each round. Results saved
    # before it was recorded have empty fields: a line says so instead of a chart.
    _config, _history = lab_result.config, lab_result.federated.history

    def _or_note(table, draw, missing):
        return draw(table) if len(table) else mo.md(f"_{missing}_")

    _views = [
        _or_note(
            tables.digit_rounds(_history),
            charts.digit_rounds_chart,
            "No accuracy per digit in these results (saved before it was recorded).",
        ),
        _or_note(
            tables.client_drift(_history),
            lambda drift: charts.client_drift_chart(drift, _config.num_clients),
            "No client updates recorded in these results (saved before they were).",
        ),
        _or_note(
            tables.communication(_history),
            charts.communication_chart,
            "No communication recorded in these results (saved before it was).",
        ),
    ]
    if _config.privacy_kind != "off":
        _views.append(
            _or_note(
                tables.privacy_spent(_history),
                lambda spent: charts.privacy_chart(spent, _config.privacy_parameters["delta"]),
                "No epsilon recorded in these results.",
            )
        )
    _answers = tables.clients_answered(_history)
    if _config.dropout or lab_result.federated.failures or _answers.missing.any():
        _views.append(
            _or_note(
                _answers,
                charts.clients_answered_chart,
                "How many clients answered is not recorded in these results.",
            )
        )
    mo.vstack(
        [
            mo.md(
                """
                ### Inside the rounds
                The global model's accuracy on each digit after every round (a
                client's missing digits are learned from the others' updates); how
                far each client's update points from the aggregate (cosine: 1 = the
                same direction, low = the client pulls away, *client drift*) and how
                large it is; and the weights exchanged with the clients.
                """
            ),
            mo.hstack(_views, justify="start", align="start", gap=2, wrap=True),
        ]
    )
    return


@app.cell(hide_code=True)
def _(mo):
    runs_file = mo.ui.file(filetypes=[".json"], multiple=True, label="Load results files (JSON)")
    return (runs_file,)


@app.cell(hide_code=True)
def _(mo, runs_file):
    mo.vstack(
        [
            mo.md(
                r"""
                ---
                # Compare runs

                Every run that finishes on this page is kept here: the story's and
                each of the lab's. Results files join them: those that
                `python -m fedcore run --out results.json` and `flwr run .`
                (`results/`) write, and the one the story's Share section downloads.
                Pin two or more to see them side by side: their accuracy per round,
                their final accuracies and the settings that differ.
                """
            ),
            runs_file,
        ]
    )
    return


@app.cell(hide_code=True)
def _(ExperimentResult, ResultsError, html, keep_run, mo, runs_file):
    def _read(upload):
        """A results file's text as a result; `ResultsError` (naming the file) if it
        is not one, as `ExperimentResult.load` says it."""
        try:
            return ExperimentResult.from_json(upload.contents.decode("utf-8"))
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise ResultsError(f"{upload.name}: not a fedcore results file ({error})") from None

    _problems = []
    for _upload in runs_file.value:
        try:
            keep_run("file", _read(_upload), file=_upload.name)
        except ResultsError as _error:
            _problems.append(
                mo.callout(mo.Html(f"<b>Not loaded:</b> {html.escape(str(_error))}"), kind="danger")
            )
    mo.vstack(_problems) if _problems else None
    return


@app.cell(hide_code=True)
def _(get_kept_runs, get_pinned_runs, mo, set_pinned_runs):
    _names = [name for name, _ in get_kept_runs()]
    pin_select = mo.ui.multiselect(
        options=_names,
        value=[name for name in get_pinned_runs() if name in _names],
        label="Pinned runs",
        on_change=set_pinned_runs,
        full_width=True,
    )
    return (pin_select,)


@app.cell(hide_code=True)
def _(charts, get_kept_runs, html, mo, pin_select, report_html, tables):
    _kept = get_kept_runs()
    _pinned = [(name, result) for name, result in _kept if name in pin_select.value]

    def _short(name):
        return name.partition(": ")[0]  # "lab 2", "file 3 (x.json)"

    def _table(head, rows):
        """A table of text, for runs' names and settings (escaped, `|` too)."""

        def cells(values):
            return "| " + " | ".join(html.escape(v).replace("|", "\\|") for v in values) + " |"

        lines = [cells(head), "| :--- " + "| ---: " * (len(head) - 1) + "|"]
        return mo.md("\n".join(lines + [cells(row) for row in rows]))

    if len(_pinned) < 2:
        _hint = (
            "Pin two or more runs above to see them side by side."
            if len(_kept) >= 2
            else f"{len(_kept)} run{'' if len(_kept) == 1 else 's'} kept so far: run the lab "
            "(with other settings than the story's) or load a results file to have two to "
            "compare."
        )
        _view = [mo.md(f"_{_hint}_")]
    else:
        _names = [_short(name) for name, _ in _pinned]
        _differ = tables.differing_settings(_pinned)
        _settings = (
            _table(
                ["setting", *_names],
                [[f"{r[1]} ({r[0]})", *r[2:]] for r in _differ.itertuples(index=False)],
            )
            if len(_differ)
            else mo.md("_The pinned runs have the same settings._")
        )
        _finals = tables.runs_final_accuracies(_pinned)
        _accuracies = _table(
            ["model, test set", *_names],
            [
                [f"{r[0]}, {r[1]}", *("-" if v is None else f"{v:.1%}" for v in r[2:])]
                for r in _finals.itertuples(index=False)
            ],
        )
        _history = tables.runs_history(_pinned)
        _overlay = (
            charts.runs_history_chart(_history)
            if len(_history)
            else mo.md("_None of the pinned runs has a federated model._")
        )
        _view = [
            mo.hstack(
                [
                    _overlay,
                    mo.vstack(
                        [
                            mo.md("### Settings that differ"),
                            _settings,
                            mo.md("### Final accuracy"),
                            _accuracies,
                        ]
                    ),
                ],
                justify="start",
                align="start",
                gap=2,
                wrap=True,
            ),
            mo.hstack(
                [
                    mo.download(
                        lambda: report_html(_pinned).encode(),
                        "fedcore-compare.html",
                        "text/html",
                        label="These runs side by side (HTML report)",
                    )
                ],
                justify="start",
            ),
        ]
    mo.vstack([pin_select, *_view])
    return


if __name__ == "__main__":
    app.run()
