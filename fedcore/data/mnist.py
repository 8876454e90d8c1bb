"""MNIST as normalized in-memory tensors, read once per process.

Two sources give the same tensors: a local folder with the four standard IDX
files (offline users, tests, benchmarks) or the Hugging Face Hub through Flower
Datasets (online users). Everything downstream slices these tensors; nobody
iterates single images.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fedcore.experiment.config import DATA_DIR_ENV, ExperimentConfig
from fedcore.storage import atomic_file, cache_dir

HUB_DATASET = "ylecun/mnist"
IMAGE_SIDE = 28
IMAGE_MAGIC = 2051
LABEL_MAGIC = 2049
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60_000),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10_000),
}
HOW_TO_POINT_AT_LOCAL = (
    f"download the four MNIST IDX files into a folder and pass it with --data-dir DIR, "
    f"the data-dir run-config key, or the {DATA_DIR_ENV} environment variable"
)


class DataError(RuntimeError):
    """The data cannot be read; the message names the file and the problem."""


@dataclass(frozen=True)
class MnistData:
    """Flattened images normalized to mean 0.5 / std 0.5, and their labels.

    `train_x` is (60000, 784) float32, `train_y` (60000,) int64; same for test.
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor

    def train_images(self, indices: torch.Tensor) -> torch.Tensor:
        """Images as (n, 28, 28) in [0, 1], for showing samples."""
        return (self.train_x[indices] * 0.5 + 0.5).reshape(-1, IMAGE_SIDE, IMAGE_SIDE)


def normalize(images: np.ndarray) -> torch.Tensor:
    """uint8 (n, 28, 28) -> float32 (n, 784): scale to [0, 1], then (x - 0.5) / 0.5."""
    pixels = torch.from_numpy(np.array(images, dtype=np.float32)).reshape(len(images), -1)
    return pixels.div_(127.5).sub_(1.0)


# ------------------------------------------------------------------ IDX files


def _find(folder: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    raise DataError(
        f"{folder / stem}[.gz]: file not found (expected one of the four MNIST IDX files)"
    )


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise DataError(f"{path}: cannot be read ({error.strerror or error})") from error
    if not raw:
        raise DataError(f"{path}: the file is empty")
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except EOFError as error:
        raise DataError(f"{path}: the gzip stream is truncated (incomplete download?)") from error
    except (OSError, zlib.error) as error:
        raise DataError(f"{path}: corrupt gzip data ({error})") from error


def _parse_idx(path: Path, expected_magic: int) -> np.ndarray:
    raw = _read_bytes(path)
    kind = "images" if expected_magic == IMAGE_MAGIC else "labels"
    dims = 3 if expected_magic == IMAGE_MAGIC else 1
    header = 4 + 4 * dims
    if len(raw) < header:
        raise DataError(f"{path}: {len(raw)} bytes is too short for an IDX {kind} header")
    (magic,) = struct.unpack(">i", raw[:4])
    if magic != expected_magic:
        raise DataError(
            f"{path}: wrong magic number {magic} (an IDX {kind} file starts with {expected_magic})"
        )
    shape = struct.unpack(f">{dims}i", raw[4:header])
    if dims == 3 and shape[1:] != (IMAGE_SIDE, IMAGE_SIDE):
        raise DataError(f"{path}: images are {shape[1]}x{shape[2]}, MNIST images are 28x28")
    expected = int(np.prod(shape))
    if len(raw) - header != expected:
        raise DataError(
            f"{path}: the header announces {shape[0]} {kind} ({expected} bytes of data) "
            f"but the file holds {len(raw) - header} bytes (truncated or corrupt)"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def read_idx_split(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Validated uint8 images (n, 28, 28) and labels (n,) of one split."""
    image_stem, label_stem, expected_count = IDX_FILES[split]
    image_path, label_path = _find(folder, image_stem), _find(folder, label_stem)
    images = _parse_idx(image_path, IMAGE_MAGIC)
    labels = _parse_idx(label_path, LABEL_MAGIC)
    if len(images) != len(labels):
        raise DataError(
            f"{image_path} holds {len(images)} images but {label_path} holds {len(labels)} labels"
        )
    if len(images) != expected_count:
        raise DataError(
            f"{image_path}: {len(images)} images, MNIST's {split} split has {expected_count}"
        )
    if labels.max(initial=0) > 9:
        bad = int(np.argmax(labels > 9))
        raise DataError(f"{label_path}: label {labels[bad]} at position {bad} is outside 0-9")
    return images, labels


def load_idx_folder(folder: str | Path) -> MnistData:
    """The folder's four IDX files, validated and normalized; from the tensor cache
    when these very files were read before."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DataError(
            f"{folder}: data folder not found (set a folder that holds the four MNIST IDX files)"
        )
    files = [
        _find(folder, stem) for image, label, _ in IDX_FILES.values() for stem in (image, label)
    ]
    entry = _tensor_cache_entry(files)
    try:
        return _read_tensor_cache(entry)
    except (OSError, ValueError, EOFError):  # EOFError: an emptied .npy
        pass  # not cached yet, or an entry we cannot use: parse the files (and rewrite it)
    train_images, train_labels = read_idx_split(folder, "train")
    test_images, test_labels = read_idx_split(folder, "test")
    data = MnistData(
        train_x=normalize(train_images),
        train_y=torch.from_numpy(train_labels.astype(np.int64)),
        test_x=normalize(test_images),
        test_y=torch.from_numpy(test_labels.astype(np.int64)),
    )
    _write_tensor_cache(entry, data)
    return data


# ------------------------------------------------------------- tensor cache
#
# Every Ray worker and SuperNode loads the data once, on the critical path of
# the first round: parsing the gzipped IDX files and normalizing takes 0.3-0.7 s
# there; mapping the normalized tensors from this cache takes milliseconds.

TENSORS = {
    "train_x": ((60_000, 784), np.float32),
    "train_y": ((60_000,), np.int64),
    "test_x": ((10_000, 784), np.float32),
    "test_y": ((10_000,), np.int64),
}


def _tensor_cache_entry(files: list[Path]) -> Path:
    """One entry per data folder and version of its files (path, size, modification time)."""
    stats = [(path.resolve(), path.stat()) for path in files]
    stamps = [f"{path}:{stat.st_size}:{stat.st_mtime_ns}" for path, stat in stats]
    key = hashlib.sha256("\n".join(stamps).encode()).hexdigest()[:16]
    return cache_dir() / "mnist" / key


def _read_tensor_cache(entry: Path) -> MnistData:
    tensors = {}
    for name, (shape, dtype) in TENSORS.items():
        # Copy-on-write mapping: no read up front, pages shared between processes.
        array = np.load(entry / f"{name}.npy", mmap_mode="c")
        if array.shape != shape or array.dtype != dtype:
            raise ValueError(f"{entry / name}.npy: unexpected {array.shape} {array.dtype}")
        tensors[name] = torch.from_numpy(array)
    return MnistData(**tensors)


def _write_tensor_cache(entry: Path, data: MnistData) -> None:
    try:
        for name in TENSORS:
            with atomic_file(entry / f"{name}.npy", durable=False) as file:
                np.save(file, getattr(data, name).numpy())
    except OSError:
        pass  # a read-only or full disk only costs the next process a parse


# ------------------------------------------------------------- Hugging Face


def load_from_hub() -> MnistData:
    """`ylecun/mnist` through Flower Datasets, cached by `datasets` as usual."""
    from flwr_datasets import FederatedDataset  # heavy import, only for online users

    try:
        # The partitioner is a formality here: fedcore partitions itself (see
        # `partition.py`) so that both sources split identically.
        federated = FederatedDataset(dataset=HUB_DATASET, partitioners={"train": 1}, shuffle=False)
        splits = {
            name: federated.load_split(name).with_format("numpy") for name in ("train", "test")
        }
        arrays = {
            name: (np.stack(list(split["image"])).astype(np.uint8), np.asarray(split["label"]))
            for name, split in splits.items()
        }
    except Exception as error:  # network, hub and cache errors come in many types
        raise DataError(
            f"could not load MNIST from the Hugging Face Hub ({HUB_DATASET}): "
            f"{type(error).__name__}: {error}. If you are offline, {HOW_TO_POINT_AT_LOCAL}."
        ) from error
    return MnistData(
        train_x=normalize(arrays["train"][0]),
        train_y=torch.from_numpy(arrays["train"][1].astype(np.int64)),
        test_x=normalize(arrays["test"][0]),
        test_y=torch.from_numpy(arrays["test"][1].astype(np.int64)),
    )


@functools.lru_cache(maxsize=2)
def _load_cached(data_dir: str) -> MnistData:
    return load_idx_folder(data_dir) if data_dir else load_from_hub()


def load_mnist(config_or_dir: ExperimentConfig | str = "") -> MnistData:
    """MNIST for a config (or a folder; empty = env var, else the Hub), once per process."""
    if not isinstance(config_or_dir, ExperimentConfig):
        config_or_dir = ExperimentConfig(data_dir=str(config_or_dir))
    return _load_cached(config_or_dir.resolved_data_dir())
