"""The discrete maps the engine runs (DESIGN.md §1-2), ``alpha = dt / tau``.

* ``euler``:  ``x+ = x + alpha (-x + W phi(x) + L x + u)``
* ``cayley``: ``x+ = C ((1 - alpha) x + alpha (W phi(x) + u))`` with
  ``C = (I - alpha/2 L)^{-1} (I + alpha/2 L)``: Euler for each module, then an implicit-midpoint
  (Cayley) step for the linear coupling. For eq. 3 couplings ``C`` is an isometry in the metric
  for every step size, so only the modules need a step-size condition.
"""

from __future__ import annotations

import math

import torch

from ..modules.base import Dynamics

METHODS = ("euler", "cayley")


def check_method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f'Invalid method "{method}". Must be one of {list(METHODS)}')
    return method


def step_fraction(dt: float, tau: float) -> float:
    """``alpha = dt / tau``, which must lie in (0, 1]."""
    alpha = float(dt) / tau
    if not (math.isfinite(alpha) and 0 < alpha <= 1):
        fix = "lower dt" if math.isfinite(alpha) and alpha > 1 else "use a positive, finite dt"
        raise ValueError(f"dt / tau must lie in (0, 1], got dt={dt}, tau={tau}; {fix}")
    return alpha


def cayley(lmat: torch.Tensor, alpha: float) -> torch.Tensor:
    """``(I - alpha/2 L)^{-1} (I + alpha/2 L)`` (built once per forward pass)."""
    eye = torch.eye(lmat.shape[0], dtype=lmat.dtype, device=lmat.device)
    return torch.linalg.solve(eye - alpha / 2 * lmat, eye + alpha / 2 * lmat)


def check_inputs(dyn: Dynamics, drive: torch.Tensor, x0: torch.Tensor | None, dt: float,
                 method: str) -> tuple[float, torch.Tensor]:
    """Validate shapes; return ``alpha`` and the initial state."""
    check_method(method)
    alpha = step_fraction(dt, dyn.tau)
    if drive.dim() != 3 or drive.shape[2] != dyn.n:
        raise ValueError(
            f"drive must have shape (batch, steps, {dyn.n}), got {tuple(drive.shape)}"
        )
    if drive.shape[1] < 1:
        raise ValueError("drive must have at least one time step")
    if x0 is None:
        x0 = drive.new_zeros(drive.shape[0], dyn.n)
    elif x0.shape != (drive.shape[0], dyn.n):
        raise ValueError(
            f"x0 must have shape ({drive.shape[0]}, {dyn.n}) to match drive, got "
            f"{tuple(x0.shape)}"
        )
    return alpha, x0
