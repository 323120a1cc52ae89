"""Theorem 5 modules: ``W = Phi^{-1} U Sigma V^T Phi`` ("SVD Combo Net")."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrizations

from .._validate import in_interval, positive_int
from ..activations import Activation
from .base import ContractingModule


class SVDModule(ContractingModule):
    """``W = Phi^{-1} U Sigma V^T Phi`` with ``U, V`` orthogonal, ``Sigma_ii = gamma
    sigmoid(s_i) / g < 1 / g`` and ``Phi = diag(exp(phi))`` (Theorem 5, paper Section E).

    ``g^2 W^T P W - P = Phi (g^2 V Sigma^2 V^T - I) Phi < 0`` with ``P = Phi^2``; the rate is
    ``(1 - g ||U Sigma V^T||) / tau`` because ``P^{1/2} W P^{-1/2} = U Sigma V^T`` (computed from
    the factors as they are, so round-off in ``U, V`` is accounted for).
    """

    theorem = "Theorem 5"

    def __init__(self, n: int, *, gamma: float = 0.999, activation: str | Activation = "relu",
                 g: float | None = None, tau: float = 1.0, seed: int | None = None) -> None:
        super().__init__()
        self._init_common(positive_int("n", n), activation, tau, g)
        self.gamma = in_interval("gamma", gamma, 0.0, 1.0, hi_open=True)
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            self.u = parametrizations.orthogonal(nn.Linear(n, n, bias=False))
            self.v = parametrizations.orthogonal(nn.Linear(n, n, bias=False))
        dtype = torch.get_default_dtype()
        self.s = nn.Parameter(torch.zeros(n, dtype=dtype))
        self.log_phi = nn.Parameter(torch.zeros(n, dtype=dtype))

    def singular_values(self) -> torch.Tensor:
        return self.gamma * torch.sigmoid(self.s) / self.g

    def normalised_weight(self) -> torch.Tensor:
        """``P^{1/2} W P^{-1/2} = U Sigma V^T`` (no rounding through ``Phi``)."""
        return (self.u.weight * self.singular_values()[None, :]) @ self.v.weight.T

    def weight(self) -> torch.Tensor:
        phi = torch.exp(self.log_phi)
        return self.normalised_weight() * phi[None, :] / phi[:, None]

    def module_metric_diagonal(self) -> torch.Tensor:
        return torch.exp(2 * self.log_phi.to(torch.float64))

    def metric_is_diagonal(self) -> bool:
        return True
