"""`python -m fedcore deploy`: the Flower app unchanged on Flower's deployment engine,
secure by default (TLS, registered SuperNodes, the SuperLink behind its front door),
each data holder in a network namespace where that is possible. Afterwards no
process, namespace or folder of it is left; what a killed deploy left, the next one
removes.

The faults (a SuperNode killed in a round, the SuperLink restarted, a link cut) are
in test_deploy_faults.py, an intruder in test_deploy_control.py.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest

from fedcore.deploy import leftovers
from fedcore.deploy.network import Namespaces
from fedcore.deploy.processes import processes_with_env, stop_processes, with_descendants

from .conftest import REPO

NO_DATA = "data-dir: data folder not found (set a folder that holds the four MNIST IDX files)"


def namespaces() -> set[str]:
    return set(leftovers.namespaces())


def leftovers_of(pid: int) -> dict[str, list]:
    """What deploy `pid` left: its network namespaces, temporary folders, processes."""
    tag = f"{leftovers.tag(pid)}-"
    processes = processes_with_env(leftovers.OWNER_ENV, str(pid))
    for nginx in [p for p in psutil.process_iter(["name", "cmdline"]) if p.name() == "nginx"]:
        if tag in " ".join(nginx.info["cmdline"] or []):  # its config's name: nginx's title
            processes += with_descendants([nginx.pid])
    return {
        "namespaces": sorted(ns for ns in namespaces() if ns.startswith(tag)),
        "folders": sorted(str(p) for p in Path(tempfile.gettempdir()).glob(f"{tag}*")),
        "processes": sorted(f"{p.pid} {p.name()}" for p in processes),
    }


NOTHING = {"namespaces": [], "folders": [], "processes": []}


@pytest.fixture
def deploy(mnist_dir, tmp_path):
    """Run `python -m fedcore deploy`; afterwards nothing of it may be left."""
    workdir = tmp_path / "work"
    out = tmp_path / "deployment.json"
    started: list[subprocess.Popen] = []

    def start(*extra: str, keep_workdir: bool = True) -> subprocess.Popen:
        kept = ["--workdir", str(workdir)] if keep_workdir else []
        process = subprocess.Popen(
            [sys.executable, "-m", "fedcore", "deploy", "--supernodes", "3",
             "--data-dir", str(mnist_dir), *kept, "--timeout", "300",
             "--run-config", "num-server-rounds=1 local-epochs=1", "--out", str(out), *extra],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=os.environ | {"FLWR_TELEMETRY_ENABLED": "0"},
        )  # fmt: skip
        started.append(process)
        return process

    def run(*extra: str) -> subprocess.CompletedProcess:
        process = start(*extra)
        stdout, stderr = process.communicate(timeout=360)
        return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)

    yield run, start, out, workdir
    for process in started:
        if process.poll() is None:  # a test that failed half-way
            stop_processes(with_descendants([process.pid]))
        process.wait()
        left = leftovers_of(process.pid)
        stop_processes(processes_with_env(leftovers.OWNER_ENV, str(process.pid)))
        for folder in left["folders"]:
            shutil.rmtree(folder, ignore_errors=True)
        assert left == NOTHING  # the command must have removed everything it made


def test_a_killed_deploy_is_removed_by_the_next_one_secure_by_default(deploy, tmp_path):
    run, start, out, _ = deploy
    # A deploy killed mid-run (SIGKILL: no cleanup of its own) leaves everything behind.
    killed = start(keep_workdir=False)
    assert killed.stdout is not None
    for line in killed.stdout:
        if "Successfully started run" in line:
            break
    else:
        pytest.fail(f"the first deploy never started its run: {killed.stderr.read()}")
    killed.kill()
    killed.wait()
    left = leftovers_of(killed.pid)
    print(f"\nleft by deploy pid {killed.pid} after SIGKILL: {json.dumps(left, indent=1)}")
    namespaced = Namespaces.available()  # as root: each data holder in a namespace of its own
    assert len(left["namespaces"]) == (4 if namespaced else 0)
    assert len(left["folders"]) == 1 and left["processes"]

    # The next deploy says what it removes, removes it, and runs, secure by default.
    missing = tmp_path / "no-mnist-here"
    done = run("--node-data-dir", f"1={missing}")
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    removed = re.findall(rf"deploy: removed what deploy pid {killed.pid} \(gone\) left "
                         r"behind: \d+ process(?:es)?, (\d) network namespaces?, 1 temporary "
                         r"folder\n", done.stdout)  # fmt: skip
    assert removed == [str(len(left["namespaces"]))], done.stdout
    assert leftovers_of(killed.pid) == NOTHING
    print(next(line for line in done.stdout.splitlines() if "left behind" in line))

    assert "TLS on" in output and "SuperNode authentication on" in output
    assert "only the operator's certificate opens the control side" in output
    assert len(re.findall(r"registered as node \d+", output)) == 3
    if namespaced:
        assert "in network namespace fedcore-pid" in output and "dials 10.213.2.1:9091" in output
        assert "removed the network namespaces" in output
    federated = json.loads(out.read_text())["federated"]
    assert federated["failures"] == [f"client 2 failed in round 1: {NO_DATA}"]
    assert str(missing) not in json.dumps(federated["failures"])
    assert set(federated["history"][1]["client_loss"]) == {"1", "3"}
    assert federated["accuracy"] > federated["history"][0]["accuracy"] + 0.2  # two trained


def test_every_client_failing_stops_with_one_line_and_no_older_results(deploy, tmp_path):
    run, _, out, workdir = deploy
    # Results of an earlier run where this run writes its own: none of them may be reported.
    earlier = workdir / "results" / "run-1"
    earlier.mkdir(parents=True)
    for name in ("latest.json", "20200101-000000-run1.json"):
        (earlier / name).write_text('{"federated": {"accuracy": 0.99}}')
    missing = tmp_path / "gone"
    done = run("--network", "loopback", *[f"--node-data-dir={i}={missing}" for i in range(3)])
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    failed = [line for line in done.stderr.splitlines() if line.startswith("deploy: ")]
    assert len(failed) == 1, done.stderr
    assert failed[0].startswith("deploy: fedcore: run failed: round 1: every client failed (")
    for client in (1, 2, 3):  # in the order they failed
        assert f"client {client} failed in round 1: {NO_DATA}" in failed[0]
    assert str(missing) not in failed[0]
    assert not out.exists()
