"""A run on the page: checked against the server's budget, submitted to the engine,
watched with its progress and a Stop button, and the cells below told when its
parts are ready.

Each session of the page (a browser tab) is one `Visitor` to the engine: its runs
take turns with the other sessions' and it keeps one run queued at most. The story
and the lab start their runs with the same `start_run`; each keeps the one run it
shows in a `RunSlot`, so a session never holds runs it no longer shows. When marimo
ends a session (its tab closed, after the server's `--session-ttl`), the session's
thread ends, and the runs it still waited for are stopped: marimo 0.25.2 gives a
notebook no hook for its session's end, but its kernel thread is what the cells ran
in, and it ends with the session."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable

import marimo as mo

from fedcore.app.budget import Budget
from fedcore.engine import Engine, Phase, RunHandle, RunStatus
from fedcore.experiment.config import ExperimentConfig
from fedcore.report import charts, tables
from fedcore.report.labels import percent

Notify = Callable[[RunHandle], None]
_visitors = itertools.count(1)


class Visitor:
    """One session of the page to the engine: the owner its runs are queued as (a name
    of its own, not the object, so the engine keeps nothing of the session alive),
    and the server's budget its runs are checked against."""

    def __init__(self, engine: Engine, budget: Budget) -> None:
        self.engine, self.budget = engine, budget
        self.owner = f"visitor {next(_visitors)}"


class RunRefused(Exception):
    """A run beyond the page's limits or the server's budget; the message says what was
    asked, what it would cost and how to run it from the command line (markdown)."""


class RunSlot:
    """The one run a section of this session's page shows. A new run stops the one
    before, after it is submitted: the same settings again keep their run, and a run
    nobody waits for any more is dropped by the engine."""

    def __init__(self, visitor: Visitor, phase: Phase) -> None:
        self.visitor, self.phase = visitor, phase
        self.run: RunHandle | None = None
        self.stop_button: mo.ui.button | None = None  # the shown run's, kept alive here

    def submit(self, config: ExperimentConfig) -> RunHandle:
        """Submit `config`, stop the run before, and make the new run's Stop button.
        `RunRefused` (the run before stopped too) if the budget does not allow it."""
        refusal = self.visitor.budget.refusal(config, self.phase)
        run = None
        if refusal is None:
            run = self.visitor.engine.submit(
                config,
                self.phase,
                owner=self.visitor.owner,
                time_limit=self.visitor.budget.time_limit_seconds,
            )
        if self.run is not None:
            self.run.stop()
        self.run = run
        if run is None:
            self.stop_button = None
            raise RunRefused(refusal)
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
    here instead. A run the budget refuses stops the cell with the refusal."""
    try:
        run = slot.submit(config)
    except RunRefused as refused:
        mo.stop(True, mo.callout(mo.md(str(refused)), kind="warn"))
    if run.done():
        return run, end_view(run.status(), again)
    if mo.app_meta().request is None:
        run.wait()
        return run, end_view(run.status(), again)
    session = threading.current_thread()  # the session's kernel thread: the cell runs in it
    mo.Thread(
        target=_watch, args=(run, slot.stop_button, again, on_isolated, on_finished, session)
    ).start()
    return run, mo.md("")


def _watch(
    run: RunHandle, stop_button: object, again: object, on_isolated: Notify | None,
    on_finished: Notify, session: threading.Thread,
) -> None:  # fmt: skip
    """In a thread: show the run's progress, and tell the cells below when the isolated
    models and the whole run are ready; stop the run if the session has ended."""
    thread = mo.current_thread()
    shown, isolated_told = None, on_isolated is None
    while not thread.should_exit:
        if not session.is_alive():  # marimo ended the session: nobody will see the run
            run.stop()
            return
        status = run.status()
        if not isolated_told and run.isolated() is not None:
            isolated_told = True
            on_isolated(run)  # type: ignore[misc]
        if run.done():
            if _show(thread, end_view(status, again)):
                on_finished(run)
            return
        if status != shown:
            _show(thread, run_view(status, stop_button))
            shown = status
        time.sleep(0.2)


def _show(thread: mo.Thread, view: object) -> bool:
    """Put `view` in the cell's output, unless the cell has run again since the view
    was made (the run before's view would then replace the new run's, and stay)."""
    if thread.should_exit:
        return False
    mo.output.replace(view)
    return True


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
                        f"**Queued: place {status.place}.** The sessions of this page take "
                        "turns with the engine; this run starts when its turn comes."
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


END_LINES = {
    "stopped": ("**Stopped.** This page no longer waits for the run; it goes on only for "
                "other pages that asked for the same settings.", "warn"),
    "replaced": ("**Replaced.** This page asked for another run while this one was still "
                 "queued, and a page keeps one run in the queue: the newest.", "warn"),
}  # fmt: skip


def end_view(status: RunStatus, again: object) -> mo.Html | None:
    """One line when a run did not finish, and `again`: a way to run it again."""
    if status.state in END_LINES:
        text, kind = END_LINES[status.state]
    elif status.state == "failed":
        text, kind = f"**The run failed:** {status.error}", "danger"
    else:
        return None
    return mo.callout(mo.vstack([mo.md(text), again]), kind=kind)
