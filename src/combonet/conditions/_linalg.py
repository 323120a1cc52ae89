"""Small float64 helpers shared by the condition checkers: symmetric parts, round-off allowances,
and the normalisation that keeps every checker free of overflow.

A matrix with entries outside ``[2^-500, 2^500]`` is divided by a power of two ``s`` (exactly)
before anything is computed from it; in the normal range ``s = 1`` and every number is the
direct formula's. A condition ``1 - g f(W) > 0`` with ``f`` positively homogeneous is then
evaluated as ``u (beta - alpha f(W / s))`` with ``u = 1``, ``alpha = g s``, ``beta = 1`` while
``g s <= 2^500``, and ``u = g s``, ``alpha = 1``, ``beta = 1 / (g s)`` beyond: no intermediate
overflows for any finite ``W``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

EPS = float(np.finfo(np.float64).eps)
_MIN_EXP, _MAX_EXP = -1022, 1023  # powers of two that are normal float64 numbers


def sym(a: np.ndarray) -> np.ndarray:
    """``(a + a^T) / 2`` without overflow for entries near the float64 limit."""
    return a / 2 + a.T / 2


def fro(b: np.ndarray) -> float:
    """``||b||_F`` without intermediate overflow (``inf`` only when the norm itself is)."""
    m = float(np.max(np.abs(b))) if b.size else 0.0
    if m == 0 or not math.isfinite(m):
        return m
    return float(np.linalg.norm(b / m)) * m


def eig_tol(b: np.ndarray) -> float:
    """Round-off allowance for ``lambda_max`` of a float64 matrix built from ``b``."""
    return 64.0 * b.shape[0] * EPS * (fro(b) + 1.0)


def normalised_rate(b: np.ndarray) -> float:
    """``-lambda_max((B + B^T) / 2)``; ``-inf`` if ``B`` has a non-finite entry."""
    if not np.all(np.isfinite(b)):
        return -math.inf
    return float(-np.linalg.eigvalsh(sym(b))[-1])


def diag_kappa(p: np.ndarray) -> float:
    """Condition number ``max p / min p`` of a positive diagonal metric (``inf`` on overflow)."""
    with np.errstate(over="ignore"):
        return float(p.max() / p.min())


_BIG = 2.0**500  # beyond this (or below its inverse) matrices are normalised first


def pow2_scale(W: np.ndarray) -> tuple[np.ndarray, float]:
    """``(W / s, s)``: ``s = 1`` if ``max |W|`` lies in ``[2^-500, 2^500]`` (or ``W = 0``),
    else the power of two just above ``max |W|``.

    The division is exact, and every positively homogeneous quantity of ``W`` is ``s`` times
    that of ``W / s``; products of two entries of ``W / s`` cannot overflow.
    """
    m = float(np.max(np.abs(W))) if W.size else 0.0
    if m == 0 or 1.0 / _BIG <= m <= _BIG:
        return W.copy(), 1.0
    s = pow2(m)
    return W / s, s


def pow2_normalise(W: np.ndarray) -> tuple[np.ndarray, float]:
    """``(W / s, s)`` with ``s`` the power of two just above ``max |W|`` (1 for ``W = 0``), for
    scale-invariant computations: ``|W / s| <= 1`` (``<= 2`` beyond ``2^1023``), exactly."""
    m = float(np.max(np.abs(W))) if W.size else 0.0
    s = pow2(m)
    return W / s, s


def pow2(m: float) -> float:
    """The power of two just above ``m > 0`` (clamped to normal float64 powers; 1 for ``m = 0``
    or non-finite ``m``)."""
    if not (m > 0 and math.isfinite(m)):
        return 1.0
    return math.ldexp(1.0, min(max(math.frexp(m)[1], _MIN_EXP), _MAX_EXP))


class Unit(NamedTuple):
    """``u`` with ``g s = u alpha`` and ``1 = u beta`` (``alpha, beta <= 2^500``)."""

    alpha: float
    beta: float
    u: float  # inf when g s exceeds float64; log_u is then exact
    log_u: float

    def scale(self, x: float) -> float:
        """``x * u``: ``+-inf`` only when the true value exceeds float64."""
        if x == 0 or self.u == 1:
            return x
        if math.isfinite(self.u):
            return x * self.u
        k = math.ceil(self.log_u / 700.0)  # u = e^{log_u}, applied in k factors below e^700
        step = math.exp(self.log_u / k)
        for _ in range(k):
            x *= step
        return x


def unit(g: float, s: float) -> Unit:
    """:class:`Unit` for ``g s``: ``u = 1`` up to ``g s = 2^500`` (the direct formula), else
    ``u = g s`` (carried as its logarithm if ``g s`` overflows)."""
    sigma = g * s
    if sigma <= _BIG:
        return Unit(sigma, 1.0, 1.0, 0.0)
    if math.isfinite(sigma):
        return Unit(1.0, 1.0 / sigma, sigma, math.log(sigma))
    log_u = math.log(g) + math.log(s)
    return Unit(1.0, math.exp(-log_u), math.inf, log_u)


def one_minus(unit: Unit, f_hat: float, n: int, norm_hat: float) -> tuple[float, bool]:
    """``(1 - g f(W), holds)`` from ``f_hat = f(W^)``, ``W^ = W / s``, ``unit = unit(g, s)``,
    for a positively homogeneous ``f``.

    ``holds`` means ``1 - g f(W) > 64 n eps (g ||W|| + 1)`` (the round-off allowance of
    ``eig_tol`` applied to ``g W``), evaluated after division by ``u`` as
    ``beta - alpha f_hat > 64 n eps (alpha ||W^|| + beta)``; ``norm_hat = ||W^||_F``. The margin
    is returned in original units (``-inf`` when ``g f(W)`` exceeds float64).
    """
    m_hat = unit.beta - unit.alpha * f_hat
    tol_hat = 64.0 * n * EPS * (unit.alpha * norm_hat + unit.beta)
    return unit.scale(m_hat), bool(m_hat > tol_hat)


def rel_asymmetry(a: np.ndarray) -> float:
    """``max |A - A^T| / max(1, max |A|)``, computed without overflow."""
    a_hat, s = pow2_scale(a)
    m = float(np.max(np.abs(a)))
    d_hat = float(np.max(np.abs(a_hat - a_hat.T)))  # = max |A - A^T| / s, exactly
    return d_hat / (m / s) if m >= 1 else d_hat * s


def fmt(x: float, spec: str = ".4g") -> str:
    """``format(x, spec)``, with float64 overflow written as ``> 1.8e308`` / ``< -1.8e308``."""
    if math.isinf(x):
        return "> 1.8e308" if x > 0 else "< -1.8e308"
    return format(x, spec)


def normalise_diag(p: np.ndarray) -> np.ndarray:
    """``p / min p``; if that overflows, ``p / sqrt(min p max p)`` (centred, still finite)."""
    with np.errstate(over="ignore"):
        q = p / p.min()
    if np.all(np.isfinite(q)):
        return q
    return p / (math.sqrt(p.min()) * math.sqrt(p.max()))
