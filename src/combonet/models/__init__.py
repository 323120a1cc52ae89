"""Sequence models: combo nets and baselines."""

from .baselines import (
    AntisymmetricRNN,
    GRUClassifier,
    LipschitzRNN,
    LSTMClassifier,
    TorchRNNClassifier,
    VanillaRNNClassifier,
)
from .builders import (
    sparse_combo_net,
    sparse_modules,
    svd_combo_net,
    svd_modules,
    unconstrained_combo_net,
)
from .classifier import SequenceClassifier
from .registry import COMBO_MODELS, MODELS, build_model, count_parameters, is_combo

__all__ = ["COMBO_MODELS", "MODELS", "AntisymmetricRNN", "GRUClassifier", "LSTMClassifier",
           "LipschitzRNN", "SequenceClassifier", "TorchRNNClassifier", "VanillaRNNClassifier",
           "build_model", "count_parameters", "is_combo", "sparse_combo_net", "sparse_modules",
           "svd_combo_net", "svd_modules", "unconstrained_combo_net"]
