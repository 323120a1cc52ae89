"""Generalised negative feedback (paper eq. 3) and the unconstrained control (Section 4.2.3)."""

from __future__ import annotations

import numpy as np
import torch

from ..modules.base import Build
from .base import Combination, block_lower_mask, check_systems, off_diagonal_mask


class _ChildMetricCombination(Combination):
    """A combination in the metric ``P = blockdiag(P_i)`` of its children, with the rate
    bound ``min_i lam_i - lambda_max(sym(P^{1/2} T^{-1} L P^{-1/2}))_+`` for its own ``L``."""

    def metric_diagonal(self) -> torch.Tensor:
        return self.children_metric_diagonal()

    def metric(self) -> torch.Tensor:
        return self.children_metric()

    def metric_inverse(self) -> torch.Tensor:
        return self.children_metric(inverse=True)


class Feedback(_ChildMetricCombination):
    """``L = B - Mbar^{-1} B^T Mbar`` with ``Mbar = P T^{-1}``, ``P = blockdiag(P_i)`` (eq. 3).

    ``Mbar L`` is skew-symmetric, i.e. ``P (T^{-1} L) + (T^{-1} L)^T P = 0``: the coupling
    cancels in the symmetric part of ``P J``, so the network contracts in ``P`` with the
    slowest child's rate (docs/design.md); with one time constant this is the paper's
    ``L = B - M^{-1} B^T M``. ``B`` is trainable and masked to the blocks *below* the block
    diagonal: ``L_ij`` and ``L_ji`` are both set by ``B_ij`` (``i > j``), so this loses nothing
    and every parameter counts (the paper's ~130K for 16x32). ``mask`` (``p x p`` module pairs
    or ``N x N`` units, symmetrised) makes the coupling sparse; zeroing the pair ``(i, j)``
    removes that pathway in both directions and keeps eq. 3.

    In running coordinates (diagonal metrics) the step-scaled coupling is
    ``K = G - G^T * Q`` with ``G = A S B S^{-1}`` and ``Q_ij = q_j^2 / q_i^2``,
    ``q = P^{1/2} S^{-1}`` (``Q = 1`` in value): exactly skew-symmetric in floating point.
    """

    rule = "Feedback (eq. 3)"
    kind = "feedback"

    def __init__(self, systems, *, init_scale: float = 1.0, mask=None,
                 seed: int | None = None) -> None:
        systems = check_systems(systems)
        if mask is not None:
            mask = torch.as_tensor(np.asarray(mask)) != 0
            mask = mask | mask.T
        super().__init__(systems, init_scale=init_scale, mask=mask, seed=seed)
        self.check_constant_metrics()

    def structure(self) -> torch.Tensor:
        return block_lower_mask(self.sizes)

    def own_coupling(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        b = self.masked_b() if dtype is None else self.masked_b().to(dtype)
        taus = self.time_constants().to(b.device)
        if self.metric_is_diagonal():
            mb = self.children_metric_diagonal().to(b.device) / taus
            return b - b.T * (mb[None, :] / mb[:, None]).to(b.dtype)
        m = self.children_metric().to(b.device)
        m_inv = self.children_metric(inverse=True).to(b.device)
        b64 = b.to(torch.float64)
        out = b64 - (taus[:, None] * m_inv) @ b64.T @ (m / taus[None, :])
        return out.to(b.dtype)

    def _own_running(self, ctx: Build, start: int) -> torch.Tensor:
        stop = start + self.n
        if self.metric_is_diagonal():
            g = self._scaled_b(ctx, start)
            q = self.children_metric_diagonal().to(ctx.device).sqrt() / ctx.scale[start:stop]
            return g - g.T * ((q[None, :] / q[:, None]) ** 2).to(ctx.dtype)
        s, a = ctx.scale[start:stop], ctx.alpha[start:stop]
        lmat = self.own_coupling(torch.float64).to(ctx.device)
        return (a[:, None] * lmat * (s[:, None] / s[None, :])).to(ctx.dtype)


class Unconstrained(_ChildMetricCombination):
    """``L = B`` with no constraint: the paper's control (Section 4.2.3), no guarantee.

    ``rate()`` is still an honest bound in ``P = blockdiag(P_i)``: the slowest child's rate
    minus ``lambda_max(sym(P^{1/2} T^{-1} L P^{-1/2}))``, usually negative (not certified).
    """

    rule = "Unconstrained coupling (no guarantee)"
    kind = "unconstrained"

    def __init__(self, systems, *, init_scale: float = 1.0, mask=None,
                 seed: int | None = None) -> None:
        super().__init__(check_systems(systems), init_scale=init_scale, mask=mask, seed=seed)
        self.check_constant_metrics()

    def structure(self) -> torch.Tensor:
        return off_diagonal_mask(self.sizes)

    def own_coupling(self) -> torch.Tensor:
        return self.masked_b()

    def _own_running(self, ctx: Build, start: int) -> torch.Tensor:
        return self._scaled_b(ctx, start)
