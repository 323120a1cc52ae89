"""Sequential CIFAR-10 from the standard *binary* distribution (``cifar-10-binary.tar.gz``).

Each record is 1 label byte followed by 3072 pixel bytes (1024 R, 1024 G, 1024 B, each a
row-major 32x32 plane). An image becomes a 1024-step sequence whose step ``k`` holds the
(R, G, B) values of pixel ``k``. The python (pickled) distribution is refused: unpickling a
downloaded file can execute arbitrary code.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from .base import DataError, DataSplits, LoadOptions, build_splits, regular_file

__all__ = [
    "CIFAR_TEST_FILE",
    "CIFAR_TRAIN_FILES",
    "find_cifar_dir",
    "load_cifar10",
    "load_cifar10_arrays",
    "read_cifar_batch",
]

RECORD_BYTES = 1 + 3 * 32 * 32
#: Records of one CIFAR-10 binary batch file.
MAX_RECORDS = 10_000
PIXELS = 32 * 32
CIFAR_TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR_TEST_FILE = "test_batch.bin"
SUBDIR = "cifar-10-batches-bin"
_PY_SUBDIR = "cifar-10-batches-py"

_WHERE = (
    "Download the binary version, cifar-10-binary.tar.gz, from "
    "https://www.cs.toronto.edu/~kriz/cifar.html, extract it and pass --data-dir pointing at "
    f"the {SUBDIR} folder (or the folder containing it)."
)


def read_cifar_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one binary batch as ``(images (num, 1024, 3) uint8, labels (num,) uint8)``.

    The file's size is checked before it is read: a whole number of records, at most
    :data:`MAX_RECORDS` (a CIFAR-10 batch holds 10,000)."""
    path = Path(path)
    size = regular_file(path).st_size
    if size == 0:
        raise DataError(f"{path}: file is empty; expected records of {RECORD_BYTES} bytes")
    if size % RECORD_BYTES:
        raise DataError(
            f"{path}: file size {size} bytes is not a multiple of the {RECORD_BYTES}-byte "
            "CIFAR-10 record (1 label byte + 3072 pixel bytes); is it truncated, or not the "
            "CIFAR-10 binary version?"
        )
    if size // RECORD_BYTES > MAX_RECORDS:
        raise DataError(
            f"{path}: file size {size} bytes holds {size // RECORD_BYTES} records, more than "
            f"the {MAX_RECORDS} of a CIFAR-10 batch; it is not a CIFAR-10 batch file"
        )
    try:
        raw = np.fromfile(path, dtype=np.uint8, count=size)
    except OSError as exc:
        raise DataError(f"{path}: cannot read file: {exc}") from exc
    if raw.size != size:
        raise DataError(f"{path}: truncated while reading: expected {size} bytes, got {raw.size}")
    records = raw.reshape(-1, RECORD_BYTES)
    labels = records[:, 0].copy()
    if int(labels.max()) > 9:
        bad = int(np.argmax(labels > 9))
        raise DataError(
            f"{path}: record {bad} has label {int(labels[bad])}, expected 0..9 (CIFAR-100 "
            "binary files, with two label bytes, are not supported)"
        )
    images = records[:, 1:].reshape(-1, 3, PIXELS).transpose(0, 2, 1)
    return np.ascontiguousarray(images), labels


def _has_bin(folder: Path) -> bool:
    names = (*CIFAR_TRAIN_FILES, CIFAR_TEST_FILE)
    return folder.is_dir() and any(os.path.lexists(folder / n) for n in names)


def _has_pickled(folder: Path) -> bool:
    return folder.is_dir() and any((folder / n).is_file() for n in ("data_batch_1", "test_batch"))


def find_cifar_dir(data_dir: str | Path | None) -> Path:
    """The folder holding the binary batches: ``data_dir`` itself or ``data_dir/{SUBDIR}``."""
    expected = f"{', '.join(CIFAR_TRAIN_FILES)} (at least one) and {CIFAR_TEST_FILE}"
    if data_dir is None:
        raise DataError(f"CIFAR-10 needs a data directory containing {expected}. {_WHERE}")
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise DataError(
            f"CIFAR-10 data directory '{root}' does not exist or is not a directory. Expected "
            f"{expected}. {_WHERE}"
        )
    for folder in (root, root / SUBDIR):
        if _has_bin(folder):
            return folder
    for folder in (root, root / _PY_SUBDIR):
        if _has_pickled(folder):
            raise DataError(
                f"'{folder}' holds the python (pickled) CIFAR-10 batches (data_batch_1, ...) "
                "but no binary .bin files. The python version can only be read with pickle, "
                "which combonet never runs on downloaded files (unpickling can execute "
                f"arbitrary code). {_WHERE}"
            )
    raise DataError(
        f"CIFAR-10 binary files not found in '{root}' (also looked in '{root / SUBDIR}'). "
        f"Expected {expected}. {_WHERE}"
    )


def load_cifar10_arrays(
    data_dir: str | Path | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str], Path]:
    """``(train_x, train_y, test_x, test_y, train_batch_names, folder)``; uint8 arrays."""
    folder = find_cifar_dir(data_dir)
    found = [n for n in CIFAR_TRAIN_FILES if os.path.lexists(folder / n)]
    if not found:
        raise DataError(
            f"no CIFAR-10 training batches in '{folder}': expected at least one of "
            f"{', '.join(CIFAR_TRAIN_FILES)}. {_WHERE}"
        )
    if not os.path.lexists(folder / CIFAR_TEST_FILE):
        raise DataError(f"'{folder}' has no {CIFAR_TEST_FILE} (the CIFAR-10 test set). {_WHERE}")
    batches = [read_cifar_batch(folder / n) for n in found]
    train_x = np.concatenate([b[0] for b in batches])
    train_y = np.concatenate([b[1] for b in batches])
    test_x, test_y = read_cifar_batch(folder / CIFAR_TEST_FILE)
    if len(found) < len(CIFAR_TRAIN_FILES):
        warnings.warn(
            f"CIFAR-10: found {len(found)} of {len(CIFAR_TRAIN_FILES)} training batches in "
            f"'{folder}' ({', '.join(found)}); training pool has {train_x.shape[0]} images",
            UserWarning,
            stacklevel=2,
        )
    return train_x, train_y, test_x, test_y, found, folder


def load_cifar10(
    data_dir: str | Path | None,
    *,
    name: str = "scifar10",
    options: LoadOptions | None = None,
    permutation: np.ndarray | None = None,
    permutation_seed: int | None = None,
) -> DataSplits:
    """Sequential CIFAR-10 (1024 steps x 3 features), per-channel train-split normalisation."""
    options = options or LoadOptions()
    train_x, train_y, test_x, test_y, found, folder = load_cifar10_arrays(data_dir)
    return build_splits(
        name,
        train_x,
        train_y,
        test_x,
        test_y,
        num_classes=10,
        options=options,
        scale=1.0 / 255.0,
        norm="per_feature",
        permutation=permutation,
        permutation_seed=permutation_seed,
        meta={
            "dataset": "cifar10",
            "data_dir": str(folder),
            "cifar_train_batches": len(found),
            "cifar_train_files": found,
        },
    )
