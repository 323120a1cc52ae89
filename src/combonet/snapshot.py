"""One explicit snapshot per pass: the matrices that run, and what their certificate needs.

In the spirit of RobustNeuralNetworks' direct -> explicit split: a model's free parameters are
turned into explicit matrices once per forward pass (:meth:`ContractingSystem.explicit`). The
engine multiplies exactly these tensors, and :func:`combonet.certify` certifies exactly these
tensors (read in float64), so a certificate covers the map that runs, in the dtype that runs.

Running coordinates. The network runs in ``y = S x`` with ``S = diag(s)`` positive and fixed
for the pass: ``s = sqrt(diag(P))`` for the network's metric ``P`` when the activation is
positively homogeneous (ReLU: ``phi(S^{-1} y) = S^{-1} phi(y)``), else ``s = 1``. For diagonal
metrics ``P`` becomes the identity there, an eq.-3 coupling becomes an exactly skew-symmetric
matrix and its Cayley step an orthogonal one, so float32 rounding is benign whatever the
conditioning of ``P`` (docs/design.md).

With ``alpha = dt / tau`` per unit (``A = diag(alpha)``), the map of one step is::

    h   = W_a phi(y)                    W_a = A S W S^{-1}      (``blocks``)
    cayley: y+ = C (b * y + h + d)      C = (I - K/2)^{-1} (I + K/2),  K = A S L S^{-1}
            (for a low-rank K = X Y^T: C = I + X G Y^T, G = (I - Y^T X / 2)^{-1}, Woodbury)
    euler:  y+ = A_e y + h + d          A_e = diag(b) + K
    none:   y+ = b * y + h + d          (no coupling)

with ``b = 1 - alpha`` (``decay``) and the drive ``d = alpha * s * u`` (:meth:`prepare_drive`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .activations import Activation

__all__ = ["Explicit", "Node"]


@dataclass(frozen=True, eq=False)
class Node:
    """One system of the tree (a leaf module or a combination), in running coordinates.

    ``metric`` is the *candidate* metric of this system in running coordinates (float64,
    detached): a vector (diagonal) or a matrix. It is a claim to be verified, not trusted:
    :mod:`combonet.bounds` checks every inequality with the running tensors in this metric.
    """

    kind: str  # "leaf", "feedback", "hierarchy", "unconstrained"
    label: str  # e.g. "systems.1 SVDModule(n=4)"
    rule: str  # the theorem or combination rule it relies on
    start: int
    stop: int
    children: tuple[Node, ...]
    metric: torch.Tensor | None  # None: no constant metric (Theorem 2)
    g: float
    #: leaves: "diagonal" (Theorems 1, 4, 5 and trainable sparse), "theorem3", "none"
    family: str = ""
    #: theorem3 leaves: the exact product ``W = -P1 Q P2`` in running coordinates (float64)
    reference: torch.Tensor | None = None
    #: theorem3 leaves: ``lambda_max(Q) max(p1 p2)``, so that ``||W_ref D||_M <= g gain``
    gain: float | None = None
    #: hierarchies: the weights ``c_i`` of the metric ``blockdiag(c_i P_i)``
    weights: tuple[float, ...] = ()

    @property
    def n(self) -> int:
        return self.stop - self.start

    @property
    def diagonal(self) -> bool:
        return self.metric is not None and self.metric.dim() == 1

    def leaves(self) -> list[Node]:
        return [self] if self.kind == "leaf" else [x for c in self.children for x in c.leaves()]


@dataclass(frozen=True, eq=False)
class Explicit:
    """Everything one pass multiplies (run dtype, differentiable) plus the certificate tree."""

    method: str | None  # the discrete map, or None (no map matrices: rates only)
    dt: float
    activation: Activation
    alpha: torch.Tensor  # (N,) dt / tau per unit, run dtype
    decay: torch.Tensor  # (N,) 1 - alpha, run dtype
    blocks: torch.Tensor  # (p, n, n) A S W_i S^{-1} per leaf, or (1, N, N) when sizes differ
    coupling: torch.Tensor | None  # K = A S L S^{-1} (N, N), None without coupling
    kmat: torch.Tensor | None  # C (cayley) or diag(b) + K (euler); None without coupling
    scale: torch.Tensor  # (N,) s, detached, run dtype: y = s * x
    normalised: bool  # whether s comes from the metric (positively homogeneous phi)
    tree: Node
    #: a low-rank coupling ``K = X Y^T`` kept as its factors (``coupling`` is then None)
    factors: tuple[torch.Tensor, torch.Tensor] | None = None
    #: cayley with factors: ``G = (I - Y^T X / 2)^{-1}``, so that ``C = I + X G Y^T``
    core: torch.Tensor | None = None
    #: the power of two with ``scale * unit = diag(P)^{1/2}``; the candidate metrics are in
    #: the coordinates ``y' = (scale * unit) x`` (``scale`` is centred to fit the run dtype)
    unit: float = 1.0

    @property
    def n(self) -> int:
        return self.alpha.shape[0]

    @property
    def dtype(self) -> torch.dtype:
        return self.blocks.dtype

    @property
    def device(self) -> torch.device:
        return self.blocks.device

    @property
    def mode(self) -> str:
        """What the engine runs: ``cayley``, ``lowrank`` (cayley with ``C = I + X G Y^T``),
        ``euler`` or ``none`` (no coupling)."""
        if self.core is not None:
            return "lowrank"
        if self.kmat is None:
            if self.factors is not None or self.coupling is not None:
                raise ValueError(f"snapshot built without a discrete map (method="
                                 f"{self.method!r})")
            return "none"
        from .engine.maps import METHODS  # the registry (imported here: no import cycle)

        if self.method not in METHODS:
            raise ValueError(f"snapshot built without a discrete map (method={self.method!r})")
        return self.method

    def coupling_matrix(self) -> torch.Tensor | None:
        """``K`` as one (N, N) matrix (formed from its factors when of low rank)."""
        if self.factors is not None:
            x, y = self.factors
            return x @ y.T
        return self.coupling

    def map_matrix(self) -> torch.Tensor | None:
        """The map's coupling matrix as one (N, N) matrix: ``C`` (cayley, also formed from
        ``I + X G Y^T``) or ``A_e`` (euler); None without coupling."""
        if self.core is not None:
            x, y = self.factors
            eye = torch.eye(self.n, dtype=x.dtype, device=x.device)
            return eye + x @ self.core @ y.T
        return self.kmat

    def uniform_decay(self) -> float | None:
        """``b`` as a Python float when it is the same for every unit and not trained."""
        d = self.decay
        if d.requires_grad or not bool((d == d[0]).all()):
            return None
        return float(d[0])

    def drive_scale(self) -> torch.Tensor:
        """``alpha * s``: the factor that turns an input ``u`` into the engine's drive ``d``."""
        return self.alpha * self.scale

    def prepare_drive(self, u: torch.Tensor) -> torch.Tensor:
        """The engine's drive ``d = alpha * s * u`` for inputs ``u`` (..., N)."""
        return u * self.drive_scale()

    def to_running(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale

    def from_running(self, y: torch.Tensor) -> torch.Tensor:
        return y / self.scale

    def weight_matrix(self) -> torch.Tensor:
        """``W_a`` as one (N, N) block-diagonal matrix."""
        b = self.blocks
        return b[0] if b.shape[0] == 1 else torch.block_diag(*b.unbind(0))
