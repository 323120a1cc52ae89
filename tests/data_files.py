"""Writers for tiny MNIST (IDX) and CIFAR-10 (binary) files, shared by the test suites.

``write_fake_mnist`` / ``write_fake_cifar`` build whole dataset folders whose images carry a
label-dependent pattern, so small models can actually learn them.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

__all__ = [
    "MNIST_NAMES",
    "write_cifar_batch",
    "write_fake_cifar",
    "write_fake_mnist",
    "write_gzip_bomb",
    "write_idx_images",
    "write_idx_labels",
]

MNIST_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def _write(path: Path, payload: bytes, truncate: int, extra: bytes) -> Path:
    payload = payload[: len(payload) - truncate] if truncate else payload
    payload += extra
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)
    return path


def write_idx_images(
    path: str | Path,
    images: np.ndarray,
    *,
    magic: int = 2051,
    count: int | None = None,
    truncate: int = 0,
    extra: bytes = b"",
) -> Path:
    """Write ``images`` (num, rows, cols) uint8 as IDX3; gzip when ``path`` ends in ``.gz``.

    ``magic``/``count`` override header fields; ``truncate`` drops trailing bytes and
    ``extra`` appends bytes (both before compression), to build corrupt files.
    """
    images = np.asarray(images, dtype=np.uint8)
    num, rows, cols = images.shape
    header = struct.pack(">IIII", magic, num if count is None else count, rows, cols)
    return _write(Path(path), header + images.tobytes(), truncate, extra)


def write_idx_labels(
    path: str | Path,
    labels: np.ndarray,
    *,
    magic: int = 2049,
    count: int | None = None,
    truncate: int = 0,
    extra: bytes = b"",
) -> Path:
    """Write ``labels`` (num,) uint8 as IDX1; gzip when ``path`` ends in ``.gz``."""
    labels = np.asarray(labels, dtype=np.uint8)
    header = struct.pack(">II", magic, len(labels) if count is None else count)
    return _write(Path(path), header + labels.tobytes(), truncate, extra)


def write_cifar_batch(
    path: str | Path,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    truncate: int = 0,
    extra: bytes = b"",
) -> Path:
    """Write a CIFAR-10 binary batch from ``images`` (num, 32, 32, 3) HWC uint8 and labels.

    Each record is the label byte then the R, G and B planes, each row-major 32x32.
    """
    images = np.asarray(images, dtype=np.uint8)
    labels = np.asarray(labels, dtype=np.uint8)
    assert images.shape[1:] == (32, 32, 3) and len(images) == len(labels)
    planes = images.transpose(0, 3, 1, 2).reshape(len(images), 3 * 1024)
    records = np.concatenate([labels[:, None], planes], axis=1)
    return _write(Path(path), records.tobytes(), truncate, extra)


def _patterned(rng: np.random.Generator, labels: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Low-amplitude noise plus a bright horizontal band whose position encodes the label."""
    images = rng.integers(0, 60, size=(len(labels), *shape), dtype=np.int64)
    rows = shape[0]
    band = max(1, rows // 10)
    for i, label in enumerate(labels):
        start = int(label) * rows // 10
        images[i, start : start + band] += 180
    return np.clip(images, 0, 255).astype(np.uint8)


def write_fake_mnist(
    folder: str | Path,
    n_train: int = 60,
    n_test: int = 20,
    *,
    gz: bool = True,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Write a complete fake MNIST folder; return its arrays (images (n, 28, 28) uint8)."""
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    ytr = np.arange(n_train) % 10
    yte = np.arange(n_test) % 10
    xtr = _patterned(rng, ytr, (28, 28))
    xte = _patterned(rng, yte, (28, 28))
    suffix = ".gz" if gz else ""
    write_idx_images(folder / (MNIST_NAMES["train_images"] + suffix), xtr)
    write_idx_labels(folder / (MNIST_NAMES["train_labels"] + suffix), ytr)
    write_idx_images(folder / (MNIST_NAMES["test_images"] + suffix), xte)
    write_idx_labels(folder / (MNIST_NAMES["test_labels"] + suffix), yte)
    return {"train_x": xtr, "train_y": ytr, "test_x": xte, "test_y": yte}


def write_fake_cifar(
    folder: str | Path,
    per_batch: int = 20,
    n_batches: int = 1,
    n_test: int = 20,
    *,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Write fake ``data_batch_{1..n}.bin`` + ``test_batch.bin``; images are (n, 32, 32, 3)."""
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for b in range(1, n_batches + 1):
        y = (np.arange(per_batch) + b) % 10
        x = _patterned(rng, y, (32, 32, 3))
        write_cifar_batch(folder / f"data_batch_{b}.bin", x, y)
        xs.append(x)
        ys.append(y)
    yte = np.arange(n_test) % 10
    xte = _patterned(rng, yte, (32, 32, 3))
    write_cifar_batch(folder / "test_batch.bin", xte, yte)
    return {
        "train_x": np.concatenate(xs),
        "train_y": np.concatenate(ys),
        "test_x": xte,
        "test_y": yte,
    }


def write_gzip_bomb(path: str | Path, header: bytes, inflated: int) -> Path:
    """A small ``.gz`` that inflates to ``header`` plus about ``inflated`` zero bytes.

    Built in milliseconds: gzip allows several members in one file, so one compressed 16 MiB
    block of zeros is repeated (7.84 GB of zeros take 7.6 MB, as in issue 11)."""
    block = 1 << 24
    member = gzip.compress(bytes(block), compresslevel=9)
    path = Path(path)
    with open(path, "wb") as fh:
        fh.write(gzip.compress(header))
        for _ in range(max(1, inflated // block)):
            fh.write(member)
    return path
