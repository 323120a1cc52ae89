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
    ``(1 - g max Sigma) / tau`` because ``P^{1/2} W P^{-1/2} = U Sigma V^T``.
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

    def weight(self) -> torch.Tensor:
        usv = (self.u.weight * self.singular_values()[None, :]) @ self.v.weight.T
        phi = torch.exp(self.log_phi)
        return usv * phi[None, :] / phi[:, None]

    def metric(self) -> torch.Tensor:
        return torch.diag(torch.exp(2 * self.log_phi.to(torch.float64)))

    def metric_inverse(self) -> torch.Tensor:
        return torch.diag(torch.exp(-2 * self.log_phi.to(torch.float64)))

    def metric_is_diagonal(self) -> bool:
        return True

    def rate(self) -> float:
        with torch.no_grad():
            smax = float(self.singular_values().to(torch.float64).max())
            # ||P^{1/2} W P^{-1/2}||_2 of the weight as computed (U, V are orthogonal only up to
            # round-off, ~1e-7 in float32), so the rate holds for the weight that runs
            phi = torch.exp(self.log_phi.to(torch.float64))
            w = self.weight().to(torch.float64) * phi[:, None] / phi[None, :]
            smax = max(smax, float(torch.linalg.matrix_norm(w, ord=2)))
        return (1.0 - self.g * smax) / self.tau
