"""``combonet analyze RUN ...``: the analyses of a trained network of areas, as files.

``add_arguments(parser)`` and ``main_from_args(ns)`` follow the convention of
``combonet.bench`` (the main CLI delegates to them). ``RUN`` is, for now, a ``state_dict``
saved with ``torch.save(model.state_dict(), PATH)`` (or a folder holding ``model.pt``) of a
:class:`~combonet.models.perstep.PerStepModel` built from ``--areas`` for ``--task``. The
outputs (figures and ``analysis.json``) go to ``--out``, never over existing files.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

ANALYSES = ("fixed-points", "pca", "lesions", "communication")
WEIGHTS_NAME = "model.pt"
_FILES = {"fixed-points": "fixed-points.png", "pca": "pca.png", "lesions": "lesions.png",
          "communication": "communication.png"}
REPORT = "analysis.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN", help="saved weights: a state_dict file of a "
                        f"per-step model, or a folder holding {WEIGHTS_NAME}")
    parser.add_argument("--areas", required=True, metavar="FILE",
                        help="the areas file (TOML/YAML) the model was built from")
    parser.add_argument("--task", default="synthetic", help="trial task: synthetic, "
                        "synthetic:K, yang19, or neurogym:ID (needs combonet[neuro])")
    parser.add_argument("--analyses", default="all",
                        help=f"comma-separated subset of {list(ANALYSES)}, or all")
    parser.add_argument("--trials", type=int, default=200, help="number of test trials")
    parser.add_argument("--seed", type=int, default=0, help="seed of the test trials")
    parser.add_argument("--dt", type=float, default=0.1, help="step of the model's map")
    parser.add_argument("--method", choices=("cayley", "euler"), default="cayley")
    parser.add_argument("--by", default="choice",
                        help="condition of trials: choice, task, or a NeuroGym trial-info key")
    parser.add_argument("--period", default="stimulus,stim1,sample",
                        help="period(s) whose mean input defines a condition's constant input "
                        "for fixed points (first present in a trial)")
    parser.add_argument("--pairs", default=None, help="source:target area pairs for "
                        "communication, comma-separated (default: every pathway)")
    parser.add_argument("--out", default=None, help="output folder (default: RUN-analysis)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")


def _weights_path(run: str) -> Path:
    path = Path(run)
    if path.is_dir():
        path = path / WEIGHTS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"RUN {run}: no weights file {path}")
    return path


def _analyses(text: str) -> list[str]:
    if text == "all":
        return list(ANALYSES)
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in ANALYSES]
    if bad or not names:
        raise ValueError(f'Invalid analyses "{text}". Must be all or a comma-separated subset '
                         f"of {list(ANALYSES)}")
    return names


def _pairs(text: str | None, area_map: Any) -> list[tuple[str, str]]:
    if text is None:
        return [(p.source, p.target) for p in area_map.pathways]
    out = []
    for item in text.split(","):
        parts = item.strip().split(":")
        if len(parts) != 2 or not all(parts):
            raise ValueError(f"--pairs must look like source:target[,source:target], got {text!r}")
        for name in parts:
            area_map[name]  # raises with the known names
        out.append((parts[0], parts[1]))
    return out


def build_model(areas: str | Path, task: Any, *, dt: float = 0.1, method: str = "cayley"):
    """The per-step model of an areas file for a task, and its area map (untrained)."""
    from ..areas import build_areas
    from ..models.perstep import PerStepModel

    network, area_map = build_areas(areas)
    model = PerStepModel(network, task.features, task.num_actions, dt=dt, method=method,
                         input_mask=area_map.input_mask(task.features),
                         output_mask=area_map.output_mask())
    return model, area_map


def run_analyses(model: Any, area_map: Any, trials: Any, out: str | Path, *,
                 analyses: list[str] | tuple[str, ...] = ANALYSES, by: str = "choice",
                 period: list[str] | None = None,
                 pairs: list[tuple[str, str]] | None = None) -> dict[str, Any]:
    """Run ``analyses`` on ``trials``, write their figures and ``analysis.json`` into ``out``
    (refusing to overwrite existing files), and return the report."""
    from . import (
        area_pca,
        communication,
        condition_inputs,
        lesion_study,
        model_fixed_points,
        plot_area_pca,
        plot_communication,
        plot_fixed_points,
        plot_lesions,
    )
    from ._common import model_states

    out = Path(out)
    targets = [out / _FILES[a] for a in analyses] + [out / REPORT]
    existing = [str(p) for p in targets if p.exists()]
    if existing:
        raise ValueError(f"output files already exist: {existing}; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"trials": len(trials), "tasks": list(trials.task_names)}
    states = model_states(model, trials)
    if "fixed-points" in analyses:
        labels, inputs = condition_inputs(trials, period=period or ["stimulus"], by=by)
        fps = model_fixed_points(model, inputs, labels)
        plot_fixed_points(fps, out / _FILES["fixed-points"])
        report["fixed_points"] = fps.to_dict()
    if "pca" in analyses:
        pca = area_pca(model, trials, area_map, by=by, states=states)
        plot_area_pca(pca, out / _FILES["pca"])
        report["pca"] = pca.to_dict()
    if "lesions" in analyses:
        lesions = lesion_study(model, area_map, trials)
        plot_lesions(lesions, out / _FILES["lesions"])
        report["lesions"] = lesions.to_dict()
    if "communication" in analyses:
        pairs = pairs if pairs is not None else [(p.source, p.target)
                                                 for p in area_map.pathways]
        if not pairs:
            raise ValueError("communication needs at least one pair of areas (the network has "
                             "no pathways); pass --pairs source:target")
        results = [communication(model, area_map, trials, a, b, states=states)
                   for a, b in pairs]
        plot_communication(results, out / _FILES["communication"])
        report["communication"] = [r.to_dict() for r in results]
    (out / REPORT).write_text(json.dumps(report, indent=2, default=float))
    return report


def main_from_args(ns: argparse.Namespace) -> int:
    """Load the model, run the analyses, print where the results went."""
    from ..data.neurogym import load_trial_task

    if ns.threads:
        torch.set_num_threads(ns.threads)
    analyses = _analyses(ns.analyses)
    if ns.trials < 2:
        raise ValueError(f"--trials must be an integer >= 2, got {ns.trials}")
    weights = _weights_path(ns.run)
    task = load_trial_task(ns.task)
    model, area_map = build_model(ns.areas, task, dt=ns.dt, method=ns.method)
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"{weights} is not a loadable state_dict ({err})") from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as err:
        first = str(err).strip().splitlines()[0]
        raise ValueError(f"{weights} does not match the model of {ns.areas} for task "
                         f"{ns.task}: {first}") from None
    model.eval()
    trials = task.sample(ns.trials, seed=ns.seed, balanced=True)
    out = Path(ns.out) if ns.out else weights.with_name(weights.stem + "-analysis")
    period = [p.strip() for p in ns.period.split(",") if p.strip()]
    report = run_analyses(model, area_map, trials, out, analyses=analyses, by=ns.by,
                          period=period, pairs=_pairs(ns.pairs, area_map))
    for name in analyses:
        print(f"{name}: {out / _FILES[name]}")
    if "fixed_points" in report:
        fp = report["fixed_points"]
        print(f"fixed points: {len(fp['labels'])} conditions, certified={fp['certified']}, "
              f"largest error bound {max(fp['bound']):.3g} (M-norm)")
    if "lesions" in report:
        les = report["lesions"]
        ok = all(item["certified"] for item in les["lesions"])
        print(f"lesions: intact accuracy {100 * les['baseline']['accuracy']:.1f}%, "
              f"{len(les['lesions'])} lesions, all certified={ok}")
    print(f"report: {out / REPORT}")
    return 0


__all__ = ["ANALYSES", "add_arguments", "build_model", "main_from_args", "run_analyses"]
