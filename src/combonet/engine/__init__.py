"""The recurrence engine: every network of networks in combonet runs through ``run``."""

from __future__ import annotations

import torch

from ..modules.base import Dynamics
from .discretise import METHODS, cayley, step_fraction
from .reference import run_reference


def run(dyn: Dynamics, drive: torch.Tensor, x0: torch.Tensor | None = None, *, dt: float,
        method: str = "euler", all_states: bool = True) -> torch.Tensor:
    """Run the discretised eq. 2 over ``drive`` (batch, steps, N); states (batch, steps, N)
    or the last state (batch, N)."""
    return run_reference(dyn, drive, x0, dt=dt, method=method, all_states=all_states)


__all__ = ["METHODS", "cayley", "run", "run_reference", "step_fraction"]
