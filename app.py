import marimo

__generated_with = "0.25.2"
app = marimo.App(width="medium", app_title="fedcore: a federated learning lab")

with app.setup(hide_code=True):
    import marimo as mo

    from fedcore.app.imports import alone

    with alone():  # no other import meanwhile: two at once break PyTorch (see the module)
        from fedcore.app import compare, controls, marimo_fixes, share, views
        from fedcore.app.budget import DEFAULT_MAX_RUN_MINUTES, MAX_RUN_MINUTES, Budget
        from fedcore.app.from_page import (
            chapter_config as chapter_config_from_controls,
        )
        from fedcore.app.from_page import (
            lab_config_from_controls,
            lab_settings_from_url,
            story_config,
            story_split_config,
            write_lab_url,
        )
        from fedcore.app.runs import RunSlot, Visitor, start_run
        from fedcore.cli.main import settings_from_cli
        from fedcore.data.mnist import DataError, load_mnist
        from fedcore.data.partition import partition_clients
        from fedcore.engine import shared_engine
        from fedcore.experiment.results import ResultsError
        from fedcore.experiment.settings import APP_LIMITS_WHY
        from fedcore.experiment.specs import ConfigError
        from fedcore.report import charts, tables
        from fedcore.report.labels import percent

    marimo_fixes.apply()  # no control change lost while the kernel is busy (see the module)
    # Every run goes to the engine: processes of its own, shared by every session
    # of this server, started now so that it is warm by the first run. It queues
    # runs (the sessions take turns), merges identical ones and keeps their results.
    engine = shared_engine()


@app.cell(hide_code=True)
def _():
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
def _():
    # `marimo run app.py -- --rounds 1 --epochs 1 --max-run-minutes 10` (or
    # `marimo export html ... -- ...`): the settings every page starts from, and the
    # server's budget for one run (this session is one visitor of the engine).
    _args = dict(mo.cli_args())
    _minutes = _args.pop(MAX_RUN_MINUTES, DEFAULT_MAX_RUN_MINUTES)
    cli = settings_from_cli(_args)
    defaults, _error = cli.config, cli.error
    try:
        visitor = Visitor(engine, Budget.from_cli(_minutes, defaults))
    except ConfigError as _rejected:
        _error = _error or str(_rejected)
    mo.stop(
        _error is not None,
        mo.callout(mo.md(f"**Command-line settings rejected:** {_error}"), kind="danger"),
    )
    return defaults, visitor


@app.cell(hide_code=True)
def _(defaults):
    # Labels, ranges and steps from the settings table. The client count and the seed
    # apart: the data and split sections depend only on them, so rounds, epochs or
    # the learning rate do not redraw them, and only the client count makes new
    # exclusion pickers.
    story_clients = controls.control("num_clients", defaults)
    story_seed = controls.control("seed", defaults)
    story_training = controls.controls(controls.STORY_TRAINING, defaults)
    get_exclusions, set_exclusions = mo.state(defaults.excluded_digits)
    # Laid out here, once: a cell that shows a control runs again whenever it moves,
    # redrawing the control under the visitor's hand (a key press on it is lost).
    _t = story_training
    story_layout = {
        "sizes": views.row(story_clients, _t["num_rounds"], _t["local_epochs"]),
        "advanced": views.row(
            *(_t[n] for n in ("learning_rate", "batch_size", "momentum")),
            story_seed,
            _t["fraction_train"],
            gap=0.5,
        ),
    }
    return get_exclusions, set_exclusions, story_clients, story_layout, story_seed, story_training


@app.cell(hide_code=True)
def _(get_exclusions, set_exclusions, story_clients):
    # One selector per client; changing the client count keeps earlier picks.
    exclusion_pickers = controls.exclusion_pickers(
        story_clients.value,
        get_exclusions(),
        lambda picks: set_exclusions(picks + get_exclusions()[len(picks) :]),
    )
    return (exclusion_pickers,)


@app.cell(hide_code=True)
def _(exclusion_pickers, story_layout):
    mo.vstack(
        [
            mo.md("## The setup"),
            story_layout["sizes"],
            mo.md("Which digits does each client **not** have?"),
            mo.hstack(list(exclusion_pickers), wrap=True, justify="start"),
            mo.accordion({"Advanced: optimiser, seed, client sampling": story_layout["advanced"]}),
        ]
    )
    return


@app.cell(hide_code=True)
def _(defaults, exclusion_pickers, story_clients, story_seed):
    _picks = controls.exclusions_from_picks(exclusion_pickers.value)
    _values = {"num_clients": story_clients.value, "seed": story_seed.value}
    try:
        split_config = story_split_config(_values, _picks, defaults.data_dir)
    except ConfigError as _error:
        split_config, _message = None, views.refusal(_error)
    else:
        _message = views.excluded_by_all_warning(split_config.excluded_by_all)
    _message
    return (split_config,)


@app.cell(hide_code=True)
def _(split_config, story_training):
    mo.stop(split_config is None)
    try:
        config = story_config(split_config, story_training.value)
    except ConfigError as _error:
        mo.stop(True, views.refusal(_error))
    return (config,)


@app.cell(hide_code=True)
def _(split_config):
    mo.stop(split_config is None)
    try:
        with mo.status.spinner(title="Loading MNIST"):
            data = load_mnist(split_config)
    except DataError as _error:
        mo.stop(True, views.data_error(_error))
    return (data,)


@app.cell(hide_code=True)
def _(data, split_config):
    partitions = partition_clients(data.train_y, split_config)
    counts = tables.label_counts(data.train_y, partitions)
    _empty = [p.client for p in partitions if p.size == 0]
    mo.stop(
        bool(_empty),
        mo.callout(mo.md(f"**Client(s) {_empty} are left with no training data.**"), kind="danger"),
    )
    return counts, partitions


@app.cell(hide_code=True)
def _(counts, data, partitions, split_config):
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
def _(visitor):
    story_runs = RunSlot(visitor, "story")  # this session's story run
    get_isolated_ready, set_isolated_ready = mo.state(None)
    get_run_finished, set_run_finished = mo.state(None)
    retry_button = mo.ui.button(label="Run again", kind="success")
    return (
        get_isolated_ready,
        get_run_finished,
        retry_button,
        set_isolated_ready,
        set_run_finished,
        story_runs,
    )


@app.cell(hide_code=True)
def _(config, retry_button, set_isolated_ready, set_run_finished, story_runs):
    retry_button.value  # "Run again" submits the same settings anew
    run, _view = start_run(
        story_runs,
        config,
        again=retry_button,
        on_isolated=set_isolated_ready,
        on_finished=set_run_finished,
    )
    _view
    return (run,)


@app.cell(hide_code=True)
def _(get_isolated_ready, run):
    get_isolated_ready()  # drawn as soon as the isolated models are ready
    isolated = run.isolated()
    mo.stop(isolated is None)
    return (isolated,)


@app.cell(hide_code=True)
def _():
    normalized_switch = mo.ui.switch(value=True, label="Confusion matrices as shares of each row")
    return (normalized_switch,)


@app.cell(hide_code=True)
def _(config, isolated, normalized_switch):
    mo.vstack(
        [
            mo.md(f"## 2. Each client alone\n\n{views.isolated_lines(isolated)}"),
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
def _(get_run_finished, keep_run, run):
    get_run_finished()  # drawn when the whole run is done
    mo.stop(run.status().state != "done")
    story_result = run.result()
    federated = story_result.federated
    keep_run("story", story_result)
    views.diverged_callout(story_result)  # above the story's numbers, if they mean nothing
    return federated, story_result


@app.cell(hide_code=True)
def _(config, federated, normalized_switch):
    _rounds = ", ".join(percent(h.accuracy) for h in federated.history)
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
            views.failures_callout(federated.failures) or mo.md(""),
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
def _(config, federated, isolated):
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
def _(story_result):
    mo.vstack(
        [
            mo.md(
                "## 5. Share\n\nA report that opens anywhere, offline too (one HTML file, "
                "every chart inside), the results as JSON, the tables as CSV, and each "
                "chart as SVG or PNG for papers and slides."
            ),
            share.downloads(story_result),
            mo.accordion({"Each chart as SVG or PNG": share.figure_downloads(story_result)}),
        ]
    )
    return


@app.cell(hide_code=True)
def _():
    mo.md(
        r"""
        ---
        # What the server learns

        The hospitals never sent an image. But each sent its *update*, the weights
        it trained, and the server sees every one. Here the server is **honest but
        curious**: it runs Flower's protocol as written and then reads the updates.
        From the update alone, with what it knows anyway (the model it sent, the
        training it asked for, the test images it evaluates on), it infers

        - **which digits a hospital holds, and how many**: a digit the hospital has
          no image of pushes the output layer's bias for that digit down in every
          step (Zhao et al., *iDLG*, 2020; Wainakh et al., *User-Level Label
          Leakage from Gradients*, 2022);
        - **its images**: for a first layer on the pixels, one row's weight change
          divided by its bias change is an image the layer saw (Phong et al., 2017;
          Fowl et al., *Robbing the Fed*, 2022), exactly so for one step of one
          image. With `optimise`, it also fits images whose training would give
          the same update (Zhu et al., *DLG*, 2019; Geiping et al., *Inverting
          Gradients*, 2020).

        fedcore scores each guess against the hospital's real data: the digits it
        lacks, and the PSNR and SSIM of the best reconstruction against the image
        it matches (over about 30 dB is the image itself).
        """
    )
    return


@app.cell(hide_code=True)
def _(story_result):
    mo.vstack(
        [
            mo.md(
                "### In the story's run\n\nWhat the server concluded from each hospital's "
                "first update (*named exactly*: the digits it says are missing are those none "
                "of the images it trained on shows). At batch 64 over its 14,000 images most "
                "first-layer rows mix many images; a unit that only one image ever switched on "
                "gives that image back."
            ),
            *views.leakage_views(story_result),
        ]
    )
    return


@app.cell(hide_code=True)
def _():
    chapter_controls = controls.chapter_controls()
    chapter_run_button = mo.ui.run_button(label="Run the attack", kind="success")
    return chapter_controls, chapter_run_button


@app.cell(hide_code=True)
def _(chapter_controls, chapter_run_button):
    _c = chapter_controls
    _defense = _c.value["defense"]
    mo.vstack(
        views.shown(
            mo.md(
                "### Try it\n\nSmaller batches and fewer steps give more away; a defense "
                "hides it, at a cost. Each run is the story's split and clients."
            ),
            views.row(_c["batch_size"], _c["local_steps"], _c["local_epochs"], _c["leakage"]),
            views.row(
                _c["defense"],
                _c["parameters"][_defense] if _defense in _c["parameters"] else None,  # noqa: SIM401
            ),  # fmt: skip
            mo.accordion(
                {
                    "What the defenses and settings mean": views.settings_help(
                        ("privacy", "local_steps", "leakage")
                    )
                }
            ),  # fmt: skip
            chapter_run_button,
        )
    )
    return


@app.cell(hide_code=True)
def _(chapter_controls, defaults, split_config, visitor):
    mo.stop(split_config is None)
    try:
        chapter_config = chapter_config_from_controls(
            split_config, chapter_controls.value, defaults.num_rounds
        )
    except ConfigError as _error:
        chapter_config, _message = None, views.refusal(_error, "These settings")
    else:
        _message = mo.md(
            f"<small>Run the attack runs: {tables.run_label(chapter_config)} "
            f"({visitor.budget.cost_of(chapter_config, 'federated')}).</small>"
        )
    _message
    return (chapter_config,)


@app.cell(hide_code=True)
def _(visitor):
    chapter_runs = RunSlot(visitor, "federated")
    get_chapter_request, set_chapter_request = mo.state(None)
    get_chapter_finished, set_chapter_finished = mo.state(None)
    return (
        chapter_runs,
        get_chapter_finished,
        get_chapter_request,
        set_chapter_finished,
        set_chapter_request,
    )


@app.cell(hide_code=True)
def _(chapter_config, chapter_run_button, set_chapter_request):
    if chapter_run_button.value and chapter_config is not None:
        set_chapter_request(chapter_config)
    return


@app.cell(hide_code=True)
def _(chapter_runs, get_chapter_request, set_chapter_finished):
    _request = get_chapter_request()
    mo.stop(_request is None)
    chapter_run, _view = start_run(
        chapter_runs,
        _request,
        again=mo.md("Press **Run the attack** to run it again."),
        on_finished=set_chapter_finished,
    )
    _view
    return (chapter_run,)


@app.cell(hide_code=True)
def _(chapter_run, get_chapter_finished, keep_run):
    get_chapter_finished()  # drawn when the attack's run is done
    mo.stop(chapter_run.status().state != "done")
    _result = chapter_run.result()
    keep_run("privacy", _result)
    mo.vstack(
        [
            mo.md(f"**{views.chapter_summary(_result)}**"),
            *views.leakage_views(_result),
        ]
    )
    return


@app.cell(hide_code=True)
def _(get_kept_runs):
    _table = tables.defenses(get_kept_runs())
    mo.stop(len(_table) < 2)
    mo.vstack(
        [
            mo.md(
                "### The defenses side by side\n\nEvery run of this page with the "
                "server's attack, its accuracy and what it gave away."
            ),
            mo.ui.table(_table, selection=None, show_download=True),
        ]
    )
    return


@app.cell(hide_code=True)
def _():
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
        """
    )
    return


@app.cell(hide_code=True)
def _():
    mo.md(
        r"""
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
        and much slower on a CPU. `lenet`: NIID-Bench's simple CNN (Li et al.
        2022), 5x5 convolutions of 6 and 16 channels, then 120, 84 and 10 units
        (44,426 weights).
        """
    )
    return


@app.cell(hide_code=True)
def _(defaults):
    # The lab's settings live in the page's address, under their run-config keys
    # (`?split=classes:2&num-clients=4&strategy=fedprox:mu=0.1`): read when the page
    # opens, written when the lab runs, so a link opens the same lab settings.
    # Labels, ranges and defaults from the settings table, as the story's; the values
    # from the address, if it gives them. A parameter control for every kind.
    lab_defaults, lab_url_problems = lab_settings_from_url(mo.query_params(), defaults)
    lab_kinds = controls.lab_kinds(lab_defaults)
    lab_parameters = controls.lab_parameters(lab_defaults)
    lab_controls = controls.controls(controls.LAB_CONTROLS, lab_defaults)
    lab_run_button = mo.ui.run_button(label="Run the lab", kind="success")
    # Laid out here, once: a cell that shows a control runs again whenever it moves,
    # so the settings view below runs again only when a kind changes.
    _c, _more = lab_controls, ("fraction_train", "min_train_clients", "target_accuracy", "seed")
    lab_layout = {
        "model": mo.as_html(_c["model"]),
        "sizes": views.row(_c["num_clients"], _c["num_rounds"], _c["local_epochs"]),
        "dropout": mo.as_html(_c["dropout"]),
        "attackers": mo.as_html(_c["attackers"]),
        "more": views.row(*(_c[n] for n in _more), gap=0.5),
    }
    return lab_controls, lab_kinds, lab_layout, lab_parameters, lab_run_button, lab_url_problems


@app.cell(hide_code=True)
def _(lab_kinds, lab_layout, lab_parameters, lab_run_button, lab_url_problems, visitor):
    def _chosen(part):
        return controls.chosen_parameter(lab_parameters, part, lab_kinds.value[part])

    _k = lab_kinds
    mo.vstack(
        views.shown(
            mo.md("## The lab's settings"),
            views.warning_list(
                "**Some settings in the page's address were not used** (the defaults are):",
                lab_url_problems,
            ),
            views.row(_k["split"], _chosen("split"), lab_layout["model"]),
            lab_layout["sizes"],
            views.row(
                _k["strategy"],
                _chosen("strategy"),
                _k["privacy"],
                _chosen("privacy"),
                lab_layout["dropout"],
            ),
            views.row(
                _k["attack"],
                _chosen("attack"),
                lab_layout["attackers"] if lab_kinds.value["attack"] != "none" else None,
            ),
            mo.accordion(
                {
                    "More: clients per round, target accuracy, seed": lab_layout["more"],
                    "What the strategy, privacy, dropout and attacks mean": views.settings_help(
                        ("strategy", "privacy", "dropout", "attack", "attackers")
                    ),
                }
            ),
            mo.md(f"<small>{APP_LIMITS_WHY} {visitor.budget.describe()}</small>"),
            lab_run_button,
        )
    )
    return


@app.cell(hide_code=True)
def _(lab_controls, lab_kinds):
    _clients = lab_controls.value["num_clients"]
    mo.md(
        f"Excluded digits (the story's, cycled): {views.cycled_exclusions(_clients)}."
    ) if lab_kinds.value["split"] == "exclude" else None
    return


@app.cell(hide_code=True)
def _(defaults, lab_controls, lab_kinds, lab_parameters, visitor):
    try:
        lab_config = lab_config_from_controls(
            lab_kinds.value, lab_parameters.value, lab_controls.value, defaults
        )
    except ConfigError as _error:
        lab_config, _message = None, views.refusal(_error, "These lab settings")
    else:  # what the button will run, as the engine will get it, and what it costs here
        _message = mo.md(
            f"<small>Run the lab runs: {tables.run_label(lab_config)} "
            f"({visitor.budget.cost_of(lab_config, 'all')}).</small>"
        )
    _message
    return (lab_config,)


@app.cell(hide_code=True)
def _(visitor):
    lab_runs = RunSlot(visitor, "all")  # the lab's run in this session
    get_lab_request, set_lab_request = mo.state(None)  # the settings "Run the lab" sent
    get_lab_finished, set_lab_finished = mo.state(None)
    return get_lab_finished, get_lab_request, lab_runs, set_lab_finished, set_lab_request


@app.cell(hide_code=True)
def _(lab_config, lab_run_button, set_lab_request):
    # Only the button starts a run: moving a control neither starts nor stops one.
    if lab_run_button.value and lab_config is not None:
        set_lab_request(lab_config)
        write_lab_url(mo.query_params(), lab_config)  # a link now opens these settings
    return


@app.cell(hide_code=True)
def _(get_lab_request, lab_config):
    _shown = get_lab_request()
    mo.md(
        "_The settings above are not those of the run below: press **Run the lab** to run them._"
    ) if _shown is not None and lab_config is not None and _shown != lab_config else None
    return


@app.cell(hide_code=True)
def _(get_lab_request, lab_runs, set_lab_finished):
    lab_request = get_lab_request()
    mo.stop(lab_request is None)
    lab_run, _view = start_run(
        lab_runs,
        lab_request,
        again=mo.md("Press **Run the lab** to run it again."),
        on_finished=set_lab_finished,
    )
    _view
    return (lab_run,)


@app.cell(hide_code=True)
def _(get_lab_finished, keep_run, lab_run):
    get_lab_finished()  # drawn when the lab's run is done
    mo.stop(lab_run.status().state != "done")
    lab_result = lab_run.result()
    keep_run("lab", lab_result)
    return (lab_result,)


@app.cell(hide_code=True)
def _(lab_result):
    _config, _n = lab_result.config, lab_result.config.num_clients
    _charts = views.lab_charts(lab_result)
    mo.vstack(
        views.shown(
            mo.md(
                f"""
                ## The lab's results
                {_n} clients, split `{_config.split}`, model `{_config.model}`,
                {_config.num_rounds} round(s) of {_config.local_epochs} local epoch(s).
                The same run from the command line:
                `python -m fedcore run {_config.summary()}`
                """
            ),
            views.unlearnable_warning(lab_result.unlearnable_digits),
            views.diverged_callout(lab_result),
            views.failures_callout(lab_result.federated.failures),
            mo.hstack(
                [
                    views.lab_summary_table(lab_result),
                    charts.label_distribution_chart(
                        tables.split_counts(lab_result.label_counts), _n
                    ),
                ],
                align="start",
                gap=2,
                widths="equal",
            ),
            mo.md(
                "The cross matrix: row i is client i's model, trained alone; column j scores it "
                "on test images drawn with client j's mix of digits (its accuracy on each "
                "digit, weighted by client j's training images of that digit). The outlined "
                "diagonal is each model on data like its own; off the diagonal, on the "
                "others' data."
            )
            if len(_charts) > 1
            else None,
            mo.hstack(_charts, justify="start", align="start", gap=2, wrap=True),
        )
    )
    return


@app.cell(hide_code=True)
def _(lab_result):
    mo.vstack(
        [
            mo.md(
                """
                ### Inside the rounds
                The global model's accuracy on each digit after every round (a
                client's missing digits are learned from the others' updates); how
                far each client's update points from the aggregate (cosine: 1 = the
                same direction, low = the client pulls away, *client drift*) and how
                large it is; and the weights exchanged with the clients. Under an
                attack, or with a rule that chooses whole updates (Krum), also who the
                rule trusted in each round, the attackers marked, beside the accuracy
                and a backdoor's success: a backdoor can work while the accuracy
                looks fine.
                """
            ),
            mo.hstack(
                views.round_views(lab_result), justify="start", align="start", gap=2, wrap=True
            ),
        ]
    )
    return


@app.cell(hide_code=True)
def _():
    # "Compare runs" keeps every run finished on this page (the story's, the lab's)
    # and every results file loaded: `(name, result)`, in the order they came.
    get_kept_runs, set_kept_runs = mo.state([])
    get_pinned_runs, set_pinned_runs = mo.state([])  # the names pinned, kept across redraws

    def keep_run(source, result, file=None):
        set_kept_runs(compare.kept_with(get_kept_runs(), source, result, file))

    return get_kept_runs, get_pinned_runs, keep_run, set_pinned_runs


@app.cell(hide_code=True)
def _():
    runs_file = compare.results_file_input()  # refused over its size, here and on the server
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
    return (runs_file,)


@app.cell(hide_code=True)
def _(keep_run, runs_file):
    _problems = []
    for _upload in runs_file.value:
        try:
            _result = compare.read_results_file(_upload.name, _upload.contents)
        except ResultsError as _error:
            _problems.append(compare.not_loaded(_error))
        else:
            keep_run("file", _result, file=_upload.name)
    mo.vstack(_problems) if _problems else None
    return


@app.cell(hide_code=True)
def _(get_kept_runs, get_pinned_runs, set_pinned_runs):
    pin_select = compare.pin_select(get_kept_runs(), get_pinned_runs(), set_pinned_runs)
    return (pin_select,)


@app.cell(hide_code=True)
def _(get_kept_runs, pin_select):
    _kept = get_kept_runs()
    _pinned = [(name, result) for name, result in _kept if name in pin_select.value]
    mo.stop(len(_pinned) < 2, mo.vstack([pin_select, compare.compare_hint(_kept)]))
    _history = tables.runs_history(_pinned)
    _no_history = mo.md("_None of the pinned runs has a federated model._")
    mo.vstack(
        [
            pin_select,
            mo.hstack(
                [
                    charts.runs_history_chart(_history) if len(_history) else _no_history,
                    mo.vstack(
                        [
                            mo.md("### Settings that differ"),
                            compare.differing_settings_table(_pinned),
                            mo.md("### Final accuracy"),
                            compare.final_accuracies_table(_pinned),
                        ]
                    ),
                ],
                justify="start",
                align="start",
                gap=2,
                wrap=True,
            ),
            mo.hstack([compare.compare_download(_pinned)], justify="start"),
        ]
    )
    return


@app.cell(hide_code=True)
def _():
    table_file = compare.reproduced_table_input()
    mo.vstack(
        [
            mo.md(
                r"""
                ### A paper reproduced

                `python -m fedcore reproduce TABLE --out DIR` runs a published table
                (McMahan et al. 2017's Tables 1 and 2, NIID-Bench's MNIST rows) and
                writes `DIR/TABLE.csv`. Load it here to see it against the paper's
                figures; [docs/reproduction.md](docs/reproduction.md) has the tables
                measured on one machine.
                """
            ),
            table_file,
        ]
    )
    return (table_file,)


@app.cell(hide_code=True)
def _(table_file):
    mo.stop(not table_file.value)
    compare.reproduced_table_view(table_file.value[0].name, table_file.value[0].contents)
    return


if __name__ == "__main__":
    app.run()
