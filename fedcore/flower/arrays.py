"""ArrayRecords as NumPy arrays by key and back, for the strategies written here
(`fedcore.flower.scaffold`, `fedcore.flower.fednova`), whose server updates are
arithmetic on the models' arrays."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from flwr.app import Array, ArrayRecord


def numpy_arrays(record: ArrayRecord) -> dict[str, np.ndarray]:
    """An ArrayRecord's arrays by key."""
    return {key: array.numpy() for key, array in record.items()}


def array_record(arrays: Mapping[str, np.ndarray]) -> ArrayRecord:
    """Arrays by key as an ArrayRecord (the keys kept: a model loads it by name)."""
    return ArrayRecord({key: Array(np.asarray(value)) for key, value in arrays.items()})
