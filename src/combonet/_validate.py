"""One place for argument checks: every error names the argument, what is allowed and what came."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def positive(name: str, value: float) -> float:
    """Return ``value`` as float if it is finite and > 0, else raise ``ValueError``."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number, got {value!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return v


def positive_int(name: str, value: int) -> int:
    """Return ``value`` if it is an int >= 1, else raise ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def in_interval(name: str, value: float, lo: float, hi: float, *, lo_open: bool = True,
                hi_open: bool = False) -> float:
    """Check ``value`` lies in the interval (lo, hi] (ends configurable)."""
    v = float(value)
    ok_lo = v > lo if lo_open else v >= lo
    ok_hi = v < hi if hi_open else v <= hi
    if not (math.isfinite(v) and ok_lo and ok_hi):
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        raise ValueError(f"{name} must lie in {left}{lo}, {hi}{right}, got {value!r}")
    return v


def square_matrix(name: str, w: torch.Tensor, n: int | None = None) -> torch.Tensor:
    """Check ``w`` is a finite square 2-D tensor (of size ``n`` if given)."""
    if not isinstance(w, torch.Tensor):
        w = torch.as_tensor(w)
    if w.dim() != 2 or w.shape[0] != w.shape[1]:
        raise ValueError(f"{name} must be a square 2-D matrix, got shape {tuple(w.shape)}")
    if n is not None and w.shape[0] != n:
        raise ValueError(f"{name} must be {n}x{n} to match n={n}, got shape {tuple(w.shape)}")
    if not torch.isfinite(w).all():
        raise ValueError(f"{name} contains NaN or inf entries; pass a finite matrix")
    return w


def same(name: str, values: Sequence[float], what: str) -> float:
    """Check all ``values`` agree (e.g. every module of a combination shares ``tau``)."""
    first = values[0]
    if any(abs(v - first) > 1e-12 * max(1.0, abs(first)) for v in values):
        raise ValueError(
            f"all modules combined must share {name} ({what}); got {list(values)}. "
            f"Build the modules with the same {name}."
        )
    return first


def spd(name: str, m: torch.Tensor) -> torch.Tensor:
    """Check ``m`` is a symmetric positive definite float64 matrix."""
    m = square_matrix(name, m)
    asym = (m - m.T).abs().max().item()
    scale = max(1.0, m.abs().max().item())
    if asym > 1e-9 * scale:
        raise ValueError(f"{name} must be symmetric; max |M - M^T| = {asym:.3g}")
    lam = torch.linalg.eigvalsh(m.double()).min().item()
    if lam <= 0:
        raise ValueError(
            f"{name} must be positive definite; its smallest eigenvalue is {lam:.3g}. "
            "Pass a symmetric positive definite metric."
        )
    return m
