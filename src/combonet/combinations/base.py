"""Shared machinery of combinations: children, the coupling parameter ``B`` and its masks.

Each combination rule allows couplings only between some blocks (``structure()``: below the
block diagonal for feedback and hierarchy, off the diagonal for the unconstrained control).
That pattern is structural -- recomputed from the children's sizes at every use, never read
from a buffer -- and the user's ``mask`` buffer (sparse coupling, lesions) can only remove
entries from it: a loaded mask that opens other blocks is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .._validate import positive, positive_int, same
from ..modules.base import Build, ContractingSystem, mask_defect
from ..snapshot import Node


def block_ids(sizes: Sequence[int]) -> torch.Tensor:
    """Module index of every unit."""
    return torch.repeat_interleave(torch.arange(len(sizes)),
                                   torch.tensor(list(sizes), dtype=torch.long))


def off_diagonal_mask(sizes: Sequence[int]) -> torch.Tensor:
    """``N x N`` mask of unit pairs in different children."""
    ids = block_ids(sizes)
    return (ids[:, None] != ids[None, :]).float()


def block_lower_mask(sizes: Sequence[int]) -> torch.Tensor:
    """``N x N`` mask of unit pairs ``(i, j)`` whose child of ``i`` comes after that of ``j``."""
    ids = block_ids(sizes)
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


@dataclass(frozen=True, eq=False)
class LowRank:
    """A coupling ``K = X Y^T`` kept as its factors (``N x k`` each, run dtype)."""

    x: torch.Tensor
    y: torch.Tensor

    def dense(self) -> torch.Tensor:
        return self.x @ self.y.T


class Combination(ContractingSystem):
    """Children plus a trainable coupling parameter ``B`` (``N x N``), masked, or of low rank
    ``B = U V^T`` (``rank=r``: ``U, V`` are ``N x r``)."""

    rule: str = ""
    kind: str = ""

    def __init__(self, systems: Sequence[ContractingSystem], *, init_scale: float = 1.0,
                 mask: torch.Tensor | np.ndarray | None = None,
                 seed: int | None = None, rank: int | None = None) -> None:
        super().__init__()
        self.rank = None if rank is None else positive_int("rank", rank)
        systems = check_systems(systems)
        self.systems = nn.ModuleList(systems)
        self.sizes = [s.n for s in systems]
        same("g", [s.g for s in systems], "the activation slope bound")
        names = {s.activation.name for s in systems}
        if len(names) > 1:
            raise ValueError(
                f"all modules combined must use one activation, got {sorted(names)}; "
                "build them with the same activation"
            )
        self._init_common(sum(self.sizes), systems[0].activation, None)
        n, p = self.n, len(systems)
        allowed = self.structure()
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
        dtype = torch.get_default_dtype()
        if self.rank is None:
            b = torch.randn(n, n, generator=gen) * init_scale / n**0.5
            self.b = nn.Parameter(b.to(dtype) * self.mask)
        else:  # entries of U V^T with the dense B's variance init_scale^2 / N
            std = (init_scale**2 / (n * self.rank)) ** 0.25
            self.u = nn.Parameter((torch.randn(n, self.rank, generator=gen) * std).to(dtype))
            self.v = nn.Parameter((torch.randn(n, self.rank, generator=gen) * std).to(dtype))

    def _coupling_parameter(self) -> torch.Tensor:
        return self.b if self.rank is None else self.u

    # -- structure ------------------------------------------------------------------------
    def structure(self) -> torch.Tensor:
        """The ``N x N`` 0/1 pattern of couplings this rule allows (from the sizes)."""
        raise NotImplementedError

    def masked_b(self) -> torch.Tensor:
        """``B`` (``U V^T`` for a low-rank coupling) restricted to the rule's structure and the
        user's mask."""
        ref = self._coupling_parameter()
        allowed = self.structure().to(dtype=ref.dtype, device=ref.device)
        b = self.b if self.rank is None else self.u @ self.v.T
        return b * (self.mask * allowed)

    def low_rank_active(self) -> bool:
        """Whether the coupling is exactly ``U V^T`` now (no pathway removed from the mask)."""
        return self.rank is not None and bool((self.mask == 1).all())

    def describe(self) -> str:
        return f"{type(self).__name__}(sizes={self.sizes})"

    def _buffer_defects(self) -> list[str]:
        defect = mask_defect(self.mask)
        return [] if defect is None else [f"buffer mask (its coupling mask) {defect}"]

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        key = prefix + "mask"
        if key in state_dict:
            m = state_dict[key]
            if tuple(m.shape) == (self.n, self.n):
                outside = (m != 0) & (self.structure().to(m.device) == 0)
                if bool(outside.any()) or not bool(((m == 0) | (m == 1)).all()):
                    raise ValueError(
                        f"the loaded {key} of {type(self).__name__} is not a 0/1 subset of the "
                        f"blocks the rule allows ({self.rule}); it was edited or belongs to "
                        "another model, so it is refused"
                    )
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # -- structure shared by every combination -------------------------------------------
    @property
    def tau(self) -> float:
        return min(s.tau for s in self.systems)

    def time_constants(self) -> torch.Tensor:
        return torch.cat([s.time_constants() for s in self.systems])

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
        ref = self._coupling_parameter()
        return torch.block_diag(*[
            c if c is not None else torch.zeros(s.n, s.n, dtype=ref.dtype, device=ref.device)
            for s, c in zip(self.systems, inner, strict=True)
        ])

    def own_coupling(self) -> torch.Tensor:
        """The coupling ``L`` this combination adds, original coordinates (eq. 3 for
        feedback)."""
        raise NotImplementedError

    def coupling(self) -> torch.Tensor:
        own = self.own_coupling()
        inner = self.inner_coupling()
        return own if inner is None else own + inner

    def check_constant_metrics(self) -> None:
        """``ValueError`` unless every child has a constant metric."""
        for s in self.systems:
            if not s.has_constant_metric:
                raise ValueError(
                    f"{type(s).__name__} ({s.theorem}) has no constant metric, so it cannot be "
                    f"combined by {type(self).__name__}; use Theorem 1, 3, 4 or 5 modules"
                )

    def children_metric(self, inverse: bool = False) -> torch.Tensor:
        """``blockdiag(P_i)`` (or its inverse), float64."""
        self.check_constant_metrics()
        mats = [s.metric_inverse() if inverse else s.metric() for s in self.systems]
        return torch.block_diag(*mats)

    def children_metric_diagonal(self) -> torch.Tensor:
        return torch.cat([s.metric_diagonal() for s in self.systems])

    def metric_is_diagonal(self) -> bool:
        return all(s.metric_is_diagonal() for s in self.systems)

    def conditions(self) -> list[str]:
        out = [self.rule]
        for s in self.systems:
            out += [c for c in s.conditions() if c not in out]
        return out

    # -- the snapshot ---------------------------------------------------------------------
    def _own_running(self, ctx: Build, start: int) -> torch.Tensor:
        """This rule's own ``K = A S L S^{-1}`` on its units, run dtype."""
        raise NotImplementedError

    def _own_running_low_rank(self, ctx: Build, start: int) -> LowRank | None:
        """This rule's own ``K`` as factors, when it is of low rank (None: use the dense one)."""
        return None

    def _scaled_b(self, ctx: Build, start: int) -> torch.Tensor:
        """``A S B S^{-1}`` (masked) in the run dtype."""
        s = ctx.scale[start:start + self.n]
        ratio = (s[:, None] / s[None, :]).to(ctx.dtype)
        return self.masked_b().to(ctx.dtype) * ratio * ctx.alpha_run[start:start + self.n, None]

    def _weights(self) -> tuple[float, ...]:
        return ()

    def _build(self, ctx: Build, start: int, path: str):
        weights, ks, children = [], [], []
        off, inner = start, False
        for i, sys in enumerate(self.systems):
            w, k, node = sys._build(ctx, off, f"{path}systems.{i}.")
            weights += w
            inner = inner or k is not None
            ks.append(k if k is not None else torch.zeros(sys.n, sys.n, dtype=ctx.dtype,
                                                          device=ctx.device))
            children.append(node)
            off += sys.n
        k = None if inner else self._own_running_low_rank(ctx, start)
        if k is None:
            k = self._own_running(ctx, start)
        if inner:  # children's couplings sit on their diagonal blocks (added to k there)
            k = k + torch.block_diag(*[x.dense() if isinstance(x, LowRank) else x for x in ks])
        label = f"{path.rstrip('.') or 'model'} {self.describe()}"
        node = Node(self.kind, label, self.rule, start, off, tuple(children),
                    self._running_metric(ctx.scale[start:off] * ctx.unit), self.g,
                    weights=self._weights())
        return weights, k, node

    def extra_repr(self) -> str:
        return f"sizes={self.sizes}, N={self.n}"
