"""Constant metrics from the vertex LMIs (no theorem, any ``W``), the float64-checked dual
certificate that none exists, and Theorem 7's counterexample ``W = [[0, -c], [c, 0]]``: ``g W_sym
- I < 0`` yet, for ``|c| g >= 2``, no constant metric.

``M J + J^T M`` is affine in the slope matrix ``D``, so ``M J(D) + J(D)^T M <= -2 lam M`` for
every ``D`` in ``[0, g]^n`` iff it holds at the ``2^n`` vertices ``D in {0, g}^n``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.linalg as sla

from ._inputs import as_matrix, g_tau, positive, solver_names
from ._linalg import EPS, eig_tol, normalised_rate, sym
from ._solvers import VERTEX_SOLVERS, cvxpy, solve, sym_expr
from .metzler import rate_in_diagonal_metric
from .results import ConditionResult, Theorem7Result


def rate_in_metric(A: np.ndarray | Sequence[np.ndarray], M: np.ndarray) -> float:
    """Largest ``mu`` with ``M A + A^T M <= -2 mu M`` (the minimum over ``A`` if a sequence).

    ``M`` is either the 1-D diagonal of a positive diagonal metric or a 2-D SPD matrix. For
    Theorem 1 pass the comparison matrix ``A = g|W| - I`` and the diagonal ``P``: for every
    ``D`` in ``[0, g]^n``, ``x^T P(-I + W D)x <= |x|^T P A |x| <= -mu x^T P x``, so the module
    contracts in ``P`` with rate ``mu / tau``. For a generic metric pass the Jacobians
    ``J_v = -I + W D_v`` at the slope-box vertices (the condition is affine in ``D``, so the
    vertices suffice). Computed as ``-lambda_max(sym(R A R^{-1}))`` with ``M = R^T R``
    (:func:`~combonet.conditions.metzler.rate_in_diagonal_metric` for a diagonal ``M``).
    """
    mats = np.asarray(A, dtype=np.float64)
    if mats.ndim == 2:
        mats = mats[None]
    m = np.asarray(M, dtype=np.float64)
    n = m.shape[0] if m.ndim in (1, 2) else -1
    if mats.ndim != 3 or mats.shape[1:] != (n, n) or m.shape not in ((n,), (n, n)):
        raise ValueError(f"rate_in_metric needs n x n matrices A and a metric M of shape (n,) "
                         f"or (n, n); received A of shape {mats.shape} and M of shape {m.shape}")
    if m.ndim == 1:
        if not np.all(m > 0) or not np.all(np.isfinite(m)):
            raise ValueError("M (diagonal metric) must have finite entries > 0; received "
                             f"min {m.min():.3g}")
        return min(rate_in_diagonal_metric(a, m) for a in mats)
    try:
        r = sla.cholesky(sym(m), lower=False)  # M = R^T R
    except np.linalg.LinAlgError:
        raise ValueError(f"M must be symmetric positive definite; received shape {m.shape} "
                         "that failed a Cholesky factorisation") from None
    out = math.inf
    for a in mats:
        ra = r @ np.asarray(a)
        b = sla.solve_triangular(r, ra.T, trans="T", lower=False).T  # R A R^{-1}
        out = min(out, normalised_rate(b))
    return out


def _vertex_jacobians(W: np.ndarray, g: float) -> list[np.ndarray]:
    """``-I + W D`` for all ``D`` in ``{0, g}^n`` (``tau = 1``)."""
    n = W.shape[0]
    eye = np.eye(n)
    return [-eye + W * np.asarray(d)[None, :] for d in itertools.product((0.0, g), repeat=n)]


def _verify_dual_certificate(js: Sequence[np.ndarray], zs: Sequence[np.ndarray],
                             eps: float) -> float:
    """Float64 check of a certificate that no nonzero PSD ``M`` has
    ``M J_v + J_v^T M <= -eps M`` for all ``v``.

    Certificate: PSD ``Z_v`` with ``S = sum_v (J'_v Z_v + Z_v J'_v^T) > 0``, ``J'_v = J_v +
    eps/2 I``. If such an ``M`` existed, ``0 >= sum_v tr(Z_v (M J'_v + J'_v^T M)) = tr(M S) > 0``.
    Round-off: each ``Z_v`` is replaced by ``Z_v + delta I`` (``delta`` covering its negative
    eigenvalues and eigvalsh error), which lowers ``lambda_min(S)`` by at most
    ``delta sum_v ||J'_v + J'_v^T||``. Returns that verified lower bound on ``lambda_min(S)``
    minus a round-off allowance: the certificate is valid iff the result is > 0.
    """
    n = js[0].shape[0]
    eye = np.eye(n)
    jp = [j + 0.5 * eps * eye for j in js]
    zsym = [sym(np.asarray(z, dtype=np.float64)) for z in zs]
    delta = 0.0
    for z in zsym:
        delta = max(delta, -float(np.linalg.eigvalsh(z)[0]) + eig_tol(z))
    s = sum(j @ z + z @ j.T for j, z in zip(jp, zsym, strict=True))
    lam = float(np.linalg.eigvalsh(sym(s))[0])
    shift = delta * sum(float(np.linalg.norm(j + j.T, 2)) for j in jp)
    roundoff = 64.0 * n * EPS * sum(2.0 * float(np.linalg.norm(j) * np.linalg.norm(z)) + 1.0
                                     for j, z in zip(jp, zsym, strict=True))
    return lam - shift - roundoff


def _dual_certificate(js: Sequence[np.ndarray], eps: float,
                      solvers: Sequence[str]) -> tuple[list[np.ndarray] | None, float, str]:
    """Solve ``max s`` s.t. ``Z_v >= 0``, ``sum tr Z_v = 1``, ``sum(J'_v Z_v + Z_v J'_v^T) >= s I``
    and verify the result with :func:`_verify_dual_certificate`."""
    cp = cvxpy()
    n = js[0].shape[0]
    jp = [j + 0.5 * eps * np.eye(n) for j in js]

    def build():
        zs = [cp.Variable((n, n), PSD=True) for _ in jp]
        s = cp.Variable()
        tot = sum(j @ z + z @ j.T for j, z in zip(jp, zs, strict=True))
        cons = [sym_expr(tot) >> s * np.eye(n), sum(cp.trace(z) for z in zs) == 1]
        prob = cp.Problem(cp.Maximize(s), cons)
        return prob, lambda: [np.asarray(z.value, dtype=np.float64) for z in zs]

    def verify(zs):
        m = _verify_dual_certificate(js, zs, eps)
        return m > 0, f"verified certificate margin {m:.3g}"

    zs, status, _ = solve(build, solvers, verify)
    if zs is None:
        return None, -math.inf, status
    return zs, _verify_dual_certificate(js, zs, eps), status


def find_constant_metric(W: Any, g: float = 1.0, tau: float = 1.0, max_n: int = 10, *,
                         solvers: str | Sequence[str] = VERTEX_SOLVERS,
                         certify_infeasible: bool = True) -> ConditionResult:
    """Search a full SPD constant metric by the vertex LMI (no theorem, any ``W``).

    ``M J + J^T M`` is affine in ``D``, so the condition for all ``D`` in ``[0, g]^n`` holds
    iff it holds at the ``2^n`` vertices. cvxpy (Clarabel, then SCS) solves ``min t`` s.t.
    ``M J_v + J_v^T M <= -I`` (``J_v = -I + W D_v``) and ``M <= t I`` (the ``D = 0`` vertex
    forces ``M >= I / 2``; minimising ``t`` keeps ``M`` well conditioned). The result is
    verified in float64 and normalised to ``lambda_min(M) = 1``. If none is found and
    ``certify_infeasible``, the dual problem is solved for a float64-checked certificate that
    no constant metric exists (reported in ``details``). Raises ``ValueError`` for
    ``n > max_n``: the cost is ``2^n`` LMIs of size ``n`` (measured on 2 loaded cores: n = 6
    about 1 s, n = 8 about 3 s, mostly cvxpy compilation; SCS alone took 15-150 s at n = 8).
    """
    W = as_matrix(W)
    g, tau = g_tau(g, tau)
    n = W.shape[0]
    if isinstance(max_n, bool) or not isinstance(max_n, int) or max_n < 1:
        raise ValueError(f"max_n must be an integer >= 1; received {max_n!r}")
    if n > max_n:
        raise ValueError(
            f"find_constant_metric checks the LMI at all 2^n vertices of the slope box: W has "
            f"n = {n}, i.e. {2 ** n} LMIs of size {n}, above max_n = {max_n} ({2 ** max_n} "
            "LMIs). Raise max_n if you accept that cost, or use a theorem's check instead")
    names = solver_names(solvers)
    js = _vertex_jacobians(W, g)
    cp = cvxpy()
    eye = np.eye(n)

    def build():
        m, t = cp.Variable((n, n), symmetric=True), cp.Variable()
        cons = [sym_expr(m @ j + j.T @ m + eye) << 0 for j in js]
        cons.append(m << t * eye)
        prob = cp.Problem(cp.Minimize(t), cons)

        def extract():
            v = sym(np.asarray(m.value, dtype=np.float64))
            lam = np.linalg.eigvalsh(v)[0]
            if not lam > 0:
                raise ValueError("M not positive definite")
            return v / lam

        return prob, extract

    def verify(m):
        mu = rate_in_metric(js, m)
        return mu > 1e-12, f"verified rate {mu:.6g}"

    m_sol, status, log = solve(build, names, verify)
    details: dict[str, Any] = {"vertices": len(js), "solver_status": status, "solver_log": log}
    mu_id = rate_in_metric(js, eye)
    if m_sol is None and mu_id > 0:
        m_sol = eye
    if m_sol is not None:
        mu = rate_in_metric(js, m_sol)
        if mu_id > mu:
            m_sol, mu = eye, mu_id
        details["kappa"] = float(np.linalg.cond(m_sol))
        msg = (f"constant SPD metric found (kappa {details['kappa']:.4g}): M J_v + J_v^T M <= "
               f"-2 lam M at all {len(js)} vertices of [0, g]^n, lam = {mu / tau:.4g}")
        return ConditionResult("constant metric", True, mu, m_sol, mu / tau, msg, details)
    msg = (f"no constant metric found by the vertex LMI (solver status: {status}); "
           f"identity metric rate {mu_id:.4g} <= 0")
    if certify_infeasible:
        zs, cert, cstatus = _dual_certificate(js, 0.0, names)
        details["infeasibility_certificate"] = {"verified": zs is not None, "margin": cert,
                                                "status": cstatus}
        if zs is not None:
            msg += (f"; a float64-verified dual certificate (margin {cert:.3g}) proves that no "
                    "constant metric exists, even with rate 0")
    return ConditionResult("constant metric", False, min(mu_id, 0.0), None, None, msg, details)


def theorem7_counterexample(c: float = 2.0, g: float = 1.0, *, eps: float = 1e-3,
                            solvers: str | Sequence[str] = VERTEX_SOLVERS) -> Theorem7Result:
    """Theorem 7: ``W = [[0, -c], [c, 0]]`` satisfies ``g W_sym - I < 0`` (``W_sym = 0``), yet
    for ``|c| g >= 2`` no constant metric makes (1) contract.

    (a) ``sym_margin = -lambda_max(g W_sym - I)``. (b) cvxpy (Clarabel, then SCS) on: SPD
    ``M >= I`` with ``M J_v + J_v^T M <= -eps M`` at the four vertices ``D in {0, g}^2``
    (``tau = 1``); a returned ``M`` counts only after a float64 check. (c) An exact dual
    certificate, derived here: with ``a = |c| g``, ``u_+ = (1, sign c)`` and
    ``u_- = (1, -sign c)``, put ``Z = u_- u_-^T / 4`` at ``D = diag(0, g)``,
    ``Z = u_+ u_+^T / 4`` at ``D = diag(g, 0)`` and 0 elsewhere; then
    ``sum_v (J'_v Z_v + Z_v J'_v^T) = (a - 2 + eps) / 2 I``. It is checked in float64 by
    ``_verify_dual_certificate`` and proves for ``a > 2 - eps`` that no nonzero PSD ``M``
    satisfies the vertex inequalities (for ``a > 2`` even with ``eps = 0``). Since ``M = I``
    gives rate ``1 - a/2``, the best constant-metric rate is exactly ``max(0, 1 - a/2)``.
    """
    c = float(c)
    if not math.isfinite(c):
        raise ValueError(f"c must be a finite number; received {c!r}")
    g = positive("g", g, "maximum activation slope")
    eps = float(eps)
    if not (math.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps (required rate 2 lam) must be a finite number >= 0; received "
                         f"{eps!r}")
    names = solver_names(solvers)
    W = np.array([[0.0, -c], [c, 0.0]])
    n = 2
    sym_margin = float(-np.linalg.eigvalsh(g * sym(W) - np.eye(n))[-1])
    js = _vertex_jacobians(W, g)  # order: (0,0), (0,g), (g,0), (g,g)
    cp = cvxpy()
    eye = np.eye(n)

    def build():
        m = cp.Variable((n, n), symmetric=True)
        cons = [m >> eye] + [sym_expr(m @ j + j.T @ m + eps * m) << 0 for j in js]
        prob = cp.Problem(cp.Minimize(0), cons)
        return prob, lambda: sym(np.asarray(m.value, dtype=np.float64))

    def verify(m):
        try:
            mu = rate_in_metric(js, m)
        except ValueError:
            return False, "M not positive definite"
        return mu >= 0.5 * eps * (1 - 1e-6) and mu > 0, f"verified rate {mu:.4g}"

    m_sol, status, _ = solve(build, names, verify)
    lmi_feasible = m_sol is not None
    sgn = 1.0 if c >= 0 else -1.0
    u_plus, u_minus = np.array([1.0, sgn]), np.array([1.0, -sgn])
    zs = [np.zeros((n, n)), np.outer(u_minus, u_minus) / 4, np.outer(u_plus, u_plus) / 4,
          np.zeros((n, n))]
    cert = _verify_dual_certificate(js, zs, eps)
    cert0 = _verify_dual_certificate(js, zs, 0.0)
    certified = cert > 0
    a = abs(c) * g
    best_rate = max(0.0, 1.0 - a / 2)
    parts = [f"W = [[0, {-c:g}], [{c:g}, 0]], g = {g:g}: g W_sym - I = -I < 0 "
             f"({'holds' if sym_margin > 0 else 'fails'}, margin {sym_margin:.3g})"]
    parts.append(f"vertex LMI (M >= I, M J_v + J_v^T M <= -{eps:g} M) is "
                 f"{'feasible (float64-verified M)' if lmi_feasible else 'infeasible'} "
                 f"per the solver ({status})")
    if certified:
        strength = ("no constant metric exists even with rate 0" if cert0 > 0 else
                    f"no constant metric has rate >= {eps / 2:g}")
        parts.append(f"float64-verified dual certificate (margin {cert:.3g}): {strength}")
    else:
        parts.append(f"no infeasibility certificate: |c| g = {a:g} < {2 - eps:g}, and M = I "
                     f"contracts with rate {best_rate:.4g}")
    parts.append(f"best constant-metric rate = max(0, 1 - |c| g / 2) = {best_rate:.4g}")
    certificate = {"vertices": [list(d) for d in itertools.product((0.0, g), repeat=n)],
                   "Z": zs, "margin_eps0": cert0}
    return Theorem7Result(W, c, g, eps, bool(sym_margin > 0), sym_margin, lmi_feasible, status,
                          bool(certified), float(cert), certificate, best_rate,
                          "; ".join(parts))
