"""fedcore's reading and writing of Flower's Arrays: the bytes np.save writes, the
values Flower's `Array.numpy()` reads, and Flower's own path for anything else."""

import io

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord

from fedcore.flower.arrays import (
    array_record,
    flat_float64,
    numpy_array,
    numpy_arrays,
    numpy_to_array,
    torch_record,
    torch_state,
)
from fedcore.learning.models import build_model

ARRAYS = [
    np.arange(12, dtype=np.float32).reshape(3, 4),
    np.linspace(-1, 1, 7),
    np.array(3.5, dtype=np.float32),  # 0-d
    np.zeros((0, 5), dtype=np.float32),
    np.arange(6, dtype=np.int64).reshape(2, 3, 1),
    np.array([True, False]),
    np.arange(4, dtype=">f4"),  # big-endian
]


@pytest.mark.parametrize("value", ARRAYS, ids=lambda a: f"{a.dtype.str}{a.shape}")
def test_an_array_is_written_as_np_save_writes_it_and_read_as_flower_reads_it(value):
    ours, flowers = numpy_to_array(value), Array(value)
    assert ours.data == flowers.data
    assert (ours.dtype, ours.shape, ours.stype) == (flowers.dtype, flowers.shape, flowers.stype)
    read = numpy_array(flowers)
    assert read.dtype == value.dtype and read.shape == value.shape
    assert np.array_equal(read, value) and read.flags.writeable


def test_a_fortran_ordered_or_version_2_array_reads_as_flower_reads_it():
    fortran = Array(np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3)))
    assert np.array_equal(numpy_array(fortran), fortran.numpy())
    value = np.arange(5, dtype=np.float32)
    stream = io.BytesIO()
    np.lib.format.write_array(stream, value, version=(2, 0))
    version_2 = Array("float32", (5,), "numpy.ndarray", stream.getvalue())
    assert np.array_equal(numpy_array(version_2), value)
    transposed = np.arange(6, dtype=np.float32).reshape(2, 3).T  # not C-ordered
    assert np.array_equal(numpy_to_array(transposed).numpy(), transposed)


@pytest.mark.parametrize(
    "data",
    [
        Array(np.arange(8, dtype=np.float32)).data[:-4],  # cut short
        Array(np.arange(8, dtype=np.float32)).data + b"\0" * 4,  # too long
        b"\x93NUMPY\x01\x00\x10\x00{'descr': 'x'}",  # a header numpy cannot read
        b"not an npy file at all",
    ],
    ids=["short", "long", "bad-header", "not-npy"],
)
def test_bytes_that_are_not_a_well_formed_array_read_or_fail_as_flowers_own_reading(data):
    """A remote SuperNode's reply is untrusted: anything malformed fails exactly as
    Flower's own reading fails, or reads as it reads (np.load ignores trailing bytes)."""
    array = Array("float32", (8,), "numpy.ndarray", data)
    try:
        expected = array.numpy()
    except Exception as error:
        with pytest.raises(type(error)):
            numpy_array(array)
    else:
        assert data.endswith(b"\0" * 4)  # only the one that is too long reads
        assert np.array_equal(numpy_array(array), expected)


def test_a_model_round_trips_as_flowers_own_conversions_do():
    state = build_model(3, "2nn").state_dict()
    ours, flowers = torch_record(state), ArrayRecord(state)
    assert list(ours) == list(flowers)
    assert all(ours[key].data == flowers[key].data for key in flowers)
    back, expected = torch_state(flowers), flowers.to_torch_state_dict()
    assert list(back) == list(expected)
    assert all(torch.equal(back[key], expected[key]) for key in expected)
    build_model(0, "2nn").load_state_dict(back)  # writable, strict names and shapes
    arrays = numpy_arrays(array_record({"a": ARRAYS[0], "b": ARRAYS[1]}))
    assert np.array_equal(arrays["a"], ARRAYS[0]) and np.array_equal(arrays["b"], ARRAYS[1])
    flat = flat_float64(flowers.values())
    assert flat.dtype == np.float64
    assert np.array_equal(flat, np.concatenate([t.numpy().ravel() for t in state.values()]))
    into = np.full(len(flat), np.nan)
    assert flat_float64(flowers.values(), out=into) is into  # the update measures' buffer
    assert np.array_equal(into, flat)
