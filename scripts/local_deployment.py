"""Run the experiment on Flower's deployment engine, on this machine, then clean up.

One `flower-superlink` and N `flower-supernode` processes on loopback, talking
over the network exactly as they would across machines (insecure here: see the
README for TLS and authentication). Each SuperNode gets its own partition and
data folder through `--node-config`; a SuperLink connection named
`local-deployment` is written into `$FLWR_HOME/config.toml` with Flower's own
config writer; then `flwr run . local-deployment` runs the Flower app
unchanged and its ServerApp writes the results JSON.

Every process started here is stopped by process id (with its children) when
the run ends, fails, times out or is interrupted.

    python scripts/local_deployment.py --supernodes 3 --data-dir ../shared/data/mnist \\
        --run-config "num-server-rounds=1 local-epochs=1" --out results/deployment.json
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fedcore.processes import stop_processes, with_descendants
from fedcore.storage import atomic_write_bytes

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CONNECTION = "local-deployment"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, deadline: float) -> None:
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with code {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} in time")


def write_connection(flwr_home: Path, port: int) -> None:
    """`[superlink.local-deployment]` in `$FLWR_HOME/config.toml`, by Flower's own writer."""
    os.environ["FLWR_HOME"] = str(flwr_home)
    from flwr.cli.flower_config import init_flwr_config, write_superlink_connection
    from flwr.cli.typing import SuperLinkConnection

    init_flwr_config()
    write_superlink_connection(
        SuperLinkConnection(name=CONNECTION, address=f"127.0.0.1:{port}", insecure=True)
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--supernodes", type=int, default=3)
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
    parser.add_argument("--out", required=True, help="where the results JSON goes")
    parser.add_argument("--flwr-home", help="default: a temporary folder, removed afterwards")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds for the whole run")
    args = parser.parse_args()

    deadline = time.monotonic() + args.timeout
    data_dir = str(Path(args.data_dir).resolve())
    out = Path(args.out).resolve()
    home = Path(args.flwr_home or tempfile.mkdtemp(prefix="fedcore-flwr-home-")).resolve()
    env = os.environ | {
        "FLWR_HOME": str(home),
        "FEDCORE_DATA_DIR": data_dir,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
    }
    logs = out.parent / f"{out.stem}-logs"
    logs.mkdir(parents=True, exist_ok=True)
    started: list[subprocess.Popen] = []
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the cleanup below
    try:
        link_port = free_port()
        superlink = subprocess.Popen(  # noqa: SIM115 (kept running until `finally`)
            [str(BIN / "flower-superlink"), "--insecure", "--host", "127.0.0.1",
             "--port", str(link_port), "--disable-runtime-dependency-installation",
             "--log-file", str(logs / "superlink.log")],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )  # fmt: skip
        started.append(superlink)
        wait_for_port(link_port, superlink, deadline)
        print(f"SuperLink on 127.0.0.1:{link_port} (pid {superlink.pid})", flush=True)
        node_dirs = dict(item.split("=", 1) for item in args.node_data_dir)
        for partition in range(args.supernodes):
            node_dir = node_dirs.get(str(partition), data_dir)
            node_config = (
                f"partition-id={partition} num-partitions={args.supernodes} data-dir='{node_dir}'"
            )
            command = [
                str(BIN / "flower-supernode"), "--insecure",
                "--superlink", f"127.0.0.1:{link_port}",
                "--port", str(free_port()), "--node-config", node_config,
            ]  # fmt: skip
            with open(logs / f"supernode-{partition}.log", "w") as log:
                node = subprocess.Popen(
                    command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
                )
            started.append(node)
            print(f"SuperNode {partition} (pid {node.pid}): {node_config}", flush=True)
        write_connection(home, link_port)
        overrides = f"{args.run_config} results-dir='{out.parent / (out.stem + '-runs')}'".strip()
        run = subprocess.run(
            [str(BIN / "flwr"), "run", ".", CONNECTION, "--stream", "--run-config", overrides],
            cwd=ROOT, env=env, timeout=max(1.0, deadline - time.monotonic()),
            capture_output=True, text=True,
        )  # fmt: skip
        print(run.stdout, run.stderr, sep="\n", flush=True)
        latest = out.parent / (out.stem + "-runs") / "latest.json"
        if run.returncode != 0 or not latest.is_file():
            print(f"local deployment: the run failed (logs in {logs})", file=sys.stderr)
            return 1
        atomic_write_bytes(out, latest.read_bytes())
        print(f"results written to {out}")
        return 0
    except (subprocess.TimeoutExpired, TimeoutError) as error:
        print(f"local deployment: timed out ({error}); logs in {logs}", file=sys.stderr)
        return 1
    finally:
        stopped = stop_processes(with_descendants([p.pid for p in started]))
        for process in started:
            process.wait(timeout=15)
        print(f"stopped {len(stopped)} processes: {sorted(stopped)}", flush=True)
        if args.flwr_home is None:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
