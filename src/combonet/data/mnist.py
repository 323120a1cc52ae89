"""Sequential (and permuted sequential) MNIST from the standard IDX files.

Files are parsed with numpy only (no pickle); every header field is validated and the size
the header claims is checked before the data is read (a gzip file is decompressed in a stream
that stops at that size). Each 28x28 image becomes a 784-step sequence with one feature
(row-major pixel order). Pixels are scaled to [0, 1] and normalised with the usual fixed MNIST
constants.
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .base import DataError, DataSplits, LoadOptions, build_splits, check_claim, regular_file

__all__ = [
    "MNIST_FILES",
    "MNIST_MEAN",
    "MNIST_STD",
    "find_mnist_dir",
    "load_mnist",
    "load_mnist_arrays",
    "read_idx_images",
    "read_idx_labels",
]

MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
IMAGE_MAGIC = 2051
LABEL_MAGIC = 2049
ROWS = COLS = 28

#: Expected file names (each may also carry a ``.gz`` suffix).
MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

_WHERE = (
    "Get them from the standard MNIST distribution (http://yann.lecun.com/exdb/mnist/, or a "
    "mirror such as https://ossci-datasets.s3.amazonaws.com/mnist/), gzip-compressed or not, "
    "and pass --data-dir pointing at the folder that contains them."
)


def _header(path: Path, data: bytes | memoryview, words: int) -> np.ndarray:
    if len(data) < 4 * words:
        raise DataError(
            f"{path}: truncated: expected a {4 * words}-byte IDX header, got {len(data)} bytes"
        )
    return np.frombuffer(data, dtype=">u4", count=words).astype(np.int64)


def _bad_magic(path: Path, magic: int, expected: int, kind: str) -> DataError:
    hint = ""
    if magic == IMAGE_MAGIC:
        hint = " (this is an IDX image file)"
    elif magic == LABEL_MAGIC:
        hint = " (this is an IDX label file)"
    return DataError(
        f"{path}: bad magic 0x{magic:08x}; expected 0x{expected:08x} ({expected}) for an IDX "
        f"{kind} file{hint}"
    )


def _read_idx(path: Path, words: int, check_header: Callable[[np.ndarray], None],
              what: Callable[[np.ndarray], str]) -> tuple[np.ndarray, np.ndarray]:
    """Header words and body of an IDX file (raw, or gzip when the name ends in ``.gz``).

    The size the header claims is checked before the body is read: against the file's size
    (raw), against what a gzip file of this size can hold and the free memory (``.gz``); the
    body is then decompressed in a stream that stops at the claimed size, so a file that
    inflates to more (a "gzip bomb") is refused after reading one byte too many.
    """
    info = regular_file(path)
    gz = path.suffix == ".gz"
    try:
        with open(path, "rb") as raw:
            fh = gzip.GzipFile(fileobj=raw, mode="rb") if gz else raw
            head = _read_exactly(fh, 4 * words)
            header = _header(path, head, words)
            check_header(header)
            body_bytes = int(np.prod(header[1:])) if words > 2 else int(header[1])
            expected = 4 * words + body_bytes
            text = what(header)
            if not gz:
                _check_size(path, info.st_size, expected, text)
            check_claim(path, expected, info.st_size if gz else None, text)
            body = _read_exactly(fh, body_bytes)
            if len(body) < body_bytes:
                raise DataError(f"{path}: truncated: expected {expected} bytes ({text}) got "
                                f"{4 * words + len(body)}")
            if gz and fh.read(1):
                raise DataError(f"{path}: size mismatch: expected {expected} bytes ({text}) but "
                                "it decompresses to more (trailing data)")
    except (OSError, EOFError, zlib.error) as exc:
        if gz:
            raise DataError(f"{path}: corrupt gzip file: {exc}") from None
        raise DataError(f"{path}: cannot read file: {exc}") from None
    return header, np.frombuffer(body, dtype=np.uint8)


def _read_exactly(fh: BinaryIO, n: int) -> memoryview:
    """Up to ``n`` bytes into one preallocated buffer (fewer only at the end of the stream)."""
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        k = fh.readinto(view[got:got + (1 << 24)])
        if not k:
            break
        got += k
    return view[:got]


def _check_size(path: Path, got: int, expected: int, what: str) -> None:
    if got < expected:
        raise DataError(f"{path}: truncated: expected {expected} bytes ({what}) got {got}")
    if got > expected:
        raise DataError(
            f"{path}: size mismatch: expected {expected} bytes ({what}) got {got} (trailing data)"
        )


def read_idx_images(path: str | Path) -> np.ndarray:
    """Read an IDX3 image file as a ``(num, 28, 28)`` uint8 array."""
    path = Path(path)

    def check(header: np.ndarray) -> None:
        magic, _, rows, cols = header
        if magic != IMAGE_MAGIC:
            raise _bad_magic(path, int(magic), IMAGE_MAGIC, "image")
        if (rows, cols) != (ROWS, COLS):
            raise DataError(f"{path}: images are {rows}x{cols}, expected {ROWS}x{COLS}")

    header, images = _read_idx(path, 4, check,
                               lambda h: f"header says {h[1]} images of 28x28")
    return images.reshape(int(header[1]), ROWS, COLS)


def read_idx_labels(path: str | Path, num_classes: int = 10) -> np.ndarray:
    """Read an IDX1 label file as a ``(num,)`` uint8 array with values in ``0..num_classes-1``."""
    path = Path(path)

    def check(header: np.ndarray) -> None:
        if header[0] != LABEL_MAGIC:
            raise _bad_magic(path, int(header[0]), LABEL_MAGIC, "label")

    _, labels = _read_idx(path, 2, check, lambda h: f"header says {h[1]} labels")
    if labels.size and int(labels.max()) >= num_classes:
        bad = int(np.argmax(labels >= num_classes))
        raise DataError(
            f"{path}: label {int(labels[bad])} at index {bad} is out of range 0..{num_classes - 1}"
        )
    return labels


def _locate(folder: Path, name: str) -> Path | None:
    """The raw file if present, else its ``.gz`` version, else None."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if os.path.lexists(candidate):  # a FIFO or a link to /dev/zero: the reader says so
            return candidate
    return None


def find_mnist_dir(data_dir: str | Path | None) -> dict[str, Path]:
    """Paths of the four MNIST files in ``data_dir`` (or ``data_dir/mnist``, ``MNIST/raw``)."""
    expected = ", ".join(MNIST_FILES.values())
    if data_dir is None:
        raise DataError(
            f"MNIST needs a data directory containing {expected} (each optionally .gz). {_WHERE}"
        )
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise DataError(
            f"MNIST data directory '{root}' does not exist or is not a directory. Expected it "
            f"to contain {expected} (each optionally .gz). {_WHERE}"
        )
    candidates = [root, root / "mnist", root / "MNIST" / "raw"]
    best: dict[str, Path] = {}
    for folder in candidates:
        found = {k: p for k, n in MNIST_FILES.items() if (p := _locate(folder, n)) is not None}
        if len(found) == len(MNIST_FILES):
            return found
        if len(found) > len(best):
            best = found
    missing = [n for k, n in MNIST_FILES.items() if k not in best]
    where = best[next(iter(best))].parent if best else root
    msg = (
        f"MNIST files missing in directory '{where}': {', '.join(missing)} not found. "
        f"Expected all of {expected} (each optionally .gz; also looked in "
        f"'{root / 'mnist'}' and '{root / 'MNIST' / 'raw'}'). {_WHERE}"
    )
    raise DataError(msg)


def load_mnist_arrays(
    data_dir: str | Path | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, str]]:
    """``(train_images, train_labels, test_images, test_labels, files)`` as uint8 arrays."""
    files = find_mnist_dir(data_dir)
    xtr = read_idx_images(files["train_images"])
    ytr = read_idx_labels(files["train_labels"])
    xte = read_idx_images(files["test_images"])
    yte = read_idx_labels(files["test_labels"])
    for images, labels, xi, yi in (
        (xtr, ytr, "train_images", "train_labels"),
        (xte, yte, "test_images", "test_labels"),
    ):
        if images.shape[0] != labels.shape[0]:
            raise DataError(
                f"{files[xi]} has {images.shape[0]} images but {files[yi]} has "
                f"{labels.shape[0]} labels; the counts must agree"
            )
    return xtr, ytr, xte, yte, {k: str(p) for k, p in files.items()}


def load_mnist(
    data_dir: str | Path | None,
    *,
    name: str = "smnist",
    options: LoadOptions | None = None,
    permutation: np.ndarray | None = None,
    permutation_seed: int | None = None,
) -> DataSplits:
    """Sequential MNIST (784 steps x 1 feature); permuted when ``permutation`` is given."""
    options = options or LoadOptions()
    xtr, ytr, xte, yte, files = load_mnist_arrays(data_dir)
    return build_splits(
        name,
        xtr.reshape(-1, ROWS * COLS, 1),
        ytr,
        xte.reshape(-1, ROWS * COLS, 1),
        yte,
        num_classes=10,
        options=options,
        scale=1.0 / 255.0,
        norm="fixed",
        norm_mean=[MNIST_MEAN],
        norm_std=[MNIST_STD],
        permutation=permutation,
        permutation_seed=permutation_seed,
        meta={"dataset": "mnist", "files": files},
    )
