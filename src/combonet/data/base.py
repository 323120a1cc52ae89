"""Common sequence-dataset representation, splitting, normalisation and loaders.

Every task is turned into ``(num, steps, features)`` float32 inputs with int64 labels. The
shared pipeline in :func:`build_splits` applies, in this order:

1. ``limit_train`` / ``limit_test``: keep ``k`` examples chosen by a seeded shuffle;
2. hold out ``val_fraction`` of the (limited) training pool as the validation split;
3. normalise with fixed constants or statistics of the *training split only*;
4. apply a fixed time-step permutation (``x_new[:, t] = x_old[:, perm[t]]``), identically to
   train, val and test.

The test split is never used to compute anything.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler, TensorDataset

from .._validate import file_kind, in_interval, integer

__all__ = [
    "DataError",
    "DataSplits",
    "LoadOptions",
    "SequenceDataset",
    "available_memory",
    "build_splits",
    "check_claim",
    "check_permutation",
    "make_loader",
    "make_permutation",
    "regular_file",
]

#: deflate expands at most ~1032:1, so a gzip file of ``m`` bytes holds at most this times ``m``.
MAX_DEFLATE_RATIO = 1032


class DataError(ValueError):
    """A dataset is missing, refused or malformed (the message says which file and why)."""


def regular_file(path: os.PathLike | str) -> os.stat_result:
    """``os.stat`` of ``path`` if it is a regular file (links followed), else one clear error:
    a FIFO, a device such as ``/dev/zero``, a directory or a broken link is named as such."""
    link = os.path.islink(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        if link:
            raise DataError(f"{path}: broken symbolic link (to {os.readlink(path)})") from None
        raise DataError(f"{path}: file not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read file: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        via = f" (a symbolic link to {os.path.realpath(path)})" if link else ""
        raise DataError(f"{path}: not a regular file: it is {file_kind(info.st_mode)}{via}; "
                        "point --data-dir at a folder holding the real data files")
    return info


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux ``MemAvailable``), or None."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover
        return None


def check_claim(path: os.PathLike | str, claimed: int, compressed: int | None,
                what: str) -> None:
    """Refuse a header's claimed size before reading: more than a gzip file of ``compressed``
    bytes can hold, or more than the memory available."""
    if compressed is not None and claimed > MAX_DEFLATE_RATIO * compressed + 1024:
        raise DataError(f"{path}: the header claims {claimed} bytes ({what}), more than a "
                        f"{compressed}-byte gzip file can hold (deflate expands at most "
                        f"{MAX_DEFLATE_RATIO}x); the header is corrupt")
    free = available_memory()
    if free is not None and claimed > free:
        raise DataError(f"{path}: the header claims {claimed} bytes ({what}), more than the "
                        f"{free} bytes of memory available")


@dataclass(eq=False)
class SequenceDataset(Dataset):
    """Sequences ``inputs`` (num, steps, features) float32 with class ``labels`` (num,) int64."""

    name: str
    inputs: Tensor
    labels: Tensor
    num_classes: int
    split: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.inputs, Tensor) or self.inputs.dim() != 3:
            raise ValueError("inputs must be a 3-D tensor (num, steps, features)")
        if self.inputs.dtype != torch.float32:
            raise ValueError(f"inputs must be float32, got {self.inputs.dtype}")
        if not isinstance(self.labels, Tensor) or self.labels.dim() != 1:
            raise ValueError("labels must be a 1-D tensor (num,)")
        if self.labels.dtype != torch.int64:
            raise ValueError(f"labels must be int64, got {self.labels.dtype}")
        if self.labels.shape[0] != self.inputs.shape[0]:
            raise ValueError(f"{self.inputs.shape[0]} inputs but {self.labels.shape[0]} labels")
        if self.labels.numel() and (
            int(self.labels.min()) < 0 or int(self.labels.max()) >= self.num_classes
        ):
            raise ValueError(f"labels must lie in 0..{self.num_classes - 1}")

    @property
    def steps(self) -> int:
        """Sequence length."""
        return int(self.inputs.shape[1])

    @property
    def features(self) -> int:
        """Input dimension per time step."""
        return int(self.inputs.shape[2])

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.inputs[index], self.labels[index]

    def __repr__(self) -> str:
        return (
            f"SequenceDataset(name={self.name!r}, split={self.split!r}, num={len(self)}, "
            f"steps={self.steps}, features={self.features}, num_classes={self.num_classes})"
        )


@dataclass(eq=False)
class DataSplits:
    """Train / validation / test splits of one task plus JSON-serialisable ``meta``."""

    train: SequenceDataset
    val: SequenceDataset
    test: SequenceDataset
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.train.name

    @property
    def steps(self) -> int:
        return self.train.steps

    @property
    def features(self) -> int:
        return self.train.features

    @property
    def num_classes(self) -> int:
        return self.train.num_classes


def _plain(value: Any) -> Any:
    """numpy integers as Python ints (the checks in :mod:`combonet._validate` want ``int``)."""
    return int(value) if isinstance(value, np.integer) else value


def _check_positive_int(value: Any, what: str) -> None:
    if value is not None:
        integer(what, _plain(value), 1)


def _check_int(value: Any, what: str) -> None:
    integer(what, _plain(value))


@dataclass(frozen=True)
class LoadOptions:
    """Options shared by every task (validated on construction)."""

    val_fraction: float = 0.1
    seed: int = 0
    limit_train: int | None = None
    limit_test: int | None = None

    def __post_init__(self) -> None:
        vf = self.val_fraction
        if isinstance(vf, bool) or not isinstance(vf, (int, float, np.floating)):
            raise ValueError(f"val_fraction must be a number in [0, 1), got {vf!r}")
        in_interval("val_fraction", vf, 0, 1, lo_open=False, hi_open=True)
        _check_int(self.seed, "seed")
        _check_positive_int(self.limit_train, "limit_train")
        _check_positive_int(self.limit_test, "limit_test")


def make_permutation(steps: int, seed: int) -> list[int]:
    """The fixed permutation of ``range(steps)`` drawn by ``numpy.random.default_rng(seed)``."""
    _check_int(seed, "permutation_seed")
    return [int(i) for i in np.random.default_rng(seed).permutation(steps)]


def check_permutation(permutation: Sequence[int] | np.ndarray, steps: int) -> np.ndarray:
    """Validate that ``permutation`` is a permutation of ``range(steps)``; return it as int64."""
    perm = np.asarray(permutation)
    if perm.ndim != 1 or perm.shape[0] != steps:
        raise ValueError(
            f"permutation must be a flat list of {steps} ints, got shape {tuple(perm.shape)}"
        )
    if perm.dtype == np.bool_ or not np.issubdtype(perm.dtype, np.integer):
        raise ValueError(f"permutation must contain ints, got dtype {perm.dtype}")
    perm = perm.astype(np.int64)
    if not np.array_equal(np.sort(perm), np.arange(steps)):
        raise ValueError(f"permutation is not a permutation of range({steps})")
    return perm


def _subset(n: int, limit: int | None, seed: int, stream: int) -> np.ndarray:
    """Indices of the first ``limit`` items of a seeded shuffle, in original order."""
    if limit is None or limit >= n:
        return np.arange(n)
    rng = np.random.default_rng([seed, stream])
    return np.sort(rng.permutation(n)[:limit])


def _val_split(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train, val) index split of ``range(n)``; both returned in original order."""
    if val_fraction == 0.0:
        return np.arange(n), np.arange(0)
    n_val = max(1, round(val_fraction * n))
    if n_val >= n:
        raise DataError(
            f"val_fraction={val_fraction} leaves no training examples out of {n}; "
            "use a smaller val_fraction or a larger limit_train"
        )
    perm = np.random.default_rng([seed, 2]).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def _stats(x: np.ndarray, per_feature: bool) -> tuple[np.ndarray, np.ndarray]:
    """Mean/std over examples and steps (per feature, or pooled over features)."""
    if x.shape[0] == 0:
        raise DataError("cannot compute normalisation statistics from an empty training split")
    axes = (0, 1) if per_feature else (0, 1, 2)
    mean = x.mean(axis=axes, dtype=np.float64)
    var = np.zeros_like(mean)
    # Two-pass variance in float64, chunked so no full float64 copy of the data is made.
    chunk = max(1, 2_000_000 // max(1, x.shape[1] * x.shape[2]))
    for start in range(0, x.shape[0], chunk):
        block = x[start : start + chunk].astype(np.float64) - mean
        var = var + (block**2).sum(axis=axes)
    count = x.shape[0] * x.shape[1] * (1 if per_feature else x.shape[2])
    std = np.sqrt(var / count)
    std = np.where(std > 0, std, 1.0)
    features = x.shape[2]
    if not per_feature:
        mean = np.full(features, float(mean))
        std = np.full(features, float(std))
    return np.atleast_1d(mean), np.atleast_1d(std)


def build_splits(
    name: str,
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    *,
    num_classes: int,
    options: LoadOptions,
    scale: float = 1.0,
    norm: str = "fixed",
    norm_mean: Sequence[float] | None = None,
    norm_std: Sequence[float] | None = None,
    permutation: np.ndarray | None = None,
    permutation_seed: int | None = None,
    meta: dict[str, Any] | None = None,
) -> DataSplits:
    """Limit, split, normalise and permute raw ``(num, steps, features)`` arrays.

    ``norm`` is ``"fixed"`` (use ``norm_mean``/``norm_std``), ``"per_feature"`` or ``"scalar"``
    (statistics of the training split after ``x * scale``).
    """
    if train_x.ndim != 3 or test_x.ndim != 3 or train_x.shape[1:] != test_x.shape[1:]:
        raise ValueError("train_x and test_x must be (num, steps, features) with equal shapes")
    steps, features = int(train_x.shape[1]), int(train_x.shape[2])

    pool = _subset(train_x.shape[0], options.limit_train, options.seed, 0)
    test_idx = _subset(test_x.shape[0], options.limit_test, options.seed, 1)
    tr_local, va_local = _val_split(len(pool), options.val_fraction, options.seed)
    tr_idx, va_idx = pool[tr_local], pool[va_local]

    def scaled(x: np.ndarray, idx: np.ndarray) -> np.ndarray:
        out = x[idx].astype(np.float32)
        if scale != 1.0:
            out *= np.float32(scale)
        return out

    xtr = scaled(train_x, tr_idx)
    if norm == "fixed":
        if norm_mean is None or norm_std is None:
            raise ValueError("norm='fixed' needs norm_mean and norm_std")
        mean = np.broadcast_to(np.asarray(norm_mean, dtype=np.float64), (features,))
        std = np.broadcast_to(np.asarray(norm_std, dtype=np.float64), (features,))
    elif norm in ("per_feature", "scalar"):
        mean, std = _stats(xtr, per_feature=norm == "per_feature")
    else:
        raise ValueError(f"unknown norm {norm!r}")
    mean32, std32 = mean.astype(np.float32), std.astype(np.float32)

    def finish(x: np.ndarray, y: np.ndarray, split: str) -> SequenceDataset:
        x -= mean32
        x /= std32
        if permutation is not None:
            x = x[:, permutation, :]
        inputs = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        labels = torch.from_numpy(np.asarray(y, dtype=np.int64).copy())
        return SequenceDataset(name, inputs, labels, num_classes, split)

    train = finish(xtr, train_y[tr_idx], "train")
    val = finish(scaled(train_x, va_idx), train_y[va_idx], "val")
    test = finish(scaled(test_x, test_idx), test_y[test_idx], "test")

    info: dict[str, Any] = {
        "task": name,
        "steps": steps,
        "features": features,
        "num_classes": num_classes,
        "sizes": {"train": len(train), "val": len(val), "test": len(test)},
        "available": {"train": int(train_x.shape[0]), "test": int(test_x.shape[0])},
        "val_fraction": float(options.val_fraction),
        "seed": int(options.seed),
        "limit_train": None if options.limit_train is None else int(options.limit_train),
        "limit_test": None if options.limit_test is None else int(options.limit_test),
        "input_scale": float(scale),
        "norm": norm,
        "norm_mean": [float(v) for v in mean],
        "norm_std": [float(v) for v in std],
        "permuted": permutation is not None,
        "permutation_seed": None if permutation is None else permutation_seed,
        "permutation": None if permutation is None else [int(i) for i in permutation],
    }
    info.update(meta or {})
    return DataSplits(train, val, test, info)


def make_loader(
    ds: SequenceDataset,
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    drop_last: bool = False,
    sampler: Sampler | None = None,
) -> DataLoader:
    """A single-process DataLoader over ``(inputs, labels)``, deterministic given ``seed``."""
    integer("batch_size", _plain(batch_size), 1)
    _check_int(seed, "seed")
    if sampler is not None and shuffle:
        raise ValueError("pass either shuffle=True or a sampler, not both")
    generator = torch.Generator()
    generator.manual_seed(int(seed))
    return DataLoader(
        TensorDataset(ds.inputs, ds.labels),
        batch_size=int(batch_size),
        shuffle=shuffle,
        sampler=sampler,
        drop_last=drop_last,
        num_workers=0,
        generator=generator,
    )
