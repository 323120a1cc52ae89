"""The one input check of the engine: shapes of the drive and the initial state."""

from __future__ import annotations

import torch

from ..snapshot import Explicit


def check_inputs(snap: Explicit, drive: torch.Tensor, x0: torch.Tensor | None) -> torch.Tensor:
    """Validate ``drive`` (batch, steps, N) and ``x0`` (batch, N); return the initial state."""
    n = snap.n
    if not isinstance(drive, torch.Tensor) or drive.dim() != 3 or drive.shape[2] != n:
        shape = tuple(drive.shape) if isinstance(drive, torch.Tensor) else type(drive).__name__
        raise ValueError(f"drive must have shape (batch, steps, {n}), got {shape}")
    if drive.shape[1] < 1:
        raise ValueError("drive must have at least one time step, got 0")
    if drive.dtype != snap.dtype:
        raise ValueError(f"drive has dtype {drive.dtype} but the model runs in {snap.dtype}; "
                         f"convert the inputs or the model (model.to({snap.dtype}))")
    if x0 is None:
        return drive.new_zeros(drive.shape[0], n)
    if not isinstance(x0, torch.Tensor) or tuple(x0.shape) != (drive.shape[0], n):
        shape = tuple(x0.shape) if isinstance(x0, torch.Tensor) else type(x0).__name__
        raise ValueError(
            f"x0 must have shape ({drive.shape[0]}, {n}) to match drive, got {shape}"
        )
    if x0.dtype != snap.dtype:
        raise ValueError(f"x0 has dtype {x0.dtype} but the model runs in {snap.dtype}; "
                         f"convert the initial state or the model (model.to({snap.dtype}))")
    return x0
