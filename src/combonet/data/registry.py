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

__all__ = ["TASKS", "TRIAL_TASKS", "Task", "TrialTaskSpec", "is_trial_task", "load_task",
           "task_names", "task_spec"]


@dataclass(frozen=True)
class Task:
    """A registered task; calling it loads the data (same keywords as :func:`load_task`).
    One label per sequence (``per_step = False``)."""

    name: str
    steps: int
    features: int
    num_classes: int
    permuted: bool
    needs_data_dir: bool
    description: str
    _loader: Callable[..., DataSplits]
    per_step: bool = False

    def __call__(self, data_dir: str | Path | None = None, **kwargs: Any) -> DataSplits:
        return load_task(self.name, data_dir, **kwargs)


@dataclass(frozen=True)
class TrialTaskSpec:
    """A family of trial tasks (``neurogym:ID``, ``synthetic[:K]``): per-step targets and the
    mask of the scored steps (:mod:`.neurogym`), trained with the masked per-step loss and
    scored by NeuroGym's performance measure (:mod:`.trials`)."""

    pattern: str  # how a name of the family looks, e.g. "neurogym:ID"
    prefix: str
    description: str
    needs_extra: bool = False
    per_step: bool = True
    needs_data_dir: bool = False

    def matches(self, name: str) -> bool:
        return name == self.prefix or name.startswith(self.prefix + ":")


TRIAL_TASKS: dict[str, TrialTaskSpec] = {
    t.pattern: t
    for t in (
        TrialTaskSpec("neurogym:ID", "neurogym", "a NeuroGym task, e.g. "
                      "neurogym:PerceptualDecisionMaking-v0, or neurogym:yang19 (the 20 tasks "
                      "of Yang et al. 2019 as one multitask problem, rule input appended); "
                      "per-step targets (needs pip install 'combonet[neuro]')", True),
        TrialTaskSpec("synthetic[:K]", "synthetic", "a tiny pro/anti perceptual-decision task "
                      "family with K rules (default 1), NeuroGym's trial format, no extra"),
    )
}


def task_names() -> list[str]:
    """Every task name or name pattern (for help texts and error messages)."""
    return [*TASKS, *TRIAL_TASKS]


def _check_trial_name(name: str, family: TrialTaskSpec) -> None:
    rest = name[len(family.prefix) + 1:] if ":" in name else ""
    if family.prefix == "neurogym":
        if not rest.strip() or rest != rest.strip() or any(c.isspace() for c in rest):
            raise ValueError(f'Invalid task "{name}": name a NeuroGym environment, e.g. '
                             "neurogym:PerceptualDecisionMaking-v0 or neurogym:yang19")
    elif ":" in name and not (rest.isdigit() and int(rest) >= 1):
        raise ValueError(f'Invalid task "{name}": synthetic:K needs an integer K >= 1')


def task_spec(name: str) -> Task | TrialTaskSpec:
    """The registry entry of task ``name``: a :class:`Task` of :data:`TASKS`, or the
    :class:`TrialTaskSpec` of a trial-task family (the name's form is checked here; whether a
    NeuroGym environment exists is checked when its trials are made)."""
    if isinstance(name, str):
        if name in TASKS:
            return TASKS[name]
        for family in TRIAL_TASKS.values():
            if family.matches(name):
                _check_trial_name(name, family)
                return family
    return TASKS[choice("task", name, task_names())]  # raises, listing the names


def is_trial_task(name: str) -> bool:
    """Whether ``name`` is a per-step trial task (a bad name raises)."""
    return task_spec(name).per_step


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
