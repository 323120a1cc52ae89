"""Metzler matrices: Theorem 1 (``g|W| - I`` Hurwitz), Theorem 4 (``g W - I`` triangular and
Hurwitz) and the Hierarchy weights, with the maths written once, in float64 torch.

A Metzler matrix ``A`` (off-diagonal entries ``>= 0``) is Hurwitz iff it is diagonally stable:
with ``v = -A^{-1} 1 > 0`` and ``w = -A^{-T} 1 > 0`` the diagonal ``P = diag(w / v)`` satisfies
``P A + A^T P < 0``, because ``(P A + A^T P) v = -(p + 1) < 0`` and a symmetric Metzler matrix
that maps a positive vector to a negative one is negative definite (DESIGN.md section 3).
Theorem 1 applies this to the comparison matrix ``A = g|W| - I`` (``|W|_ii := 0`` where
``W_ii <= 0``): for every slope matrix ``D`` in ``[0, g]^n``,
``x^T P (-I + W D) x <= |x|^T P A |x|``, so the module contracts in ``P``. Theorem 4's
triangular ``g W - I`` has a triangular comparison matrix, Hurwitz iff its diagonal is negative.

The maths (:func:`comparison_matrix`, :func:`closed_form_metric`,
:func:`rate_in_diagonal_metric`, :func:`spectral_radius`, :func:`theorem1_radius`) takes torch
tensors -- computing and returning float64 tensors, differentiable (the modules and the
Hierarchy weights train through it) -- or anything numpy accepts, returning numpy arrays and
floats for the checkers :func:`check_theorem1`, :func:`theorem1_metric`, :func:`check_theorem4`.

Range: for a *triangular* ``A`` the substitutions for ``v`` and ``w`` add positive terms only
(no cancellation, unlike a pivoted LU solve), and when ``v``, ``w`` or ``w / v`` leave the
float64 range they are redone in logarithms. A metric is returned whenever its condition number
is at most ``KAPPA_MAX = 2^1022`` (so that ``P`` and ``P^{-1}`` are normal float64 numbers);
otherwise :class:`MetricRangeError` says so, with a lower bound that holds for *every* diagonal
metric (from the 2x2 principal minors: ``p_j / p_i > A_ij^2 / (4 A_ii A_jj)`` for ``A_ij > 0``
in a triangular ``A``), so the message tells whether any representable diagonal metric exists.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from ._inputs import as_matrix, fraction, g_tau, positive, solver_names
from ._linalg import EPS, diag_kappa, eig_tol, fmt, fro, pow2
from ._solvers import GP_SOLVERS, cvxpy, solve
from .results import ConditionResult

__all__ = [
    "KAPPA_MAX",
    "MetricRangeError",
    "NotHurwitzError",
    "check_theorem1",
    "check_theorem4",
    "closed_form_metric",
    "comparison_matrix",
    "rate_in_diagonal_metric",
    "spectral_radius",
    "theorem1_metric",
    "theorem1_radius",
]

#: Largest condition number of a returned diagonal metric: ``P`` and ``P^{-1}`` (``min P = 1``)
#: are then normal float64 numbers.
KAPPA_MAX = 2.0**1022
_LOG_KAPPA_MAX = 1022 * math.log(2.0)
_TINY = float(torch.finfo(torch.float64).tiny)
_LN10 = math.log(10.0)

ArrayLike = Any  # a torch tensor, a numpy array, or nested sequences of numbers


class NotHurwitzError(ValueError):
    """The Metzler matrix is not Hurwitz, so no diagonal metric exists; ``reason`` says why."""

    def __init__(self, reason: str, what: str = "A") -> None:
        self.reason = reason
        super().__init__(f"{what} is not Hurwitz: {reason}")


class MetricRangeError(ValueError):
    """The Metzler matrix is Hurwitz, but its diagonal metric cannot be represented (or not
    computed) in float64; ``reason`` says why, and whether any diagonal metric could be."""

    def __init__(self, reason: str, what: str = "A") -> None:
        self.reason = reason
        super().__init__(f"{what} is Hurwitz, but {reason}")


# -- conversions ----------------------------------------------------------------------------
def _matrix(a: ArrayLike, name: str, finite: bool = True) -> tuple[torch.Tensor, bool]:
    """``(float64 tensor, input was a tensor)``; numpy input is validated by ``as_matrix``."""
    if isinstance(a, torch.Tensor):
        if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape[0] == 0:
            raise ValueError(f"{name} must be a square 2-D matrix (n x n, n >= 1); received "
                             f"shape {tuple(a.shape)}")
        return a.to(torch.float64), True
    if finite:
        return torch.from_numpy(as_matrix(a, name)), False
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1] or arr.shape[0] == 0:
        raise ValueError(f"{name} must be a square 2-D matrix (n x n, n >= 1); received shape "
                         f"{arr.shape}")
    return torch.from_numpy(arr.copy()), False


def _out(t: torch.Tensor, as_tensor: bool):
    return t if as_tensor else t.detach().cpu().numpy()


def _abs_clipped(w: torch.Tensor) -> torch.Tensor:
    """``|W|`` with ``|W|_ii := max(W_ii, 0)`` (Theorem 1's absolute value)."""
    eye = torch.eye(w.shape[0], dtype=torch.bool, device=w.device)
    return torch.where(eye, w.clamp(min=0.0), w.abs())


# -- the maths --------------------------------------------------------------------------------
def comparison_matrix(W: ArrayLike, g: float = 1.0):
    """``A = g|W| - I`` with ``|W|_ii := 0`` where ``W_ii <= 0`` (Theorem 1).

    ``A`` is Metzler; Theorem 1 holds iff it is Hurwitz, i.e. ``spectral_radius(g|W|) < 1``.
    A tensor ``W`` gives a float64 tensor (differentiable); anything else is validated by
    :func:`as_matrix` and gives a numpy array. Entries ``g|W_ij|`` beyond float64 are ``inf``.
    """
    g = positive("g", g, "maximum activation slope")
    w, as_tensor = _matrix(W, "W")
    eye = torch.eye(w.shape[0], dtype=torch.float64, device=w.device)
    return _out(g * _abs_clipped(w) - eye, as_tensor)


def spectral_radius(a: ArrayLike) -> float:
    """Largest eigenvalue modulus, computed on ``a / s`` (``s`` a power of two near ``max|a|``)
    so that it never overflows before the result does (``inf`` then); ``nan`` if ``a`` has a
    NaN, ``inf`` if it has an infinite entry."""
    t, _ = _matrix(a, "a", finite=False)
    t = t.detach()
    if bool(torch.isnan(t).any()):
        return math.nan
    if bool(torch.isinf(t).any()):
        return math.inf
    m = float(t.abs().max())
    if m == 0:
        return 0.0
    s = pow2(m)
    return float(torch.linalg.eigvals(t / s).abs().max()) * s


def theorem1_radius(W: ArrayLike, g: float = 1.0) -> float:
    """``spectral_radius(g|W|)`` with ``|W|_ii := 0`` where ``W_ii <= 0``: Theorem 1 holds iff it
    is ``< 1``. Computed as ``g * spectral_radius(|W|)`` (no cancellation against ``I``)."""
    g = positive("g", g, "maximum activation slope")
    w, _ = _matrix(W, "W", finite=False)
    return g * spectral_radius(_abs_clipped(w.detach()))


def _similar(a: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """``P^{1/2} A P^{-1/2}`` for a positive diagonal ``P = diag(p)``."""
    s = p.sqrt()
    return a * (s[:, None] / s[None, :])


def rate_in_diagonal_metric(a: ArrayLike, p: ArrayLike):
    """``mu = -lambda_max(sym(P^{1/2} A P^{-1/2}))``, the largest ``mu`` with
    ``P A + A^T P <= -2 mu P`` (``P = diag(p)``); ``-inf`` when the scaled matrix has an entry
    beyond float64 (its symmetric part then has an eigenvalue beyond float64 too).

    For Theorem 1 pass ``A = g|W| - I``: the module contracts in ``P`` with rate ``mu / tau``.
    Tensor ``a``: a float64 0-d tensor (differentiable); otherwise a float.
    """
    t, as_tensor = _matrix(a, "A", finite=False)
    pt = torch.as_tensor(p, dtype=torch.float64, device=t.device)
    n = t.shape[0]
    if pt.shape != (n,) or not bool((torch.isfinite(pt) & (pt > 0)).all()):
        raise ValueError(f"p (diagonal metric) must be a vector of {n} finite entries > 0; "
                         f"received shape {tuple(pt.shape)}")
    b = _similar(t, pt)
    if bool(torch.isfinite(b).all()):
        rate = -torch.linalg.eigvalsh(b / 2 + b.T / 2)[-1]
    else:
        rate = torch.tensor(-math.inf, dtype=torch.float64, device=t.device)
    return rate if as_tensor else float(rate)


def closed_form_metric(a: ArrayLike):
    """Diagonal of ``P = diag(w / v)``, ``v = -A^{-1} 1``, ``w = -A^{-T} 1``, for a Hurwitz
    Metzler ``A``, normalised to ``min P = 1`` (Theorems 1 and 4; the Hierarchy weights).

    Tensor ``a``: a float64 tensor, differentiable in ``a``; otherwise a numpy array.
    Triangular ``A`` (Theorem 4, Hierarchy) is solved by substitution, whose terms are all
    positive, and in logarithms when that leaves the float64 range; Hurwitz is then exact
    (negative diagonal). Other ``A`` use an LU solve.

    Raises :class:`NotHurwitzError` if ``A`` is not Hurwitz, :class:`MetricRangeError` if it is
    but the metric's condition number exceeds :data:`KAPPA_MAX` (or, for non-triangular ``A``,
    ``v`` could not be computed positive), ``ValueError`` if ``A`` is not a finite Metzler matrix.
    """
    t, as_tensor = _matrix(a, "A", finite=False)
    an = t.detach().cpu().numpy()  # structural checks in numpy: cheap for small matrices
    n = an.shape[0]
    if np.isnan(an).any():
        raise ValueError(f"A must be a finite Metzler matrix; received an {n}x{n} matrix with "
                         f"{int(np.isnan(an).sum())} NaN entries")
    off = an - np.diag(np.diag(an))
    if (off < 0).any():
        i, j = np.argwhere(off < 0)[0]
        raise ValueError(f"A must be Metzler (off-diagonal entries >= 0); received A[{i},{j}] = "
                         f"{an[i, j]:.4g}")
    lower, upper = not np.triu(an, 1).any(), not np.tril(an, -1).any()
    if not (lower or upper):
        return _out(_general_metric(t, an), as_tensor)
    return _out(_triangular_metric(t, an, upper=not lower), as_tensor)


def _triangular_metric(t: torch.Tensor, an: np.ndarray, upper: bool) -> torch.Tensor:
    d = np.diag(an)
    if not (d < 0).all():
        i = int(np.argmax(~(d < 0)))
        raise NotHurwitzError(
            f"it is triangular with diagonal entry A[{i},{i}] = {d[i]:.4g} >= 0 (a "
            "triangular Metzler matrix is Hurwitz iff its diagonal is negative)")
    if not np.isfinite(d).all():
        raise ValueError("A must be finite; received a diagonal entry -inf")
    if not np.isfinite(an).all():
        raise MetricRangeError(
            "it has an off-diagonal entry beyond float64 (it is triangular with a negative "
            "diagonal), so every diagonal metric has a condition number beyond float64 "
            "(p_j / p_i > A_ij^2 / (4 A_ii A_jj)): none is representable")
    minus_one = -torch.ones(t.shape[0], 1, dtype=torch.float64, device=t.device)
    v = torch.linalg.solve_triangular(t, minus_one, upper=upper)[:, 0]
    w = torch.linalg.solve_triangular(t.T, minus_one, upper=not upper)[:, 0]
    p = _ratio_metric(v, w)
    if p is None:
        log_p = _log_substitution(t.T, not upper) - _log_substitution(t, upper)
        p = _from_logs(log_p, t, triangular=True)
    return p


def _general_metric(t: torch.Tensor, an: np.ndarray) -> torch.Tensor:
    if not np.isfinite(an).all():
        raise ValueError("A must be finite (a non-triangular A with an entry beyond float64 "
                         "cannot be decided Hurwitz in float64)")
    minus_one = -torch.ones(t.shape[0], 1, dtype=torch.float64, device=t.device)
    try:
        v = torch.linalg.solve(t, minus_one)[:, 0]
        w = torch.linalg.solve(t.T, minus_one)[:, 0]
    except RuntimeError:  # torch.linalg.LinAlgError: an exactly singular A
        raise NotHurwitzError("it is singular") from None
    p = _ratio_metric(v, w)
    if p is not None:
        return p
    vn, wn = v.detach().cpu().numpy(), w.detach().cpu().numpy()
    if (np.isfinite(vn) & np.isfinite(wn) & (vn > 0) & (wn > 0)).all():
        return _from_logs(torch.log(w) - torch.log(v), t, triangular=False)
    m = float(np.abs(an).max())
    abscissa = float(np.linalg.eigvals(an / m).real.max()) * m
    tol = 64.0 * an.shape[0] * EPS * fro(an)
    if abscissa < -tol:
        raise MetricRangeError(
            f"-A^{{-1}} 1 could not be computed positive in float64 (spectral abscissa "
            f"{abscissa:.3g}; A is too ill-conditioned for an LU solve), so the closed-form "
            "diagonal metric is not available")
    raise NotHurwitzError(f"-A^{{-1}} 1 is not positive (spectral abscissa {abscissa:.3g})")


def _ratio_metric(v: torch.Tensor, w: torch.Tensor) -> torch.Tensor | None:
    """``(w / v) / min(w / v)`` if every step stays in the normal float64 range, else ``None``."""
    vn, wn = v.detach().cpu().numpy(), w.detach().cpu().numpy()
    if not (np.isfinite(vn) & np.isfinite(wn) & (vn >= _TINY) & (wn >= _TINY)).all():
        return None
    with np.errstate(over="ignore", under="ignore"):
        pn = wn / vn
        if not (np.isfinite(pn) & (pn >= _TINY)).all() or not pn.max() / pn.min() <= KAPPA_MAX:
            return None
    p = w / v
    return p / p.min()


def _log_substitution(t: torch.Tensor, upper: bool) -> torch.Tensor:
    """``log x`` for the positive solution of ``T x = -1``, ``T`` triangular Metzler with a
    negative diagonal: ``x_i = (1 + sum_j T_ij x_j) / |T_ii|`` summed with ``logsumexp``."""
    if upper:  # J T J is lower triangular (J the reversal), and x = J (J T J)^{-1} (-1)
        return _log_substitution(t.flip(0, 1), False).flip(0)
    n = t.shape[0]
    neg_log_d = -torch.log(-torch.diagonal(t))
    log_t = torch.where(t > 0, t.clamp(min=_TINY).log(), torch.full_like(t, -math.inf))
    zero = t.new_zeros(1)
    logs: list[torch.Tensor] = []
    for i in range(n):
        terms = zero if i == 0 else torch.cat([zero, log_t[i, :i] + torch.stack(logs)])
        logs.append(torch.logsumexp(terms, 0) + neg_log_d[i])
    return torch.stack(logs)


def _from_logs(log_p: torch.Tensor, t: torch.Tensor, triangular: bool) -> torch.Tensor:
    log_p = log_p - log_p.min()
    top = float(log_p.detach().max())
    if not top <= _LOG_KAPPA_MAX:
        msg = (f"its closed-form diagonal metric P = diag(w / v) has condition number about "
               f"1e{top / _LN10:.0f}, beyond float64 (P and P^-1 stay normal float64 numbers "
               f"only up to 2^1022 = 4.5e307)")
        if triangular:
            bound = _log_kappa_lower_bound(t.detach())
            if bound > _LOG_KAPPA_MAX:
                msg += (f"; no diagonal metric is representable: every one has condition number "
                        f"above 1e{bound / _LN10:.0f} (2x2 principal minors)")
            else:
                msg += (f"; the 2x2 principal minors only force a condition number above "
                        f"1e{bound / _LN10:.0f}, so a better-conditioned diagonal metric may exist")
        raise MetricRangeError(msg)
    return torch.exp(log_p)


def _log_kappa_lower_bound(t: torch.Tensor) -> float:
    """``log`` of a lower bound on ``kappa(P)`` for every diagonal ``P`` with
    ``P A + A^T P < 0``, ``A`` triangular Metzler with a negative diagonal.

    The 2x2 principal minor ``(i, j)`` of ``-(P A + A^T P)`` is positive only if
    ``p_j / p_i > A_ij^2 / (4 A_ii A_jj)`` (``A_ji = 0``); chaining these along the longest path
    of the (acyclic) graph of ``A`` bounds ``max p / min p``.
    """
    a = t.cpu().numpy()
    if np.any(np.tril(a, -1)):  # orient as upper triangular: edges i -> j with i < j
        a = a[::-1, ::-1]
    n = a.shape[0]
    log_d = np.log(-np.diag(a))
    with np.errstate(divide="ignore"):
        c = 2.0 * np.log(np.triu(a, 1)) - math.log(4.0) - log_d[:, None] - log_d[None, :]
    c[np.tril_indices(n)] = -math.inf
    best = np.zeros(n)  # best[j]: largest bound of log(p_j / p_i) over paths ending at j
    for j in range(1, n):
        best[j] = max(0.0, float(np.max(best[:j] + c[:j, j])))
    return float(best.max())


# -- Theorem 1 --------------------------------------------------------------------------------
def _rate_and_tol(a: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """``rate_in_diagonal_metric(a, p)`` and the round-off allowance of its eigenvalue."""
    b = _similar(torch.from_numpy(a), torch.from_numpy(p)).numpy()
    mu = rate_in_diagonal_metric(a, p)
    return mu, (eig_tol(b) if np.all(np.isfinite(b)) else math.inf)


def _best_diagonal_gp(a: np.ndarray,
                      mu_min: float) -> Callable[[], tuple[Any, Callable[[], np.ndarray]]]:
    """Geometric program for the best-conditioned diagonal ``P`` with rate ``>= mu_min``.

    ``B = A + mu_min I`` is Metzler, so the symmetric Metzler ``S = P B + B^T P`` is ``<= 0``
    iff some ``u > 0`` has ``S u <= 0`` (Perron-Frobenius, blockwise for reducible ``S``).
    Row ``i`` of ``S u <= 0`` divided by ``-2 B_ii p_i u_i > 0`` is the posynomial constraint
    ``sum_j B_ij/(-2B_ii) u_j/u_i + B_ji/(-2B_ii) p_j u_j/(p_i u_i) <= 1``, convex in
    ``l = log p``, ``e = log u``. Minimise ``T`` with ``0 <= l_i <= T`` (so ``kappa(P) = e^T``).
    Working in logarithms keeps metrics with ``kappa ~ 1e10`` well scaled for the solver.
    """
    cp = cvxpy()
    n = a.shape[0]
    b = a + mu_min * np.eye(n)
    off = b.copy()
    np.fill_diagonal(off, 0.0)
    d = -2.0 * np.diag(b)

    def build():
        ell, eta, top = cp.Variable(n), cp.Variable(n), cp.Variable()
        cons = [ell >= 0, ell <= top]
        for i in range(n):
            terms = []
            row = np.nonzero(off[i] > 0)[0]
            col = np.nonzero(off[:, i] > 0)[0]
            if row.size:
                terms.append(eta[row] - eta[i] + np.log(off[i, row] / d[i]))
            if col.size:
                terms.append(ell[col] - ell[i] + eta[col] - eta[i] + np.log(off[col, i] / d[i]))
            if terms:
                expr = terms[0] if len(terms) == 1 else cp.hstack(terms)
                cons.append(cp.log_sum_exp(expr) <= 0)
        problem = cp.Problem(cp.Minimize(top), cons)

        def extract() -> np.ndarray:
            if ell.value is None:
                raise ValueError("no solution values")
            lv = np.asarray(ell.value, dtype=np.float64)
            p = np.exp(lv - lv.min())
            if not np.all(np.isfinite(p)):
                raise ValueError("non-finite metric")
            return p

        return problem, extract

    return build


def _theorem1_closed_form(W: np.ndarray, g: float, a: np.ndarray) -> np.ndarray:
    """The verified closed-form Theorem-1 metric, or ``NotHurwitzError`` / ``MetricRangeError``
    / ``ValueError`` saying why there is none."""
    if not np.all(np.isfinite(a)):  # some g|W_ij| exceeds float64
        rho = theorem1_radius(W, g)
        if not rho < 1:
            raise NotHurwitzError("g|W| has entries beyond float64, so no diagonal metric exists",
                                  "Theorem 1 fails: g|W| - I")
        raise MetricRangeError(
            "it has an entry g|W_ij| beyond float64 (1.8e308), so every diagonal metric has "
            "condition number above (g|W_ij|)^2 / 4: none is representable", "g|W| - I")
    try:
        p = closed_form_metric(a)
    except NotHurwitzError as exc:
        raise NotHurwitzError(f"{exc.reason}, so no diagonal metric exists",
                              "Theorem 1 fails: g|W| - I") from None
    except MetricRangeError as exc:
        raise MetricRangeError(exc.reason, "g|W| - I") from None
    mu, tol = _rate_and_tol(a, p)
    if not mu > tol:
        raise ValueError(f"Theorem 1 closed-form metric failed float64 verification (rate "
                         f"{mu:.3g}); g|W| - I is at best marginally Hurwitz")
    return p


def _theorem1_metric_info(W: np.ndarray, g: float, best: bool, mu_fraction: float,
                          solvers: Sequence[str]) -> tuple[np.ndarray, dict[str, Any]]:
    a = comparison_matrix(W, g)
    p_cf = _theorem1_closed_form(W, g, a)
    mu_cf = rate_in_diagonal_metric(a, p_cf)
    info: dict[str, Any] = {"method": "closed form", "kappa_closed_form": diag_kappa(p_cf),
                            "rate_closed_form": mu_cf}
    off = a - np.diag(np.diag(a))
    if not best or diag_kappa(p_cf) <= 1 + 1e-12 or not np.any(off > 0):
        if not np.any(off > 0):
            p_cf = np.ones_like(p_cf)  # diagonal A: the identity is optimal
            info["method"] = "identity (W has no off-diagonal coupling)"
        return p_cf, info
    mu_min = mu_fraction * mu_cf

    def verify(p: np.ndarray) -> tuple[bool, str]:
        mu = rate_in_diagonal_metric(a, p)
        kappa = diag_kappa(p)
        ok = bool(mu >= 0.9 * mu_min and kappa <= diag_kappa(p_cf))
        return ok, f"verified rate {mu:.4g} (need {0.9 * mu_min:.4g}), kappa {kappa:.4g}"

    # the float64 check decides, so SCS may stop early (eps 1e-8 costs ~1 s at n = 32)
    p_best, status, log = solve(_best_diagonal_gp(a, mu_min), solvers, verify,
                                {"SCS": {"eps_abs": 1e-6, "eps_rel": 1e-6}})
    info["solver_log"] = log
    if p_best is None:
        info["method"] = "closed form (best-metric solve failed or was not better)"
        return p_cf, info
    info["method"] = f"best conditioned ({status})"
    return p_best / p_best.min(), info


def theorem1_metric(W: ArrayLike, g: float = 1.0, best: bool = True, *, mu_fraction: float = 0.25,
                    solvers: str | Sequence[str] = GP_SOLVERS) -> np.ndarray:
    """Diagonal of a verified Theorem-1 metric ``P`` (1-D, normalised to ``min P = 1``).

    Closed form (DESIGN.md section 3): ``P = diag(w / v)``, ``v = -A^{-1} 1``,
    ``w = -A^{-T} 1``, ``A = g|W| - I`` (:func:`closed_form_metric`). With ``best=True`` the
    best-conditioned diagonal ``P`` is computed instead: minimise ``t`` subject to
    ``I <= P <= t I`` and ``P A + A^T P <= -2 mu_min P`` with
    ``mu_min = mu_fraction * mu_closed_form``, solved as the equivalent geometric program of
    ``_best_diagonal_gp``. Requiring a rate trades conditioning for speed of contraction: on
    32-unit modules ``mu_fraction`` 0.25 -> 0.01 lowers ``kappa(P)`` only ~1.5x while dividing
    the guaranteed rate by 25. Because the closed form is feasible, the optimum is never worse
    conditioned than it. The solution is accepted only if float64 verification gives a rate
    ``>= 0.9 mu_min``; otherwise the closed form is returned. Raises ``ValueError`` if Theorem 1
    fails (``spectral_radius(g|W|) >= 1``; :class:`NotHurwitzError`) or if no closed-form metric
    is representable in float64 (:class:`MetricRangeError`).
    """
    W = as_matrix(W)
    g = positive("g", g, "maximum activation slope")
    p, _ = _theorem1_metric_info(W, g, bool(best), fraction("mu_fraction", mu_fraction),
                                 solver_names(solvers))
    return p


def check_theorem1(W: ArrayLike, g: float = 1.0, tau: float = 1.0, best_metric: bool = True, *,
                   mu_fraction: float = 0.25,
                   solvers: str | Sequence[str] = GP_SOLVERS) -> ConditionResult:
    """Theorem 1: ``g|W| - I`` Hurwitz (``|W|_ii := 0`` where ``W_ii <= 0``) gives a diagonal
    metric ``P`` (see :func:`theorem1_metric`) with rate ``mu / tau``
    (:func:`rate_in_diagonal_metric`). ``spectral_radius(g|W|)`` is computed without overflow;
    when the condition holds but no metric is representable in float64 the result does not
    hold and says so.
    """
    W = as_matrix(W)
    g, tau = g_tau(g, tau)
    mu_fraction = fraction("mu_fraction", mu_fraction)
    solvers = solver_names(solvers)
    rho = theorem1_radius(W, g)
    details: dict[str, Any] = {"spectral_radius": rho}
    try:
        p, info = _theorem1_metric_info(W, g, best_metric, mu_fraction, solvers)
    except ValueError as exc:
        verdict = f"{fmt(rho, '.6g')} < 1" if rho < 1 else f"{fmt(rho, '.6g')} (needs < 1)"
        return ConditionResult("Theorem 1", False, min(1.0 - rho, 0.0), None, None,
                               f"{exc}; spectral_radius(g|W|) = {verdict}", details)
    a = comparison_matrix(W, g)
    mu = rate_in_diagonal_metric(a, p)
    details.update(info)
    details["kappa"] = diag_kappa(p)
    msg = (f"spectral_radius(g|W|) = {rho:.6g} < 1, so g|W| - I is Hurwitz; diagonal metric "
           f"P ({info['method']}, kappa {diag_kappa(p):.4g}) satisfies "
           f"P A + A^T P <= -2 mu P with mu = {mu:.4g}, rate mu / tau = {mu / tau:.4g}")
    return ConditionResult("Theorem 1", True, mu, np.diag(p), mu / tau, msg, details)


# -- Theorem 4 --------------------------------------------------------------------------------
def check_theorem4(W: ArrayLike, g: float = 1.0, tau: float = 1.0) -> ConditionResult:
    """Theorem 4: ``g W - I`` (lower or upper) triangular and Hurwitz (``g W_ii < 1``).

    Metric: :func:`closed_form_metric` of the comparison matrix (diagonal
    ``-1 + g max(W_ii, 0)``, off-diagonal ``g |W_ij|``; a triangular Metzler matrix with a
    negative diagonal is Hurwitz), computed by positive-term substitution, in logarithms where
    float64 would overflow; rate ``mu / tau`` from :func:`rate_in_diagonal_metric`.
    Triangularity is exact (entries off the triangle must be exactly zero). When no metric is
    representable in float64 the result does not hold and says so.
    """
    W = as_matrix(W)
    g, tau = g_tau(g, tau)
    upper_bad = np.abs(np.triu(W, 1))
    lower_bad = np.abs(np.tril(W, -1))
    lower, upper = not np.any(upper_bad), not np.any(lower_bad)
    details: dict[str, Any] = {"lower": lower, "upper": upper}
    if not (lower or upper):
        with np.errstate(over="ignore"):
            worst = g * min(float(upper_bad.max()), float(lower_bad.max()))
        return ConditionResult(
            "Theorem 4", False, -worst, None, None,
            "g W - I is not triangular: both triangles off the diagonal have nonzero entries "
            f"(the smaller offending triangle has max |g W_ij| = {fmt(worst, '.3g')})", details)
    with np.errstate(over="ignore"):
        slack = 1.0 - g * np.diag(W)
    margin = float(np.min(slack))
    if margin <= 0:
        i = int(np.argmin(slack))
        return ConditionResult(
            "Theorem 4", False, margin, None, None,
            f"g W - I is triangular but not Hurwitz: g W[{i},{i}] - 1 = {fmt(-margin, '.3g')} "
            ">= 0", details)
    a = comparison_matrix(W, g)
    try:
        p = closed_form_metric(a)
    except MetricRangeError as exc:
        return ConditionResult("Theorem 4", False, 0.0, None, None,
                               f"condition holds, but no metric is available in float64: the "
                               f"comparison matrix is Hurwitz, but {exc.reason}", details)
    mu, tol = _rate_and_tol(a, p)
    if not mu > tol:
        return ConditionResult(
            "Theorem 4", False, 0.0, None, None,
            f"condition holds but the closed-form metric failed float64 verification (rate "
            f"{mu:.3g}, kappa {diag_kappa(p):.3g})", details)
    details["kappa"] = diag_kappa(p)
    shape = "lower" if lower else "upper"
    msg = (f"g W - I is {shape} triangular with diagonal <= {fmt(-margin)} < 0 (Hurwitz); "
           f"diagonal metric from the comparison matrix (kappa {diag_kappa(p):.4g}), "
           f"rate {mu / tau:.4g}")
    return ConditionResult("Theorem 4", True, margin, np.diag(p), mu / tau, msg, details)
