"""ArrayRecords as NumPy arrays (or PyTorch state dicts) by key and back, read and
written without Flower's per-array `np.load` and `np.save`.

Flower keeps each Array as the bytes of a `.npy` file: `Array.numpy()` parses the
header with `ast.literal_eval` and copies the data out, and `Array(ndarray)` writes
both through a `BytesIO`. A client task reads the sent model once and writes its
reply once, and the server reads every reply again to measure it and the
aggregate to score it: at McMahan et al.'s scale about half a millisecond each, with
the model itself a few milliseconds of arithmetic (docs/benchmarks.md). Here a
header is parsed once (numpy's own parser, cached by its bytes) and the data read
in place; an array is written as np.save writes it, byte for byte (tested), so
Flower and every other reader see the same Arrays. Anything unusual (another
serialisation, a header numpy does not write, a length that does not match) goes
through Flower's own `Array.numpy()`, and fails there as it would without us:
the bytes may come from a remote SuperNode.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping
from functools import lru_cache

import numpy as np
import torch
from flwr.app import Array, ArrayRecord
from numpy.lib import format as npy

_MAGIC = npy.magic(1, 0)[:6]  # b"\x93NUMPY", then the version's two bytes
_NUMPY = "numpy.ndarray"  # Flower's SType.NUMPY


@lru_cache(maxsize=256)  # a federation's models have a handful of shapes
def _header(head: bytes) -> tuple[tuple[int, ...], np.dtype] | None:
    """The shape and dtype a `.npy` header (magic and version included) describes;
    None for one the fast path leaves to Flower (Fortran order, objects)."""
    stream = io.BytesIO(head)
    version = npy.read_magic(stream)
    read = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
    shape, fortran_order, dtype = read(stream)
    if fortran_order or dtype.hasobject or stream.read():
        return None
    return shape, dtype


def _view(array: Array) -> np.ndarray:
    """The array's data as a read-only NumPy view of its bytes."""
    data = array.data
    if array.stype == _NUMPY and data[:6] == _MAGIC and data[6:8] in (b"\x01\x00", b"\x02\x00"):
        size_bytes = 2 if data[6] == 1 else 4  # the header's length, little-endian
        start = 8 + size_bytes + int.from_bytes(data[8 : 8 + size_bytes], "little")
        try:
            described = _header(data[:start])
        except ValueError:
            described = None  # not a header numpy reads: Flower says why
        if described is not None:
            shape, dtype = described
            if len(data) - start == dtype.itemsize * int(np.prod(shape)):
                return np.frombuffer(data, dtype, offset=start).reshape(shape)
    return array.numpy()


def numpy_array(array: Array) -> np.ndarray:
    """The array as a NumPy array of its own (writable)."""
    return np.array(_view(array))


def flat_float64(arrays: Iterable[Array], out: np.ndarray | None = None) -> np.ndarray:
    """The arrays' values, one after the other, as one float64 vector (written into
    `out` if given)."""
    parts = [_view(a).ravel() for a in arrays]
    if out is None:
        return np.concatenate(parts, dtype=np.float64)
    return np.concatenate(parts, out=out)


def numpy_arrays(record: ArrayRecord) -> dict[str, np.ndarray]:
    """An ArrayRecord's arrays by key."""
    return {key: numpy_array(array) for key, array in record.items()}


def torch_state(record: ArrayRecord) -> dict[str, torch.Tensor]:
    """An ArrayRecord as a PyTorch state dict (`ArrayRecord.to_torch_state_dict`)."""
    return {key: torch.from_numpy(numpy_array(array)) for key, array in record.items()}


@lru_cache(maxsize=256)
def _npy_header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    """np.save's header for a C-ordered array of `dtype` and `shape`."""
    stream = io.BytesIO()
    header = {"descr": npy.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    npy.write_array_header_1_0(stream, header)
    return stream.getvalue()


def numpy_to_array(value: np.ndarray) -> Array:
    """A NumPy array as a Flower Array, with the bytes np.save writes."""
    if not value.flags.c_contiguous:  # (ascontiguousarray would make a 0-d array 1-d)
        value = np.ascontiguousarray(value)
    try:
        header = None if value.dtype.hasobject else _npy_header(value.dtype, value.shape)
    except ValueError:  # a shape too long for a version 1.0 header
        header = None
    if header is None:  # Flower's own way (it refuses objects: no pickles)
        return Array(value)
    data = header + value.tobytes()
    return Array(str(value.dtype), tuple(value.shape), _NUMPY, data)


def array_record(arrays: Mapping[str, np.ndarray]) -> ArrayRecord:
    """Arrays by key as an ArrayRecord (the keys kept: a model loads it by name)."""
    return ArrayRecord({key: numpy_to_array(np.asarray(value)) for key, value in arrays.items()})


def torch_record(state: Mapping[str, torch.Tensor]) -> ArrayRecord:
    """A PyTorch state dict as an ArrayRecord (`ArrayRecord(state_dict)`)."""
    return array_record({key: tensor.detach().cpu().numpy() for key, tensor in state.items()})
