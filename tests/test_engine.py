"""The run engine: merged requests, the queue and its turns, Stop per caller, time
limits, a killed engine, its processes, determinism."""

import itertools
import os
import signal
import threading

import psutil
import pytest

from fedcore.engine import Engine, EngineError, RunStopped

SEEDS = itertools.count(1000)


@pytest.fixture
def tiny(small_config):
    """Settings nobody has computed yet in this session (a seed of their own)."""
    return lambda **changes: small_config.replace(seed=next(SEEDS), **changes)


def running(engine, config):
    """`config` submitted and running (the engine has sent its first event): a job
    still ending from an earlier test is out of the way, and the next ones queue."""
    handle = engine.submit(config, use_cache=False)
    started = threading.Event()
    handle.subscribe(lambda kind, payload: started.set())
    assert started.wait(120)
    return handle


@pytest.fixture
def stop_afterwards():
    """Handles to stop at the end of the test, passed or failed: the shared engine
    moves on to the next test's runs."""
    handles = []
    yield handles.append
    for handle in handles:
        handle.stop()


def test_identical_requests_are_computed_once(engine, tiny):
    config = tiny()
    started = engine.jobs_started
    first, second = engine.submit(config), engine.submit(config)
    assert first.result() == second.result()
    assert engine.jobs_started == started + 1
    # Finished: a third request is answered from memory, at once.
    third = engine.submit(config)
    assert third.done() and third.result() == first.result()
    assert engine.jobs_started == started + 1


def test_runs_wait_in_a_queue_and_know_their_place(engine, tiny):
    running, queued = engine.submit(tiny()), engine.submit(tiny())
    status = queued.status()
    assert status.state == "queued" and status.place == 1, status
    assert "queued: place 1" in status.detail
    assert running.result().federated and queued.result().federated
    assert queued.status().state == "done"


def test_a_queued_run_nobody_needs_is_dropped(engine, tiny):
    running, dropped = engine.submit(tiny()), engine.submit(tiny())
    started = engine.jobs_started
    dropped.stop()
    assert dropped.status().state == "stopped"
    running.result()
    assert engine.jobs_started == started  # never sent to the engine


def _descendants(pid: int) -> set[int]:
    return {p.pid for p in psutil.Process(pid).children(recursive=True)}


def test_stop_during_the_federated_phase(engine, tiny):
    config = tiny(num_rounds=3, local_epochs=3)
    engine.submit(tiny()).result()  # the engine is warm
    before = _descendants(os.getpid())
    handle = engine.submit(config)
    round_one = threading.Event()
    handle.subscribe(
        lambda kind, event: (
            kind == "progress"
            and event.kind == "round-done"
            and event.server_round == 1
            and round_one.set()
        )
    )
    assert round_one.wait(120)
    handle.stop()  # the caller's handle ends at once; nobody else waits, so the job ends
    assert handle.done() and handle.status().state == "stopped"
    with pytest.raises(RunStopped):
        handle.result(timeout=0)
    # Nothing of it was kept: asked again, it is computed anew (after the stopped
    # job has ended), and it works.
    started = engine.jobs_started
    again = engine.submit(config)
    assert again.result().federated.history[-1].round == 3
    assert engine.jobs_started == started + 1
    # The run started no process and left none: the warm engine went on, or, if it
    # had to be killed, nothing of it is left and a new engine stands in its place.
    after = _descendants(os.getpid())
    print(f"engine processes before: {sorted(before)}, after: {sorted(after)}")
    assert after == before or not after & before


def test_stop_ends_only_the_callers_handle(engine, tiny):
    """Two callers on the same settings share one job: one's Stop ends its own handle,
    the other's run goes on to its result."""
    config = tiny(num_rounds=3, local_epochs=2)
    started = engine.jobs_started
    leaving, staying = engine.submit(config), engine.submit(config)
    round_one = threading.Event()
    staying.subscribe(
        lambda kind, event: kind == "progress" and event.kind == "round-done" and round_one.set()
    )
    assert round_one.wait(120)
    leaving.stop()
    assert leaving.status().state == "stopped" and not staying.done()
    with pytest.raises(RunStopped):
        leaving.result(timeout=0)
    assert staying.result().federated.history[-1].round == 3
    assert engine.jobs_started == started + 1


def test_a_session_keeps_one_run_queued(engine, tiny, stop_afterwards):
    stop_afterwards(running(engine, tiny(num_rounds=3)))  # the engine is busy: the rest queue
    first = engine.submit(tiny(), owner="session A")
    stop_afterwards(first)
    assert first.status().state == "queued"
    second = engine.submit(tiny(), owner="session A")
    stop_afterwards(second)
    assert first.done() and first.status().state == "replaced"
    assert "replaced by a newer request" in first.status().detail
    with pytest.raises(RunStopped, match="replaced"):
        first.result(timeout=0)
    assert second.status().state == "queued" and second.status().place == 1
    other = engine.submit(tiny(), owner="session B")  # another session's run stays
    stop_afterwards(other)
    assert second.status().state == "queued" and other.status().place == 2


def test_sessions_take_turns(engine, tiny, stop_afterwards):
    """The owner that has waited longest goes next, and one that was just served goes
    behind the others: a script's five queued runs do not hold a session back."""
    stop_afterwards(running(engine, tiny(num_rounds=3)))
    script = [engine.submit(tiny()) for _ in range(3)]  # no owner: may queue any number
    a, b = engine.submit(tiny(), owner="session A"), engine.submit(tiny(), owner="session B")
    for handle in (*script, a, b):
        stop_afterwards(handle)
    places = [h.status().place for h in (*script, a, b)]
    # the script's first (it waited first), then A and B, then the script's others
    assert places == [1, 4, 5, 2, 3], places
    script[0].stop()
    # a stopped request is no turn taken: the script still waited first
    assert [h.status().place for h in (*script[1:], a, b)] == [1, 4, 2, 3]


def test_a_run_past_its_time_limit_fails_with_one_line(engine, tiny):
    config = tiny(num_rounds=3, local_epochs=3)  # seconds of work
    handle = engine.submit(config, time_limit=0.5)
    with pytest.raises(EngineError) as failure:
        handle.result(timeout=120)
    message = str(failure.value)
    assert message.startswith("the run was stopped after 0.5 s, the longest a run may take")
    assert message.endswith(f"python -m fedcore run --phase all {config.summary()}")
    assert "\n" not in message
    # the engine goes on: the next run works
    assert engine.submit(tiny()).result().federated is not None


def test_a_killed_engine_is_one_line_and_the_next_run_works(tiny):
    with Engine() as engine:
        engine.submit(tiny()).result()  # warm
        handle = engine.submit(tiny(num_rounds=3, local_epochs=2))
        round_zero = threading.Event()
        handle.subscribe(lambda kind, event: kind == "progress" and round_zero.set())
        assert round_zero.wait(120)
        pids = engine.pids
        os.kill(pids[0], signal.SIGKILL)  # the test's own child, not reaped: surely it
        with pytest.raises(EngineError) as failure:
            handle.result(timeout=30)
        message = str(failure.value)
        assert message.startswith("the engine process ended unexpectedly (signal 9)")
        assert "\n" not in message
        assert not [p for p in pids if psutil.pid_exists(p)]  # its workers went with it
        assert engine.submit(tiny()).result().federated is not None


def test_an_engine_that_cannot_start_is_not_restarted_in_a_loop(tiny, monkeypatch):
    """An engine that ends before it is ready (here: a module that is not there) is
    started again only when a job asks for one, and that job fails with one line."""
    import time

    from fedcore.engine import supervisor

    spawned, spawn = [], supervisor.spawn_child

    def broken(module, env=None):
        spawned.append(module)
        return spawn("fedcore.engine.no_such_engine", env)

    monkeypatch.setattr(supervisor, "spawn_child", broken)
    with Engine() as engine:
        time.sleep(3)  # it ended at once: a restart loop would have spawned many by now
        assert len(spawned) == 1
        with pytest.raises(EngineError, match=r"^the engine process ended unexpectedly \(exit"):
            engine.submit(tiny()).result(timeout=30)
        time.sleep(2)
        assert len(spawned) == 2


def test_a_reply_the_caller_cannot_read_fails_the_run_not_the_engine(engine, tiny, monkeypatch):
    """E.g. an engine process running other code than its caller: one line, no hang."""
    from fedcore.engine import supervisor

    class Unreadable(supervisor.ExperimentResult):
        @classmethod
        def from_dict(cls, data):
            raise TypeError("RoundResult.__init__() got an unexpected keyword argument 'x'")

    monkeypatch.setattr(supervisor, "ExperimentResult", Unreadable)
    with pytest.raises(EngineError, match="the engine's 'done' message could not be read"):
        engine.submit(tiny()).result(timeout=60)
    monkeypatch.undo()
    assert engine.submit(tiny()).result(timeout=60).federated is not None


def test_closing_the_engine_stops_every_process(tiny):
    """The engine and its workers are one process group, in a session of their own
    (never killed by a bare process id; their own scheduling group under autogroup),
    and all of them are gone when `close()` returns."""
    engine = Engine()
    try:
        engine.submit(tiny()).result()
        pids = engine.pids
        assert len(pids) >= 3  # the engine and its workers
        assert {os.getpgid(pid) for pid in pids} == {pids[0]} != {os.getpgrp()}
        assert {os.getsid(pid) for pid in pids} == {pids[0]} != {os.getsid(0)}
        midway = engine.submit(tiny(num_rounds=3, local_epochs=3))  # closed mid-run
    finally:
        engine.close()
    assert midway.status().state == "stopped"
    assert not [pid for pid in pids if psutil.pid_exists(pid)]
    with pytest.raises(EngineError, match="closed"):
        engine.submit(tiny())


def test_client_sampling_is_the_same_in_every_run(engine, tiny):
    config = tiny(num_rounds=2, fraction_train=0.5)  # 1 of 3 clients per round
    first = engine.submit(config, "federated", use_cache=False).result().federated
    second = engine.submit(config, "federated", use_cache=False).result().federated
    sampled = [sorted(h.client_loss) for h in first.history[1:]]
    assert all(len(clients) == 1 for clients in sampled)
    assert [sorted(h.client_loss) for h in second.history[1:]] == sampled
    assert second == first


def test_isolated_models_from_round_one_equal_training_alone(engine, tiny):
    """With both phases, the isolated models are round 1's client updates: exactly
    what training each client alone gives (and what a sampled run trains apart)."""
    config = tiny()
    both = engine.submit(config, "all", use_cache=False).result()
    alone = engine.submit(config, "isolated", use_cache=False).result()
    assert both.isolated == alone.isolated
    sampled = engine.submit(config.replace(fraction_train=0.5), "all", use_cache=False).result()
    assert sampled.isolated == alone.isolated  # not every client in round 1: trained apart


def test_no_usage_events_for_flower(tmp_path):
    """Importing fedcore switches Flower's telemetry off before Flower reads it,
    in this process and in the processes it starts."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "FLWR_TELEMETRY_ENABLED"}
    code = (
        "import fedcore, os, subprocess, sys\n"
        "from flwr.supercore import telemetry\n"
        "child = subprocess.run([sys.executable, '-c', 'import os; "
        'print(os.environ["FLWR_TELEMETRY_ENABLED"])\'], capture_output=True, text=True)\n'
        "print(telemetry.FLWR_TELEMETRY_ENABLED, child.stdout.strip())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.stdout.split() == ["0", "0"], done.stderr
