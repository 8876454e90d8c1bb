"""Shared fixtures: real MNIST from the project's data setting, offline, isolated caches."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from fedcore.experiment.config import DATA_DIR_ENV, ExperimentConfig

REPO = Path(__file__).resolve().parent.parent
MNIST_DIR = Path(
    os.environ.get(DATA_DIR_ENV) or REPO.parent / "shared" / "data" / "mnist"
).resolve()

# Every test runs offline and keeps its caches out of the user's home.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"


def default_sigint() -> None:
    """`preexec_fn` for a child a test interrupts with SIGINT: a shell starts background
    commands with SIGINT ignored, and children inherit that (a CLI started so rightly
    ignores Ctrl-C); the child takes Python's default handling back."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture(autouse=True, scope="session")
def _isolated_caches(tmp_path_factory: pytest.TempPathFactory) -> None:
    os.environ["FEDCORE_CACHE_DIR"] = str(tmp_path_factory.mktemp("fedcore-cache"))
    os.environ["HF_HOME"] = str(tmp_path_factory.mktemp("hf-home"))


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    if not (MNIST_DIR / "train-images-idx3-ubyte.gz").is_file():
        pytest.fail(
            f"real MNIST not found in {MNIST_DIR}: set {DATA_DIR_ENV} to a folder with the "
            "four IDX files (the tests never download)"
        )
    return MNIST_DIR


@pytest.fixture(scope="session")
def small_config(mnist_dir: Path) -> ExperimentConfig:
    """The reference split and model with 1 epoch and 1 round: seconds, not minutes."""
    return ExperimentConfig(data_dir=str(mnist_dir), local_epochs=1, num_rounds=1)


@pytest.fixture(scope="session")
def engine():
    """One engine for the tests that need one; its processes stopped at the end."""
    from fedcore.engine import Engine

    with Engine() as engine:
        yield engine


@pytest.fixture(scope="session")
def small_run(engine, small_config):
    """`small_config` computed by the engine (no cache), and the events it sent."""
    events = []
    handle = engine.submit(small_config, use_cache=False)
    handle.subscribe(lambda kind, payload: events.append((kind, payload)))
    return handle.result(), events


@pytest.fixture(scope="session")
def federated_small(small_run):
    """The federated result of `small_config`, and its progress events."""
    result, events = small_run
    return result.federated, [payload for kind, payload in events if kind == "progress"]
