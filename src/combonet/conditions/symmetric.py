"""Theorem 2: symmetric weights, ``W = W^T`` and ``g W < I`` (with ``phi' > 0``); the metric is
the state-dependent ``D(x) = diag(phi'(x))``, not a constant one."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._inputs import as_matrix, g_tau, input_eps
from ._linalg import EPS, fmt, fro, one_minus, pow2_scale, rel_asymmetry, sym, unit
from .results import ConditionResult


def check_theorem2(W: Any, g: float = 1.0, tau: float = 1.0) -> ConditionResult:
    """Theorem 2: ``W = W^T`` and ``g W < I`` (and ``phi' > 0``).

    No constant metric: the proof's metric is the state-dependent ``D(x) = diag(phi'(x))``.
    Since ``D^{1/2} J D^{-1/2} = (-I + D^{1/2} W D^{1/2}) / tau``, pointwise
    ``D J + J^T D <= -2 lam D`` with ``lam = (1 - g max(lambda_max(W), 0)) / tau`` (with
    ``lambda_max`` raised by its round-off allowance ``64 n eps ||W||``).
    Symmetry tolerance: ``1e-10`` relative to ``max(1, max |W|)`` (``10 eps`` of the input dtype
    for float32 input). A ``W`` with entries beyond ``2^+-500`` is divided by a power of two
    first: no overflow for any finite ``W``; the margin ``1 - g lambda_max(W)`` is ``inf`` when
    it exceeds float64.
    """
    tol = max(1e-10, 10.0 * input_eps(W))
    W = as_matrix(W)
    g, tau = g_tau(g, tau)
    n = W.shape[0]
    w_hat, s = pow2_scale(W)
    asym = rel_asymmetry(W)
    lam_hat = float(np.linalg.eigvalsh(sym(w_hat))[-1])
    lam_max = lam_hat * s
    details = {"asymmetry": asym, "lambda_max": lam_max, "symmetry_tolerance": tol}
    if asym > tol:
        return ConditionResult(
            "Theorem 2", False, -asym, None, None,
            f"W is not symmetric: max |W - W^T| / max(1, max |W|) = {asym:.3g} > {tol:.1g}",
            details)
    un = unit(g, s)
    norm_hat = fro(w_hat)
    margin, holds = one_minus(un, lam_hat, n, norm_hat)
    g_lam = un.scale(un.alpha * lam_hat)  # g lambda_max(W)
    if not holds:
        return ConditionResult(
            "Theorem 2", False, min(margin, 0.0), None, None,
            f"g W < I fails: g lambda_max(W) = {fmt(g_lam, '.6g')} (needs < 1)", details)
    # lambda_max(W) is known to 64 n eps ||W||: the rate uses its upper end
    lam_up = lam_hat + 64.0 * n * EPS * norm_hat
    rate = (un.scale(un.beta - un.alpha * lam_up) if lam_up > 0 else 1.0) / tau
    msg = (f"W symmetric and g lambda_max(W) = {fmt(g_lam)} < 1. No constant metric: the "
           "proof's metric is the state-dependent D(x) = diag(phi'(x)), which requires "
           f"phi' > 0; pointwise D J + J^T D <= -2 lam D with lam = {rate:.4g}. The bound is "
           "pointwise in x: D changes along trajectories (cf. Theorem 6's slowly-varying-slopes "
           "condition), and it cannot be used inside a feedback combination")
    return ConditionResult("Theorem 2", True, margin, None, rate, msg, details)
