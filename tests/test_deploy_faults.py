"""Faults on the secure federation (TLS, registered SuperNodes, the front door), each
in bounded time. An intruder is in test_deploy_control.py.

Every test starts its own federation (`fedcore.deploy.Federation`: one SuperLink,
three SuperNodes, a temporary folder for credentials and FLWR_HOME) and checks
afterwards that no process and no network namespace of it is left.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from fedcore.deploy import Federation
from fedcore.deploy.network import Namespaces
from fedcore.deploy.processes import processes_with_env, stop_processes

from .test_deployment import namespaces

SMALL = "num-server-rounds=1 local-epochs=1"  # the session's `small_config`
HEARTBEAT_LIMIT = 2 * 30  # Flower: a SuperNode is gone after 2 missed 30 s heartbeats


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.1)
    return False


@pytest.fixture
def federation(mnist_dir, tmp_path):
    """Start a secure federation of three; afterwards nothing of it may be left."""
    started: list[Federation] = []
    before = namespaces()

    def start(**options) -> Federation:
        fed = Federation(3, mnist_dir, log_dir=tmp_path / "logs", timeout=300, **options)
        started.append(fed)
        return fed.__enter__()

    yield start
    for fed in started:
        fed.close()
        leftover = processes_with_env("FLWR_HOME", str(fed.home))
        stop_processes(leftover)
        assert leftover == []
        assert not fed.workdir.exists()
    assert namespaces() - before == set()


def same_numbers(federated: dict, expected) -> None:
    assert federated["accuracy"] == expected.accuracy
    assert federated["subset_accuracy"] == expected.subset_accuracy


def test_a_supernode_killed_in_a_round_is_named_and_trains_again_once_restarted(federation):
    fed = federation()
    # min-train-clients=3: every round waits for all three (Flower's FedAvg otherwise
    # samples as many as were connected when the round began).
    run = fed.start_run("num-server-rounds=2 local-epochs=1 min-train-clients=3", timeout=200)
    assert wait_until(lambda: "Receiving: train message" in fed.log("client-2"), 90)
    killed = time.monotonic()
    fed.kill_supernode(1)  # SIGKILL, with its ClientApp: a crash, nothing said to anyone
    assert run.wait_for(r"fedcore round 1/2", HEARTBEAT_LIMIT + 30), "round 1 never ended"
    round_ended_after = time.monotonic() - killed
    fed.start_supernode(1)  # same key: the same registered SuperNode
    outcome = run.finish()
    assert outcome.ok, outcome.error
    federated = outcome.results["federated"]
    node = fed.holders[1].node_id
    assert federated["failures"] == [
        f"round 1: SuperNode client-2 (node {node}): Error: Node Unavailable — The destination "
        "node failed to report a heartbeat within 2 × its expected interval."
    ]
    assert [sorted(r["client_loss"]) for r in federated["history"]] == [
        [],
        ["1", "3"],
        ["1", "2", "3"],
    ]
    assert round_ended_after < HEARTBEAT_LIMIT + 10
    print(f"\nround 1 ended {round_ended_after:.1f} s after the kill; run {outcome.seconds:.1f} s")


def test_the_next_run_works_after_the_superlink_restarts(federation, federated_small):
    fed = federation(persistent=True)  # the SuperLink's state in a database file
    first = fed.run(SMALL, timeout=150)
    assert first.ok, first.error
    start = time.monotonic()
    fed.restart_superlink()  # same address, certificate and database
    restarted_in = time.monotonic() - start
    second = fed.run(SMALL, timeout=150)
    assert second.ok, second.error
    assert second.run_id != first.run_id
    assert all(h.process.poll() is None for h in fed.holders)  # the SuperNodes stayed
    for outcome in (first, second):
        assert outcome.results["federated"]["failures"] == []
        same_numbers(outcome.results["federated"], federated_small[0])
    print(f"\nSuperLink restarted in {restarted_in:.1f} s; runs {first.seconds:.1f} s, "
          f"{second.seconds:.1f} s")  # fmt: skip


@pytest.mark.skipif(not Namespaces.available(), reason="needs root and `ip netns`")
def test_a_link_cut_in_a_round_delays_it_and_the_run_completes(federation, federated_small):
    fed = federation(namespaces=True)
    limit = 150.0  # this run's timeout: it completes or stops with one line by then
    run = fed.start_run(SMALL, timeout=limit)
    assert wait_until(lambda: "Receiving: train message" in fed.log("client-2"), 90)
    assert fed.network.reachable(1)
    fed.cut_link(1)  # client 2 got the round's model; its update has to come back
    cut = time.monotonic()
    assert not fed.network.reachable(1)
    time.sleep(5)
    fed.restore_link(1)
    cut_for = time.monotonic() - cut
    assert run.wait_for(r"fedcore round 1/1", 0) is None  # the round waited for client 2
    assert wait_until(lambda: fed.network.reachable(1), 10)
    outcome = run.finish()
    assert outcome.ok, outcome.error
    assert outcome.seconds < limit
    federated = outcome.results["federated"]
    assert federated["failures"] == []
    assert set(federated["history"][1]["client_loss"]) == {"1", "2", "3"}
    same_numbers(federated, federated_small[0])
    print(f"\nlink cut for {cut_for:.1f} s; run {outcome.seconds:.1f} s")
