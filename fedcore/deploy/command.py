"""`python -m fedcore deploy`: the experiment on Flower's deployment engine, on this
machine, secure by default, then clean up.

One `flower-superlink` and one `flower-supernode` per data holder, talking over the
network as they would across machines: TLS with a CA and certificates made for this
run (in a temporary folder, removed afterwards), and SuperNode authentication, each
SuperNode's key registered with `flwr supernode register` before it starts.
`--insecure` turns both off (loopback experiments only).

Each data holder runs in a network namespace of its own (created here, with veth
pairs and addresses assigned here, removed afterwards) where this process may create
namespaces (root, `ip`); on loopback otherwise, or with `--network loopback`.

Then `flwr run . <connection> --stream` runs the Flower app unchanged; its ServerApp
writes the results JSON of this run, which is copied to `--out`. Every process
started here is stopped by process id when the run ends, fails, times out or is
interrupted.

    python -m fedcore deploy --supernodes 3 --data-dir ../shared/data/mnist \\
        --run-config "num-server-rounds=1 local-epochs=1" --out results/deployment.json
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from fedcore.deploy.federation import DeploymentError, Federation, holder_name
from fedcore.deploy.network import Namespaces, NetworkError
from fedcore.storage import atomic_write_bytes

DEFAULT_TIMEOUT = 900.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fedcore deploy",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument("--supernodes", type=int, default=3, help="data holders (default 3)")
    parser.add_argument(
        "--data-dir", required=True, help="MNIST folder for every SuperNode and the server"
    )
    parser.add_argument("--run-config", default="", help="overrides for `flwr run --run-config`")
    parser.add_argument(
        "--node-data-dir",
        action="append",
        default=[],
        metavar="PARTITION=DIR",
        help="give one SuperNode another data folder (repeatable), e.g. to see a client fail",
    )
    parser.add_argument("--out", required=True, help="where this run's results JSON goes")
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="no TLS and no SuperNode authentication (any process that reaches the "
        "SuperLink may join): for loopback experiments only",
    )
    parser.add_argument(
        "--network",
        choices=("auto", "namespaces", "loopback"),
        default="auto",
        help="namespaces: each data holder in a network namespace of its own (needs root "
        "and `ip`); loopback: all on 127.0.0.1; auto (default): namespaces where possible",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help=f"seconds for the whole command (default {DEFAULT_TIMEOUT:.0f}); past it, the "
        "run is stopped with one line and everything cleaned up",
    )
    parser.add_argument(
        "--workdir",
        help="keep credentials, FLWR_HOME, the SuperLink's database and results here "
        "(default: a temporary folder, removed afterwards)",
    )
    parser.add_argument("--logs", help="the processes' logs (default: <out>-logs beside --out)")
    return parser


def _node_dirs(items: list[str], supernodes: int) -> dict[int, str]:
    dirs = {}
    for item in items:
        partition, sep, folder = item.partition("=")
        if not sep or not partition.isdigit() or not 0 <= int(partition) < supernodes:
            raise ValueError(f"--node-data-dir {item!r}: expected PARTITION=DIR, 0 <= PARTITION")
        dirs[int(partition)] = str(Path(folder).resolve())
    return dirs


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        node_dirs = _node_dirs(args.node_data_dir, args.supernodes)
    except ValueError as error:
        print(f"deploy: {error} < {args.supernodes}", file=sys.stderr)
        return 2
    namespaces = args.network == "namespaces" or (args.network == "auto" and Namespaces.available())
    if args.network == "namespaces" and not Namespaces.available():
        print("deploy: --network namespaces needs root and `ip`", file=sys.stderr)
        return 2
    out = Path(args.out).resolve()
    logs = Path(args.logs).resolve() if args.logs else out.parent / f"{out.stem}-logs"
    federation = Federation(
        args.supernodes,
        args.data_dir,
        secure=not args.insecure,
        namespaces=namespaces,
        node_data_dirs=node_dirs,
        logs=logs,
        workdir=Path(args.workdir) if args.workdir else None,
        timeout=args.timeout,
    )
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the cleanup
    start = time.monotonic()
    try:
        with federation:
            describe(federation)
            outcome = federation.start_run(args.run_config, echo=print_line).finish()
            if outcome.results_path is not None:  # before the federation's folder goes
                atomic_write_bytes(out, outcome.results_path.read_bytes())
        if not outcome.ok:
            print(f"deploy: {outcome.error} (logs in {logs})", file=sys.stderr)
            return 1
        print(f"run {outcome.run_id}: results written to {out}", flush=True)
        return 0
    except (DeploymentError, NetworkError, TimeoutError, subprocess.TimeoutExpired) as error:
        print(f"deploy: {error} (logs in {logs})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("deploy: interrupted; no results were written", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
        print(
            f"deploy: stopped {len(federation.stopped)} processes"
            + (", removed the network namespaces" if namespaces else "")
            + f" ({time.monotonic() - start:.0f} s in all)",
            flush=True,
        )


def describe(federation: Federation) -> None:
    """What was set up, one line each (where a real deployment would put what)."""
    net = federation.network
    if federation.secure:
        print(
            "deploy: TLS on (a CA and certificates made for this run), SuperNode "
            "authentication on (each SuperNode's public key registered)",
            flush=True,
        )
    else:
        print("deploy: --insecure: no TLS, any SuperNode may join", flush=True)
    where = f" in network namespace {net.link_ns}" if isinstance(net, Namespaces) else ""
    print(
        f"SuperLink (pid {federation.superlink.pid}){where}, Fleet/Control API port "
        f"{net.superlink_port}",
        flush=True,
    )  # fmt: skip
    for holder in federation.holders:
        where = f" in {net.holder_ns[holder.index]}" if isinstance(net, Namespaces) else ""
        node = f", registered as node {holder.node_id}" if holder.node_id else ""
        print(
            f"SuperNode {holder_name(holder.index)} (pid {holder.process.pid}){where} "
            f"dials {net.superlink_address(holder.index)}{node}: partition-id={holder.index} "
            f"data-dir={holder.data_dir}",
            flush=True,
        )


def print_line(line: str) -> None:
    print(line, end="", flush=True)


if __name__ == "__main__":
    sys.exit(main())
