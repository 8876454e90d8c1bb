"""`python -m fedcore run ...` (headless runs for scripts, checks and benchmarks),
`python -m fedcore privacy ...` (what a curious server learns, under a defense),
`python -m fedcore sweep ...` and `python -m fedcore reproduce TABLE ...` (a grid of runs,
or a paper's table, cached and resumable) and `python -m fedcore report ...` (a report
to share from results files).

Errors a user can fix (a setting, a data file, an --out that cannot be written)
end as one line on stderr and exit code 2 (settings, --out) or 1 (data, runs);
no traceback. An --out is checked before the run starts, not after it.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedcore.engine import PHASES, EngineError, Phase, run_experiment
from fedcore.experiment.config import ExperimentConfig
from fedcore.experiment.from_text import parse_value
from fedcore.experiment.progress import Progress
from fedcore.experiment.results import ExperimentResult, ResultsError
from fedcore.experiment.settings import BY_NAME, SETTINGS, Setting
from fedcore.experiment.specs import ConfigError, parse_defense
from fedcore.privacy.summary import privacy_summary
from fedcore.report.labels import percent
from fedcore.report.text import format_table
from fedcore.storage import atomic_write_text, check_writable, os_error_text

DEFAULTS = ExperimentConfig()
RAY_HELP = (
    "compute the cells as Ray tasks on the Ray cluster whose head is at ADDRESS "
    "(HOST:PORT, as `ray start --head` prints it), one cell per CPU of the cluster; "
    "every node needs fedcore and the data (README: On a Ray cluster)"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fedcore",
        description="fedcore: MNIST split across clients, trained alone and with Flower.",
        allow_abbrev=False,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "run", help="run the experiment and write its results JSON", allow_abbrev=False
    )
    run.add_argument("--phase", choices=PHASES, default="all")
    run.add_argument("--out", help="write the results JSON here (atomically)")
    run.add_argument(
        "--no-cache",
        action="store_true",
        help="compute everything again instead of reusing cached results (~/.cache/fedcore)",
    )
    add_setting_arguments(run)
    sweep = commands.add_parser(
        "sweep",
        help="run a grid of experiments (cached, resumable) into one JSON and one CSV table",
        allow_abbrev=False,
    )
    sweep.add_argument(
        "--vary",
        action="append",
        required=True,
        metavar="NAME=V1,V2,...",
        help="a setting and its values, e.g. split=exclude,dirichlet:0.1 or local-epochs=1,5 "
        "(repeat for a grid; '|' separates values that hold commas)",
    )
    sweep.add_argument("--out", required=True, help="folder for cells/, sweep.json, sweep.csv")
    sweep.add_argument("--phase", choices=PHASES, default="all")
    sweep.add_argument("--ray", metavar="ADDRESS", help=RAY_HELP)
    add_setting_arguments(sweep)
    privacy = commands.add_parser(
        "privacy",
        help="what a curious server learns from each client's update, under a defense: "
        "a JSON of inferred digits, reconstructions and accuracy",
        allow_abbrev=False,
    )
    privacy.add_argument(
        "--defense",
        metavar="DEFENSE",
        help="none, secagg (Flower's SecAgg+), local-dp:epsilon=E[,clip=C,delta=D] (Flower's "
        "LocalDpMod) or central-dp:noise=N,clip=C[,delta=D] (Flower's server-side fixed "
        "clipping); the same as --privacy off|secagg|local:...|server:...",
    )
    privacy.add_argument("--out", help="write the privacy JSON here (atomically)")
    privacy.add_argument(
        "--no-cache", action="store_true", help="compute again instead of reusing cached results"
    )
    add_setting_arguments(privacy)
    report = commands.add_parser(
        "report",
        help="a self-contained HTML report (and figures) from results JSON files",
        allow_abbrev=False,
    )
    report.add_argument("results", nargs="+", metavar="RESULTS.json")
    report.add_argument("-o", "--out", default="report.html", help="the HTML file to write")
    report.add_argument(
        "--figures", metavar="DIR", help="also write every chart as SVG and PNG into DIR"
    )
    reproduce = commands.add_parser(
        "reproduce",
        help="a published table (McMahan et al. 2017, NIID-Bench) reproduced: a sweep "
        "(cached, resumable) written as TABLE.csv and TABLE.md beside the paper's figures",
        allow_abbrev=False,
    )
    reproduce.add_argument(
        "table", metavar="TABLE", help="mcmahan2017-table1, mcmahan2017-table2 or niid-bench-mnist"
    )
    reproduce.add_argument(
        "--rows",
        help="the rows to run, ';' between rows, each the words its key must hold (e.g. "
        "'2nn,iid,B=10,C=0.1' or '2nn,iid'); default: every row but the CNN's and those "
        "the paper gives no figure for",
    )
    reproduce.add_argument("--seeds", type=int, default=1, help="seeds per row (default 1)")
    reproduce.add_argument(
        "--lrs", metavar="LR,LR", help="the learning-rate grid (default: the table's)"
    )
    reproduce.add_argument(
        "--quick", action="store_true", help="the table's short preset for this machine"
    )
    reproduce.add_argument(
        "--max-rounds",
        type=int,
        metavar="N",
        help="at most N rounds a row (default: twice the paper's figure, or the table's)",
    )
    reproduce.add_argument("--data-dir", default="", help=BY_NAME["data_dir"].help)
    reproduce.add_argument("--out", required=True, help="folder for TABLE.csv, TABLE.md, TABLE/")
    reproduce.add_argument("--ray", metavar="ADDRESS", help=RAY_HELP)
    commands.add_parser(  # parsed by fedcore.deploy.command (see main)
        "deploy",
        help="the experiment on Flower's deployment engine with TLS and SuperNode "
        "authentication (`deploy --help`)",
        add_help=False,
    )
    return parser


def add_setting_arguments(parser: argparse.ArgumentParser) -> None:
    """The experiment settings as flags (from `fedcore.experiment.settings`), shared by the CLI
    and the app's `-- --flags`; each flag's text is read by `from_text.parse_value`."""
    for setting in SETTINGS:
        default = None if setting.name == "excluded_digits" else getattr(DEFAULTS, setting.name)
        parser.add_argument(
            setting.flag,
            type=_reader(setting),
            default=default,  # exclusions: None, the reference cycled to the clients
            metavar=setting.dest.upper(),
            help=f"{setting.help}{setting.describe_range()}",
        )


def _reader(setting: Setting) -> Callable[[str], Any]:
    def read(text: str) -> Any:
        try:
            return parse_value(setting, text)
        except ConfigError as error:
            raise argparse.ArgumentTypeError(str(error)) from None  # argparse prints it

    return read


def config_from_args(args: argparse.Namespace) -> ExperimentConfig:
    return ExperimentConfig(**{s.name: getattr(args, s.dest) for s in SETTINGS})


@dataclass(frozen=True)
class CliSettings:
    config: ExperimentConfig
    error: str | None = None


def settings_from_cli(values: Mapping[str, object]) -> CliSettings:
    """Settings given to the app as `marimo run app.py -- --rounds 1 --epochs 1`.

    Same flags and validation as `python -m fedcore run`; a bad one comes back
    as `error` (with the reference config), for the page to show.
    """
    parser = argparse.ArgumentParser(allow_abbrev=False, exit_on_error=False)
    add_setting_arguments(parser)
    argv = [item for key, value in values.items() for item in (f"--{key}", str(value))]
    try:
        args, unknown = parser.parse_known_args(argv)
        if unknown:
            known = ", ".join(a.option_strings[0] for a in parser._actions[1:])
            raise ConfigError(f"unknown setting(s) {' '.join(unknown)} (known: {known})")
        return CliSettings(config_from_args(args))
    except (argparse.ArgumentError, ConfigError) as error:
        return CliSettings(ExperimentConfig(), str(error))


def print_progress(kind: str, event: object) -> None:
    """One line per finished round on stderr, so a long run shows it is alive."""
    if kind != "progress" or not isinstance(event, Progress):
        return
    if event.kind == "round-done":
        last = event.history[-1]
        print(f"round {last.round}/{event.num_rounds}: {percent(last.accuracy)}", file=sys.stderr)
    elif event.kind == "client-failed":
        print(f"warning: {event.detail}", file=sys.stderr)


def write_report(args: argparse.Namespace) -> int:
    """`python -m fedcore report`: one line on stderr and exit 1 for a file it cannot use."""
    from fedcore.report.figures import write_figures
    from fedcore.report.html import report_html

    try:
        runs = [(Path(path).stem, ExperimentResult.load(path)) for path in args.results]
    except ResultsError as error:
        print(f"fedcore: report: {error}", file=sys.stderr)
        return 1
    names = [name for name, _ in runs]
    if len(set(names)) < len(names):  # same file names in different folders
        runs = [(f"{i}. {name}", result) for i, (name, result) in enumerate(runs, start=1)]
    try:
        check_writable(args.out)  # before the rendering, and naming the file in the way
        out = atomic_write_text(args.out, report_html(runs))
        print(f"report written to {out} ({out.stat().st_size:,} bytes)")
        if args.figures:
            for name, result in runs:
                prefix = f"{name}-" if len(runs) > 1 else ""
                for path in write_figures(result, args.figures, prefix):
                    print(f"figure written to {path}")
    except OSError as error:
        print(f"fedcore: report: cannot write ({os_error_text(error)})", file=sys.stderr)
        return 1
    return 0


def unwritable_out(out: str | Path, error: OSError) -> str:
    """The line for an --out found unwritable before the run (not after computing it)."""
    return f"fedcore: --out {out}: cannot be written ({os_error_text(error)}); nothing was run"


class SweepProgress:
    """One progress bar on stderr for the whole sweep: redrawn in place on a
    terminal, a line per cell event otherwise (logs)."""

    def __init__(self, total: int) -> None:
        self.total, self.finished, self.cell, self.detail = total, 0, "", ""
        self.live = sys.stderr.isatty()

    def draw(self) -> None:
        width = 24
        filled = width * self.finished // max(self.total, 1)
        line = f"sweep [{'#' * filled}{'.' * (width - filled)}] {self.finished}/{self.total}"
        if self.cell:
            line += f"  {self.cell}{': ' + self.detail if self.detail else ''}"
        end = "\n" if self.finished == self.total else ""
        if self.live:
            print(f"\r\033[K{line}", end=end, file=sys.stderr, flush=True)
        else:
            print(line, file=sys.stderr, flush=True)

    def note(self, line: str) -> None:
        """A line of its own, below the bar."""
        below = "\n" if self.live else ""
        print(f"{below}fedcore: sweep: {line}", file=sys.stderr, flush=True)

    def on_cell(self, index: int, cell: object, state: str) -> None:
        self.cell = getattr(cell, "name", "")
        self.detail = {"kept": "kept from an earlier run", "done": "done"}.get(state, "")
        self.finished += state != "running"
        self.draw()

    def on_event(self, kind: str, event: object) -> None:
        if kind == "progress" and isinstance(event, Progress) and event.kind == "round-done":
            self.detail = f"round {event.history[-1].round}/{event.num_rounds}"
            if self.live:
                self.draw()


def run_sweep_command(args: argparse.Namespace) -> int:
    from fedcore.engine.sweep import grid, run_sweep
    from fedcore.experiment.from_text import parse_vary

    try:
        cells = grid(config_from_args(args), [parse_vary(t) for t in args.vary], args.phase)
    except ConfigError as error:
        print(f"fedcore: invalid setting: {error}", file=sys.stderr)
        return 2
    out = Path(args.out)
    code = drive_sweep(
        out,
        cells,
        lambda run, progress: run_sweep(
            cells, out, run, progress.on_cell, progress.on_event, progress.note
        ),
        args.ray,
    )
    if code == 0:
        print(f"sweep table written to {out / 'sweep.csv'} and {out / 'sweep.json'}")
    return code


def drive_sweep(
    folder: Path,
    cells: Sequence[Any],
    start: Callable[[Callable[..., ExperimentResult], SweepProgress], Iterable[Any]],
    ray_address: str | None = None,
) -> int:
    """Claim `folder` for `cells`, then run what `start(run, progress)` iterates
    through one engine (or, `ray_address`, as Ray tasks on that cluster), with a
    progress bar; every failure is one line, and an interruption keeps the finished
    cells. The exit code."""
    from fedcore.engine import Engine
    from fedcore.engine.sweep import SweepFolderError, claim_folder

    try:
        claim_folder(folder, cells)
    except SweepFolderError as error:
        print(f"fedcore: sweep: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(unwritable_out(folder, error), file=sys.stderr)
        return 2
    progress = SweepProgress(len(cells))
    try:
        if ray_address is not None:
            from fedcore.engine.ray_sweep import ClusterUnreachable, RayCells

            try:
                cluster = RayCells(ray_address, folder, cells).open()
            except ClusterUnreachable as error:
                print(f"fedcore: sweep: {error}", file=sys.stderr)
                return 1
            with cluster:
                for _ in start(cluster.run, progress):
                    pass
            print(f"fedcore: sweep: {cluster.summary()}", file=sys.stderr)
            return 0
        with Engine() as engine:

            def run(config: ExperimentConfig, phase: Phase, on_event: object) -> ExperimentResult:
                handle = engine.submit(config, phase)
                handle.subscribe(on_event)
                return handle.result()

            for _ in start(run, progress):
                pass
    except EngineError as error:
        print(f"\nfedcore: sweep cell {progress.cell} failed: {error}", file=sys.stderr)
        return 2 if error.kind == "setting" else 1
    except OSError as error:  # the disk filled up, or the folder went, mid-sweep
        print(
            f"\nfedcore: sweep: cannot write ({os_error_text(error)}); the finished cells "
            f"are kept in {folder / 'cells'}",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:  # counted on disk: a cell written just before Ctrl-C counts
        kept = sum((folder / "cells" / cell.file_name).is_file() for cell in cells)
        print(
            f"\nfedcore: sweep interrupted after {kept} of {len(cells)} cells; the finished "
            f"cells are kept in {folder / 'cells'}: run the same command to go on",
            file=sys.stderr,
        )
        return 130
    return 0


def run_reproduce_command(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from fedcore.reproduction.reproduce import make_plan, reproduce, sweep_folder

    try:
        plan = make_plan(
            args.table,
            rows=args.rows,
            seeds=args.seeds,
            learning_rates=args.lrs,
            quick=args.quick,
            max_rounds=args.max_rounds,
            data_dir=args.data_dir,
        )
    except ConfigError as error:
        print(f"fedcore: reproduce: {error}", file=sys.stderr)
        return 2
    out = Path(args.out)
    command = "python -m fedcore " + " ".join(shlex.quote(part) for part in argv)
    code = drive_sweep(
        sweep_folder(out, plan),
        plan.cells,
        lambda run, progress: reproduce(
            plan, out, run, command, progress.on_cell, progress.on_event, progress.note
        ),
        args.ray,
    )
    if code == 0:
        name = plan.table.name
        print(f"{name} written to {out / (name + '.csv')} and {out / (name + '.md')}")
    return code


def privacy_config(config: ExperimentConfig, defense: str | None) -> ExperimentConfig:
    """The privacy command's run: the defense as the privacy setting (one of the two
    flags), and the curious server's attacks on (analytic unless --leakage says more)."""
    if defense is not None and config.privacy != DEFAULTS.privacy:
        raise ConfigError(f"--defense {defense} and --privacy {config.privacy}: give one")
    return config.replace(
        privacy=config.privacy if defense is None else str(parse_defense(defense)),
        leakage="analytic" if config.leakage == "off" else config.leakage,
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["deploy"]:
        from fedcore.deploy.command import main as deploy

        return deploy(argv[1:])
    args = build_parser().parse_args(argv)
    if args.command == "report":
        return write_report(args)
    if args.command == "sweep":
        return run_sweep_command(args)
    if args.command == "reproduce":
        return run_reproduce_command(args, argv)
    try:
        config = config_from_args(args)
        if args.command == "privacy":
            config = privacy_config(config, args.defense)
    except ConfigError as error:
        print(f"fedcore: invalid setting: {error}", file=sys.stderr)
        return 2
    try:
        if args.out:
            check_writable(args.out)
    except OSError as error:
        print(unwritable_out(args.out, error), file=sys.stderr)
        return 2
    phase = "federated" if args.command == "privacy" else args.phase
    try:
        result = run_experiment(config, phase, print_progress, use_cache=not args.no_cache)
    except EngineError as error:
        what = {"data": "data error", "setting": "invalid setting"}.get(error.kind, "run failed")
        print(f"fedcore: {what}: {error}", file=sys.stderr)
        return 2 if error.kind == "setting" else 1
    except KeyboardInterrupt:
        print("fedcore: interrupted; no results were written", file=sys.stderr)
        return 130
    print(format_table(result))
    if args.out:
        try:
            if args.command == "privacy":
                summary = json.dumps(privacy_summary(result), indent=2) + "\n"
                print(f"privacy results written to {atomic_write_text(args.out, summary)}")
            else:
                print(f"results written to {result.save(args.out)}")
        except OSError as error:  # e.g. the disk filled up during the run
            print(f"fedcore: results not written ({os_error_text(error)})", file=sys.stderr)
            return 1
    return 0
