"""Task registry: CLI names -> loaders, and the single entry point :func:`load_task`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._validate import choice
from .base import DataSplits, LoadOptions, check_permutation, make_permutation
from .cifar import load_cifar10
from .embedded import load_digits_task, load_mnist1d
from .mnist import load_mnist

__all__ = ["TASKS", "Task", "load_task"]


@dataclass(frozen=True)
class Task:
    """A registered task; calling it loads the data (same keywords as :func:`load_task`)."""

    name: str
    steps: int
    features: int
    num_classes: int
    permuted: bool
    needs_data_dir: bool
    description: str
    _loader: Callable[..., DataSplits]

    def __call__(self, data_dir: str | Path | None = None, **kwargs: Any) -> DataSplits:
        return load_task(self.name, data_dir, **kwargs)


def _digits(data_dir: Any, **kw: Any) -> DataSplits:
    kw.pop("cache_dir")
    return load_digits_task(**kw)


def _mnist(data_dir: Any, **kw: Any) -> DataSplits:
    kw.pop("cache_dir")
    return load_mnist(data_dir, **kw)


def _cifar(data_dir: Any, **kw: Any) -> DataSplits:
    kw.pop("cache_dir")
    return load_cifar10(data_dir, **kw)


def _mnist1d(data_dir: Any, **kw: Any) -> DataSplits:
    return load_mnist1d(**kw)


TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task("digits", 64, 1, 10, False, False, "sklearn 8x8 digits, pixel by pixel", _digits),
        Task("pdigits", 64, 1, 10, True, False, "permuted sklearn digits", _digits),
        Task("mnist1d", 40, 1, 10, False, False, "MNIST-1D, generated locally", _mnist1d),
        Task(
            "mnist1d-shuffled",
            40,
            1,
            10,
            True,
            False,
            "MNIST-1D with a fixed permutation of the 40 time steps",
            _mnist1d,
        ),
        Task("smnist", 784, 1, 10, False, True, "sequential MNIST (IDX files)", _mnist),
        Task("psmnist", 784, 1, 10, True, True, "permuted sequential MNIST", _mnist),
        Task("scifar10", 1024, 3, 10, False, True, "sequential CIFAR-10 (binary)", _cifar),
    )
}


def load_task(
    name: str,
    data_dir: str | Path | None = None,
    *,
    val_fraction: float = 0.1,
    seed: int = 0,
    permutation_seed: int = 0,
    permutation: Sequence[int] | None = None,
    limit_train: int | None = None,
    limit_test: int | None = None,
    cache_dir: str | Path | None = None,
    mnist1d_samples: int | None = None,
) -> DataSplits:
    """Load task ``name`` as train/val/test :class:`SequenceDataset` splits.

    ``seed`` drives the validation hold-out and the ``limit_*`` subsets; ``permutation_seed``
    draws the fixed time-step permutation of permuted tasks unless ``permutation`` (e.g.
    ``meta["permutation"]`` of an earlier load) is passed. ``data_dir`` is needed for MNIST
    and CIFAR-10 only; ``cache_dir`` and ``mnist1d_samples`` apply to MNIST-1D only.
    """
    choice("task", name, TASKS)
    task = TASKS[name]
    options = LoadOptions(val_fraction, seed, limit_train, limit_test)

    perm: np.ndarray | None = None
    used_seed: int | None = None
    if permutation is not None:
        if not task.permuted:
            raise ValueError(f'task "{name}" is not permuted; permutation= is not allowed')
        perm = check_permutation(permutation, task.steps)
    elif task.permuted:
        perm = np.asarray(make_permutation(task.steps, permutation_seed), dtype=np.int64)
        used_seed = int(permutation_seed)

    kwargs: dict[str, Any] = {
        "name": name,
        "options": options,
        "permutation": perm,
        "permutation_seed": used_seed,
        "cache_dir": cache_dir,
    }
    if mnist1d_samples is not None:
        if task._loader is not _mnist1d:
            raise ValueError(f'mnist1d_samples only applies to mnist1d tasks, not "{name}"')
        kwargs["num_samples"] = mnist1d_samples
    splits = task._loader(data_dir, **kwargs)
    splits.meta["permutation_source"] = (
        None if perm is None else ("given" if permutation is not None else "permutation_seed")
    )
    return splits
