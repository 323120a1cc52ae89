"""Theorem 3: ``W = -P1 Q P2`` (``P1, P2`` positive diagonal, ``Q`` SPD) gives the constant
metric ``M = (P1 Q P1)^{-1}`` with rate ``1 / tau``, because ``M W D = -P1^{-1} P2 D`` is
diagonal and ``<= 0`` for every slope matrix ``D >= 0``.

The condition is invariant under ``W -> c W`` (``c > 0``), so it is evaluated on ``W / s``
(``s`` a power of two); only the rate bound, which is not scale invariant, involves ``s``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.linalg as sla

from ._inputs import as_diag, as_matrix, g_tau, input_eps, positive
from ._linalg import EPS, fmt, fro, pow2_normalise, pow2_scale, rel_asymmetry, sym, unit
from .results import ConditionResult

_LOG_MAX = math.log(float(np.finfo(np.float64).max)) - 1.0
_TINY = float(np.finfo(np.float64).tiny)


def _theorem3_rate(w_hat: np.ndarray, s: float, M: np.ndarray, g: float) -> tuple[float, float]:
    """A float64-rigorous ``mu`` for the metric ``M`` and ``W = s w_hat``.

    ``M J + J^T M = (-2M + N D + D N^T) / tau`` with ``N = M W = N_d + N_o`` (diagonal /
    off-diagonal). Two bounds, the larger is returned:

    * ``N_d D + D N_d <= 2 g max(N_ii, 0) I`` and ``||N_o D + D N_o^T|| <= 2 g ||N_o||`` give
      ``mu >= 1 - g (max(N_ii, 0) + ||N_o||) / lambda_min(M)``;
    * if ``N_ii <= -c < 0`` for all ``i``: ``x^T (N D + D N^T) x <= -2c b^2 + 2 ||N_o|| sqrt(g)
      a b`` with ``a = ||x||``, ``b = ||D^{1/2} x||`` (``||D x|| <= sqrt(g) b``), and
      ``(1 - mu) lambda_min a^2 + c b^2 >= ||N_o|| sqrt(g) a b`` whenever
      ``mu <= 1 - g ||N_o||^2 / (4 lambda_min(M) c)`` (AM-GM).

    For an exact factorisation ``N_o = 0`` and ``mu = 1``. ``N`` is formed as ``M w_hat``
    (times ``s`` analytically) with the rounding of the product, of ``||N_o||`` and of
    ``lambda_min(M)`` added to the bounds. Returns ``(mu, ||N_o|| / ||N||)``.
    """
    n = w_hat.shape[0]
    with np.errstate(over="ignore", invalid="ignore"):
        n_hat = M @ w_hat
        gamma = n * EPS / (1.0 - n * EPS)
        err = gamma * (np.abs(M) @ np.abs(w_hat))  # entrywise bound on |fl(M W^) - M W^|
    if not (np.all(np.isfinite(n_hat)) and np.all(np.isfinite(err))):
        return -math.inf, math.inf
    n_off = n_hat - np.diag(np.diag(n_hat))
    err_off = err - np.diag(np.diag(err))
    off = float(np.linalg.norm(n_off, 2)) * (1.0 + 64.0 * n * EPS) + fro(err_off)
    top_diag = float(np.max(np.diag(n_hat) + np.diag(err)))
    lam_min = float(np.linalg.eigvalsh(M)[0]) - 64.0 * n * EPS * fro(M)
    if not lam_min > 0:
        return -math.inf, math.inf
    un = unit(g, s)  # g s = u alpha
    mu = 1.0 - un.scale(un.alpha * (max(top_diag, 0.0) + off) / lam_min)
    if top_diag < 0:
        mu = max(mu, 1.0 - un.scale(un.alpha * off * off / (4.0 * lam_min * -top_diag)))
    return mu, off / max(float(np.linalg.norm(n_hat, 2)), 1e-300)


def _congruence(core: np.ndarray, log_e: np.ndarray) -> np.ndarray | None:
    """``E core E`` with ``E = diag(e^{log_e})``; if that leaves ``[2^-400, 2^400]``, the same
    up to a positive factor (``log_e`` centred); ``None`` if even that over- or underflows."""
    centre = (float(log_e.max()) + float(log_e.min())) / 2
    for shift, lo, hi in ((0.0, 2.0**-400, 2.0**400), (centre, 0.0, math.inf)):
        with np.errstate(all="ignore"):
            e = np.exp(log_e - shift)
            m = sym(core * e[:, None] * e[None, :])
        top = float(np.max(np.abs(m)))
        if (np.all(np.isfinite(m)) and np.all(e >= _TINY) and np.all(np.isfinite(e))
                and lo <= top <= hi):
            return m
    return None


def _rescale_components(M: np.ndarray, comps: list[np.ndarray]) -> np.ndarray | None:
    """Scale each block of a block-diagonal metric so its eigenvalues centre on 1 (``None`` if a
    block is not positive definite in float64)."""
    M = M.copy()
    for c in comps:
        ev = np.linalg.eigvalsh(M[np.ix_(c, c)])
        if not ev[0] > 0:
            return None
        M[np.ix_(c, c)] /= math.sqrt(ev[0]) * math.sqrt(ev[-1])
    return M


def check_theorem3(W: Any, g: float = 1.0, tau: float = 1.0, P1: Any = None, Q: Any = None,
                   P2: Any = None, *, rtol: float | None = None) -> ConditionResult:
    """Theorem 3: ``W = -P1 Q P2`` (``P1, P2`` positive diagonal, ``Q`` SPD) gives the metric
    ``M = (P1 Q P1)^{-1}`` with rate ``1 / tau`` (``M W D = -P1^{-1} P2 D`` is diagonal <= 0).

    With the factors given they are checked and ``W = -P1 Q P2`` is verified (relative
    tolerance ``rtol``). Without them the factorisation is searched exactly: ``W = -P1 Q P2``
    iff there is a positive diagonal ``S`` with ``-S W`` symmetric positive definite (take
    ``S = P1^{-1} P2``, so ``-S W = P2 Q P2``; conversely ``P1 = S^{-1}``, ``P2 = I``,
    ``Q = -S W``). Symmetry of ``S W`` means ``s_i W_ij = s_j W_ji``: the off-diagonal zero
    pattern must be symmetric, paired entries must share their sign, and
    ``log s_i - log s_j = log|W_ji| - log|W_ij|`` on every edge of the graph of ``W``; ``log s``
    is the least-squares solution over all edges and the residual must be within ``rtol``. On
    each connected component ``S`` is unique up to a scale, which does not affect positive
    definiteness; the metric is ``M = S Q^{-1} S = -S W^{-1}`` (each component block is scaled
    to centre its eigenvalues on 1). In both cases the returned rate is the float64-rigorous
    bound of ``_theorem3_rate`` for the given ``W`` (equal to ``1 / tau`` up to round-off).
    Default ``rtol``: ``1e-9`` (``100 eps`` of the input dtype for float32 input). The
    factorisation is scale invariant and found on ``W / s``, so any finite ``W`` is handled.
    """
    if rtol is None:
        rtol = max(1e-9, 100.0 * input_eps(W))
    rtol = positive("rtol", rtol, "relative tolerance")
    W = as_matrix(W)
    g, tau = g_tau(g, tau)
    given = [x is not None for x in (P1, Q, P2)]
    if any(given) and not all(given):
        raise ValueError("pass all three factors P1, Q, P2 (or none, to search); received "
                         + ", ".join(k for k, x in zip(("P1", "Q", "P2"), given, strict=True)
                                     if x))
    if all(given):
        return _theorem3_given(W, g, tau, P1, Q, P2, rtol)
    return _theorem3_search(W, g, tau, rtol)


def _theorem3_finish(W: np.ndarray, g: float, tau: float, M: np.ndarray | None, q: np.ndarray,
                     details: dict[str, Any], how: str) -> ConditionResult:
    ev_q = np.linalg.eigvalsh(q)
    margin = float(ev_q[0] / ev_q[-1])
    if M is None:
        return ConditionResult(
            "Theorem 3", False, 0.0, None, None,
            f"{how}, but the metric M = (P1 Q P1)^{{-1}} is not representable in float64 (its "
            "entries span beyond the float64 range)", details)
    w_hat, s = pow2_scale(W)
    mu, rel_off = _theorem3_rate(w_hat, s, M, g)
    with np.errstate(all="ignore"):
        kappa = float(np.linalg.cond(M))
    details.update({"kappa": kappa, "offdiag_of_MW": rel_off})
    if not mu > 0:
        return ConditionResult(
            "Theorem 3", False, min(margin, 0.0), None, None,
            f"{how}, but the metric could not be verified in float64 (rate bound {mu:.3g}; "
            f"kappa(M) = {details['kappa']:.3g})", details)
    msg = (f"{how}; metric M = (P1 Q P1)^{{-1}} (kappa {details['kappa']:.4g}) gives "
           f"M W D = -P1^{{-1}} P2 D <= 0, rate {mu / tau:.6g} (1 / tau up to round-off)")
    return ConditionResult("Theorem 3", True, margin, M, mu / tau, msg, details)


def _theorem3_given(W, g, tau, P1, Q, P2, rtol) -> ConditionResult:
    n = W.shape[0]
    p1 = as_diag("P1", P1, n)
    p2 = as_diag("P2", P2, n)
    q = as_matrix(Q, "Q")
    if q.shape != (n, n):
        raise ValueError(f"Q must be {n}x{n} to match W; received shape {q.shape}")
    q_hat, sq = pow2_normalise(q)
    qs = sym(q_hat)
    asym = rel_asymmetry(q)
    ev = np.linalg.eigvalsh(qs)
    # max |W + P1 Q P2| / max |W|, in logarithms: W / s - (-P1 Q P2) / s
    w_hat, s = pow2_scale(W)
    with np.errstate(all="ignore"):
        log_mag = (np.log(p1)[:, None] + np.log(np.abs(qs)) + np.log(p2)[None, :]
                   + math.log(sq) - math.log(s))
        recon_hat = -np.sign(qs) * np.exp(log_mag)
        mismatch = float(np.max(np.abs(w_hat - recon_hat))) / (float(np.max(np.abs(W))) / s) \
            if np.any(W) else float(np.max(np.abs(recon_hat)))
    details: dict[str, Any] = {"method": "given factors", "factor_mismatch": mismatch,
                               "Q_asymmetry": asym}
    if asym > rtol or ev[0] <= 0:
        return ConditionResult(
            "Theorem 3", False, float(min(ev[0] / ev[-1], 0.0)) if asym <= rtol else -asym,
            None, None,
            f"Q must be symmetric positive definite: relative asymmetry {asym:.3g}, "
            f"lambda_min(Q) = {ev[0] * sq:.3g}", details)
    if not mismatch <= rtol:
        return ConditionResult(
            "Theorem 3", False, -mismatch, None, None,
            f"the factors do not reproduce W: max|W + P1 Q P2| / max|W| = {mismatch:.3g} > "
            f"rtol = {rtol:.1g}", details)
    # M = (P1 Q P1)^{-1} = P1^{-1} Q^{-1} P1^{-1}, Q^{-1} = (Q / sq)^{-1} / sq
    qinv = sla.cho_solve(sla.cho_factor(qs), np.eye(n))
    M = _congruence(qinv, -np.log(p1) - 0.5 * math.log(sq))
    return _theorem3_finish(W, g, tau, M, qs, details,
                            f"W = -P1 Q P2 verified (relative mismatch {mismatch:.2g})")


def _components(adj: np.ndarray) -> list[np.ndarray]:
    n = adj.shape[0]
    seen = np.zeros(n, dtype=bool)
    comps = []
    for start in range(n):
        if seen[start]:
            continue
        stack, members = [start], []
        seen[start] = True
        while stack:
            i = stack.pop()
            members.append(i)
            for j in np.nonzero(adj[i] & ~seen)[0]:
                seen[j] = True
                stack.append(int(j))
        comps.append(np.array(sorted(members)))
    return comps


def _theorem3_search(W: np.ndarray, g: float, tau: float, rtol: float) -> ConditionResult:
    n = W.shape[0]
    details: dict[str, Any] = {"method": "search: positive diagonal S with -S W SPD"}
    nz = W != 0
    np.fill_diagonal(nz, False)
    if np.any(nz != nz.T):
        i, j = np.argwhere(nz != nz.T)[0]
        return ConditionResult(
            "Theorem 3", False, -1.0, None, None,
            f"no factorisation W = -P1 Q P2: the off-diagonal zero pattern is not symmetric "
            f"(W[{i},{j}] = {W[i, j]:.3g} but W[{j},{i}] = {W[j, i]:.3g})", details)
    if np.any(np.sign(W[nz]) != np.sign(W.T[nz])):
        i, j = np.argwhere(nz & (np.sign(W) != np.sign(W.T)))[0]
        return ConditionResult(
            "Theorem 3", False, -1.0, None, None,
            f"no factorisation W = -P1 Q P2: W[{i},{j}] = {W[i, j]:.3g} and W[{j},{i}] = "
            f"{W[j, i]:.3g} have opposite signs (s_i W_ij = s_j W_ji needs equal signs)",
            details)
    if np.any(np.diag(W) >= 0):
        i = int(np.argmax(np.diag(W) >= 0))
        return ConditionResult(
            "Theorem 3", False, -1.0, None, None,
            f"no factorisation W = -P1 Q P2: W[{i},{i}] = {W[i, i]:.3g} >= 0, but the "
            "diagonal of -P1 Q P2 is negative", details)
    # least squares for log s on the edges i < j: log s_i - log s_j = log|W_ji| - log|W_ij|
    ii, jj = np.nonzero(np.triu(nz, 1))
    log_s = np.zeros(n)
    comps = _components(nz)
    if ii.size:
        inc = np.zeros((ii.size, n))
        inc[np.arange(ii.size), ii] = 1.0
        inc[np.arange(ii.size), jj] = -1.0
        rhs = np.log(np.abs(W[jj, ii])) - np.log(np.abs(W[ii, jj]))
        log_s = np.linalg.lstsq(inc, rhs, rcond=None)[0]
        for c in comps:  # centre each component (its scale is free)
            log_s[c] -= log_s[c].mean()
    if float(np.max(np.abs(log_s))) > _LOG_MAX:
        return ConditionResult(
            "Theorem 3", False, 0.0, None, None,
            f"the diagonal scaling S that would make S W symmetric spans e^{np.ptp(log_s):.0f}, "
            "beyond float64: this factorisation cannot be evaluated in float64", details)
    s = np.exp(log_s)
    w_hat, w_scale = pow2_normalise(W)
    sw = s[:, None] * w_hat
    sw_max = float(np.max(np.abs(sw)))
    mismatch = float(np.max(np.abs(sw / sw_max - sw.T / sw_max)))
    details.update({"ratio_mismatch": mismatch, "s": s, "components": len(comps)})
    if mismatch > rtol:
        return ConditionResult(
            "Theorem 3", False, -mismatch, None, None,
            f"no factorisation W = -P1 Q P2: the ratios W_ij / W_ji are inconsistent around a "
            f"cycle (no positive diagonal S makes S W symmetric; relative residual "
            f"{mismatch:.3g} > rtol = {rtol:.1g})", details)
    q_hat, q_scale = pow2_normalise(-sym(sw))
    ev = np.linalg.eigvalsh(q_hat)
    if ev[0] <= 0:
        return ConditionResult(
            "Theorem 3", False, float(ev[0] / np.max(np.abs(ev))), None, None,
            f"no factorisation W = -P1 Q P2: S W is symmetric for S = diag(s) (unique per "
            f"component up to scale) but -S W is not positive definite (lambda_min = "
            f"{fmt(ev[0] * q_scale * w_scale, '.3g')})", details)
    try:
        qinv = sla.cho_solve(sla.cho_factor(q_hat), np.eye(n))
    except np.linalg.LinAlgError:
        return ConditionResult("Theorem 3", False, 0.0, None, None,
                               "-S W is numerically singular; no usable metric", details)
    M = _congruence(qinv, log_s)
    if M is not None:
        M = _rescale_components(M, comps)
    with np.errstate(over="ignore"):
        q = -sym(s[:, None] * W)  # Q = -S W itself (inf only beyond float64)
    details.update({"P1": 1.0 / s, "P2": np.ones(n), "Q": q})
    return _theorem3_finish(W, g, tau, M, q_hat, details,
                            "W = -P1 Q P2 with P1 = S^{-1}, P2 = I, Q = -S W SPD")
