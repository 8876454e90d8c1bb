"""`python -m fedcore deploy`: the experiment on Flower's deployment engine, on this
machine, secure by default, then clean up.

One `flower-superlink` and one `flower-supernode` per data holder, talking over the
network as they would across machines: TLS with a CA and certificates made for this
run; SuperNode authentication, each SuperNode's key registered with `flwr supernode
register` before it starts; and the SuperLink behind a front door (nginx,
`fedcore.deploy.proxy`) that lets SuperNodes through and opens the control side
(registering keys; starting, stopping, listing runs; their logs and results) only
to the operator's client certificate, which `flwr` uses through the operator's side
of the proxy. `--insecure` turns all three off (loopback experiments only).

Each data holder runs in a network namespace of its own (created here, with veth
pairs and addresses assigned here, removed afterwards) where this process may create
namespaces (root, `ip`); on loopback otherwise, or with `--network loopback`: the
loopback of one network namespace of its own where one can be made, which no other
process of this machine reaches; this machine's own otherwise, where every local
process reaches the SuperLink's own port (deploy says so).

Then `flwr run . <connection> --stream` runs the Flower app unchanged; its ServerApp
writes the results JSON of this run, which is copied to `--out`. Keys, certificates,
FLWR_HOME, the results and the logs are in a work folder made for the run (`mkdtemp`,
0700) and removed afterwards. Every process started here is stopped by process id
when the run ends, fails, times out or is interrupted (SIGINT, SIGTERM, SIGHUP; a
second signal does not cut the cleanup short); what a deploy killed with SIGKILL
left behind, the next one removes before it starts, and says so.

    python -m fedcore deploy --supernodes 3 --data-dir ../shared/data/mnist \\
        --run-config "num-server-rounds=1 local-epochs=1" --out results/deployment.json
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from fedcore.deploy.federation import DeploymentError, Federation, holder_name
from fedcore.deploy.leftovers import remove_stale
from fedcore.deploy.network import Namespaces, NetworkError
from fedcore.deploy.pki import CredentialError
from fedcore.storage import atomic_write_bytes, check_writable, os_error_text

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
        help="no TLS, no SuperNode authentication, no front door (any process that "
        "reaches the SuperLink may join, and start, stop and read runs): for loopback "
        "experiments only",
    )
    parser.add_argument(
        "--network",
        choices=("auto", "namespaces", "loopback"),
        default="auto",
        help="namespaces: each data holder in a network namespace of its own (needs root "
        "and `ip`); loopback: all on 127.0.0.1, that of a namespace of its own where possible; "
        "auto (default): namespaces where possible",
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
        help="keep credentials, FLWR_HOME, results and logs "
        "here; it must hold no keys yet (default: a temporary folder, removed afterwards)",
    )
    parser.add_argument(
        "--log-dir",
        help="keep the processes' logs here (default: in the work folder, removed with it)",
    )
    return parser


def _node_dirs(items: list[str], supernodes: int) -> dict[int, str]:
    dirs = {}
    for item in items:
        partition, sep, folder = item.partition("=")
        if not sep or not partition.isdigit() or not 0 <= int(partition) < supernodes:
            raise ValueError(f"--node-data-dir {item!r}: expected PARTITION=DIR, 0 <= PARTITION")
        dirs[int(partition)] = str(Path(folder).resolve())
    return dirs


class Signals:
    """SIGINT, SIGTERM and SIGHUP end the run and start the cleanup, once: the first
    one raises KeyboardInterrupt where the run is; any signal after that, or during
    a cleanup, is only noted, so nothing cuts the cleanup short. (A handler that
    calls `sys.exit` would raise in the middle of the cleanup itself.)"""

    HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self.received: int | None = None
        self.cleaning = False
        self._previous: dict[int, object] = {}

    def __enter__(self) -> Signals:
        self._previous = {s: signal.signal(s, self._handle) for s in self.HANDLED}
        return self

    def __exit__(self, *exc: object) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)  # type: ignore[arg-type]

    def _handle(self, number: int, frame: object) -> None:
        first = self.received is None
        self.received = self.received or number
        if first and not self.cleaning:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def uninterrupted(self) -> Iterator[None]:
        """A block that no signal cuts short (`received` says whether one came)."""
        self.cleaning = True
        try:
            yield
        finally:
            self.cleaning = False


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
    try:
        check_writable(args.out)  # before the federation starts, not after its run
    except OSError as error:
        print(f"deploy: --out {args.out}: cannot be written ({os_error_text(error)}); nothing "
              "was run", file=sys.stderr)  # fmt: skip
        return 2
    federation = None
    with Signals() as signals:
        try:
            with signals.uninterrupted():
                for line in remove_stale():  # what killed deploys left behind
                    print(line, flush=True)
                federation = Federation(
                    args.supernodes,
                    args.data_dir,
                    secure=not args.insecure,
                    namespaces=namespaces,
                    node_data_dirs=node_dirs,
                    log_dir=Path(args.log_dir) if args.log_dir else None,
                    workdir=Path(args.workdir) if args.workdir else None,
                    timeout=args.timeout,
                )
            if signals.received is not None:
                raise KeyboardInterrupt
            return _deploy(federation, args, signals)
        except KeyboardInterrupt:  # the first signal (only the first raises): clean up
            signals.cleaning = True
            if federation is not None:
                federation.close()  # again, if the signal came in _deploy's cleanup
            name = signal.Signals(signals.received or signal.SIGINT).name
            print(f"deploy: stopped by {name}; no results were written", file=sys.stderr)
            return 128 + (signals.received or signal.SIGINT)


def _deploy(federation: Federation, args: argparse.Namespace, signals: Signals) -> int:
    """Start the federation, run once, copy the results to `--out`; always clean up."""
    out = Path(args.out).resolve()
    kept = args.log_dir or args.workdir
    logs = f"logs in {federation.logs}" if kept else "to keep the logs: --log-dir DIR"
    start = time.monotonic()
    try:
        federation.start()
        describe(federation)
        outcome = federation.start_run(args.run_config, echo=print_line).finish()
        if outcome.results_path is not None:  # before the federation's folder goes
            atomic_write_bytes(out, outcome.results_path.read_bytes())
    except (CredentialError, DeploymentError, NetworkError, TimeoutError,
            subprocess.TimeoutExpired) as error:  # fmt: skip
        print(f"deploy: {error} ({logs})", file=sys.stderr)
        return 1
    except OSError as error:  # a log folder or --out that cannot be written, a missing program
        print(f"deploy: {os_error_text(error)} ({logs})", file=sys.stderr)
        return 1
    finally:
        signals.cleaning = True
        federation.close()
        print(
            f"deploy: stopped {len(federation.stopped)} processes"
            + (", removed the network namespaces" if federation.network.link_ns else "")
            + ("" if args.workdir else " and the work folder")
            + f" ({time.monotonic() - start:.0f} s in all)",
            flush=True,
        )
    if not outcome.ok:
        print(f"deploy: {outcome.error} ({logs})", file=sys.stderr)
        return 1
    print(f"run {outcome.run_id}: results written to {out}", flush=True)
    return 0


def describe(federation: Federation) -> None:
    """What was set up, one line each (where a real deployment would put what)."""
    net = federation.network
    where = f" in network namespace {net.link_ns}" if net.link_ns else ""
    if federation.secure:
        print(
            "deploy: TLS on (a CA and certificates made for this run), SuperNode "
            "authentication on (each SuperNode's public key registered), the SuperLink "
            "behind a front door (nginx): only the operator's certificate opens the "
            "control side",
            flush=True,
        )
        print(
            f"SuperLink (pid {federation.superlink.pid}){where} on 127.0.0.1:"
            f"{net.internal_port} only; its front door (nginx, pid {federation.proxy.pid}) "
            f"on port {net.superlink_port}; flwr reaches the control side at "
            f"{federation.control_address}, which forwards with the operator's certificate",
            flush=True,
        )  # fmt: skip
        if net.link_ns is None:
            print(
                "deploy: warning: on this machine's loopback, where every process of this "
                "machine reaches the SuperLink's own port and the operator's side of the "
                "proxy (Flower's SuperLink listens on TCP only); as root they are in a "
                "network namespace of their own",
                flush=True,
            )
    else:
        print("deploy: --insecure: no TLS, any SuperNode may join, anyone may run", flush=True)
        print(
            f"SuperLink (pid {federation.superlink.pid}){where}, Fleet/Control API port "
            f"{net.superlink_port}",
            flush=True,
        )  # fmt: skip
    for holder in federation.holders:
        where = f" in {ns}" if (ns := net.holder_ns[holder.index]) else ""
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
