"""Generalised negative feedback (paper eq. 3) and the unconstrained control (Section 4.2.3)."""

from __future__ import annotations

import numpy as np
import torch

from ..modules.base import Build
from .base import Combination, LowRank, block_lower_mask, check_systems, off_diagonal_mask


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

    ``rank=r`` makes the coupling a shared ``r``-dimensional communication subspace,
    ``B = U V^T`` over all units (eq. 3 keeps its guarantee for *any* ``B``, including its parts
    inside a module, which become skew rotations): ``L`` has rank ``<= 2r`` and the engine's
    Cayley step ``C = I + X G Y^T`` costs ``O(N r)`` per step instead of ``O(N^2)``
    (Woodbury). It cannot be masked; zeroing blocks of ``mask`` (a lesion) still works and
    falls back to the dense computation.
    """

    rule = "Feedback (eq. 3)"
    kind = "feedback"

    def __init__(self, systems, *, init_scale: float = 1.0, mask=None,
                 seed: int | None = None, rank: int | None = None) -> None:
        systems = check_systems(systems)
        if mask is not None and rank is not None:
            raise ValueError("a low-rank coupling (rank=...) cannot also be masked; use "
                             "rank=None for a sparse coupling, or no mask")
        if mask is not None:
            mask = torch.as_tensor(np.asarray(mask)) != 0
            mask = mask | mask.T
        super().__init__(systems, init_scale=init_scale, mask=mask, seed=seed, rank=rank)
        self.check_constant_metrics()

    def structure(self) -> torch.Tensor:
        if self.rank is not None:
            return torch.ones(self.n, self.n)
        return block_lower_mask(self.sizes)

    def _own_running_low_rank(self, ctx: Build, start: int) -> LowRank | None:
        """``K = X Y^T`` from ``B_y = U_y V_y^T`` (``U_y = S U``, ``V_y = S^{-1} V``):
        ``K = A U_y V_y^T - (A Mbar_y^{-1} V_y)(Mbar_y U_y)^T``, i.e. for diagonal metrics
        ``X = [a U_y, -q^{-2} V_y]``, ``Y = [V_y, q^2 a U_y]`` with ``q^2 = 1`` in value."""
        if not self.low_rank_active():
            return None
        stop = start + self.n
        s = ctx.scale[start:stop]
        a = ctx.alpha_run[start:stop, None]
        uy = self.u.to(ctx.dtype) * s.to(ctx.dtype)[:, None]
        vy = self.v.to(ctx.dtype) / s.to(ctx.dtype)[:, None]
        if self.metric_is_diagonal():
            q2 = ((self.children_metric_diagonal().to(ctx.device).sqrt() / s) ** 2)[:, None]
            q2 = q2.to(ctx.dtype)
            return LowRank(torch.cat([a * uy, -vy / q2], 1), torch.cat([vy, q2 * a * uy], 1))
        taus = self.time_constants().to(ctx.device)
        sd = s.to(torch.float64)
        mbar = self.children_metric().to(ctx.device) / taus[None, :] / sd[:, None] / sd[None, :]
        mbar_inv = torch.linalg.inv(mbar)
        x2 = -(ctx.alpha[start:stop, None] * (mbar_inv @ vy.to(torch.float64)))
        y2 = mbar @ uy.to(torch.float64)
        return LowRank(torch.cat([a * uy, x2.to(ctx.dtype)], 1),
                       torch.cat([vy, y2.to(ctx.dtype)], 1))

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
