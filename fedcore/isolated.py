"""The first half of the experiment: every client trains a model on its own data only."""

from __future__ import annotations

import os
import sys
import threading
from concurrent.futures import CancelledError, ThreadPoolExecutor

from torch import nn

from fedcore.config import ExperimentConfig, format_digits
from fedcore.data import MnistData, load_mnist
from fedcore.evaluation import evaluate
from fedcore.local_training import ClientEpochCallback, train_on_partition
from fedcore.model import Net, build_model
from fedcore.partition import ClientPartition, partition_clients
from fedcore.results import ClientResult


def fit_isolated_model(
    data: MnistData,
    partition: ClientPartition,
    config: ExperimentConfig,
    on_epoch: ClientEpochCallback | None = None,
) -> tuple[Net, list[float]]:
    """Train one client's model from the shared initial weights; return it and its losses."""
    model = build_model(config.seed)
    losses = train_on_partition(model, data, partition, config, server_round=0, on_epoch=on_epoch)
    return model, losses


def client_result(
    model: nn.Module,
    losses: list[float],
    data: MnistData,
    partition: ClientPartition,
    config: ExperimentConfig,
) -> ClientResult:
    """Evaluate a client's model on the full test set and every missing-digit subset."""
    report = evaluate(model, data.test_x, data.test_y, config.missing_subsets)
    own = format_digits(sorted(partition.excluded))
    return ClientResult(
        client=partition.client,
        excluded=list(partition.excluded),
        train_size=partition.size,
        loss=losses,
        accuracy=report.accuracy,
        missing_accuracy=report.subset_accuracy[own] if partition.excluded else None,
        subset_accuracy=report.subset_accuracy,
        confusion=report.confusion,
    )


def yield_to_other_threads() -> None:
    """Lower this thread's scheduling priority (Linux; elsewhere a no-op).

    Beside a federated run, the isolated models should not slow Ray's
    start-up, which the whole run waits for: at nice 19 they train on the
    cycles it leaves idle instead. Results do not change, only timing.
    """
    if sys.platform == "linux":  # thread ids are process ids for setpriority only there
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


def run_isolated(
    config: ExperimentConfig,
    data: MnistData | None = None,
    on_epoch: ClientEpochCallback | None = None,
    workers: int | None = None,
    low_priority: bool = False,
) -> list[ClientResult]:
    """One model per client, each trained on its own partition only.

    Clients train in parallel threads (PyTorch releases the GIL inside its
    kernels); each client's numbers do not depend on the others or on timing.
    `low_priority` runs those threads at the lowest priority. If the caller is
    interrupted (Ctrl-C), the threads stop after their current epoch rather
    than keep the process alive until they finish.
    """
    data = data or load_mnist(config)
    interrupted = threading.Event()

    def report_or_stop(client: int, epoch: int, loss: float) -> None:
        if interrupted.is_set():
            raise CancelledError
        if on_epoch is not None:
            on_epoch(client, epoch, loss)

    def one(partition: ClientPartition) -> ClientResult:
        if low_priority:
            yield_to_other_threads()
        model, losses = fit_isolated_model(data, partition, config, report_or_stop)
        return client_result(model, losses, data, partition, config)

    partitions = partition_clients(data.train_y, config)
    with ThreadPoolExecutor(max_workers=workers or len(partitions)) as pool:
        try:
            return list(pool.map(one, partitions))
        except BaseException:
            interrupted.set()
            raise
