"""Builders in the paper's vocabulary: ``p x n`` networks of contracting modules.

``combo_net`` is the one builder; ``sparse_combo_net``, ``svd_combo_net`` and
``unconstrained_combo_net`` are the paper's networks. Options beyond the paper (each certified
like the rest): trainable time constants in ``[tau, tau_max]`` (``tau_train="module"`` or
``"unit"``, started log-spaced across modules: several timescales), a low-rank coupling
(``coupling_rank``), module kinds (``"trainable-sparse"``, ``"mixed"``: Theorem-1 and Theorem-5
modules alternating), the hierarchy-plus-feedback ``"hybrid"`` (a fast input module feeding
slow feedback-coupled memory modules), and the readout (``last``, ``mean``, ``attention``).
"""

from __future__ import annotations

from collections.abc import Sequence

from ..combinations import Feedback, Hierarchy, Unconstrained, random_block_mask
from ..engine.maps import DEFAULT_METHOD
from ..modules import SparseModule, SVDModule, TimeConstants, TrainableSparseModule
from ..modules.base import ContractingSystem
from .classifier import SequenceClassifier

KINDS = ("sparse", "svd", "trainable-sparse", "mixed")
TAU_TRAIN = ("none", "module", "unit")


def module_taus(p: int, tau: float, tau_max: float | None) -> list[float]:
    """Initial time constants of ``p`` modules, log-spaced strictly inside ``(tau, tau_max)``
    (all ``tau`` when ``tau_max`` is None)."""
    if tau_max is None:
        return [tau] * p
    if not tau_max > tau:
        raise ValueError(f"tau_max must be larger than tau, got tau={tau}, tau_max={tau_max}")
    return [tau * (tau_max / tau) ** ((i + 0.5) / p) for i in range(p)]


def _time(n: int, init: float, tau: float, tau_max: float | None, tau_train: str):
    if tau_train not in TAU_TRAIN:
        raise ValueError(f'Invalid tau_train "{tau_train}". Must be one of {list(TAU_TRAIN)}')
    if tau_train == "none":
        return init
    if tau_max is None:
        raise ValueError("trainable time constants (tau_train) need a range: give tau_max")
    return TimeConstants(n, init=init, lo=tau, hi=tau_max, per=tau_train)


def modules(kind: str, p: int, n: int, *, density: float = 0.033, magnitude: float = 1.0,
            seed: int = 0, activation: str = "relu", tau: float = 1.0,
            tau_max: float | None = None, tau_train: str = "none",
            best_metric: bool | None = None) -> list[ContractingSystem]:
    """``p`` modules of ``n`` units of one kind (seeds ``seed * 1000 + i``)."""
    if kind not in KINDS:
        raise ValueError(f'Invalid module kind "{kind}". Must be one of {list(KINDS)}')
    out: list[ContractingSystem] = []
    for i, init in enumerate(module_taus(p, tau, tau_max)):
        t = _time(n, init, tau, tau_max, tau_train)
        s = seed * 1000 + i
        this = ("sparse" if i % 2 == 0 else "svd") if kind == "mixed" else kind
        if this == "sparse":
            out.append(SparseModule(n, density, magnitude, seed=s, activation=activation,
                                    tau=t, best_metric=best_metric))
        elif this == "svd":
            out.append(SVDModule(n, seed=s, activation=activation, tau=t))
        else:
            out.append(TrainableSparseModule(n, density, magnitude, seed=s,
                                             activation=activation, tau=t))
    return out


def sparse_modules(p: int, n: int, density: float = 0.033, magnitude: float = 1.0, *,
                   seed: int = 0, activation: str = "relu", tau: float = 1.0,
                   best_metric: bool | None = None) -> list[SparseModule]:
    """``p`` fixed random Theorem-1 modules of ``n`` units (seeds ``seed * 1000 + i``)."""
    return modules("sparse", p, n, density=density, magnitude=magnitude, seed=seed,
                   activation=activation, tau=tau, best_metric=best_metric)


def svd_modules(p: int, n: int, *, seed: int = 0, activation: str = "relu",
                tau: float = 1.0) -> list[SVDModule]:
    """``p`` trainable Theorem-5 modules of ``n`` units."""
    return modules("svd", p, n, seed=seed, activation=activation, tau=tau)


def _coupled(mods: Sequence[ContractingSystem], coupling: str, init_scale: float,
             coupling_density: float | None, seed: int,
             coupling_rank: int | None = None) -> ContractingSystem:
    mask = None
    if coupling_density is not None:
        if coupling_rank is not None:
            raise ValueError("coupling_density and coupling_rank cannot be combined: a "
                             "low-rank coupling is shared by all module pairs; give one of them")
        mask = random_block_mask(len(mods), coupling_density, seed=seed)
    if coupling == "feedback":
        return Feedback(mods, init_scale=init_scale, mask=mask, seed=seed, rank=coupling_rank)
    if coupling_rank is not None:
        raise ValueError("coupling_rank applies to the eq.-3 feedback coupling only, got "
                         f"coupling={coupling!r}")
    if coupling != "unconstrained":
        raise ValueError(f'Invalid coupling "{coupling}". Must be one of '
                         "['feedback', 'unconstrained']")
    return Unconstrained(mods, init_scale=init_scale, mask=mask, seed=seed)


def combo_net(kind: str, p: int, n: int, *, density: float = 0.033, magnitude: float = 1.0,
              input_size: int = 1, num_classes: int = 10, dt: float = 0.1,
              method: str = DEFAULT_METHOD, init_scale: float = 1.0,
              coupling_density: float | None = None, coupling: str = "feedback",
              coupling_rank: int | None = None, tau: float = 1.0,
              tau_max: float | None = None, tau_train: str = "none", hybrid: bool = False,
              readout: str = "last", seed: int = 0) -> SequenceClassifier:
    """A ``p x n`` network of ``kind`` modules coupled by ``coupling`` (eq. 3 by default).

    ``hybrid=True``: module 0 is a fast input module (``tau``, the only one the input drives)
    feeding, through a trained hierarchical coupling, the other ``p - 1`` modules, which are
    coupled to each other by eq. 3 and run slower (time constants in ``(tau, tau_max]``).
    """
    if hybrid:
        if p < 2:
            raise ValueError(f"a hybrid network needs modules >= 2, got {p}")
        first = modules(kind, 1, n, density=density, magnitude=magnitude, seed=seed,
                        tau=tau)[0]
        slow_lo = tau if tau_max is None else (tau * tau_max) ** 0.5
        rest = modules(kind, p - 1, n, density=density, magnitude=magnitude, seed=seed + 1,
                       tau=slow_lo if tau_train == "none" else tau, tau_max=tau_max,
                       tau_train=tau_train)
        memory = _coupled(rest, coupling, init_scale, coupling_density, seed, coupling_rank)
        net: ContractingSystem = Hierarchy([first, memory], init_scale=init_scale,
                                           seed=seed + 2)
        input_mask = [True] * n + [False] * (n * (p - 1))
    else:
        mods = modules(kind, p, n, density=density, magnitude=magnitude, seed=seed, tau=tau,
                       tau_max=tau_max, tau_train=tau_train)
        net = _coupled(mods, coupling, init_scale, coupling_density, seed, coupling_rank)
        input_mask = None
    return SequenceClassifier(net, input_size, num_classes, dt=dt, method=method,
                              readout=readout, input_mask=input_mask)


def sparse_combo_net(p: int, n: int, density: float = 0.033, magnitude: float = 1.0, *,
                     input_size: int = 1, num_classes: int = 10, dt: float = 0.1,
                     method: str = DEFAULT_METHOD, init_scale: float = 1.0,
                     coupling_density: float | None = None, coupling: str = "feedback",
                     coupling_rank: int | None = None, seed: int = 0,
                     **kw) -> SequenceClassifier:
    """Sparse Combo Net: fixed sparse Theorem-1 modules, trained eq.-3 feedback (Section 4);
    ``coupling_rank=r`` makes the coupling a rank-``r`` communication subspace."""
    return combo_net("sparse", p, n, density=density, magnitude=magnitude,
                     input_size=input_size, num_classes=num_classes, dt=dt, method=method,
                     init_scale=init_scale, coupling_density=coupling_density,
                     coupling=coupling, coupling_rank=coupling_rank, seed=seed, **kw)


def svd_combo_net(p: int, n: int, *, input_size: int = 1, num_classes: int = 10,
                  dt: float = 0.1, method: str = DEFAULT_METHOD, init_scale: float = 1.0,
                  coupling_density: float | None = None, coupling: str = "feedback",
                  coupling_rank: int | None = None, seed: int = 0,
                  **kw) -> SequenceClassifier:
    """SVD Combo Net: Theorem-5 modules and eq.-3 feedback, all trained (Section 4)."""
    return combo_net("svd", p, n, input_size=input_size, num_classes=num_classes, dt=dt,
                     method=method, init_scale=init_scale, coupling_density=coupling_density,
                     coupling=coupling, coupling_rank=coupling_rank, seed=seed, **kw)


def unconstrained_combo_net(p: int, n: int, density: float = 0.033, magnitude: float = 1.0,
                            **kw) -> SequenceClassifier:
    """The control of Section 4.2.3: the same Sparse Combo Net with ``L = B`` unconstrained."""
    return sparse_combo_net(p, n, density, magnitude, coupling="unconstrained", **kw)
