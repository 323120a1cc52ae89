"""Shared helpers of the analyses: states of a per-step model, condition labels, figures."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor


@torch.no_grad()
def model_states(model: Any, trials: Any, batch_size: int = 256) -> Tensor:
    """Hidden states (trials, steps, N) of ``model`` (anything with ``.states(inputs)``) on
    ``trials``, padded like ``trials`` (padding steps hold whatever the network did there)."""
    if not hasattr(model, "states"):
        raise ValueError(f"model must have a states(inputs) method (a PerStepModel or CTRNN), "
                         f"got {type(model).__name__}")
    out = torch.zeros(len(trials), trials.steps, _width(model))
    start = 0
    for batch in trials.batches(batch_size):
        s = model.states(batch.inputs).float()
        out[start:start + len(batch), :s.shape[1]] = s
        start += len(batch)
    return out


def _width(model: Any) -> int:
    if hasattr(model, "network"):
        return int(model.network.n)
    return int(model.hidden_size)


def condition_labels(trials: Any, by: str = "choice") -> list[str]:
    """One label per trial: the condition ``by`` (see ``Trials.condition``), prefixed with the
    task name when the trials hold several tasks."""
    values = trials.condition(by)
    if len(trials.task_names) > 1 and by != "task":
        names = [trials.task_names[int(k)] for k in trials.task.tolist()]
        return [f"{n}/{by}={v}" for n, v in zip(names, values, strict=True)]
    return [f"{by}={v}" for v in values]


def save_figure(fig: Any, path: str | Path | None) -> Path | None:
    """Save ``fig`` (rendered by Agg) when ``path`` is given."""
    if path is None:
        return None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def new_figure(ncols: int = 1, nrows: int = 1, size: tuple[float, float] = (4.0, 3.2)
               ) -> tuple[Any, np.ndarray]:
    """A matplotlib ``Figure`` (no pyplot, no global backend: saved with the Agg canvas) and
    its (nrows, ncols) axes."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def ordered_unique(labels: Sequence[str]) -> list[str]:
    seen: dict[str, None] = {}
    for label in labels:
        seen.setdefault(label, None)
    return list(seen)


def as_numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)
