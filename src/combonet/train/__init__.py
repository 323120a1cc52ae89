"""Training: configuration, the run directory, the loop, reporting and distributed data parallel.

``combonet train`` (see :mod:`combonet.cli`) is a thin wrapper around :func:`train`, which
prints nothing: the command line attaches a :class:`ConsoleReporter`.
"""

from .checkpoint import CheckpointError
from .config import ConfigError, TrainConfig, read_config_file
from .loop import (
    RunResult,
    Trainer,
    TrainingDiverged,
    TrainingInterrupted,
    accuracy,
    cross_entropy,
    evaluate,
    load_data,
    train,
)
from .reporting import ConsoleReporter, CurvePlotter, Reporter, Reporters
from .rundir import LoadedModel, RunDir, RunDirError, RunDirWriteError

__all__ = ["CheckpointError", "ConfigError", "ConsoleReporter", "CurvePlotter", "LoadedModel",
           "Reporter", "Reporters", "RunDir", "RunDirError", "RunDirWriteError", "RunResult",
           "TrainConfig", "Trainer", "TrainingDiverged", "TrainingInterrupted", "accuracy",
           "cross_entropy", "evaluate", "load_data", "read_config_file", "train"]
