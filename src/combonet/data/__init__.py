"""Datasets read pixel by pixel as sequences: ``(num, steps, features)`` float32 tensors.

Entry point: :func:`load_task` with a name from :data:`TASKS` (``digits``, ``pdigits``,
``mnist1d``, ``mnist1d-shuffled``, ``smnist``, ``psmnist``, ``scifar10``); trial tasks with
per-step targets (``neurogym:ID``, ``synthetic[:K]``) come from :mod:`.trials`.
"""

from .base import (
    DataError,
    DataSplits,
    LoadOptions,
    SequenceDataset,
    build_splits,
    check_permutation,
    make_loader,
    make_permutation,
)
from .cifar import find_cifar_dir, load_cifar10, load_cifar10_arrays, read_cifar_batch
from .embedded import default_cache_dir, generate_mnist1d, load_digits_task, load_mnist1d
from .mnist import (
    MNIST_FILES,
    MNIST_MEAN,
    MNIST_STD,
    find_mnist_dir,
    load_mnist,
    load_mnist_arrays,
    read_idx_images,
    read_idx_labels,
)
from .registry import TASKS, TRIAL_TASKS, Task, TrialTaskSpec, is_trial_task, load_task, task_spec

__all__ = [
    "MNIST_FILES",
    "MNIST_MEAN",
    "MNIST_STD",
    "TASKS",
    "TRIAL_TASKS",
    "DataError",
    "DataSplits",
    "LoadOptions",
    "SequenceDataset",
    "Task",
    "TrialTaskSpec",
    "build_splits",
    "check_permutation",
    "default_cache_dir",
    "find_cifar_dir",
    "find_mnist_dir",
    "generate_mnist1d",
    "is_trial_task",
    "load_cifar10",
    "load_cifar10_arrays",
    "load_digits_task",
    "load_mnist",
    "load_mnist1d",
    "load_mnist_arrays",
    "load_task",
    "make_loader",
    "make_permutation",
    "read_cifar_batch",
    "read_idx_images",
    "read_idx_labels",
    "task_spec",
]
