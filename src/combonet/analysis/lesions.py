"""Lesions and pathway cuts, with the certificate after each and the per-task performance change.

* **Silencing an area** zeroes its input weights and biases and every coupling entry into or
  out of its units (in every combination's ``mask`` buffer). Started from 0 its state stays 0
  (``phi(0) = 0`` for ReLU/tanh), so it sends and receives nothing. Masked ``B`` keeps eq. 3
  (``L = B - M^{-1} B^T M`` is skew in ``M`` for any ``B``) and the hierarchy's triangular form,
  so the lesioned model is still certified; :func:`combonet.certify` shows it.
* **Cutting a pathway** zeroes its ``(i, j)`` and ``(j, i)`` blocks of the combination's
  ``mask``: for eq. 3 that removes both directions at once and keeps the guarantee.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import certify
from ..areas import AreaMap, combination_at
from ..models.perstep import Performance, evaluate_trials
from ._common import new_figure, save_figure

__all__ = ["Lesion", "LesionReport", "cut_pathway", "lesion_area", "lesion_study",
           "plot_lesions"]


def _combinations(node: Any, offset: int = 0):
    """Every combination in the network with the state index of its first unit."""
    if hasattr(node, "systems") and hasattr(node, "mask"):
        yield node, offset
        start = offset
        for child, size in zip(node.systems, node.sizes, strict=True):
            yield from _combinations(child, start)
            start += size


def _check(model: Any, area_map: AreaMap) -> None:
    if not hasattr(model, "network") or not hasattr(model, "encoder"):
        raise ValueError(f"lesions need a per-step model of areas (PerStepModel), got "
                         f"{type(model).__name__}")
    if model.network.n != area_map.n:
        raise ValueError(f"the area map has {area_map.n} units but the model's network has "
                         f"{model.network.n}; use the map built with this network")


def lesion_area(model: Any, area_map: AreaMap, area: str) -> Any:
    """A copy of ``model`` with ``area`` silenced (module docstring)."""
    _check(model, area_map)
    sl = area_map.units(area)
    out = copy.deepcopy(model)
    with torch.no_grad():
        out.encoder.weight[sl] = 0
        out.encoder.bias[sl] = 0
        out.input_mask[sl] = 0
        for combo, offset in _combinations(out.network):
            lo, hi = max(sl.start - offset, 0), min(sl.stop - offset, combo.n)
            if lo < hi:
                combo.mask[lo:hi, :] = 0
                combo.mask[:, lo:hi] = 0
    return out


def cut_pathway(model: Any, area_map: AreaMap, a: str, b: str) -> Any:
    """A copy of ``model`` without the pathway between areas ``a`` and ``b``."""
    _check(model, area_map)
    p = area_map.pathway(a, b)
    out = copy.deepcopy(model)
    combo = combination_at(out.network, p.combination)
    (r0, r1), (c0, c1) = p.rows, p.cols
    with torch.no_grad():
        combo.mask[r0:r1, c0:c1] = 0
        combo.mask[c0:c1, r0:r1] = 0
    return out


@dataclass
class Lesion:
    """One manipulation and what it did."""

    kind: str  # "area" or "pathway"
    target: str  # area name, or "a <-> b" / "a -> b"
    performance: Performance
    certified: bool
    rate: float
    certificate: str  # the certificate's summary()

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "target": self.target,
                "performance": self.performance.to_dict(), "certified": self.certified,
                "rate": self.rate, "certificate": self.certificate}


@dataclass
class LesionReport:
    """The intact model's performance and certificate, and each lesion's."""

    baseline: Performance
    baseline_certified: bool
    lesions: list[Lesion] = field(default_factory=list)

    def change(self) -> dict[str, dict[str, float]]:
        """``lesion -> task -> performance change`` (lesioned minus intact)."""
        return {les.target: {t: les.performance.per_task.get(t, np.nan) - v
                             for t, v in self.baseline.per_task.items()}
                for les in self.lesions}

    def to_dict(self) -> dict[str, Any]:
        return {"baseline": self.baseline.to_dict(),
                "baseline_certified": self.baseline_certified,
                "lesions": [les.to_dict() for les in self.lesions], "change": self.change()}


def _measure(kind: str, target: str, model: Any, trials: Any, batch_size: int) -> Lesion:
    _, perf = evaluate_trials(model, trials, batch_size=batch_size)
    cert = certify(model.network, dt=model.dt, method=model.method, max_dt=False)
    return Lesion(kind, target, perf, bool(cert.certified), float(cert.rate), cert.summary())


def lesion_study(model: Any, area_map: AreaMap, trials: Any, *,
                 areas: Sequence[str] | None = None,
                 pathways: Sequence[tuple[str, str]] | None = None,
                 batch_size: int = 256) -> LesionReport:
    """Silence each area in ``areas`` (default: the top-level areas) and cut each pathway in
    ``pathways`` (default: all), one at a time; performance per task and certificate each."""
    _check(model, area_map)
    areas = list(area_map.top_level if areas is None else areas)
    pairs = [(p.source, p.target) for p in area_map.pathways] if pathways is None \
        else list(pathways)
    _, base = evaluate_trials(model, trials, batch_size=batch_size)
    cert = certify(model.network, dt=model.dt, method=model.method, max_dt=False)
    report = LesionReport(base, bool(cert.certified))
    for a in areas:
        report.lesions.append(_measure("area", a, lesion_area(model, area_map, a), trials,
                                       batch_size))
    for a, b in pairs:
        label = area_map.pathway(a, b).label
        report.lesions.append(_measure("pathway", label, cut_pathway(model, area_map, a, b),
                                       trials, batch_size))
    return report


def plot_lesions(report: LesionReport, path: str | Path | None = None) -> Any:
    """Performance change per task (rows) and lesion (columns), certificate marked in the
    column labels (``ok`` certified, ``NOT`` otherwise)."""
    tasks = list(report.baseline.per_task)
    change = report.change()
    cols = [les.target for les in report.lesions]
    data = np.array([[change[c][t] for c in cols] for t in tasks]) if cols else np.zeros((1, 0))
    fig, axes = new_figure(1, size=(max(4.0, 0.7 * len(cols) + 2), max(2.6, 0.3 * len(tasks)
                                                                        + 1.8)))
    ax = axes[0, 0]
    im = ax.imshow(data, cmap="RdBu", vmin=-1, vmax=1, aspect="auto")
    labels = [f"{les.target}\n({'ok' if les.certified else 'NOT'})" for les in report.lesions]
    ax.set_xticks(range(len(cols)), labels, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(tasks)), tasks, fontsize=7)
    ax.set_title(f"performance change (intact: {100 * report.baseline.accuracy:.1f}%)",
                 fontsize=9)
    fig.colorbar(im, ax=ax, label="lesioned - intact")
    fig.tight_layout()
    save_figure(fig, path)
    return fig
