import gzip
import shutil
import struct
from pathlib import Path

import pytest
import torch

from fedcore.data import mnist as data_module
from fedcore.data.mnist import DataError, load_from_hub, load_idx_folder, load_mnist

LABELS = "train-labels-idx1-ubyte"
IMAGES = "train-images-idx3-ubyte"


@pytest.fixture
def data_copy(mnist_dir: Path, tmp_path: Path) -> Path:
    """A writable copy of the four real files, to break one at a time."""
    for source in mnist_dir.glob("*.gz"):
        shutil.copy(source, tmp_path / source.name)
    return tmp_path


def write_labels(folder: Path, labels: bytes, magic: int = 2049) -> Path:
    (folder / f"{LABELS}.gz").unlink()
    path = folder / LABELS
    path.write_bytes(struct.pack(">ii", magic, len(labels)) + labels)
    return path


def test_real_mnist_is_read_and_normalized(mnist_dir):
    data = load_idx_folder(mnist_dir)
    assert data.train_x.shape == (60_000, 784) and data.train_x.dtype == torch.float32
    assert data.test_x.shape == (10_000, 784)
    assert data.train_y.shape == (60_000,) and data.train_y.dtype == torch.int64
    assert data.train_x.min() == -1.0 and data.train_x.max() == 1.0
    # Class counts from the data folder's README.
    expected = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert torch.bincount(data.train_y).tolist() == expected
    images = data.train_images(torch.tensor([0, 1]))
    assert images.shape == (2, 28, 28) and 0.0 <= float(images.min()) <= float(images.max()) <= 1.0


def test_load_mnist_is_cached_per_process(mnist_dir):
    assert load_mnist(str(mnist_dir)) is load_mnist(str(mnist_dir))


def test_tensor_cache_gives_the_same_tensors_and_follows_the_files(
    data_copy, tmp_path, monkeypatch
):
    monkeypatch.setenv("FEDCORE_CACHE_DIR", str(tmp_path / "cache"))
    parsed = load_idx_folder(data_copy)
    (entry,) = (tmp_path / "cache" / "mnist").iterdir()

    def no_parsing(*args):
        raise AssertionError("parsed the IDX files although the cache holds them")

    with monkeypatch.context() as patched:
        patched.setattr(data_module, "read_idx_split", no_parsing)
        cached = load_idx_folder(data_copy)
    for name in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(cached, name), getattr(parsed, name))
    (entry / "train_x.npy").write_bytes(b"damaged")  # a damaged entry is parsed again
    assert torch.equal(load_idx_folder(data_copy).train_x, parsed.train_x)
    # A changed file is read again, not served from the entry of the old one.
    (data_copy / f"{LABELS}.gz").write_bytes(b"\x1f\x8b broken")
    with pytest.raises(DataError, match="corrupt gzip data|truncated"):
        load_idx_folder(data_copy)


def test_uncompressed_files_are_read_too(data_copy):
    path = data_copy / f"{LABELS}.gz"
    (data_copy / LABELS).write_bytes(gzip.decompress(path.read_bytes()))
    path.unlink()
    assert len(load_idx_folder(data_copy).train_y) == 60_000


def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match=r"nowhere: data folder not found"):
        load_idx_folder(tmp_path / "nowhere")


def test_missing_file(data_copy):
    (data_copy / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\[\.gz\]: file not found"):
        load_idx_folder(data_copy)


def test_empty_file(data_copy):
    (data_copy / f"{IMAGES}.gz").write_bytes(b"")
    with pytest.raises(DataError, match=rf"{IMAGES}\.gz: the file is empty"):
        load_idx_folder(data_copy)


def test_truncated_gzip(data_copy):
    path = data_copy / f"{IMAGES}.gz"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError, match=rf"{IMAGES}\.gz: the gzip stream is truncated"):
        load_idx_folder(data_copy)


def test_corrupt_gzip(data_copy):
    path = data_copy / f"{IMAGES}.gz"
    raw = bytearray(path.read_bytes())
    raw[5000:5100] = bytes(100)
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=rf"{IMAGES}\.gz: corrupt gzip data"):
        load_idx_folder(data_copy)


def test_wrong_magic_number(data_copy):
    write_labels(data_copy, bytes(60_000), magic=2051)
    with pytest.raises(DataError, match=rf"{LABELS}: wrong magic number 2051 .*starts with 2049"):
        load_idx_folder(data_copy)


def test_wrong_image_size(data_copy):
    (data_copy / f"{IMAGES}.gz").unlink()
    (data_copy / IMAGES).write_bytes(struct.pack(">iiii", 2051, 60_000, 27, 27))
    with pytest.raises(DataError, match=rf"{IMAGES}: images are 27x27, MNIST images are 28x28"):
        load_idx_folder(data_copy)


def test_truncated_uncompressed_file(data_copy):
    path = write_labels(data_copy, bytes(60_000))
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataError, match=r"announces 60000 labels .* holds 59990 bytes"):
        load_idx_folder(data_copy)


def test_label_outside_0_to_9(data_copy):
    labels = bytearray(60_000)
    labels[123] = 12
    write_labels(data_copy, bytes(labels))
    with pytest.raises(DataError, match=rf"{LABELS}: label 12 at position 123 is outside 0-9"):
        load_idx_folder(data_copy)


def test_image_and_label_counts_disagree(data_copy):
    write_labels(data_copy, bytes(59_999))
    with pytest.raises(DataError, match=r"holds 60000 images but .* holds 59999 labels"):
        load_idx_folder(data_copy)


def test_offline_without_local_folder_says_how_to_fix():
    with pytest.raises(DataError) as error:
        load_from_hub()
    message = str(error.value)
    assert "could not load MNIST from the Hugging Face Hub (ylecun/mnist)" in message
    assert "--data-dir DIR" in message and "FEDCORE_DATA_DIR" in message
