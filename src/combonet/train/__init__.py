"""Training: configuration, the loop, atomic checkpoints and distributed data parallel.

``combonet train`` (see :mod:`combonet.cli`) is a thin wrapper around :func:`train`.
"""

from .checkpoint import CheckpointError
from .config import ConfigError, TrainConfig, read_config_file
from .loop import RunResult, Trainer, TrainingDiverged, evaluate, load_data, train

__all__ = ["CheckpointError", "ConfigError", "RunResult", "TrainConfig", "Trainer",
           "TrainingDiverged", "evaluate", "load_data", "read_config_file", "train"]
