"""Theorem 3 modules: ``W = -P1 Q P2`` with metric ``M = (P1 Q P1)^{-1}``."""

from __future__ import annotations

import torch
from torch import nn

from .._validate import positive, positive_int
from ..activations import Activation
from .base import ContractingModule


class ProductModule(ContractingModule):
    """``W = -P1 Q P2``, ``P_ii = d_i^2 + eps``, ``Q = E^T E + eps I`` (Theorem 3).

    ``M W D = -P1^{-1} P2 D`` is diagonal and non-positive, so ``M J + J^T M <= -2 M / tau``:
    rate ``1 / tau`` in ``M = (P1 Q P1)^{-1}`` for any parameters (for the exact product; the
    certificate subtracts what rounding of the running ``W`` costs).
    """

    theorem = "Theorem 3"
    family = "theorem3"

    def __init__(self, n: int, *, eps: float = 1e-3, activation: str | Activation = "relu",
                 g: float | None = None, tau: float = 1.0, init_scale: float = 1.0,
                 seed: int | None = None) -> None:
        super().__init__()
        self._init_common(positive_int("n", n), activation, tau, g)
        self.eps = positive("eps", eps)
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        dtype = torch.get_default_dtype()
        self.d1 = nn.Parameter(torch.ones(n, dtype=dtype))
        self.d2 = nn.Parameter(torch.ones(n, dtype=dtype))
        e = torch.randn(n, n, generator=gen) * init_scale / n**0.5
        self.e = nn.Parameter(e.to(dtype))

    def factors(self, dtype: torch.dtype | None = None) -> tuple[torch.Tensor, ...]:
        """``(p1, Q, p2)``: the diagonals of ``P1``, ``P2`` and the SPD ``Q``."""
        d1, d2, e = (t if dtype is None else t.to(dtype) for t in (self.d1, self.d2, self.e))
        eye = torch.eye(self.n, dtype=e.dtype, device=e.device)
        return d1**2 + self.eps, e.T @ e + self.eps * eye, d2**2 + self.eps

    def weight(self) -> torch.Tensor:
        p1, q, p2 = self.factors()
        return -(p1[:, None] * q * p2[None, :])

    def metric_inverse(self) -> torch.Tensor:
        p1, q, _ = self.factors(torch.float64)
        return p1[:, None] * q * p1[None, :]

    def metric(self) -> torch.Tensor:
        m = torch.linalg.inv(self.metric_inverse())
        return (m + m.T) / 2

    def reference_weight(self, scale: torch.Tensor) -> torch.Tensor:
        """The exact product ``-P1 Q P2`` in running coordinates, float64: the certificate
        bounds the running ``W`` by its distance to it (``M W D`` is diagonal <= 0 for it)."""
        p1, q, p2 = self.factors(torch.float64)
        w = -(p1[:, None] * q * p2[None, :])
        s = scale.to(w.device)
        return w * (s[:, None] / s[None, :])

    def reference_gain(self) -> float:
        """``lambda_max(Q) max(p1 p2)``: ``||W D||_M^2 = lambda_max(D P2 Q P2 D P1 Q P1)
        = ||Q^{1/2} P1 P2 D Q^{1/2}||^2 <= (g lambda_max(Q) max(p1 p2))^2``."""
        p1, q, p2 = self.factors(torch.float64)
        return float(torch.linalg.eigvalsh(q)[-1] * (p1 * p2).max())
