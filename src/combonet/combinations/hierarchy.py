"""Hierarchical combination (Section 2): module ``j`` feeds module ``i`` only for ``j < i``."""

from __future__ import annotations

import torch

from .._linalg import spd_sqrt
from ..conditions.metzler import closed_form_metric
from ..modules.base import Build, NotContractingError, per_pass
from .base import Combination, block_lower_mask, check_systems


class Hierarchy(Combination):
    """Trainable strictly block-lower-triangular coupling ``L = B``.

    With child rates ``lam_i`` and gains ``gamma_ij = ||P_i^{1/2} T_i^{-1} B_ij P_j^{-1/2}||``,
    the ``p x p`` comparison matrix ``T`` (``T_ii = -lam_i``, ``T_ij = gamma_ij`` for ``i > j``)
    is a triangular Hurwitz Metzler matrix. Its diagonal metric ``c`` (closed form) gives the
    combined metric ``blockdiag(c_i P_i)`` and the rate ``-lambda_max(sym(C^{1/2} T C^{-1/2}))``.
    When a child does not contract there is no such metric: the weights are then 1 (so that
    the network still runs) and the certificate says which child fails.
    """

    rule = "Hierarchy"
    kind = "hierarchy"

    def __init__(self, systems, *, init_scale: float = 1.0, mask=None,
                 seed: int | None = None) -> None:
        super().__init__(check_systems(systems), init_scale=init_scale, mask=mask, seed=seed)
        self.check_constant_metrics()

    def structure(self) -> torch.Tensor:
        return block_lower_mask(self.sizes)

    def own_coupling(self) -> torch.Tensor:
        return self.masked_b()

    def comparison(self) -> torch.Tensor:
        """The ``p x p`` comparison matrix ``T`` (float64, differentiable in ``B``); raises
        :class:`NotContractingError` when a child has no positive rate."""
        p = len(self.systems)
        rates = [s.rate() for s in self.systems]
        if not min(rates) > 0:
            raise NotContractingError(
                f"every child of a Hierarchy must contract for its metric and rate; child rates "
                f"{rates}")
        roots = [spd_sqrt(s.metric(), diagonal=s.metric_is_diagonal()) for s in self.systems]
        b = self.masked_b().to(torch.float64)
        taus = self.time_constants().to(b.device)
        offs = [0, *torch.cumsum(torch.tensor(self.sizes), 0).tolist()]
        rows = []
        for i in range(p):
            row = []
            for j in range(p):
                if i == j:
                    row.append(torch.tensor(-rates[i], dtype=torch.float64))
                elif i > j:
                    bij = b[offs[i]:offs[i + 1], offs[j]:offs[j + 1]]
                    bij = bij / taus[offs[i]:offs[i + 1], None]
                    scaled = roots[i][0].to(b.device) @ bij @ roots[j][1].to(b.device)
                    row.append(torch.linalg.matrix_norm(scaled, ord=2).cpu())
                else:
                    row.append(torch.tensor(0.0, dtype=torch.float64))
            rows.append(torch.stack(row))
        return torch.stack(rows)

    def metric_weights(self) -> torch.Tensor:
        """The weights ``c_i`` of the combined metric ``blockdiag(c_i P_i)`` (ones when a
        child does not contract or no finite weights exist)."""
        return per_pass(("weights", id(self)), self._metric_weights)

    def _metric_weights(self) -> torch.Tensor:
        try:
            c = closed_form_metric(self.comparison())
        except (NotContractingError, ValueError):
            return torch.ones(len(self.systems), dtype=torch.float64)
        if not bool(torch.isfinite(c).all()):
            return torch.ones(len(self.systems), dtype=torch.float64)
        return c

    def _weights(self) -> tuple[float, ...]:
        return tuple(float(c) for c in self.metric_weights().detach())

    def metric_diagonal(self) -> torch.Tensor:
        c = self.metric_weights()
        return torch.cat([ci * s.metric_diagonal() for ci, s in
                          zip(c, self.systems, strict=True)])

    def metric(self) -> torch.Tensor:
        c = self.metric_weights()
        return torch.block_diag(*[ci * s.metric() for ci, s in zip(c, self.systems, strict=True)])

    def metric_inverse(self) -> torch.Tensor:
        c = self.metric_weights()
        inverses = [s.metric_inverse() / ci for ci, s in zip(c, self.systems, strict=True)]
        return torch.block_diag(*inverses)

    def _own_running(self, ctx: Build, start: int) -> torch.Tensor:
        return self._scaled_b(ctx, start)


__all__ = ["Hierarchy"]
