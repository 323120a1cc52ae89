"""Population trajectories: per-area PCA of activity, averaged by task condition."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.decomposition import PCA

from ._common import condition_labels, model_states, new_figure, ordered_unique, save_figure

__all__ = ["AreaPCA", "area_pca", "plot_area_pca"]


@dataclass
class AreaPCA:
    """Per area: principal axes fitted on all valid steps of all trials, the explained variance
    ratios, and the condition-averaged trajectories projected on them (steps, components)."""

    components: dict[str, np.ndarray]  # area -> (k, n_area)
    explained: dict[str, np.ndarray]  # area -> (k,)
    trajectories: dict[str, dict[str, np.ndarray]]  # area -> condition -> (steps, k)
    conditions: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"explained_variance_ratio": {a: v.tolist() for a, v in self.explained.items()},
                "conditions": self.conditions}


def area_pca(model: Any, trials: Any, area_map: Any = None, *, by: str = "choice",
             n_components: int = 3, areas: list[str] | None = None,
             states: Any = None) -> AreaPCA:
    """PCA of each area's states (``area_map`` slices; the whole network when ``None``), with
    trajectories averaged over the trials of each condition ``by`` up to their shortest
    length (trials aligned at their start)."""
    # float64: the explained-variance ratios of a float32 fit can sum to 1 + 1e-7
    x = (model_states(model, trials) if states is None else states).double().numpy()
    valid = trials.valid.numpy()
    if area_map is None:
        slices = {"network": slice(0, x.shape[2])}
    else:
        names = areas if areas is not None else area_map.top_level
        slices = {a: area_map.units(a) for a in names}
    labels = condition_labels(trials, by)
    conditions = ordered_unique(labels)
    lengths = trials.lengths.numpy()
    comps, expl, trajs = {}, {}, {}
    for area, sl in slices.items():
        data = x[:, :, sl]
        k = min(n_components, data.shape[2], int(valid.sum()))
        pca = PCA(n_components=k).fit(data[valid])
        comps[area], expl[area] = pca.components_, pca.explained_variance_ratio_
        trajs[area] = {}
        for c in conditions:
            idx = [i for i, lab in enumerate(labels) if lab == c]
            t = int(lengths[idx].min())
            mean = data[idx, :t].mean(0)
            trajs[area][c] = pca.transform(mean)
    return AreaPCA(comps, expl, trajs, conditions)


def plot_area_pca(result: AreaPCA, path: str | Path | None = None,
                  max_conditions: int = 12) -> Any:
    """One panel per area: condition-averaged trajectories in the plane of PC1 and PC2
    (start marked with a dot)."""
    areas = list(result.trajectories)
    fig, axes = new_figure(len(areas), size=(3.6, 3.4))
    for ax, area in zip(axes[0], areas, strict=True):
        for c in result.conditions[:max_conditions]:
            tr = result.trajectories[area][c]
            y = tr[:, 1] if tr.shape[1] > 1 else np.zeros(len(tr))
            line = ax.plot(tr[:, 0], y, lw=1.2, label=c)[0]
            ax.plot(tr[0, 0], y[0], "o", ms=3, color=line.get_color())
        ev = result.explained[area]
        ax.set_title(f"{area} ({100 * ev[:2].sum():.0f}% var.)", fontsize=9)
        ax.set_xlabel("PC1")
        ax.set_ylabel("PC2")
    axes[0, 0].legend(fontsize=6)
    fig.tight_layout()
    save_figure(fig, path)
    return fig
