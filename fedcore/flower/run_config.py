"""Flower's run config <-> `ExperimentConfig`, plus the keys that are not experiment settings."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedcore.experiment.config import ExperimentConfig
from fedcore.experiment.from_text import config_from_run_config

# Where `flwr run .` writes results; an output location, not an experiment setting.
RESULTS_DIR_KEY = "results-dir"
DEFAULT_RESULTS_DIR = "results"


def experiment_config(run_config: Mapping[str, Any]) -> ExperimentConfig:
    """The experiment settings in a run config; a mistyped key raises `ConfigError`.
    Parsed once per run config, not in every message of every client (the ClientApp
    and its privacy mod each read it)."""
    items = tuple(sorted(item for item in run_config.items() if item[0] != RESULTS_DIR_KEY))
    try:
        hash(items)
    except TypeError:  # a value Flower's run configs do not hold (a list): its own error
        return config_from_run_config(dict(items))
    return _parsed(items)


@functools.lru_cache(maxsize=16)
def _parsed(items: tuple[tuple[str, Any], ...]) -> ExperimentConfig:
    return config_from_run_config(dict(items))


def results_dir(run_config: Mapping[str, Any]) -> Path:
    return Path(str(run_config.get(RESULTS_DIR_KEY) or DEFAULT_RESULTS_DIR)).expanduser()
