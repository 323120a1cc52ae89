"""Trial tasks for the training loop: fresh seeded training trials every epoch, fixed seeded
validation and test trials, per-step targets packed for the generic loop.

``load_trial_data(name, ...)`` returns a :class:`TrialData` that looks like the image tasks'
splits to :class:`~combonet.train.Trainer` (``train``/``val``/``test`` datasets with
``inputs`` and ``labels`` tensors, ``features``, ``num_classes``, ``meta``) plus what per-step
training needs:

* ``train`` holds ``epoch_trials`` trials that are made anew for every epoch from the seeded
  stream ``derive_seed(seed, "stream", epoch)`` (NeuroGym's convention: every training batch is
  fresh; the same seed and epoch give the same trials, so a resumed run sees what an
  uninterrupted one would);
* ``val`` and ``test`` are fixed sets of fresh trials from their own derived seeds
  (``derive_seed(seed, "val")``, ``derive_seed(seed, "test")``), balanced over the tasks of a
  multitask problem; they never overlap the training stream's seeds;
* ``labels`` are :func:`~combonet.models.perstep.pack_targets` (target, loss weight, scored
  step), so the loop's ``loss_fn``/``metric_fn`` are :func:`~combonet.models.perstep.packed_loss`
  and :func:`~combonet.models.perstep.packed_accuracy` (NeuroGym's performance measure);
* batches are trimmed to their last weighted step (:func:`collate_trials`): the model is
  causal, so the trimmed steps change neither the loss nor the decision.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from .neurogym import Trials, TrialTask, derive_seed, load_trial_task

__all__ = ["TrialData", "TrialDataset", "collate_trials", "load_trial_data", "trial_task"]


@functools.lru_cache(maxsize=8)
def trial_task(name: str) -> TrialTask:
    """The trial task ``name`` (made once per process: NeuroGym's ``yang19`` probes 20
    environments); a missing ``[neuro]`` extra is a one-line error saying how to install it."""
    return load_trial_task(name)


class TrialDataset(Dataset):
    """Trials as ``(inputs, packed targets)`` pairs: ``inputs`` (trials, steps, obs) and
    ``labels`` (trials, steps, 3), both padded to the set's longest trial; ``trials`` keeps the
    :class:`~combonet.data.neurogym.Trials` (tasks, periods) for per-task scoring."""

    def __init__(self, size: int, other_weight: float, trials: Trials | None = None) -> None:
        self.size = int(size)
        self.other_weight = float(other_weight)
        self.trials: Trials | None = None
        self._on: dict[str, Trials] = {}
        if trials is not None:
            self.set(trials)

    def set(self, trials: Trials) -> None:
        from ..models.perstep import pack_targets

        if len(trials) != self.size:
            raise ValueError(f"internal error: {len(trials)} trials for a set of {self.size}")
        self.trials = trials
        self.inputs = trials.inputs
        self.labels = pack_targets(trials, self.other_weight)
        self._on = {}

    def on(self, device: torch.device | str) -> Trials:
        """The trials on ``device`` (cached)."""
        if self.trials is None:
            raise RuntimeError("internal error: the trials of this epoch are not made yet")
        key = str(device)
        if key not in self._on:
            self._on[key] = self.trials.to(device)
        return self._on[key]

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.inputs[i], self.labels[i]


def collate_trials(items: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """Stack ``(inputs, packed targets)`` pairs and drop the steps after the batch's last
    weighted step (padding; by causality they change nothing)."""
    x = torch.stack([a for a, _ in items])
    y = torch.stack([b for _, b in items])
    from ..models.perstep import WEIGHT

    weighted = (y[..., WEIGHT] > 0).any(0).nonzero()
    steps = int(weighted.max()) + 1 if len(weighted) else y.shape[1]
    return x[:, :steps].contiguous(), y[:, :steps].contiguous()


@dataclass(eq=False)
class TrialData:
    """Train/val/test trials of one trial task for :class:`~combonet.train.Trainer`."""

    task: TrialTask
    train: TrialDataset
    val: TrialDataset
    test: TrialDataset
    seed: int
    meta: dict[str, Any] = field(default_factory=dict)
    per_step: bool = True

    @property
    def features(self) -> int:
        return int(self.task.features)

    @property
    def num_classes(self) -> int:
        return int(self.task.num_actions)

    @property
    def task_names(self) -> tuple[str, ...]:
        return tuple(self.task.task_names)

    def epoch_seed(self, epoch: int) -> int:
        return derive_seed(self.seed, "stream", int(epoch))

    def new_epoch(self, epoch: int) -> None:
        """Make the fresh training trials of ``epoch`` (a function of the seed and epoch)."""
        self.train.set(self.task.sample(self.train.size, self.epoch_seed(epoch)))

    @staticmethod
    def loss_fn(logits: Tensor, packed: Tensor) -> Tensor:
        from ..models.perstep import packed_loss

        return packed_loss(logits, packed)

    @staticmethod
    def metric_fn(logits: Tensor, packed: Tensor) -> tuple[float, float]:
        from ..models.perstep import packed_accuracy

        return packed_accuracy(logits, packed)


def load_trial_data(name: str, *, seed: int = 0, epoch_trials: int = 2048,
                    val_trials: int = 400, test_trials: int = 1000,
                    other_weight: float = 0.2) -> TrialData:
    """Trial task ``name`` (``neurogym:ID``, ``synthetic[:K]``) as training data (module
    docstring); ``other_weight`` weights the unscored steps of a trial in the loss."""
    task = trial_task(name)
    val = TrialDataset(val_trials, other_weight,
                       task.sample(val_trials, derive_seed(seed, "val"), balanced=True))
    test = TrialDataset(test_trials, other_weight,
                        task.sample(test_trials, derive_seed(seed, "test"), balanced=True))
    meta = {**task.describe(), "kind": "trials", "num_classes": int(task.num_actions),
            "seed": int(seed), "epoch_trials": int(epoch_trials), "val_trials": int(val_trials),
            "test_trials": int(test_trials), "other_weight": float(other_weight),
            "training_trials": "fresh every epoch: derive_seed(seed, 'stream', epoch)"}
    return TrialData(task, TrialDataset(epoch_trials, other_weight), val, test, int(seed), meta)
