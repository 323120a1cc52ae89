"""``combonet tune``: hyperparameter search with Optuna over the training loop.

TPE sampling, median pruning on validation accuracy, the study stored in SQLite in its
directory (the same command resumes it), one full run directory per trial, and the best
settings written as a file ``combonet train --config`` accepts. See docs/tuning.md.
"""

from __future__ import annotations

from .cli import add_arguments, main_from_args
from .space import Param, Space, default_space, parse_space, read_space
from .study import StudyResult, TrialRecord, best_settings, run_study

__all__ = ["Param", "Space", "StudyResult", "TrialRecord", "add_arguments", "best_settings",
           "default_space", "main_from_args", "parse_space", "read_space", "run_study"]
