"""Theorem 2 modules: symmetric ``W`` with ``g W < I``."""

from __future__ import annotations

import torch
from torch import nn

from .._validate import in_interval, positive_int
from ..activations import Activation
from .base import ContractingModule, NoConstantMetricError


class SymmetricModule(ContractingModule):
    """``W = (gamma / g) I - E^T E``: symmetric with ``g W <= gamma I < I`` (Theorem 2).

    Every symmetric matrix with ``lambda_max(W) <= gamma / g`` has this form, so ``E`` is free.
    Theorem 2's proof uses the *state-dependent* metric ``D(x) = diag(phi'(x))`` (it needs
    ``phi' > 0``): pointwise ``D J + J^T D <= -2 lam D`` with
    ``lam = (1 - g max(lambda_max(W), 0)) / tau``. It gives no constant metric, so this module
    cannot enter a feedback combination (which needs one); use ``conditions.find_constant_metric``
    to search for one numerically for small ``n``.
    """

    theorem = "Theorem 2"
    has_constant_metric = False
    family = "none"

    def __init__(self, n: int, *, gamma: float = 0.9, activation: str | Activation = "tanh",
                 g: float | None = None, tau: float = 1.0, init_scale: float = 0.5,
                 seed: int | None = None) -> None:
        super().__init__()
        self._init_common(positive_int("n", n), activation, tau, g)
        self.gamma = in_interval("gamma", gamma, 0.0, 1.0, hi_open=True)
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        e = torch.randn(n, n, generator=gen) * init_scale / n**0.5
        self.e = nn.Parameter(e.to(torch.get_default_dtype()))

    def weight(self) -> torch.Tensor:
        eye = torch.eye(self.n, dtype=self.e.dtype, device=self.e.device)
        return self.gamma / self.g * eye - self.e.T @ self.e

    def metric(self) -> torch.Tensor:
        raise NoConstantMetricError(
            "Theorem 2 gives no constant metric: its proof contracts in the state-dependent "
            "metric D(x) = diag(phi'(x)). Use a module with a constant metric (Theorems 1, 3, "
            "4, 5) inside Feedback/Hierarchy, or search one with "
            "combonet.conditions.find_constant_metric for small n."
        )
