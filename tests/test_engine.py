"""The run engine: merged requests, the queue, Stop, a killed engine, determinism."""

import itertools
import os
import signal
import threading
import time

import psutil
import pytest

from fedcore.engine import Engine, EngineError, RunStopped

SEEDS = itertools.count(1000)


@pytest.fixture
def tiny(small_config):
    """Settings nobody has computed yet in this session (a seed of their own)."""
    return lambda **changes: small_config.replace(seed=next(SEEDS), **changes)


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
    dropped.release()
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
    pressed = time.monotonic()
    handle.stop()
    with pytest.raises(RunStopped):
        handle.result(timeout=10)
    stopped_after = time.monotonic() - pressed
    print(f"stopped {stopped_after:.2f} s after Stop")
    assert stopped_after < 2.0
    # Every process the run started is gone within 5 s: it started none (the
    # workers were warm before it), and if the engine had to be killed, its
    # processes are gone and a new engine stands in their place.
    time.sleep(0.5)
    after = _descendants(os.getpid())
    print(f"engine processes before: {sorted(before)}, after: {sorted(after)}")
    assert after == before or not (after & before) - {os.getpid()}
    # Nothing of it was kept: asked again, it is computed anew, and it works.
    started = engine.jobs_started
    again = engine.submit(config)
    assert again.result().federated.history[-1].round == 3
    assert engine.jobs_started == started + 1


def test_a_killed_engine_is_one_line_and_the_next_run_works(tiny):
    with Engine() as engine:
        engine.submit(tiny()).result()  # warm
        handle = engine.submit(tiny(num_rounds=3, local_epochs=2))
        round_zero = threading.Event()
        handle.subscribe(lambda kind, event: kind == "progress" and round_zero.set())
        assert round_zero.wait(120)
        os.kill(engine.pids[0], signal.SIGKILL)
        with pytest.raises(EngineError) as failure:
            handle.result(timeout=30)
        message = str(failure.value)
        assert message.startswith("the engine process ended unexpectedly (signal 9)")
        assert "\n" not in message
        assert engine.submit(tiny()).result().federated is not None


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
    engine = Engine()
    engine.submit(tiny()).result()
    pids = engine.pids
    assert len(pids) >= 3  # the engine and its workers
    engine.close()
    gone, alive = psutil.wait_procs([psutil.Process(p) for p in pids if psutil.pid_exists(p)], 5)
    assert not alive, alive


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
