"""Theorem 1 modules: ``g|W| - I`` Hurwitz gives a diagonal metric ("Sparse Combo Net")."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .. import conditions
from .._validate import in_interval, positive, positive_int
from ..activations import Activation
from ..conditions.metzler import theorem1_radius
from .base import (
    REFUSED,
    ContractingModule,
    mask_defect,
    metric_defect,
    per_pass,
    refuse_loaded,
)


def sample_sparse_weight(n: int, density: float, magnitude: float, rng: np.random.Generator,
                         zero_diagonal: bool = True) -> np.ndarray:
    """A random sparse ``n x n`` matrix: ``round(density n^2)`` entries ``U(-1, 1) * magnitude``
    at positions drawn without replacement (off the diagonal when ``zero_diagonal``)."""
    positions = np.arange(n * n)
    if zero_diagonal:
        positions = positions[positions // n != positions % n]
    k = min(len(positions), max(1, round(density * n * n)))
    w = np.zeros((n, n))
    chosen = rng.choice(len(positions), size=k, replace=False)
    w.flat[positions[chosen]] = rng.uniform(-1.0, 1.0, size=k) * magnitude
    return w


class SparseModule(ContractingModule):
    """Fixed random sparse ``W`` accepted only when ``spectral_radius(g|W|) < 1`` (Theorem 1).

    The diagonal metric is computed, never assumed: the closed form ``diag(w / v)`` or the
    best-conditioned one (a convex problem, closed form as fallback; DESIGN.md §3). With
    ``normalize=True`` (default) the module is stored in metric-normalised coordinates
    ``W <- P^{1/2} W P^{-1/2}``: still Theorem 1, same sparsity, now contracting in the identity
    metric; for a positively homogeneous ``phi`` (ReLU) the dynamics are exactly those of the
    original ``W`` under ``y = P^{1/2} x``.

    ``best_metric=None`` (default) picks the closed form when normalising (conditioning no
    longer matters then, and it gives a ~3x larger rate and ``||W~|| < 1``; measured in
    docs/design.md) and the best-conditioned metric otherwise (eq. 3 needs a well-conditioned
    metric in the original coordinates).
    """

    theorem = "Theorem 1"

    def __init__(self, n: int, density: float = 0.033, magnitude: float = 1.0, *,
                 activation: str | Activation = "relu", g: float | None = None,
                 tau: float = 1.0, zero_diagonal: bool = True, seed: int | None = None,
                 max_tries: int = 1000, normalize: bool = True, best_metric: bool | None = None,
                 weight: torch.Tensor | np.ndarray | None = None) -> None:
        super().__init__()
        self._init_common(positive_int("n", n), activation, tau, g)
        if weight is None:
            in_interval("density", density, 0.0, 1.0)
            positive("magnitude", magnitude)
            positive_int("max_tries", max_tries)
            w = self._sample(density, magnitude, seed, max_tries, zero_diagonal)
        else:
            w = conditions.as_matrix(weight)
            if w.shape[0] != n:
                raise ValueError(f"weight must be {n}x{n} to match n={n}, got {w.shape}")
            rho = theorem1_radius(w, self.g)
            if rho >= 1:
                raise ValueError(
                    f"weight violates Theorem 1: spectral_radius(g|W|) = {rho:.4g} >= 1; "
                    "scale it down or make it sparser"
                )
        self.density = float(np.count_nonzero(w)) / (n * n)
        self.magnitude = magnitude
        if best_metric is None:
            best_metric = not normalize
        try:
            p = conditions.theorem1_metric(w, self.g, best=best_metric)
        except ValueError as err:
            reason = " ".join(str(err).split())
            raise ValueError(
                f"the sampled weight satisfies Theorem 1 but, at magnitude={magnitude:g}, has no "
                f"diagonal metric representable in float64 ({reason}); it needs a smaller "
                "magnitude"
            ) from None
        self.metric_condition_number = float(p.max() / p.min())
        if normalize:
            s = np.sqrt(p)
            w = w * s[:, None] / s[None, :]
            p = np.ones(n)
        self.normalized = normalize
        self.register_buffer("_w", torch.as_tensor(w, dtype=torch.get_default_dtype()))
        self.register_buffer("_p", torch.as_tensor(p, dtype=torch.float64))
        # the stored (possibly float32-rounded) weight must keep a positive rate
        if not self.rate() > 0:
            raise ValueError(
                f"the sampled weight (spectral_radius(g|W|) = {theorem1_radius(w, self.g):.6g}) "
                f"is too close to the Theorem 1 boundary to keep a positive rate after rounding "
                f"to {self._w.dtype}; lower magnitude or density"
            )

    def _sample(self, density: float, magnitude: float, seed: int | None, max_tries: int,
                zero_diagonal: bool) -> np.ndarray:
        rng = np.random.default_rng(seed)
        best = float("inf")
        for _ in range(max_tries):
            w = sample_sparse_weight(self.n, density, magnitude, rng, zero_diagonal)
            rho = theorem1_radius(w, self.g)
            best = min(best, rho)
            if rho < 1:
                return w
        raise ValueError(
            f"no {self.n}x{self.n} matrix with density={density} and magnitude={magnitude} "
            f"satisfied Theorem 1 (spectral_radius(g|W|) < 1) in {max_tries} tries "
            f"(smallest radius seen {best:.3g}); lower magnitude or density"
        )

    def weight(self) -> torch.Tensor:
        return self._w

    def _metric_defect(self) -> str | None:
        """What is wrong with the stored metric ``_p`` (checked once per pass)."""
        return per_pass(("metric_defect", id(self)), lambda: metric_defect(self._p))

    def _buffer_defects(self) -> list[str]:
        defect = self._metric_defect()
        return [] if defect is None else [f"buffer _p (its stored metric) {defect}"]

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        refuse_loaded(self, state_dict, prefix + "_p", "its stored metric", metric_defect)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def module_metric_diagonal(self) -> torch.Tensor:
        """The stored metric, checked at every use (a buffer is never trusted)."""
        defect = self._metric_defect()
        if defect is not None:
            raise ValueError(f"{self.describe()}: buffer _p (its stored metric) {defect}; "
                             f"{REFUSED}")
        return self._p

    def metric_is_diagonal(self) -> bool:
        return True

    def normalised_weight(self) -> torch.Tensor:
        if self.normalized:
            return self._w
        return super().normalised_weight()


class TrainableSparseModule(ContractingModule):
    """Sparse Theorem-1 module that stays contracting while trained (beyond the paper).

    ``W = V R V^{-1}`` with a fixed sparsity mask on ``R``, ``V = diag(exp(s))`` trainable, and
    ``R`` rescaled so that ``g * max(||R||_1, ||R||_inf) <= gamma < 1`` (weighted row- and
    column-sum norms of ``|W|``). Then ``||g|R|||_2 <= gamma`` and ``g|W| - I`` satisfies
    Theorem 1 in the metric ``P = V^{-2}`` with rate at least ``(1 - ||g|R|||_2) / tau``.
    """

    theorem = "Theorem 1"

    def __init__(self, n: int, density: float = 0.033, magnitude: float = 1.0, *,
                 gamma: float = 0.95, activation: str | Activation = "relu",
                 g: float | None = None, tau: float = 1.0, zero_diagonal: bool = True,
                 seed: int | None = None) -> None:
        super().__init__()
        self._init_common(positive_int("n", n), activation, tau, g)
        in_interval("density", density, 0.0, 1.0)
        positive("magnitude", magnitude)
        self.gamma = in_interval("gamma", gamma, 0.0, 1.0, hi_open=True)
        rng = np.random.default_rng(seed)
        w = sample_sparse_weight(n, density, magnitude, rng, zero_diagonal)
        dtype = torch.get_default_dtype()
        self.register_buffer("mask", torch.as_tensor(w != 0, dtype=dtype))
        self.raw = nn.Parameter(torch.as_tensor(w, dtype=dtype))
        self.log_scale = nn.Parameter(torch.zeros(n, dtype=dtype))

    def _buffer_defects(self) -> list[str]:
        defect = mask_defect(self.mask)
        return [] if defect is None else [f"buffer mask (its sparsity pattern) {defect}"]

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        refuse_loaded(self, state_dict, prefix + "mask", "its sparsity pattern", mask_defect)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _r(self) -> torch.Tensor:
        r = self.raw * self.mask
        a = r.abs()
        norm = torch.maximum(a.sum(0).max(), a.sum(1).max()) * self.g
        return r / torch.clamp(norm / self.gamma, min=1.0)

    def weight(self) -> torch.Tensor:
        v = torch.exp(self.log_scale)
        return v[:, None] * self._r() / v[None, :]

    def module_metric_diagonal(self) -> torch.Tensor:
        return torch.exp(-2 * self.log_scale.to(torch.float64))

    def metric_is_diagonal(self) -> bool:
        return True

    def normalised_weight(self) -> torch.Tensor:
        """``P^{1/2} W P^{-1/2} = R`` exactly (no rounding through ``V``)."""
        return self._r()
