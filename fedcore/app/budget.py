"""What one visitor of the page may run on this server: the page's limits and the
server's budget, checked on the server before a run is queued (a page's address,
or a hand-made request, can ask for more than its controls offer).

The person who starts the server sets the budget (`marimo run app.py --
--max-run-minutes 10`); its settings (`-- --rounds 100`) widen the page's limits
for everyone, as they are that person's choice. A run beyond either is not
queued: the page says what was asked, what it would cost and how to run it from
the command line, which has neither limit (nor do sweeps). A run that the
estimate let through but that still runs `TIME_LIMIT_FACTOR` times over budget
is stopped by the engine.

Plain functions without marimo, testable without a page."""

from __future__ import annotations

from dataclasses import dataclass

from fedcore.engine.cost import cli_command, duration_text, estimate_seconds
from fedcore.engine.protocol import Phase
from fedcore.experiment.config import ExperimentConfig
from fedcore.experiment.settings import SETTINGS
from fedcore.experiment.specs import ConfigError
from fedcore.report.tables import run_label

MAX_RUN_MINUTES = "max-run-minutes"  # the app's own flag, beside the settings' flags
DEFAULT_MAX_RUN_MINUTES = 5.0
TIME_LIMIT_FACTOR = 2  # the estimate is rough: a run is stopped only well past it


@dataclass(frozen=True)
class Budget:
    """The server's budget for one run, in estimated minutes, and the settings it was
    started with (they widen the page's limits)."""

    max_run_minutes: float
    operator: ExperimentConfig

    @classmethod
    def from_cli(cls, minutes: object, operator: ExperimentConfig) -> Budget:
        """From `--max-run-minutes` as marimo read it (a number, or text it could not
        read as one); `ConfigError` with one line if it is not a positive number."""
        try:
            value = float(str(minutes))
        except ValueError:
            value = float("nan")
        if not 0 < value < float("inf"):
            raise ConfigError(
                f"--{MAX_RUN_MINUTES} must be a number of minutes above 0, got {minutes}"
            )
        return cls(value, operator)

    @property
    def time_limit_seconds(self) -> float:
        """Wall-clock seconds after which the engine stops a run of this page."""
        return TIME_LIMIT_FACTOR * 60 * self.max_run_minutes

    def describe(self) -> str:
        """The budget in one sentence, for the page."""
        return (
            f"This server runs up to {self.max_run_minutes:g} min per run (estimated "
            "before it is queued); larger runs: the command line."
        )

    def cost_of(self, config: ExperimentConfig, phase: Phase) -> str:
        """`"about 20 s on this server"`: what the run would take, for the page."""
        return f"{duration_text(estimate_seconds(config, phase))} on this server"

    def refusal(self, config: ExperimentConfig, phase: Phase) -> str | None:
        """None if the page may queue `config`'s `phase`; else why not, in markdown:
        what was asked, what it would cost, and the command that runs it anyway."""
        beyond = beyond_page_limits(config, self.operator)
        seconds = estimate_seconds(config, phase)
        over_budget = seconds > 60 * self.max_run_minutes
        if not beyond and not over_budget:
            return None
        reasons = []
        if beyond:
            reasons.append(f"beyond the page's limits ({'; '.join(beyond)})")
        if over_budget:
            reasons.append(f"over this server's budget of {self.max_run_minutes:g} min per run")
        return (
            f"**This run was not queued.** You asked for {run_label(config)}, batch size "
            f"{config.batch_size}: {duration_text(seconds)} of this machine, "
            f"{' and '.join(reasons)}. The command line has no such limits:\n\n"
            f"`{cli_command(config, phase)}`"
        )


def beyond_page_limits(config: ExperimentConfig, operator: ExperimentConfig) -> list[str]:
    """`["clients up to 20"]`: for each setting past where the page's control stops
    (the settings table's `app_high`, or the operator's value if higher), that limit."""
    beyond = []
    for setting in SETTINGS:
        if setting.app_high is None:
            continue
        value = getattr(config, setting.name)
        limit = max(setting.app_high, getattr(operator, setting.name))
        if value > limit:
            beyond.append(f"{setting.label.lower()} up to {limit:g}")
    return beyond
