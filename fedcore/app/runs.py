"""A run on the page: submitted to the engine, watched with its progress and a Stop
button, and the cells below told when its parts are ready.

The story and the lab start their runs with the same `start_run`; each keeps the
one run it shows in a `RunSlot`, so a session never holds runs it no longer shows."""

from __future__ import annotations

import time
from collections.abc import Callable

import marimo as mo

from fedcore.engine import Engine, Phase, RunHandle, RunStatus
from fedcore.experiment.config import ExperimentConfig
from fedcore.report import charts, tables
from fedcore.report.labels import percent

Notify = Callable[[RunHandle], None]


class RunSlot:
    """The one run a section of this session's page shows. A new run releases the one
    before, after it is submitted: the same settings again keep their run, and a run
    nobody waits for any more is dropped by the engine."""

    def __init__(self, engine: Engine, phase: Phase) -> None:
        self.engine, self.phase = engine, phase
        self.run: RunHandle | None = None
        self.stop_button: mo.ui.button | None = None  # the shown run's, kept alive here

    def submit(self, config: ExperimentConfig) -> RunHandle:
        """Submit `config`, release the run before, and make the new run's Stop button."""
        run = self.engine.submit(config, self.phase)
        if self.run is not None:
            self.run.release()
        self.run = run
        self.stop_button = mo.ui.button(label="Stop", kind="danger", on_click=lambda _: run.stop())
        return run


def start_run(
    slot: RunSlot,
    config: ExperimentConfig,
    *,
    again: object,
    on_finished: Notify,
    on_isolated: Notify | None = None,
) -> tuple[RunHandle, object]:
    """Run `config` in `slot`, and the view to show in its place: the end (a stopped
    or failed run, with `again`: how to run it again) or, on a live page, the progress,
    kept up to date by a thread that calls `on_isolated` and `on_finished` when the
    isolated models and the whole run are ready. Exported or run as a script, it waits
    here instead."""
    run = slot.submit(config)
    if run.done():
        return run, end_view(run.status(), again)
    if mo.app_meta().request is None:
        run.wait()
        return run, end_view(run.status(), again)
    mo.Thread(target=_watch, args=(run, slot.stop_button, again, on_isolated, on_finished)).start()
    return run, mo.md("")


def _watch(
    run: RunHandle, stop_button: object, again: object, on_isolated: Notify | None,
    on_finished: Notify,
) -> None:  # fmt: skip
    """In a thread: show the run's progress, and tell the cells below when the isolated
    models and the whole run are ready."""
    thread = mo.current_thread()
    shown, isolated_told = None, on_isolated is None
    while not thread.should_exit:
        status = run.status()
        if not isolated_told and run.isolated() is not None:
            isolated_told = True
            on_isolated(run)  # type: ignore[misc]
        if run.done():
            mo.output.replace(end_view(status, again))
            on_finished(run)
            return
        if status != shown:
            mo.output.replace(run_view(status, stop_button))
            shown = status
        time.sleep(0.2)


def progress(done: int, total: int, title: str) -> mo.Html:
    """A progress bar, drawn by marimo, at `done` of `total`."""
    bar = mo.status.progress_bar(
        total=max(total, 1), title=title, show_rate=False, show_eta=False, disabled=True
    ).progress
    if done:
        bar.update(increment=done)
    return bar


def run_view(status: RunStatus, stop_button: object) -> mo.Html:
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
        progress(
            status.epochs_done,
            status.epochs_total,
            f"each client alone: {status.epochs_done}/{status.epochs_total} epochs",
        ),
    ]
    if status.history:
        last = status.history[-1]
        parts.append(
            progress(
                last.round,
                status.num_rounds,
                f"together, with Flower: round {last.round}/{status.num_rounds}, "
                f"global accuracy {percent(last.accuracy)}",
            )
        )
        parts.append(charts.history_chart(tables.history(status.history)))
    parts.append(stop_button)
    return mo.vstack(parts)


def end_view(status: RunStatus, again: object) -> mo.Html | None:
    """One line when a run did not finish, and `again`: a way to run it again."""
    if status.state == "stopped":
        text, kind = "**Stopped.** Nothing of this run was kept.", "warn"
    elif status.state == "failed":
        text, kind = f"**The run failed:** {status.error}", "danger"
    else:
        return None
    return mo.callout(mo.vstack([mo.md(text), again]), kind=kind)
