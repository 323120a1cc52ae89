"""Trainable time constants in a stated range (beyond the paper; docs/design.md §2).

``tau = lo + (hi - lo) sigmoid(theta)``, one per module or one per unit, so every value of the
free parameter ``theta`` gives ``lo <= tau <= hi``: gradient descent can never leave the range,
and ``dt <= lo`` keeps every step fraction ``dt / tau`` in (0, 1]. A module with per-unit time
constants contracts in ``P = M T`` (diagonal metrics only): ``P J = M (-I + W D)``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .._validate import positive, positive_int

PER = ("module", "unit")


class TimeConstants(nn.Module):
    """``n`` time constants ``tau = lo + (hi - lo) sigmoid(theta)`` (float64), trainable."""

    def __init__(self, n: int, init: float = 1.0, lo: float | None = None,
                 hi: float | None = None, *, per: str = "module") -> None:
        super().__init__()
        self.n = positive_int("n", n)
        if per not in PER:
            raise ValueError(f'Invalid per "{per}". Must be one of {list(PER)}')
        self.per = per
        init = positive("tau", init)
        self.lo = positive("tau lower bound", lo if lo is not None else init / 10)
        self.hi = positive("tau upper bound", hi if hi is not None else init * 10)
        if not self.lo < self.hi:
            raise ValueError(f"the time-constant range needs lo < hi, got lo={self.lo}, "
                             f"hi={self.hi}")
        if not self.lo < init < self.hi:
            raise ValueError(f"the initial tau={init} must lie strictly inside (lo, hi) = "
                             f"({self.lo}, {self.hi})")
        frac = (init - self.lo) / (self.hi - self.lo)
        theta = torch.full((n if per == "unit" else 1,), math.log(frac / (1 - frac)),
                           dtype=torch.get_default_dtype())
        self.theta = nn.Parameter(theta)

    def forward(self) -> torch.Tensor:
        tau = self.lo + (self.hi - self.lo) * torch.sigmoid(self.theta.to(torch.float64))
        return tau.expand(self.n) if self.per == "module" else tau

    @property
    def per_unit(self) -> bool:
        return self.per == "unit"

    def extra_repr(self) -> str:
        return f"n={self.n}, per={self.per}, range=[{self.lo:g}, {self.hi:g}]"
