"""Generalised negative feedback (paper eq. 3) and the unconstrained control (Section 4.2.3)."""

from __future__ import annotations

import numpy as np
import torch

from .._linalg import coupling_excess
from .base import Combination, block_lower_mask, check_systems, off_diagonal_mask


class _ChildMetricCombination(Combination):
    """A combination in the metric ``M = blockdiag(M_i)`` of its children, with the rate bound
    ``min_i lam_i - lambda_max(sym(M^{1/2} L M^{-1/2}))_+ / tau`` for its own coupling ``L``."""

    def metric(self) -> torch.Tensor:
        return self.children_metric()

    def metric_inverse(self) -> torch.Tensor:
        return self.children_metric(inverse=True)

    def rate(self) -> float:
        excess = coupling_excess(self.own_coupling(), self.metric(),
                                 diagonal=self.metric_is_diagonal())
        return min(s.rate() for s in self.systems) - max(excess, 0.0) / self.tau


class Feedback(_ChildMetricCombination):
    """``L = B - M^{-1} B^T M`` with ``M = blockdiag(M_i)`` (eq. 3).

    ``M L + L^T M = 0``: the coupling cancels in the symmetric part of ``M J``, so the network
    contracts in ``M`` with the slowest child's rate. ``B`` is trainable and masked to the blocks
    *below* the block diagonal: ``L_ij`` and ``L_ji`` are both set by ``B_ij`` (``i > j``), so
    this loses nothing and every parameter counts (the paper's ~130K for 16x32). ``mask``
    (``p x p`` module pairs or ``N x N`` units, symmetrised) makes the coupling sparse.
    """

    rule = "Feedback (eq. 3)"

    def __init__(self, systems, *, init_scale: float = 1.0, mask=None,
                 seed: int | None = None) -> None:
        systems = check_systems(systems)
        if mask is not None:
            mask = torch.as_tensor(np.asarray(mask)) != 0
            mask = mask | mask.T
        super().__init__(systems, init_scale=init_scale, mask=mask, seed=seed,
                         allowed=block_lower_mask(systems))
        self.children_metric()  # fail early for children without a constant metric

    def own_coupling(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        b = self.masked_b() if dtype is None else self.masked_b().to(dtype)
        if self.metric_is_diagonal():
            m = torch.cat([torch.diagonal(s.metric()) for s in self.systems]).to(b.dtype)
            return b - b.T * (m[None, :] / m[:, None])
        m = self.children_metric().to(b.dtype)
        m_inv = self.children_metric(inverse=True).to(b.dtype)
        return b - m_inv @ b.T @ m


class Unconstrained(_ChildMetricCombination):
    """``L = B`` with no constraint: the paper's control (Section 4.2.3), no guarantee.

    ``rate()`` is still an honest bound in ``M = blockdiag(M_i)``: the slowest child's rate minus
    ``lambda_max(sym(M^{1/2} L M^{-1/2})) / tau``, usually negative (not certified).
    """

    rule = "Unconstrained coupling (no guarantee)"

    def __init__(self, systems, *, init_scale: float = 1.0, mask=None,
                 seed: int | None = None) -> None:
        systems = check_systems(systems)
        super().__init__(systems, init_scale=init_scale, mask=mask, seed=seed,
                         allowed=off_diagonal_mask(systems))

    def own_coupling(self) -> torch.Tensor:
        return self.masked_b()

