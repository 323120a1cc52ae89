"""Diagonal scalings: Theorem 5 (``g^2 W^T P W - P < 0``, metric ``P``) and Theorem 6
(``(gW - I)P + P(gW^T - I) <= -cP``, diagonal stability of ``g W - I``).

Both search ``ell = log diag(P)`` by L-BFGS (the objectives are convex in ``ell``) and fall back
to an LMI solver. The searches are invariant under ``W -> c W`` (``c > 0``) up to the ``I``
term, so a ``W`` with entries beyond ``2^+-500`` is divided by a power of two ``s`` first and
``g s`` beyond ``2^500`` becomes the unit (see ``_linalg``): no overflow for any finite ``W``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ._inputs import as_diag, as_matrix, g_tau, solver_names
from ._linalg import (
    EPS,
    Unit,
    diag_kappa,
    fmt,
    fro,
    normalise_diag,
    normalised_rate,
    one_minus,
    pow2_scale,
    sym,
    unit,
)
from ._solvers import SDP_SOLVERS, cvxpy, positive_vector, solve, sym_expr
from .metzler import spectral_radius
from .results import ConditionResult

_LOG_BOUND = 200.0  # |log p_i| <= 200 keeps e^{l/2} and its ratios finite in float64


def _scaled(W: np.ndarray, ell: np.ndarray) -> np.ndarray:
    """``e^{L/2} W e^{-L/2}`` for ``L = diag(ell)``."""
    s = np.exp(0.5 * (ell - ell.mean()))
    return W * (s[:, None] / s[None, :])


def _similar(W: np.ndarray, p: np.ndarray) -> np.ndarray:
    """``P^{1/2} W P^{-1/2}``; entries beyond float64 are ``inf``."""
    s = np.sqrt(p)
    with np.errstate(over="ignore", invalid="ignore"):
        return W * (s[:, None] / s[None, :])


def _minimise_scaling(fun: Callable[[np.ndarray], tuple[float, np.ndarray]],
                      x0: np.ndarray, maxiter: int = 500) -> np.ndarray:
    """L-BFGS-B on ``ell = log diag(P)``; returns ``x0`` if it fails to improve."""
    import scipy.optimize as so

    n = x0.size
    try:
        with np.errstate(all="ignore"):
            res = so.minimize(fun, x0, jac=True, method="L-BFGS-B",
                              bounds=[(-_LOG_BOUND, _LOG_BOUND)] * n,
                              options={"maxiter": maxiter})
    except (ValueError, np.linalg.LinAlgError, FloatingPointError):
        return x0
    x = np.asarray(res.x, dtype=np.float64)
    if not np.all(np.isfinite(x)) or not np.isfinite(res.fun) or res.fun > fun(x0)[0]:
        return x0
    return x - x.min()


def _osborne_start(W: np.ndarray) -> np.ndarray:
    """``ell`` minimising ``||e^{L/2} W e^{-L/2}||_F`` (Osborne balancing; smooth, convex)."""
    w2 = W * W
    if not np.any(w2 - np.diag(np.diag(w2))):
        return np.zeros(W.shape[0])

    def fun(ell):
        e = np.exp(np.clip(ell[:, None] - ell[None, :], -700, 700)) * w2
        tot = float(e.sum())
        return math.log(tot), (e.sum(1) - e.sum(0)) / tot

    return _minimise_scaling(fun, np.zeros(W.shape[0]), maxiter=200)


# -- Theorem 5 --------------------------------------------------------------------------------
def _sigma_hat(w_hat: np.ndarray, p: np.ndarray) -> float:
    """``||P^{1/2} W^ P^{-1/2}||_2`` (``inf`` beyond float64); ``sigma = g s sigma_hat``."""
    b = _similar(w_hat, p)
    return float(np.linalg.norm(b, 2)) if np.all(np.isfinite(b)) else math.inf


def _sigma_objective(W: np.ndarray) -> Callable[[np.ndarray], tuple[float, np.ndarray]]:
    """``log sigma_max(e^{L/2} W e^{-L/2})`` and its gradient ``(u^2 - v^2) / 2`` (``u, v``
    the top singular vectors); convex in ``ell`` (Sezginer & Overton, 1990)."""

    def fun(ell):
        u, sv, vt = np.linalg.svd(_scaled(W, ell))
        return math.log(max(float(sv[0]), 1e-300)), 0.5 * (u[:, 0] ** 2 - vt[0] ** 2)

    return fun


def check_theorem5(W: Any, g: float = 1.0, tau: float = 1.0, P: Any = None, *,
                   solvers: str | Sequence[str] = SDP_SOLVERS) -> ConditionResult:
    """Theorem 5: a positive diagonal ``P`` with ``g^2 W^T P W - P < 0``; metric ``P``.

    ``g^2 W^T P W - P < 0`` iff ``sigma = g ||P^{1/2} W P^{-1/2}||_2 < 1``, and then
    ``P^{1/2} J P^{-1/2} = (-I + (P^{1/2} W P^{-1/2}) D) / tau`` gives rate
    ``(1 - sigma) / tau``. With ``P`` given it is only verified. Otherwise:

    1. necessary conditions (any diagonal scaling keeps the spectrum and the diagonal):
       ``g spectral_radius(W) < 1`` and ``g max |W_ii| < 1``;
    2. ``sigma`` is minimised over ``ell = log diag(P)`` (convex in ``ell``, Sezginer & Overton
       1990) by L-BFGS from the Osborne-balanced scaling -- this maximises the rate;
    3. only if that leaves ``sigma >= 1``: cvxpy (SCS by default) solves the LMI
       ``min t`` s.t. ``g^2 W^T P W - P <= -I``, ``0 <= P <= t I``, and its ``P`` is polished
       by step 2 (skipped when ``g W`` has entries beyond float64).

    The best candidate (identity included) is verified in float64. ``sigma`` is positively
    homogeneous in ``W``, so an extreme ``W`` is searched as ``W / s`` (``s`` a power of two).
    """
    W = as_matrix(W)
    g, tau = g_tau(g, tau)
    n = W.shape[0]
    w_hat, s = pow2_scale(W)
    un = unit(g, s)
    details: dict[str, Any] = {"solver_status": "not run"}
    if P is not None:
        candidates = [("given P", as_diag("P", P, n))]
    else:
        rho_hat = spectral_radius(w_hat)
        d_hat = float(np.max(np.abs(np.diag(w_hat))))
        rho, dmax = un.scale(un.alpha * rho_hat), un.scale(un.alpha * d_hat)
        details.update({"g_spectral_radius": rho, "g_max_abs_diag": dmax})
        if max(rho, dmax) >= 1:
            what = (f"g spectral_radius(W) = {fmt(rho, '.6g')}" if rho >= dmax else
                    f"g max |W_ii| = {fmt(dmax, '.6g')}")
            return ConditionResult(
                "Theorem 5", False, 1.0 - max(rho, dmax), None, None,
                f"no positive diagonal P can satisfy g^2 W^T P W - P < 0: {what} >= 1, and "
                "g ||P^{1/2} W P^{-1/2}|| is at least both for every P", details)
        fun = _sigma_objective(w_hat)
        ell0 = _osborne_start(w_hat)
        ell = _minimise_scaling(fun, ell0)
        candidates = [("identity", np.ones(n)), ("Osborne balancing", np.exp(ell0)),
                      ("minimised sigma", np.exp(ell))]
        if min(un.scale(un.alpha * _sigma_hat(w_hat, p)) for _, p in candidates) >= 1:
            with np.errstate(over="ignore"):
                gw = g * W
            if np.all(np.isfinite(gw)):
                p_sol, status, log = _theorem5_sdp(gw, w_hat, un, solver_names(solvers))
            else:
                p_sol, status, log = None, "skipped (g W beyond float64)", []
            details.update({"solver_status": status, "solver_log": log})
            if p_sol is not None:
                candidates.append((f"LMI solver ({status})", p_sol))
                ell = _minimise_scaling(fun, np.log(p_sol))
                candidates.append(("LMI solver + minimised sigma", np.exp(ell)))
    scored = [(_sigma_hat(w_hat, p), name, normalise_diag(p)) for name, p in candidates]
    sigma_hat, name, p = min(scored, key=lambda x: x[0])
    sigma = un.scale(un.alpha * sigma_hat)
    details.update({"sigma": sigma, "metric_source": name})
    margin, holds = one_minus(un, sigma_hat, n, fro(w_hat))
    if not holds:
        why = ("the given P does not satisfy it" if P is not None else
               f"no positive diagonal P found (LMI solver status: {details['solver_status']})")
        return ConditionResult(
            "Theorem 5", False, min(margin, 0.0), None, None,
            f"g^2 W^T P W - P < 0 not established: {why}; best sigma = g ||P^{{1/2}} W "
            f"P^{{-1/2}}|| = {fmt(sigma, '.6g')} (needs < 1)", details)
    details["kappa"] = diag_kappa(p)
    msg = (f"g^2 W^T P W - P < 0 with diagonal P ({name}, kappa {diag_kappa(p):.4g}): "
           f"sigma = g ||P^{{1/2}} W P^{{-1/2}}|| = {sigma:.6g} < 1, rate (1 - sigma) / tau = "
           f"{margin / tau:.4g}")
    return ConditionResult("Theorem 5", True, margin, np.diag(p), margin / tau, msg, details)


def _theorem5_sdp(gw: np.ndarray, w_hat: np.ndarray, un: Unit,
                  solvers: Sequence[str]) -> tuple[np.ndarray | None, str, list[str]]:
    cp = cvxpy()
    n = gw.shape[0]

    def build():
        p, t = cp.Variable(n, nonneg=True), cp.Variable()
        big = gw.T @ cp.diag(p) @ gw - cp.diag(p) + np.eye(n)
        prob = cp.Problem(cp.Minimize(t), [sym_expr(big) << 0, p <= t])
        return prob, lambda: positive_vector(p.value)

    def verify(p):
        sig = un.scale(un.alpha * _sigma_hat(w_hat, p))
        return sig < 1, f"sigma = {sig:.6g}"

    return solve(build, solvers, verify)


# -- Theorem 6 --------------------------------------------------------------------------------
def _theorem6_c(a6: np.ndarray, p: np.ndarray) -> float:
    """``c`` with ``A P + P A^T <= -cP``: ``-2 lambda_max(sym(P^{-1/2} A P^{1/2}))``."""
    return 2.0 * normalised_rate(_similar(a6, 1.0 / p))


def _theorem6_objective(a6: np.ndarray) -> Callable[[np.ndarray], tuple[float, np.ndarray]]:
    """``lambda_max(sym(e^{-L/2} A e^{L/2}))`` and its gradient ``x (B^T x - B x) / 2``."""

    def fun(ell):
        b = _scaled(a6, -ell)
        ev, vec = np.linalg.eigh(sym(b))
        x = vec[:, -1]
        return float(ev[-1]), 0.5 * x * (b.T @ x - b @ x)

    return fun


def check_theorem6(W: Any, g: float = 1.0, tau: float = 1.0, P: Any = None, *,
                   solvers: str | Sequence[str] = SDP_SOLVERS) -> ConditionResult:
    """Theorem 6, first condition: a positive diagonal ``P`` and ``c > 0`` with
    ``(gW - I)P + P(gW^T - I) <= -cP`` (diagonal stability of ``g W - I``).

    No constant metric (``metric`` and ``rate`` are ``None``): the theorem contracts in the
    state-dependent ``D = diag(phi')`` with rate ``beta`` *if also* ``Ddot - c g^{-1} D <=
    -beta D`` along trajectories, a property of ``phi`` and the trajectories that no weight
    check can establish. ``P`` (if not given): ``c`` is maximised over ``log diag(P)`` by
    L-BFGS from ``P = I``; if that finds no ``c > 0``, cvxpy (SCS by default) solves ``min t``
    s.t. ``(gW - I)P + P(gW - I)^T <= -I``, ``0 <= P <= t I``, polished the same way. ``P`` and
    ``c`` are reported in ``details`` after a float64 check. Everything runs on
    ``(g W - I) / u`` (``u = 1`` unless ``g max|W|`` exceeds ``2^500``): no overflow.
    """
    W = as_matrix(W)
    g, tau = g_tau(g, tau)
    n = W.shape[0]
    w_hat, s = pow2_scale(W)
    un = unit(g, s)
    details: dict[str, Any] = {"solver_status": "not run"}
    a6 = un.alpha * w_hat - un.beta * np.eye(n)  # (g W - I) / u
    if P is not None:
        candidates = [("given P", as_diag("P", P, n))]
    else:
        with np.errstate(over="ignore"):
            gd = g * np.diag(W)
        if np.any(gd >= 1):
            i = int(np.argmax(gd))
            gdi = float(gd[i])
            return ConditionResult(
                "Theorem 6", False, 2.0 * (1.0 - gdi), None, None,
                f"g W - I is not diagonally stable: its diagonal entry g W[{i},{i}] - 1 = "
                f"{fmt(gdi - 1)} >= 0, and (gW - I)P + P(gW^T - I) has diagonal "
                "2 p_i (g W_ii - 1)", details)
        fun = _theorem6_objective(a6)
        ell = _minimise_scaling(fun, np.zeros(n))
        candidates = [("identity", np.ones(n)), ("maximised c", np.exp(ell))]
        if max(_theorem6_c(a6, p) for _, p in candidates) <= 0:
            p_sol, status, log = _theorem6_sdp(a6, solver_names(solvers))
            details.update({"solver_status": status, "solver_log": log})
            if p_sol is not None:
                candidates.append((f"LMI solver ({status})", p_sol))
                ell = _minimise_scaling(fun, np.log(p_sol))
                candidates.append(("LMI solver + maximised c", np.exp(ell)))
    scored = [(_theorem6_c(a6, p), name, normalise_diag(p)) for name, p in candidates]
    c_hat, name, p = max(scored, key=lambda x: x[0])
    c = un.scale(c_hat)
    details.update({"c": c, "P": p, "metric_source": name})
    tol_hat = 64.0 * n * EPS * (un.alpha * fro(w_hat) + un.beta)
    if not c_hat > tol_hat:
        return ConditionResult(
            "Theorem 6", False, min(c, 0.0), None, None,
            f"no positive diagonal P with (gW - I)P + P(gW^T - I) <= -cP, c > 0 was found "
            f"(best c = {fmt(c)}; LMI solver status: {details['solver_status']})", details)
    msg = (f"(gW - I)P + P(gW^T - I) <= -cP holds with diagonal P ({name}) and c = {fmt(c)}. "
           "This gives no constant metric: Theorem 6 concludes contraction in the "
           "state-dependent metric D = diag(phi'(x)) with rate beta only if, in addition, the "
           f"slopes vary slowly along trajectories: Ddot - (c/g) D <= -beta D (c/g = "
           f"{fmt(c / g)}) for some beta > 0 -- a property of phi and the trajectories, not "
           "checked here")
    return ConditionResult("Theorem 6", True, c, None, None, msg, details)


def _theorem6_sdp(a6: np.ndarray,
                  solvers: Sequence[str]) -> tuple[np.ndarray | None, str, list[str]]:
    """``min t`` s.t. ``A P + P A^T <= -I``, ``0 <= P <= t I`` for ``A = (g W - I) / u``
    (feasibility is invariant under ``A -> A / u``)."""
    cp = cvxpy()
    n = a6.shape[0]

    def build():
        p, t = cp.Variable(n, nonneg=True), cp.Variable()
        big = a6 @ cp.diag(p) + cp.diag(p) @ a6.T + np.eye(n)
        prob = cp.Problem(cp.Minimize(t), [sym_expr(big) << 0, p <= t])
        return prob, lambda: positive_vector(p.value)

    def verify(p):
        c = _theorem6_c(a6, p)
        return c > 0, f"c = {c:.6g}"

    return solve(build, solvers, verify)
