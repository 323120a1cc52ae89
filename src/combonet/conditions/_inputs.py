"""Argument checks of the condition checkers: one place that turns user input into float64
numpy arrays and rejects malformed input with a one-line ``ValueError``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ._linalg import EPS


def input_eps(W: Any) -> float:
    """Machine epsilon of the input's floating dtype (float64 for anything else)."""
    dtype = getattr(W, "dtype", None)
    if dtype is None:
        return EPS
    if hasattr(dtype, "is_floating_point"):  # a torch dtype: bfloat16 is the coarsest 2-byte
        if not dtype.is_floating_point:
            return EPS
        return {2: 2.0**-7, 4: float(np.finfo(np.float32).eps)}.get(dtype.itemsize, EPS)
    try:
        dt = np.dtype(dtype)
    except TypeError:
        return EPS
    return float(np.finfo(dt).eps) if dt.kind == "f" else EPS


def as_matrix(W: Any, name: str = "W") -> np.ndarray:
    """``W`` as a float64 numpy copy; torch tensors are detached and moved to the CPU.

    Raises ``ValueError`` (naming the argument and the received shape) unless ``W`` is a finite,
    real, square, non-empty 2-D matrix.
    """
    if hasattr(W, "detach"):
        W = W.detach().cpu().double()
    try:
        arr = np.asarray(W)
    except Exception as exc:  # ragged lists and similar
        raise ValueError(f"{name} must be a square 2-D real matrix; could not convert the "
                         f"received {type(W).__name__}: {exc}") from None
    shape = tuple(arr.shape)
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be a real numeric matrix; received dtype {arr.dtype} "
                         f"with shape {shape}")
    if arr.ndim != 2 or shape[0] != shape[1] or shape[0] == 0:
        raise ValueError(f"{name} must be a square 2-D matrix (n x n, n >= 1); received shape "
                         f"{shape}")
    arr = np.array(arr, dtype=np.float64, copy=True)
    bad = int(np.count_nonzero(~np.isfinite(arr)))
    if bad:
        raise ValueError(f"{name} must be finite; received shape {shape} with {bad} NaN/inf "
                         "entries")
    return arr


def positive(name: str, value: Any, what: str) -> float:
    """``value`` as a float if it is finite and > 0, else ``ValueError``."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} ({what}) must be a finite number > 0; received "
                         f"{value!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} ({what}) must be a finite number > 0; received {value!r}")
    return v


def g_tau(g: Any, tau: Any) -> tuple[float, float]:
    """The slope bound ``g`` and time constant ``tau``, both finite and > 0."""
    return (positive("g", g, "maximum activation slope"),
            positive("tau", tau, "time constant"))


def fraction(name: str, value: Any) -> float:
    """``value`` in the open interval ``(0, 1)``."""
    v = float(value)
    if not (math.isfinite(v) and 0 < v < 1):
        raise ValueError(f"{name} must lie in the open interval (0, 1); received {value!r}")
    return v


def solver_names(solvers: str | Sequence[str]) -> tuple[str, ...]:
    """Upper-case solver names from one name or a non-empty sequence of names."""
    names = (solvers,) if isinstance(solvers, str) else tuple(solvers)
    if not names or not all(isinstance(s, str) and s for s in names):
        raise ValueError(f"solvers must be a solver name or a non-empty sequence of names "
                         f"(e.g. 'SCS', 'CLARABEL'); received {solvers!r}")
    return tuple(s.upper() for s in names)


def as_diag(name: str, x: Any, n: int) -> np.ndarray:
    """A positive diagonal matrix or vector of length ``n`` as its float64 diagonal."""
    arr = np.asarray(x.detach().cpu().double() if hasattr(x, "detach") else x, dtype=np.float64)
    if arr.ndim == 2:
        if arr.shape != (n, n) or np.any(arr - np.diag(np.diag(arr))):
            raise ValueError(f"{name} must be a positive diagonal {n}x{n} matrix or a length-{n} "
                             f"vector; received a non-diagonal matrix of shape {arr.shape}")
        arr = np.diag(arr).copy()
    if arr.shape != (n,) or not np.all(np.isfinite(arr)) or not np.all(arr > 0):
        raise ValueError(f"{name} must be a positive diagonal {n}x{n} matrix or a length-{n} "
                         f"vector with finite entries > 0; received shape {arr.shape}")
    return arr
