"""Small float64 linear-algebra helpers shared by combinations and certificates."""

from __future__ import annotations

import torch


def spd_sqrt(m: torch.Tensor, *, diagonal: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``(M^{1/2}, M^{-1/2})`` of a symmetric positive definite ``M``."""
    if diagonal:
        d = torch.diagonal(m).sqrt()
        return torch.diag(d), torch.diag(1.0 / d)
    evals, evecs = torch.linalg.eigh((m + m.T) / 2)
    if bool((evals <= 0).any()):
        raise ValueError(f"metric is not positive definite (smallest eigenvalue {evals.min():.3g})")
    s = evals.sqrt()
    return (evecs * s) @ evecs.T, (evecs / s) @ evecs.T


def normalise(a: torch.Tensor, sqrt_m: torch.Tensor, isqrt_m: torch.Tensor) -> torch.Tensor:
    """``M^{1/2} A M^{-1/2}``: ``A`` in metric-normalised coordinates."""
    return sqrt_m @ a @ isqrt_m


def sym_max_eig(a: torch.Tensor) -> torch.Tensor:
    """Largest eigenvalue of the symmetric part ``(A + A^T) / 2``."""
    return torch.linalg.eigvalsh((a + a.T) / 2)[-1]


def coupling_excess(lmat: torch.Tensor, m: torch.Tensor, *, diagonal: bool = False) -> float:
    """``lambda_max(sym(M^{1/2} L M^{-1/2}))``: how much a coupling ``L`` can add to the
    symmetric part of the Jacobian in metric ``M`` (0 for eq. 3, up to round-off)."""
    with torch.no_grad():
        s, si = spd_sqrt(m.detach().to(torch.float64), diagonal=diagonal)
        return float(sym_max_eig(normalise(lmat.detach().to(torch.float64), s, si)))
