"""Sequence models: combo nets and baselines."""

from .builders import (
    sparse_combo_net,
    sparse_modules,
    svd_combo_net,
    svd_modules,
    unconstrained_combo_net,
)
from .classifier import SequenceClassifier

__all__ = ["SequenceClassifier", "sparse_combo_net", "sparse_modules", "svd_combo_net",
           "svd_modules", "unconstrained_combo_net"]
