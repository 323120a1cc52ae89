"""The one registry of maps (DESIGN.md §1-2): how a step of ``tau dx/dt = f(x)`` is taken.

``cayley`` (the default everywhere: ``forward``, :func:`combonet.certify`, the classifiers) and
``euler`` are the discrete maps the engine runs and the certificate covers; ``rk4`` is the
reference integrator of the continuous-time eq. 2 (``simulate`` only, never certified as a map).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class MapSpec:
    """A registered map: its name, what it computes, and whether the engine runs it."""

    name: str
    summary: str
    #: runs in the fast engine and is covered by the discrete-time certificate
    discrete: bool


MAPS: dict[str, MapSpec] = {
    m.name: m
    for m in (
        MapSpec("cayley", "Euler for each module, then a Cayley (implicit-midpoint) step for the "
                "coupling: an isometry in the metric for eq.-3 couplings at every dt", True),
        MapSpec("euler", "explicit Euler of the whole network", True),
        MapSpec("rk4", "classical Runge-Kutta of the continuous-time eq. 2 (reference)", False),
    )
}
#: the maps the engine runs and certificates cover
METHODS: tuple[str, ...] = tuple(name for name, m in MAPS.items() if m.discrete)
DEFAULT_METHOD = "cayley"


def check_method(method: str, *, discrete: bool = True) -> str:
    """``method`` if registered (and a discrete map, when ``discrete``), else ``ValueError``."""
    allowed = METHODS if discrete else tuple(MAPS)
    if method not in allowed:
        raise ValueError(f'Invalid method "{method}". Must be one of {list(allowed)}')
    return method


def step_fraction(dt: float, tau: float) -> float:
    """``alpha = dt / tau``, which must lie in (0, 1] (``tau`` the smallest time constant)."""
    try:
        alpha = float(dt) / float(tau)
    except (TypeError, ValueError):
        raise ValueError(f"dt must be a positive number, got {dt!r}") from None
    if not (math.isfinite(alpha) and 0 < alpha <= 1):
        fix = "lower dt" if math.isfinite(alpha) and alpha > 1 else "use a positive, finite dt"
        raise ValueError(f"dt / tau must lie in (0, 1], got dt={dt}, tau={tau}; {fix}")
    return alpha


def cayley(k: torch.Tensor) -> torch.Tensor:
    """``C = (I - K/2)^{-1} (I + K/2)`` of the step-scaled coupling ``K = A L`` (built once per
    pass). For ``K`` skew-symmetric ``C`` is orthogonal."""
    eye = torch.eye(k.shape[0], dtype=k.dtype, device=k.device)
    return torch.linalg.solve(eye - k / 2, eye + k / 2)


def cayley_core(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``G = (I - Y^T X / 2)^{-1}`` (``2r x 2r``) for ``K = X Y^T``: by Woodbury,
    ``(I - K/2)^{-1} (I + K/2) = 2 (I - K/2)^{-1} - I = I + X G Y^T``."""
    eye = torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
    return torch.linalg.inv(eye - y.T @ x / 2)


__all__ = ["DEFAULT_METHOD", "MAPS", "METHODS", "MapSpec", "cayley", "cayley_core",
           "check_method", "step_fraction"]
