"""Communication between areas: reduced-rank regression (Semedo et al., 2019, Neuron).

Target-area activity ``Y`` (samples, q) is predicted from source-area activity ``X`` (samples,
p) by a linear map of rank at most ``m``: ``B_m = B_ridge V_m V_m^T``, where ``B_ridge`` is the
(lightly regularised) least-squares map and ``V_m`` the top ``m`` principal axes of its
predictions ``X B_ridge``. Cross-validated ``R^2`` (folds of whole trials) against ``m``
shows how many dimensions the areas share; Semedo et al.'s *optimal rank* is the smallest rank
whose mean ``R^2`` is within one standard error of the best. In a network of areas the
source reaches the target through the coupling block ``L[target, source]``, whose rank
(reported as ``coupling_rank``) bounds the dimensions of the *direct* pathway.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._common import model_states, new_figure, save_figure

__all__ = ["CommunicationResult", "communication", "coupling_rank",
           "plot_communication", "reduced_rank_regression", "rrr_cross_validated"]


def _ridge_map(x: np.ndarray, y: np.ndarray, ridge: float) -> np.ndarray:
    xtx = x.T @ x
    lam = ridge * max(float(np.trace(xtx)) / max(x.shape[1], 1), 1e-300)
    return np.linalg.solve(xtx + lam * np.eye(x.shape[1]), x.T @ y)


def _rrr_path(x: np.ndarray, y: np.ndarray, ridge: float
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Centred ridge map ``B`` and the principal axes ``V`` (columns, by decreasing variance)
    of its predictions, plus the means; ``B V_m V_m^T`` is the rank-``m`` solution."""
    mx, my = x.mean(0), y.mean(0)
    xc, yc = x - mx, y - my
    b = _ridge_map(xc, yc, ridge)
    pred = xc @ b
    _, vecs = np.linalg.eigh(pred.T @ pred)  # principal axes of the predictions (q x q)
    return b, vecs[:, ::-1], mx, my


def reduced_rank_regression(x: np.ndarray, y: np.ndarray, rank: int, *, ridge: float = 1e-6
                            ) -> tuple[np.ndarray, np.ndarray]:
    """``(B, c)`` with ``y ~ x B + c`` and ``rank(B) <= rank`` (least squares among rank-``rank``
    maps for ``ridge = 0``; ``ridge`` is relative to the mean eigenvalue of ``x^T x``)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y):
        raise ValueError(f"x (samples, p) and y (samples, q) must have the same samples, got "
                         f"{x.shape} and {y.shape}")
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"rank must be an integer >= 1, got {rank!r}")
    b, v, mx, my = _rrr_path(x, y, ridge)
    b = b @ v[:, :rank] @ v[:, :rank].T
    return b, my - mx @ b


def _r2(y: np.ndarray, pred: np.ndarray, mean: np.ndarray) -> float:
    sst = float(((y - mean) ** 2).sum())
    return 1.0 - float(((y - pred) ** 2).sum()) / sst if sst > 0 else float("nan")


def rrr_cross_validated(x: np.ndarray, y: np.ndarray, ranks: Sequence[int], *,
                        groups: np.ndarray | None = None, folds: int = 5, seed: int = 0,
                        ridge: float = 1e-6) -> dict[str, Any]:
    """Cross-validated ``R^2`` (folds, ranks) of reduced-rank regression; ``groups`` (one id per
    sample, e.g. the trial) keeps each group in one fold. Also the full-rank ``R^2``."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    groups = np.arange(len(x)) if groups is None else np.asarray(groups)
    ids = np.unique(groups)
    if len(ids) < folds or folds < 2:
        raise ValueError(f"folds must lie in 2..{len(ids)} (number of trials), got {folds}")
    rng = np.random.default_rng(seed)
    fold_of = dict(zip(rng.permutation(ids), np.arange(len(ids)) % folds, strict=True))
    which = np.array([fold_of[g] for g in groups])
    full = min(x.shape[1], y.shape[1])
    scores = np.zeros((folds, len(ranks)))
    full_scores = np.zeros(folds)
    for f in range(folds):
        tr, te = which != f, which == f
        b, v, mx, my = _rrr_path(x[tr], y[tr], ridge)  # one fit per fold, every rank
        xt = x[te] - mx
        for k, r in enumerate(ranks):
            vr = v[:, :min(int(r), full)]
            scores[f, k] = _r2(y[te], xt @ b @ vr @ vr.T + my, my)
        vr = v[:, :full]
        full_scores[f] = _r2(y[te], xt @ b @ vr @ vr.T + my, my)
    mean = scores.mean(0)
    sem = scores.std(0, ddof=1) / np.sqrt(folds)
    best = int(np.nanargmax(mean))
    optimal = next(int(r) for r, m in zip(ranks, mean, strict=True)
                   if m >= mean[best] - sem[best])
    return {"ranks": [int(r) for r in ranks], "r2": scores, "r2_mean": mean, "r2_sem": sem,
            "full_r2": float(full_scores.mean()), "optimal_rank": optimal}


def coupling_rank(network: Any, area_map: Any, source: str, target: str,
                  rtol: float = 1e-6) -> int:
    """Numerical rank of the coupling block ``L[target, source]`` (0 without a direct
    pathway): singular values above ``rtol`` times the largest."""
    with torch.no_grad():
        lmat = network.coupling()
        if lmat is None:
            return 0
        block = lmat[area_map.units(target), area_map.units(source)].to(torch.float64)
        s = torch.linalg.svdvals(block)
    if s.numel() == 0 or float(s[0]) == 0.0:
        return 0
    return int((s > rtol * s[0]).sum())


@dataclass
class CommunicationResult:
    """Reduced-rank regression from ``source`` to ``target`` activity."""

    source: str
    target: str
    ranks: list[int]
    r2_mean: np.ndarray
    r2_sem: np.ndarray
    full_r2: float
    optimal_rank: int
    coupling_rank: int | None
    samples: int
    folds: int

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "target": self.target, "ranks": self.ranks,
                "r2_mean": self.r2_mean.tolist(), "r2_sem": self.r2_sem.tolist(),
                "full_r2": self.full_r2, "optimal_rank": self.optimal_rank,
                "coupling_rank": self.coupling_rank, "samples": self.samples,
                "folds": self.folds}


def communication(model: Any, area_map: Any, trials: Any, source: str, target: str, *,
                  ranks: Sequence[int] | None = None, folds: int = 5, seed: int = 0,
                  max_samples: int = 20000, ridge: float = 1e-6,
                  states: Any = None) -> CommunicationResult:
    """RRR from ``source`` to ``target`` states over the valid steps of ``trials`` (whole
    trials dropped at random, seeded, beyond ``max_samples`` steps)."""
    x = (model_states(model, trials) if states is None else states).numpy()
    valid = trials.valid.numpy()
    src, tgt = area_map.units(source), area_map.units(target)
    order = np.random.default_rng(seed).permutation(len(trials))
    keep, total = [], 0
    for i in order:
        if total >= max_samples:
            break
        keep.append(i)
        total += int(valid[i].sum())
    keep = np.sort(np.asarray(keep))
    mask = valid[keep]
    xs, ys = x[keep][:, :, src][mask], x[keep][:, :, tgt][mask]
    groups = np.repeat(keep, mask.sum(1))
    top = min(xs.shape[1], ys.shape[1])
    ranks = list(range(1, min(top, 20) + 1)) if ranks is None else [int(r) for r in ranks]
    cv = rrr_cross_validated(xs, ys, ranks, groups=groups, folds=folds, seed=seed, ridge=ridge)
    crank = coupling_rank(model.network, area_map, source, target) \
        if hasattr(model, "network") else None
    return CommunicationResult(source, target, cv["ranks"], cv["r2_mean"], cv["r2_sem"],
                               cv["full_r2"], cv["optimal_rank"], crank, len(xs), folds)


def plot_communication(results: CommunicationResult | Sequence[CommunicationResult],
                       path: str | Path | None = None) -> Any:
    """Cross-validated ``R^2`` against rank, one panel per area pair; dashed: full-rank
    ``R^2``; dotted: the coupling block's rank; triangle: the optimal rank."""
    results = [results] if isinstance(results, CommunicationResult) else list(results)
    fig, axes = new_figure(len(results), size=(3.8, 3.2))
    for ax, r in zip(axes[0], results, strict=True):
        ax.errorbar(r.ranks, r.r2_mean, yerr=r.r2_sem, marker="o", ms=3, lw=1)
        ax.axhline(r.full_r2, color="k", ls="--", lw=1, label="full rank")
        k = r.ranks.index(r.optimal_rank)
        ax.plot([r.optimal_rank], [r.r2_mean[k]], "v", color="C3", label="optimal rank")
        if r.coupling_rank is not None and r.coupling_rank <= max(r.ranks):
            ax.axvline(r.coupling_rank, color="C2", ls=":", label="coupling rank")
        ax.set_xlabel("rank")
        ax.set_ylabel("cross-validated R^2")
        extra = f", coupling rank {r.coupling_rank}" if r.coupling_rank is not None else ""
        ax.set_title(f"{r.source} -> {r.target}{extra}", fontsize=8)
        ax.legend(fontsize=6)
    fig.tight_layout()
    save_figure(fig, path)
    return fig
