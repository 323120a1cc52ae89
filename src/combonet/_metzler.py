"""Diagonal metrics for Hurwitz Metzler matrices (Theorem 1, Theorem 4, hierarchy weights).

A Metzler matrix ``A`` (non-negative off-diagonal) is Hurwitz iff it is diagonally stable; with
``v = -A^{-1} 1 > 0`` and ``w = -A^{-T} 1 > 0`` the diagonal ``P = diag(w / v)`` satisfies
``P A + A^T P < 0``. All functions are float64 torch and differentiable.
"""

from __future__ import annotations

import torch


def closed_form_metric(a: torch.Tensor) -> torch.Tensor:
    """Diagonal of ``P = diag(w / v)`` for a Hurwitz Metzler ``A``, normalised to ``min P = 1``."""
    ones = torch.ones(a.shape[0], dtype=a.dtype, device=a.device)
    v = -torch.linalg.solve(a, ones)
    w = -torch.linalg.solve(a.T, ones)
    if not (bool((v > 0).all()) and bool((w > 0).all())):
        raise ValueError("the comparison matrix is not Hurwitz: no diagonal metric exists")
    p = w / v
    return p / p.min()


def rate_in_diagonal_metric(a: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """``mu = -lambda_max(P^{-1/2} (P A + A^T P) P^{-1/2}) / 2``, so ``PA + A^T P <= -2 mu P``."""
    s = p.sqrt()
    sym = (a * (s[:, None] / s[None, :]))  # P^{1/2} A P^{-1/2}
    sym = (sym + sym.T) / 2
    return -torch.linalg.eigvalsh(sym)[-1]


def comparison_matrix(w: torch.Tensor, g: float) -> torch.Tensor:
    """``A = g|W| - I`` with ``|W|_ii := 0`` where ``W_ii <= 0`` (Theorem 1)."""
    a = g * w.abs()
    diag = g * torch.clamp(torch.diagonal(w), min=0.0)
    a = a - torch.diag(torch.diagonal(a)) + torch.diag(diag)
    return a - torch.eye(w.shape[0], dtype=w.dtype, device=w.device)
