"""Hierarchical combination (Section 2): module ``j`` feeds module ``i`` only for ``j < i``."""

from __future__ import annotations

import torch

from .._linalg import spd_sqrt
from .._metzler import closed_form_metric, rate_in_diagonal_metric
from ..modules.base import NotContractingError
from .base import Combination, block_lower_mask, check_systems


class Hierarchy(Combination):
    """Trainable strictly block-lower-triangular coupling ``L = B``.

    With child rates ``lam_i`` and gains ``gamma_ij = ||M_i^{1/2} B_ij M_j^{-1/2}|| / tau``, the
    ``p x p`` comparison matrix ``T`` (``T_ii = -lam_i``, ``T_ij = gamma_ij`` for ``i > j``) is a
    triangular Hurwitz Metzler matrix. Its diagonal metric ``c`` (closed form) gives the combined
    metric ``blockdiag(c_i M_i)`` and the rate ``-lambda_max(sym(C^{1/2} T C^{-1/2}))``.
    """

    rule = "Hierarchy"

    def __init__(self, systems, *, init_scale: float = 1.0, mask=None,
                 seed: int | None = None) -> None:
        systems = check_systems(systems)
        super().__init__(systems, init_scale=init_scale, mask=mask, seed=seed,
                         allowed=block_lower_mask(systems))
        self.children_metric()

    def own_coupling(self) -> torch.Tensor:
        return self.masked_b()

    def comparison(self) -> torch.Tensor:
        """The ``p x p`` comparison matrix ``T`` (float64, differentiable in ``B``)."""
        p = len(self.systems)
        rates = [s.rate() for s in self.systems]
        if min(rates) <= 0:
            raise NotContractingError(
                f"every child of a Hierarchy must contract for its metric and rate; child rates "
                f"{rates}")
        roots = [spd_sqrt(s.metric(), diagonal=s.metric_is_diagonal()) for s in self.systems]
        b = self.masked_b().to(torch.float64)
        offs = [0, *torch.cumsum(torch.tensor(self.sizes), 0).tolist()]
        rows = []
        for i in range(p):
            row = []
            for j in range(p):
                if i == j:
                    row.append(torch.tensor(-rates[i], dtype=torch.float64))
                elif i > j:
                    bij = b[offs[i]:offs[i + 1], offs[j]:offs[j + 1]]
                    scaled = roots[i][0] @ bij @ roots[j][1]
                    row.append(torch.linalg.matrix_norm(scaled, ord=2) / self.tau)
                else:
                    row.append(torch.tensor(0.0, dtype=torch.float64))
            rows.append(torch.stack(row))
        return torch.stack(rows)

    def weights(self) -> torch.Tensor:
        """The weights ``c_i`` of the combined metric ``blockdiag(c_i M_i)``."""
        return closed_form_metric(self.comparison())

    def metric(self) -> torch.Tensor:
        c = self.weights()
        return torch.block_diag(*[ci * s.metric() for ci, s in zip(c, self.systems, strict=True)])

    def metric_inverse(self) -> torch.Tensor:
        c = self.weights()
        inverses = [s.metric_inverse() / ci for ci, s in zip(c, self.systems, strict=True)]
        return torch.block_diag(*inverses)

    def rate(self) -> float:
        """The certified rate; with a non-contracting child, that child's (non-positive) rate
        bound: the hierarchy is then not certified."""
        with torch.no_grad():
            try:
                t = self.comparison()
            except NotContractingError:
                return min(s.rate() for s in self.systems)
            return float(rate_in_diagonal_metric(t, closed_form_metric(t)))
