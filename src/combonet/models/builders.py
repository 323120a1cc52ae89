"""Builders in the paper's vocabulary: ``p x n`` networks of Theorem-1 or Theorem-5 modules."""

from __future__ import annotations

from ..combinations import Feedback, Unconstrained, random_block_mask
from ..modules import SparseModule, SVDModule
from ..modules.base import ContractingSystem
from .classifier import SequenceClassifier


def sparse_modules(p: int, n: int, density: float = 0.033, magnitude: float = 1.0, *,
                   seed: int = 0, activation: str = "relu", tau: float = 1.0,
                   best_metric: bool | None = None) -> list[SparseModule]:
    """``p`` fixed random Theorem-1 modules of ``n`` units (seeds ``seed * 1000 + i``)."""
    return [SparseModule(n, density, magnitude, seed=seed * 1000 + i, activation=activation,
                         tau=tau, best_metric=best_metric) for i in range(p)]


def svd_modules(p: int, n: int, *, seed: int = 0, activation: str = "relu",
                tau: float = 1.0) -> list[SVDModule]:
    """``p`` trainable Theorem-5 modules of ``n`` units."""
    return [SVDModule(n, seed=seed * 1000 + i, activation=activation, tau=tau)
            for i in range(p)]


def _coupled(modules: list[ContractingSystem], coupling: str, init_scale: float,
             coupling_density: float | None, seed: int,
             coupling_rank: int | None = None) -> ContractingSystem:
    mask = None
    if coupling_density is not None:
        if coupling_rank is not None:
            raise ValueError("coupling_density and coupling_rank cannot be combined: a "
                             "low-rank coupling is shared by all module pairs; give one of them")
        mask = random_block_mask(len(modules), coupling_density, seed=seed)
    if coupling == "feedback":
        return Feedback(modules, init_scale=init_scale, mask=mask, seed=seed, rank=coupling_rank)
    if coupling_rank is not None:
        raise ValueError("coupling_rank applies to the eq.-3 feedback coupling only, got "
                         f"coupling={coupling!r}")
    return Unconstrained(modules, init_scale=init_scale, mask=mask, seed=seed)


def sparse_combo_net(p: int, n: int, density: float = 0.033, magnitude: float = 1.0, *,
                     input_size: int = 1, num_classes: int = 10, dt: float = 0.1,
                     method: str = "cayley", init_scale: float = 1.0,
                     coupling_density: float | None = None, coupling: str = "feedback",
                     coupling_rank: int | None = None, seed: int = 0,
                     **kw) -> SequenceClassifier:
    """Sparse Combo Net: fixed sparse Theorem-1 modules, trained eq.-3 feedback (Section 4);
    ``coupling_rank=r`` makes the coupling a rank-``r`` communication subspace."""
    mods = sparse_modules(p, n, density, magnitude, seed=seed)
    net = _coupled(mods, coupling, init_scale, coupling_density, seed, coupling_rank)
    return SequenceClassifier(net, input_size, num_classes, dt=dt, method=method, **kw)


def svd_combo_net(p: int, n: int, *, input_size: int = 1, num_classes: int = 10,
                  dt: float = 0.1, method: str = "cayley", init_scale: float = 1.0,
                  coupling_density: float | None = None, coupling: str = "feedback",
                  coupling_rank: int | None = None, seed: int = 0,
                  **kw) -> SequenceClassifier:
    """SVD Combo Net: Theorem-5 modules and eq.-3 feedback, all trained (Section 4)."""
    mods = svd_modules(p, n, seed=seed)
    net = _coupled(mods, coupling, init_scale, coupling_density, seed, coupling_rank)
    return SequenceClassifier(net, input_size, num_classes, dt=dt, method=method, **kw)


def unconstrained_combo_net(p: int, n: int, density: float = 0.033, magnitude: float = 1.0,
                            **kw) -> SequenceClassifier:
    """The control of Section 4.2.3: the same Sparse Combo Net with ``L = B`` unconstrained."""
    return sparse_combo_net(p, n, density, magnitude, coupling="unconstrained", **kw)
