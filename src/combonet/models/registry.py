"""Command-line model names -> builders, and parameter counts in the paper's convention.

Every builder takes a configuration (any object with the attributes of
:class:`combonet.train.TrainConfig`: ``modules``, ``units``, ``density``, ``magnitude``,
``coupling_density``, ``init_scale``, ``dt``, ``method``, ``hidden``, ``seed``) plus the input
size and number of classes the data set dictates, and returns an ``nn.Module`` mapping
(batch, steps, features) to logits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from ..combinations.base import Combination
from ..modules.sparse import TrainableSparseModule
from .baselines import (
    AntisymmetricRNN,
    GRUClassifier,
    LipschitzRNN,
    LSTMClassifier,
    VanillaRNNClassifier,
)
from .builders import sparse_combo_net, svd_combo_net, unconstrained_combo_net
from .classifier import SequenceClassifier

Builder = Callable[[Any, int, int], nn.Module]


def _combo_kw(cfg: Any, input_size: int, num_classes: int) -> dict[str, Any]:
    return dict(input_size=input_size, num_classes=num_classes, dt=cfg.dt, method=cfg.method,
                init_scale=cfg.init_scale, coupling_density=cfg.coupling_density, seed=cfg.seed)


def build_sparse_combo(cfg: Any, input_size: int, num_classes: int) -> nn.Module:
    """Sparse Combo Net ``modules x units`` (fixed Theorem-1 modules, eq.-3 feedback)."""
    return sparse_combo_net(cfg.modules, cfg.units, cfg.density, cfg.magnitude,
                            **_combo_kw(cfg, input_size, num_classes))


def build_svd_combo(cfg: Any, input_size: int, num_classes: int) -> nn.Module:
    """SVD Combo Net ``modules x units`` (trained Theorem-5 modules, eq.-3 feedback)."""
    return svd_combo_net(cfg.modules, cfg.units, **_combo_kw(cfg, input_size, num_classes))


def build_unconstrained_combo(cfg: Any, input_size: int, num_classes: int) -> nn.Module:
    """The Section 4.2.3 control: Sparse Combo Net modules with ``L = B`` unconstrained."""
    return unconstrained_combo_net(cfg.modules, cfg.units, cfg.density, cfg.magnitude,
                                   **_combo_kw(cfg, input_size, num_classes))


def build_lstm(cfg: Any, input_size: int, num_classes: int) -> nn.Module:
    """One-layer LSTM with ``hidden`` units."""
    return LSTMClassifier(input_size, cfg.hidden, num_classes)


def build_gru(cfg: Any, input_size: int, num_classes: int) -> nn.Module:
    """One-layer GRU with ``hidden`` units."""
    return GRUClassifier(input_size, cfg.hidden, num_classes)


def build_rnn(cfg: Any, input_size: int, num_classes: int) -> nn.Module:
    """One-layer tanh RNN with ``hidden`` units."""
    return VanillaRNNClassifier(input_size, cfg.hidden, num_classes)


def build_lipschitz(cfg: Any, input_size: int, num_classes: int) -> nn.Module:
    """Lipschitz RNN (Erichson et al. 2021) with its published defaults."""
    return LipschitzRNN(input_size, cfg.hidden, num_classes, seed=cfg.seed)


def build_antisymmetric(cfg: Any, input_size: int, num_classes: int) -> nn.Module:
    """Antisymmetric RNN (Chang et al. 2019) with its published defaults."""
    return AntisymmetricRNN(input_size, cfg.hidden, num_classes, seed=cfg.seed)


MODELS: dict[str, Builder] = {
    "sparse-combo": build_sparse_combo,
    "svd-combo": build_svd_combo,
    "unconstrained-combo": build_unconstrained_combo,
    "lstm": build_lstm,
    "gru": build_gru,
    "rnn": build_rnn,
    "lipschitz": build_lipschitz,
    "antisymmetric": build_antisymmetric,
}
COMBO_MODELS = ("sparse-combo", "svd-combo", "unconstrained-combo")


def build_model(cfg: Any, input_size: int, num_classes: int) -> nn.Module:
    """``MODELS[cfg.model](cfg, input_size, num_classes)`` with a clear error for bad names."""
    if cfg.model not in MODELS:
        raise ValueError(f'Invalid model "{cfg.model}". Must be one of {sorted(MODELS)}')
    return MODELS[cfg.model](cfg, input_size, num_classes)


def is_combo(model: nn.Module) -> bool:
    """Whether ``model`` is a network of networks that :func:`combonet.certify` can check."""
    return isinstance(model, SequenceClassifier)


def count_parameters(model: nn.Module) -> dict[str, Any]:
    """Trainable parameters, counted the way the paper counts them.

    ``stored`` is the number of trainable tensor entries. ``total`` leaves out entries that a
    fixed mask keeps at zero: an eq.-3 :class:`~combonet.Feedback` stores ``B`` as an ``N x N``
    tensor but only its block-lower pairs are free (``L_ij`` and ``L_ji`` both come from
    ``B_ij``, ``i > j``), so a ``p x n`` Sparse Combo Net with input size ``d`` and ``c`` classes
    has ``p (p - 1) / 2 n^2 + (d + 1) N + (N + 1) c`` parameters, ``N = p n``. For the paper's
    16x32 psMNIST network that is 122,880 + 1,024 + 5,130 = **129,034** (the paper: "130K");
    ``stored`` is 268,298. SVD modules are counted by their stored free parameters (the
    orthogonal factors' unconstrained ``n x n`` tensors), not by the manifold's dimension.
    """
    free: dict[int, int] = {}
    for mod in model.modules():
        if isinstance(mod, Combination) and mod.rank is None:
            free[id(mod.b)] = int((mod.mask != 0).sum())
        elif isinstance(mod, TrainableSparseModule):
            free[id(mod.raw)] = int((mod.mask != 0).sum())
    stored, total, parts = 0, 0, {}
    for name, par in model.named_parameters():
        if not par.requires_grad:
            continue
        count = free.get(id(par), par.numel())
        stored += par.numel()
        total += count
        top = name.split(".")[0]
        parts[top] = parts.get(top, 0) + count
    out: dict[str, Any] = {"total": total, "stored": stored, "by_part": parts}
    if free:
        out["note"] = ("coupling B counted over its free (block-lower, unmasked) entries; "
                       "'stored' includes the zeros of the N x N tensor")
    return out


__all__ = ["COMBO_MODELS", "MODELS", "build_model", "count_parameters", "is_combo"]
