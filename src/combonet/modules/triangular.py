"""Theorem 4 modules: ``g W - I`` triangular and Hurwitz, diagonal (hierarchical) metric."""

from __future__ import annotations

import torch
from torch import nn

from .._validate import in_interval, positive_int
from ..activations import Activation
from ..conditions.metzler import closed_form_metric, comparison_matrix
from .base import ContractingModule


class TriangularModule(ContractingModule):
    """Lower-triangular ``W`` with ``W_ii = (gamma - softplus(r_i)) / g < 1 / g`` (Theorem 4).

    ``J = (-I + W D) / tau`` is lower triangular with diagonal at most ``-(1 - gamma) / tau``; its
    comparison matrix (diagonal ``-1 + g max(W_ii, 0)``, off-diagonal ``g|W_ij|``) is a
    triangular Hurwitz Metzler matrix, whose closed-form diagonal metric is the module's metric.
    """

    theorem = "Theorem 4"

    def __init__(self, n: int, *, gamma: float = 0.5, activation: str | Activation = "relu",
                 g: float | None = None, tau: float = 1.0, init_scale: float = 0.5,
                 seed: int | None = None) -> None:
        super().__init__()
        self._init_common(positive_int("n", n), activation, tau, g)
        self.gamma = in_interval("gamma", gamma, 0.0, 1.0, hi_open=True)
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        dtype = torch.get_default_dtype()
        self.lower = nn.Parameter((torch.randn(n, n, generator=gen) * init_scale / n**0.5)
                                  .to(dtype))
        self.r = nn.Parameter(torch.zeros(n, dtype=dtype))

    def weight(self) -> torch.Tensor:
        diag = (self.gamma - nn.functional.softplus(self.r)) / self.g
        return torch.tril(self.lower, -1) + torch.diag(diag)

    def _comparison(self) -> torch.Tensor:
        return comparison_matrix(self.weight().to(torch.float64), self.g)

    def module_metric_diagonal(self) -> torch.Tensor:
        return closed_form_metric(self._comparison())

    def metric_is_diagonal(self) -> bool:
        return True
