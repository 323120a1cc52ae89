"""The common interface of every contracting module and combination (paper eq. 1 and 2)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import nn

from .._validate import positive
from ..activations import Activation, get_activation


class NoConstantMetricError(ValueError):
    """Raised by ``metric()`` when a condition gives no constant metric (Theorem 2, 6, 7)."""


class NotContractingError(ValueError):
    """Raised by ``metric()`` of a combination whose rule needs contracting children when one
    of them has no positive rate (e.g. a :class:`~combonet.Hierarchy` over the unconstrained
    control)."""


@dataclass
class Dynamics:
    """What the engine needs to run ``tau dx/dt = -x + W phi(x) + L x + u`` (eq. 2).

    Built once per forward pass by :meth:`ContractingSystem.dynamics`.
    """

    weight: torch.Tensor  # (N, N) block-diagonal W
    blocks: torch.Tensor | None  # (p, n, n) diagonal blocks of W when they all have size n
    coupling: torch.Tensor | None  # (N, N) linear coupling L, None when there is none
    activation: Activation
    tau: float

    @property
    def n(self) -> int:
        return self.weight.shape[0]


class ContractingSystem(nn.Module, ABC):
    """A network ``tau dx/dt = -x + W phi(x) + L x + u`` with a metric and a rate (eq. 2).

    Leaf modules (eq. 1) have ``L = 0``; combinations (Section 2) add a coupling ``L`` and are
    themselves contracting systems, so they nest to any depth.
    """

    n: int
    tau: float
    activation: Activation
    theorem: str = ""

    def _init_common(self, n: int, activation: str | Activation, tau: float,
                     g: float | None = None) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n (number of units) must be an integer >= 1, got {n!r}")
        self.n = n
        self.tau = positive("tau", tau)
        act = get_activation(activation)
        if g is not None:
            g = positive("g", g)
            if g < act.g:
                raise ValueError(
                    f"g={g} is below the slope bound of {act.name} (g={act.g}); "
                    f"pass g >= {act.g} or leave g unset"
                )
            act = Activation(act.name, act.fn, act.slope, g, act.positively_homogeneous)
        self.activation = act

    @property
    def g(self) -> float:
        """Upper bound on the activation slope, ``0 <= phi' <= g``."""
        return self.activation.g

    # -- the model -----------------------------------------------------------------------
    @abstractmethod
    def weight(self) -> torch.Tensor:
        """The current block-diagonal recurrent weight ``W`` (N x N)."""

    def coupling(self) -> torch.Tensor | None:
        """The linear coupling ``L`` between modules (N x N), ``None`` for a single module."""
        return None

    def weight_blocks(self) -> list[torch.Tensor]:
        """The diagonal blocks of ``W``, one per leaf module, in state order."""
        return [self.weight()]

    def leaves(self) -> list[ContractingSystem]:
        """The leaf modules (eq. 1) in state order."""
        return [self]

    def dynamics(self) -> Dynamics:
        """Build every parameter-dependent matrix once (for one forward pass)."""
        blocks = self.weight_blocks()
        weight = blocks[0] if len(blocks) == 1 else torch.block_diag(*blocks)
        sizes = {b.shape[0] for b in blocks}
        stacked = torch.stack(blocks) if len(sizes) == 1 else None
        return Dynamics(weight, stacked, self.coupling(), self.activation, self.tau)

    def rhs(self, x: torch.Tensor, u: torch.Tensor | None = None) -> torch.Tensor:
        """``f(x) = (-x + W phi(x) + L x + u) / tau`` (eq. 2), batched over leading dims."""
        w = self.weight()
        out = -x + self.activation(x) @ w.T
        lmat = self.coupling()
        if lmat is not None:
            out = out + x @ lmat.T
        if u is not None:
            out = out + u
        return out / self.tau

    # -- the guarantee -------------------------------------------------------------------
    has_constant_metric: bool = True

    @abstractmethod
    def metric(self) -> torch.Tensor:
        """Constant SPD metric ``M`` (float64, differentiable in the parameters)."""

    def metric_inverse(self) -> torch.Tensor:
        """``M^{-1}`` (float64); subclasses with a closed form override this."""
        return torch.linalg.inv(self.metric())

    def metric_is_diagonal(self) -> bool:
        """Whether :meth:`metric` is always diagonal (enables cheaper products)."""
        return False

    @abstractmethod
    def rate(self) -> float:
        """A lower bound ``lam`` on the contraction rate: ``M J + J^T M <= -2 lam M``."""

    def conditions(self) -> list[str]:
        """The paper's conditions (theorems / combination rules) this system relies on."""
        return [self.theorem]

    def forward(self, drive: torch.Tensor, x0: torch.Tensor | None = None, *, dt: float = 0.1,
                method: str = "euler", all_states: bool = True) -> torch.Tensor:
        """Run the discretised dynamics under ``drive`` (batch, steps, N); see ``engine.run``."""
        from ..engine import run

        return run(self.dynamics(), drive, x0, dt=dt, method=method, all_states=all_states)


class ContractingModule(ContractingSystem):
    """A single RNN module (eq. 1): ``L = 0`` and one weight block."""

    def extra_repr(self) -> str:
        return f"n={self.n}, activation={self.activation.name}, g={self.g}, tau={self.tau}"


def frozen(t: torch.Tensor) -> torch.Tensor:
    """A detached float64 copy (for certificates and reporting)."""
    return t.detach().to(torch.float64).cpu()
