"""Shared machinery of combinations: children, the coupling parameter ``B`` and its mask."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from .._validate import positive, same
from ..modules.base import ContractingSystem


def block_ids(sizes: Sequence[int]) -> torch.Tensor:
    """Module index of every unit."""
    return torch.repeat_interleave(torch.arange(len(sizes)),
                                   torch.tensor(list(sizes), dtype=torch.long))


def off_diagonal_mask(systems: Sequence[ContractingSystem]) -> torch.Tensor:
    """``N x N`` mask of unit pairs in different children."""
    ids = block_ids([s.n for s in systems])
    return (ids[:, None] != ids[None, :]).float()


def block_lower_mask(systems: Sequence[ContractingSystem]) -> torch.Tensor:
    """``N x N`` mask of unit pairs ``(i, j)`` whose child of ``i`` comes after that of ``j``."""
    ids = block_ids([s.n for s in systems])
    return (ids[:, None] > ids[None, :]).float()


def expand_block_mask(block_mask: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
    """A ``p x p`` mask of module pairs -> the ``N x N`` unit mask."""
    ids = block_ids(sizes)
    return block_mask[ids][:, ids]


def random_block_mask(p: int, density: float, seed: int | None = None) -> torch.Tensor:
    """Off-diagonal module pairs kept with probability ``density`` (sparse coupling, D.2.4)."""
    rng = np.random.default_rng(seed)
    m = rng.random((p, p)) < density
    np.fill_diagonal(m, False)
    return torch.as_tensor(m)


def check_systems(systems: Sequence[ContractingSystem]) -> list[ContractingSystem]:
    """The children as a list; ``ValueError`` unless a non-empty list of systems."""
    systems = list(systems)
    if not systems or not all(isinstance(s, ContractingSystem) for s in systems):
        raise ValueError(
            "a combination needs a non-empty list of modules or combinations "
            f"(ContractingSystem instances), got {systems!r}"
        )
    return systems


class Combination(ContractingSystem):
    """Children plus a trainable coupling parameter ``B`` (``N x N``), masked."""

    rule: str = ""

    def __init__(self, systems: Sequence[ContractingSystem], *, init_scale: float = 1.0,
                 mask: torch.Tensor | np.ndarray | None = None, seed: int | None = None,
                 allowed: torch.Tensor | None = None) -> None:
        super().__init__()
        systems = check_systems(systems)
        self.systems = nn.ModuleList(systems)
        self.sizes = [s.n for s in systems]
        tau = same("tau", [s.tau for s in systems], "the time constant")
        same("g", [s.g for s in systems], "the activation slope bound")
        names = {s.activation.name for s in systems}
        if len(names) > 1:
            raise ValueError(
                f"all modules combined must use one activation, got {sorted(names)}; "
                "build them with the same activation"
            )
        self._init_common(sum(self.sizes), systems[0].activation, tau)
        n, p = self.n, len(systems)
        if allowed is None:
            allowed = torch.ones(n, n)
        if mask is not None:
            mask = torch.as_tensor(np.asarray(mask), dtype=torch.float32)
            if mask.shape == (p, p):
                mask = expand_block_mask(mask, self.sizes)
            elif mask.shape != (n, n):
                raise ValueError(
                    f"mask must be {p}x{p} (module level) or {n}x{n} (unit level), "
                    f"got shape {tuple(mask.shape)}"
                )
            allowed = allowed * (mask != 0)
        self.register_buffer("mask", allowed.to(torch.get_default_dtype()))
        positive("init_scale", init_scale)
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        b = torch.randn(n, n, generator=gen) * init_scale / n**0.5
        self.b = nn.Parameter(b.to(torch.get_default_dtype()) * self.mask)

    def masked_b(self) -> torch.Tensor:
        return self.b * self.mask

    # -- structure shared by every combination -------------------------------------------
    def weight_blocks(self) -> list[torch.Tensor]:
        return [b for s in self.systems for b in s.weight_blocks()]

    def weight(self) -> torch.Tensor:
        return torch.block_diag(*self.weight_blocks())

    def leaves(self) -> list[ContractingSystem]:
        return [leaf for s in self.systems for leaf in s.leaves()]

    def inner_coupling(self) -> torch.Tensor | None:
        """Block-diagonal couplings of nested combinations (``None`` if there are none)."""
        inner = [s.coupling() for s in self.systems]
        if all(c is None for c in inner):
            return None
        ref = self.b
        return torch.block_diag(*[
            c if c is not None else torch.zeros(s.n, s.n, dtype=ref.dtype, device=ref.device)
            for s, c in zip(self.systems, inner, strict=True)
        ])

    def own_coupling(self) -> torch.Tensor:
        """The coupling this combination adds (eq. 3 for feedback)."""
        raise NotImplementedError

    def coupling(self) -> torch.Tensor:
        own = self.own_coupling()
        inner = self.inner_coupling()
        return own if inner is None else own + inner

    def children_metric(self, inverse: bool = False) -> torch.Tensor:
        """``blockdiag(M_i)`` (or its inverse), float64."""
        for s in self.systems:
            if not s.has_constant_metric:
                raise ValueError(
                    f"{type(s).__name__} ({s.theorem}) has no constant metric, so it cannot be "
                    f"combined by {type(self).__name__}; use Theorem 1, 3, 4 or 5 modules"
                )
        mats = [s.metric_inverse() if inverse else s.metric() for s in self.systems]
        return torch.block_diag(*mats)

    def metric_is_diagonal(self) -> bool:
        return all(s.metric_is_diagonal() for s in self.systems)

    def conditions(self) -> list[str]:
        out = [self.rule]
        for s in self.systems:
            out += [c for c in s.conditions() if c not in out]
        return out

    def extra_repr(self) -> str:
        return f"sizes={self.sizes}, N={self.n}"
