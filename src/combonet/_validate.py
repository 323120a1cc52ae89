"""One place for argument checks: every error names the argument, what is allowed and what came.

The wording is always ``NAME must be WHAT IS ALLOWED, got VALUE`` (choices:
``Invalid NAME: must be one of [...], got VALUE``), so a user reads one kind of message
whichever layer refused the value. The functions raise ``ValueError``; callers that need their
own error class (``ConfigError``, ``ExperimentError``) catch and re-raise it.
"""

from __future__ import annotations

import math
import stat
from collections.abc import Iterable, Sequence
from typing import Any

import torch

#: The largest float32 (weights and learning rates end up in float32 tensors).
FLOAT32_MAX = float(torch.finfo(torch.float32).max)
#: Seeds are used by numpy, python ``random`` and ``torch.Generator``: all accept [0, 2^32).
SEED_MAX = 2**32 - 1
#: More intra-op threads than this is never useful (and torch crashes on some huge values).
THREADS_MAX = 1024


def _fmt(x: float) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def positive(name: str, value: float, *, hi: float | None = None) -> float:
    """Return ``value`` as float if it is finite and > 0 (and <= ``hi``), else raise."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number, got {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(v) or v <= 0 or (hi is not None and v > hi):
        limit = "" if hi is None else f" and <= {_fmt(hi)}"
        raise ValueError(f"{name} must be a finite number > 0{limit}, got {value!r}")
    return v


def non_negative(name: str, value: float, *, hi: float | None = None,
                 hi_open: bool = False) -> float:
    """Return ``value`` as float if it is finite and >= 0 (and below ``hi``), else raise."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and hi is not None:
        ok = value < hi if hi_open else value <= hi
    if not ok or value < 0:
        limit = "" if hi is None else f" and {'<' if hi_open else '<='} {_fmt(hi)}"
        raise ValueError(f"{name} must be a finite number >= 0{limit}, got {value!r}")
    return float(value)


def positive_int(name: str, value: int) -> int:
    """Return ``value`` if it is an int >= 1, else raise ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def integer(name: str, value: Any, lo: int | None = None, hi: int | None = None) -> int:
    """Return ``value`` if it is an int in ``[lo, hi]`` (either end optional), else raise."""
    ok = not isinstance(value, bool) and isinstance(value, int)
    ok = ok and (lo is None or value >= lo) and (hi is None or value <= hi)
    if not ok:
        if lo is not None and hi is not None:
            allowed = f"an integer in [{lo}, {hi}]"
        elif lo is not None:
            allowed = f"an integer >= {lo}"
        elif hi is not None:
            allowed = f"an integer <= {hi}"
        else:
            allowed = "an integer"
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return value


def seed(name: str, value: Any) -> int:
    """A seed: an integer in ``[0, 2^32 - 1]``."""
    return integer(name, value, 0, SEED_MAX)


def threads(name: str, value: Any) -> int | str:
    """A number of torch CPU threads: an integer in ``[1, 1024]``, or ``"auto"`` (the rule of
    :mod:`combonet.threads`)."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "auto":
            return "auto"
        if text.lstrip("-").isdigit():
            return integer(name, int(text), 1, THREADS_MAX)
        raise ValueError(f'{name} must be "auto" or an integer in [1, {THREADS_MAX}], '
                         f"got {value!r}")
    return integer(name, value, 1, THREADS_MAX)


def in_interval(name: str, value: float, lo: float, hi: float, *, lo_open: bool = True,
                hi_open: bool = False, hint: str = "") -> float:
    """Check ``value`` lies in the interval (lo, hi] (ends configurable)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = math.nan
    ok_lo = v > lo if lo_open else v >= lo
    ok_hi = v < hi if hi_open else v <= hi
    if isinstance(value, bool) or not (math.isfinite(v) and ok_lo and ok_hi):
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        extra = f" ({hint})" if hint else ""
        raise ValueError(f"{name} must lie in {left}{lo}, {hi}{right}, "
                         f"got {value!r}{extra}")
    return v


def choice(name: str, value: Any, allowed: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``allowed`` (e.g. a registry's keys), else raise."""
    options = list(allowed)
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"Invalid {name}: must be one of {options}, got {value!r}")
    return value


def file_kind(mode: int) -> str:
    """'a directory', 'a FIFO', 'a character device', ... for an ``os.stat`` mode."""
    kinds = ((stat.S_ISREG, "a regular file"), (stat.S_ISDIR, "a directory"),
             (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
    return next((text for test, text in kinds if test(mode)), "not a regular file")


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
