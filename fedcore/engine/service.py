"""The engine process: runs the jobs its supervisor sends, one at a time.

A job is one experiment (isolated models, the federated run, or both), on two
pools of warm workers: the ClientApps on one worker more than there are cores
(so that the last client of a round shares the cores rather than running
alone: 3 clients on 2 cores take 1.5 client-times a round, not 2), and the
isolated models that round 1 does not give (see `fedcore.learning.baselines`) on one
worker per core at nice 19, on the cycles the federated run leaves idle.

It talks to its supervisor in the messages of `fedcore.engine.protocol`.
`run_job` runs a job by phases, each a function of its own: the federated run
in a thread (`start_federated`, `federated_phase`), the isolated models
(`isolated_phase`), the centralized baseline (`centralized_phase`), and the
result (`assemble`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import queue
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass
from typing import Any

from fedcore.data.mnist import DataError, MnistData, load_mnist
from fedcore.data.partition import (
    ClientPartition,
    client_label_counts,
    missing_subsets,
    partition_clients,
)
from fedcore.engine.cache import ResultCache, isolated_client_key, model_entry_reader
from fedcore.engine.child import connect_to_parent
from fedcore.engine.pool import TaskError, WorkerDied, WorkerPool
from fedcore.engine.protocol import (
    PHASE_PARTS,
    Cancel,
    Cancelled,
    Done,
    Event,
    Failed,
    Phase,
    Ready,
    Run,
    ToSupervisor,
)
from fedcore.experiment.config import ExperimentConfig
from fedcore.experiment.progress import FederatedRunError, Progress
from fedcore.experiment.results import (
    CentralizedResult,
    ClientResult,
    ExperimentResult,
    FederatedResult,
)
from fedcore.experiment.specs import ConfigError
from fedcore.flower.arrays import torch_state
from fedcore.learning.attacks import is_attacker
from fedcore.learning.baselines import centralized_result, check_isolated, client_result
from fedcore.learning.evaluation import cross_accuracy
from fedcore.learning.models import build_model

Emit = Callable[[str, Any], None]  # emit(kind, payload): an event for the supervisor


class JobCancelled(Exception):
    """The supervisor asked this job to stop."""


class Pools:
    """The engine's two worker pools (see the module docstring)."""

    def __init__(self) -> None:
        cores = os.cpu_count() or 1
        self.federated = WorkerPool(cores + 1, "federated")
        self.isolated = WorkerPool(cores, "isolated", nice=19)

    @property
    def pids(self) -> list[int]:
        return self.federated.pids + self.isolated.pids

    @property
    def broken(self) -> str | None:
        return self.federated.broken or self.isolated.broken

    def close(self) -> None:
        self.federated.close()
        self.isolated.close()


def slim(event: Progress) -> Progress:
    """The event with only the round it adds to the history (the supervisor keeps the
    rest): a 1000-round run would otherwise send its whole history with every reply."""
    added = event.history[-1:] if event.kind == "round-done" else ()
    return dataclasses.replace(event, history=added)


def run_federated_on_pool(
    config: ExperimentConfig,
    pool: WorkerPool,
    emit: Emit,
    stop: threading.Event,
    on_reply: Callable[[Any, Any], None] | None = None,
) -> FederatedResult:
    """The federated run through Flower (ServerApp and ClientApps) on the pool's workers."""
    from fedcore.engine.flower_runtime import run_server_main_on_pool
    from fedcore.flower.rounds import run_federated

    run_config = config.to_run_config() | {"data-dir": config.resolved_data_dir()}
    return run_server_main_on_pool(
        lambda grid: run_federated(
            grid, config, lambda event: emit("progress", slim(event)), stop, overlap=True
        ),
        run_config,
        config.num_clients,
        pool,
        on_reply,
    )


class IsolatedModels:
    """Every client's isolated model (weights and losses): from the cache, from
    round 1 of the federated run (`offer`), or trained in a pool (`train_missing`)."""

    def __init__(
        self,
        config: ExperimentConfig,
        partitions: list[ClientPartition],
        cache: ResultCache | None,
        emit: Emit,
    ) -> None:
        self.config, self.partitions, self.cache, self.emit = config, partitions, cache, emit
        self._lock = threading.Lock()
        self._entries: dict[int, Future] = {p.client: Future() for p in partitions}
        self._training: list[Future] = []  # tasks sent to a pool
        self._submitted: set[int] = set()
        self._cached: set[int] = set()  # came from the cache: not written again
        if cache is None:
            return
        read = model_entry_reader(build_model(config.seed, config.model))
        for partition in partitions:
            cached = cache.get("isolated", isolated_client_key(config, partition), read)
            if cached is not None:
                self._cached.add(partition.client)
                self._done(partition.client, cached)

    def _done(self, client: int, entry: dict[str, Any]) -> None:
        with self._lock:
            if self._entries[client].done():
                return
            self._entries[client].set_result(entry)
        self.emit("epoch", (client, self.config.local_epochs, None))

    def offer_first_round(self, message: Any, reply: Any) -> None:
        """A ClientApp's reply: in round 1 it is that client's isolated model (not
        an attacker's: what it sends is not what it trained alone)."""
        if reply.has_error() or int(message.content["config"]["server-round"]) != 1:
            return
        record = reply.content["client"]
        if is_attacker(self.config, int(record["client"])):
            return
        entry = {
            "weights": torch_state(reply.content["arrays"]),
            "losses": list(record["epoch-losses"]),
        }
        self._done(int(record["client"]), entry)

    def train_missing(self, pool: WorkerPool, clients: tuple[int, ...] | None = None) -> None:
        """Train in `pool` every model (of `clients`, if given) not available otherwise
        (once each)."""
        for client, entry in self._entries.items():
            with self._lock:
                wanted = clients is None or client in clients
                if entry.done() or client in self._submitted or not wanted:
                    continue
                self._submitted.add(client)
            task = pool.submit(
                "isolated", (self.config, client), on_progress=lambda v: self.emit("epoch", v)
            )
            task.add_done_callback(functools.partial(self._copy, client))
            self._training.append(task)

    def _copy(self, client: int, task: Future) -> None:
        if task.cancelled():
            return
        if task.exception() is not None:
            with self._lock:
                self._entries[client].set_exception(task.exception())
        else:
            self._done(client, task.result())

    def wait(self, stop: threading.Event, idle: Callable[[], None]) -> None:
        """Until every model is there, calling `idle()` meanwhile; `JobCancelled` if
        `stop` is set (the tasks not started yet are dropped)."""
        try:
            while not all(entry.done() for entry in self._entries.values()):
                if stop.wait(0.02):
                    raise JobCancelled
                idle()
        finally:
            for task in self._training:
                task.cancel()  # only those not started yet

    def results(self, data: MnistData, subsets: tuple[tuple[int, ...], ...]) -> list[ClientResult]:
        """Each model's report; every model not cached yet is cached (complete models only)."""
        out = []
        for partition in self.partitions:
            entry = self._entries[partition.client].result()
            if self.cache is not None and partition.client not in self._cached:
                self.cache.put("isolated", isolated_client_key(self.config, partition), entry)
            model = build_model(self.config.seed, self.config.model)
            model.load_state_dict(entry["weights"])
            out.append(client_result(model, entry["losses"], data, partition, subsets))
        return out


class CentralizedModel:
    """The centralized baseline's weights and losses: from the cache or trained in a pool."""

    def __init__(self, config: ExperimentConfig, cache: ResultCache | None, emit: Emit) -> None:
        self.config, self.cache, self.emit = config, cache, emit
        self.task: Future = Future()
        self.cached = False  # from the cache: then not written again
        if cache is not None:
            read = model_entry_reader(build_model(config.seed, config.model))
            cached = cache.get("centralized", config.cache_key(), read)
            if cached is not None:
                self.cached = True
                self.task.set_result(cached)

    def train(self, pool: WorkerPool) -> None:
        if not self.task.done():
            self.task = pool.submit(
                "centralized", (self.config,), lambda v: self.emit("centralized-epoch", v)
            )

    def wait(self, stop: threading.Event) -> dict[str, Any]:
        while not self.task.done():
            if stop.wait(0.02):
                self.task.cancel()  # only if not started yet
                raise JobCancelled
        entry = self.task.result()
        if self.cache is not None and not self.cached:
            self.cache.put("centralized", self.config.cache_key(), entry)
        return entry


def run_job(
    config: ExperimentConfig,
    phase: Phase,
    pools: Pools,
    cache: ResultCache | None,
    emit: Emit,
    stop: threading.Event,
) -> ExperimentResult:
    """One experiment; `stop` set by the supervisor ends it early (`JobCancelled`).

    The federated run starts first; the centralized baseline trains in the
    isolated pool meanwhile. The isolated models come from the cache, else from
    round 1 when every client trains in it, else (and for any client that
    failed in round 1) from the isolated pool.
    """
    parts = PHASE_PARTS[phase]
    if "isolated" in parts:
        check_isolated(config)  # before anything is trained: a setting's error, at once
    begin = time.perf_counter()
    data = load_mnist(config)
    partitions = partition_clients(data.train_y, config)  # also puts a library split on disk
    timings = {"load": time.perf_counter() - begin}
    subsets = missing_subsets(partitions)
    models = IsolatedModels(config, partitions, cache, emit) if "isolated" in parts else None
    centralized = CentralizedModel(config, cache, emit) if "centralized" in parts else None
    if centralized is not None:
        centralized.train(pools.isolated)
    federating = (
        start_federated(config, pools.federated, cache, models, emit)
        if "federated" in parts
        else None
    )
    isolated: list[ClientResult] | None = None
    federated: FederatedResult | None = None
    baseline: CentralizedResult | None = None
    try:
        if models is not None:
            start = time.perf_counter()
            isolated = isolated_phase(models, pools.isolated, federating, data, subsets, stop)
            timings["isolated"] = time.perf_counter() - start
            emit("isolated", isolated)
        if federating is not None:
            federated = federated_phase(federating, config, cache, stop, timings)
        if centralized is not None:
            baseline = centralized_phase(centralized, data, partitions, subsets, stop, timings)
    finally:
        if federating is not None:
            federating.close()
    timings["total"] = time.perf_counter() - begin
    return assemble(config, data, partitions, isolated, federated, baseline, timings)


@dataclass
class Federating:
    """The federated run, from the cache or going on in a thread of its own (so that
    the isolated models and the centralized baseline can train beside it), and
    what that thread gave once it ended."""

    halt: threading.Event  # ends the run: the job stopped, or another phase failed
    thread: threading.Thread | None = None
    result: FederatedResult | None = None
    error: BaseException | None = None
    seconds: float = 0.0
    client_seconds: float = 0.0  # of which some ClientApp was training

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def close(self) -> None:
        """End the run (if it still goes on) and wait for its thread."""
        self.halt.set()
        if self.thread is not None:
            self.thread.join()


def start_federated(
    config: ExperimentConfig,
    pool: WorkerPool,
    cache: ResultCache | None,
    models: IsolatedModels | None,
    emit: Emit,
) -> Federating:
    """The cached federated result, else Flower's run started at once in its own thread;
    when every client trains in round 1, `models` takes their updates as isolated models."""
    federating = Federating(halt=threading.Event())
    cached = (
        cache.get("federated", config.cache_key(), FederatedResult.from_dict) if cache else None
    )
    if cached is not None:
        federating.result = cached
        return federating
    # round 1's updates are the isolated models only where they are the plain trained
    # weights: not noised (local DP), clipped (client-side central DP) or masked (SecAgg+)
    plain = config.privacy_kind in ("off", "server")
    first_round = (
        models.offer_first_round if models and config.fraction_train == 1 and plain else None
    )
    federating.thread = threading.Thread(
        target=_federate,
        args=(federating, config, pool, emit, first_round),
        name="fedcore-federated",
    )
    federating.thread.start()
    return federating


def _federate(
    federating: Federating,
    config: ExperimentConfig,
    pool: WorkerPool,
    emit: Emit,
    on_reply: Callable[[Any, Any], None] | None,
) -> None:
    """The federated thread: any error is kept for the job's thread to raise, with the
    run's time and the clients' share of it (the rest: Flower, engine, evaluation)."""
    start, clock = time.perf_counter(), time.time()
    try:
        federating.result = run_federated_on_pool(config, pool, emit, federating.halt, on_reply)
    except BaseException as error:
        federating.error = error
    federating.seconds = time.perf_counter() - start
    federating.client_seconds = pool.busy_seconds(since=clock)


def isolated_phase(
    models: IsolatedModels,
    pool: WorkerPool,
    federating: Federating | None,
    data: MnistData,
    subsets: tuple[tuple[int, ...], ...],
    stop: threading.Event,
) -> list[ClientResult]:
    """Every client's isolated model evaluated. While the federated run goes on, its
    round 1 may still give the missing models; only once it has ended is the rest
    trained in `pool` (a client that failed in round 1, a sampled run)."""
    models.wait(stop, idle=functools.partial(_train_if_no_round_one, models, pool, federating))
    return models.results(data, subsets)


def _train_if_no_round_one(
    models: IsolatedModels, pool: WorkerPool, federating: Federating | None
) -> None:
    if federating is None or not federating.running:
        models.train_missing(pool)
    elif models.config.attacker_clients:  # round 1 gives no attacker's own model
        models.train_missing(pool, models.config.attacker_clients)


def federated_phase(
    federating: Federating,
    config: ExperimentConfig,
    cache: ResultCache | None,
    stop: threading.Event,
    timings: dict[str, float],
) -> FederatedResult:
    """The federated result, once its thread has ended (`JobCancelled` if `stop` is set
    first); a new result goes to the cache and its times to `timings`."""
    if federating.thread is None:
        assert federating.result is not None
        return federating.result  # from the cache
    while federating.thread.is_alive():
        if stop.is_set():
            raise JobCancelled
        federating.thread.join(0.05)
    if federating.error is not None:
        raise federating.error
    assert federating.result is not None
    timings["federated"] = federating.seconds
    timings["federated-clients"] = federating.client_seconds
    if cache is not None:
        cache.put("federated", config.cache_key(), federating.result.to_dict())
    return federating.result


def centralized_phase(
    centralized: CentralizedModel,
    data: MnistData,
    partitions: list[ClientPartition],
    subsets: tuple[tuple[int, ...], ...],
    stop: threading.Event,
    timings: dict[str, float],
) -> CentralizedResult:
    """The centralized baseline evaluated, last: it trained beside the other phases,
    so what `timings` gets is only how long the job still waited for it."""
    start = time.perf_counter()
    entry = centralized.wait(stop)
    model = build_model(centralized.config.seed, centralized.config.model)
    model.load_state_dict(entry["weights"])
    baseline = centralized_result(model, entry["losses"], data, partitions, subsets)
    timings["centralized-wait"] = time.perf_counter() - start
    return baseline


def assemble(
    config: ExperimentConfig,
    data: MnistData,
    partitions: list[ClientPartition],
    isolated: list[ClientResult] | None,
    federated: FederatedResult | None,
    baseline: CentralizedResult | None,
    timings: dict[str, float],
) -> ExperimentResult:
    """The job's result: the phases it ran, with what the page shows beside them (the
    clients' label counts, and how each isolated model does on the others' labels)."""
    counts = client_label_counts(data.train_y, partitions)
    return ExperimentResult(
        config=config,
        isolated=isolated,
        federated=federated,
        centralized=baseline,
        timings=timings,
        label_counts=counts,
        cross_accuracy=(
            None if isolated is None else cross_accuracy([c.confusion for c in isolated], counts)
        ),
    )


def failure(error: BaseException) -> tuple[str, str]:
    """What kind of failure (`setting`, `data` or `run`) and one line that says why;
    our own errors already say it clearly."""
    if isinstance(error, ConfigError):
        return "setting", str(error)
    if isinstance(error, DataError):
        return "data", str(error)
    if isinstance(error, FederatedRunError | TaskError | WorkerDied):
        return "run", str(error)
    return "run", f"{type(error).__name__}: {error}"


def serve(conn: Any) -> None:
    # Everything the workers need, imported once here: they are forked from
    # this process (before it starts any thread) with all of it loaded.
    import fedcore.engine.flower_runtime  # noqa: F401
    import fedcore.flower.client_app  # noqa: F401  (Flower, PyTorch, the training code)

    pools = Pools()
    send_lock = threading.Lock()
    closing = threading.Event()  # the supervisor closed the channel (or died): end now

    def send(message: ToSupervisor) -> None:
        """To the supervisor; once it has gone there is nobody left to tell."""
        with send_lock, contextlib.suppress(OSError):
            conn.send(message)

    send(Ready(tuple(pools.pids)))
    jobs: queue.Queue = queue.Queue()
    stops: dict[int, threading.Event] = {}  # by job; a cancel may come before its job starts

    def listen() -> None:  # the supervisor's messages, also while a job runs
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):  # the job under way ends, the rest never start
                closing.set()
                for stop in list(stops.values()):
                    stop.set()
                jobs.put(None)
                return
            match message:
                case Cancel(job=job):
                    stops.setdefault(job, threading.Event()).set()
                case _:
                    jobs.put(message)

    threading.Thread(target=listen, name="fedcore-engine-listen", daemon=True).start()
    cache = ResultCache()
    while (message := jobs.get()) is not None:
        if not isinstance(message, Run):
            raise TypeError(f"the supervisor sent an unknown message: {message!r}")
        job = message.job
        stop = stops.setdefault(job, threading.Event())
        try:
            if stop.is_set() or closing.is_set():
                raise JobCancelled
            result = run_job(
                message.config,
                message.phase,
                pools,
                cache if message.use_cache else None,
                lambda kind, payload, job=job: send(Event(job, kind, payload)),
                stop,
            )
        except (JobCancelled, CancelledError):
            send(Cancelled(job))
        except Exception as error:
            if stop.is_set():
                send(Cancelled(job))
            else:
                send(Failed(job, *failure(error)))
        else:
            send(Done(job, result.to_dict()))
        stops.pop(job, None)
        if pools.broken:
            break
    pools.close()  # every worker killed and reaped before this process exits


if __name__ == "__main__":
    serve(connect_to_parent(sys.argv))
    # Its workers are reaped and its files written: nothing is left to tidy, and the
    # interpreter's own finalization (PyTorch, Flower) takes seconds under load, which
    # the caller's `Engine.close()` (and so the CLI) would wait for.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
