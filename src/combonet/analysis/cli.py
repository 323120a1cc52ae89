"""``combonet analyze RUN ...``: the analyses of a trained network of areas, as files.

``add_arguments(parser)`` and ``main_from_args(ns)`` follow the convention of
``combonet.bench`` (the main CLI delegates to them). ``RUN`` is a run directory of
``combonet train`` on a trial task (``neurogym:ID``, ``synthetic[:K]``) with a certified
per-step model (``--model areas`` or a combo net): its ``config.json`` rebuilds the model
(:meth:`~combonet.train.rundir.RunDir.load_model`, verified weights, ``weights_only=True``), the
area map (a combo net's modules are its areas) and the trials (the run's test trials: the
seed ``derive_seed(seed, "test")``, balanced over tasks). ``RUN`` may also be a bare
``state_dict`` file (or a folder holding ``model.pt``) of a
:class:`~combonet.models.perstep.PerStepModel`, with ``--areas`` and ``--task`` naming what it
was built from. The outputs (figures and ``analysis.json``) go to ``--out`` (default
``RUN/analysis`` for a run directory), never over existing files.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from ..engine.maps import METHODS

ANALYSES = ("fixed-points", "pca", "lesions", "communication")
WEIGHTS_NAME = "model.pt"
_FILES = {"fixed-points": "fixed-points.png", "pca": "pca.png", "lesions": "lesions.png",
          "communication": "communication.png"}
REPORT = "analysis.json"
#: Settings a run directory's config.json decides (refused with a run directory).
_FROM_RUN = ("areas", "task", "dt", "method")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN", help="a run directory of combonet train on a "
                        "trial task, or a state_dict file of a per-step model (or a folder "
                        f"holding {WEIGHTS_NAME}) with --areas and --task")
    parser.add_argument("--what", "--analyses", dest="analyses", default="all", metavar="LIST",
                        help=f"comma-separated subset of {list(ANALYSES)}, or all (default)")
    parser.add_argument("--weights", choices=("best", "final"), default="final",
                        help="a run's final weights (default) or its best-validation ones")
    parser.add_argument("--trials", type=int, default=200,
                        help="number of test trials (default 200)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the trials (default: "
                        "a run's test seed; 0 for a state_dict)")
    parser.add_argument("--by", default="choice",
                        help="condition of trials: choice, task, or a NeuroGym trial-info key")
    parser.add_argument("--period", default="stimulus,stim1,sample",
                        help="period(s) whose mean input defines a condition's constant input "
                        "for fixed points (first present in a trial)")
    parser.add_argument("--pairs", default=None, help="source:target area pairs for "
                        "communication, comma-separated (default: every pathway)")
    parser.add_argument("--out", default=None,
                        help="output folder (default: RUN/analysis, or RUN-analysis for a "
                        "state_dict file)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    bare = parser.add_argument_group("a bare state_dict (not a run directory)")
    bare.add_argument("--areas", default=None, metavar="FILE",
                      help="the areas file (TOML/YAML) the model was built from")
    bare.add_argument("--task", default=None, help="trial task: synthetic (default), "
                      "synthetic:K, yang19, or neurogym:ID (needs combonet[neuro])")
    bare.add_argument("--dt", type=float, default=None, help="step of the model's map "
                      "(default 0.1)")
    bare.add_argument("--method", choices=METHODS, default=None,
                      help="the model's map (default cayley)")


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


def is_run_dir(path: str | Path) -> bool:
    """Whether ``path`` is a run directory (it holds ``config.json``)."""
    from ..train.rundir import CONFIG

    return Path(path).is_dir() and (Path(path) / CONFIG).exists()


def load_run(run: str | Path, weights: str = "final") -> tuple[Any, Any, Any]:
    """``(model, area_map, loaded)`` of a run directory: the per-step model with its verified
    weights, its area map (an areas model's own; a combo net's modules as areas), and the
    :class:`~combonet.train.rundir.LoadedModel`. One-line errors for runs that cannot be
    analysed (a sequence task, a baseline without a certificate)."""
    from ..areas import module_areas
    from ..data import is_trial_task
    from ..models.registry import MODELS, model_spec
    from ..train.rundir import RunDir

    folder = RunDir(run)
    cfg = folder.config()
    if not is_trial_task(cfg.task):
        raise ValueError(f"{run} was trained on the sequence-classification task {cfg.task}; "
                         "analyze works on runs on trial tasks (--task neurogym:ID or "
                         "synthetic[:K]) with per-step outputs")
    if not model_spec(cfg.model).certifiable:
        usable = [k for k, s in MODELS.items() if s.certifiable and "trials" in s.tasks]
        raise ValueError(f"{run} trained model '{cfg.model}', a baseline without a "
                         "contraction certificate: fixed points, lesions and certificates need "
                         f"a certified per-step model (one of {usable})")
    loaded = folder.load_model(weights)
    model = loaded.model
    area_map = getattr(model, "area_map", None) or module_areas(model.network)
    return model, area_map, loaded


def _trials_of_run(loaded: Any, count: int, seed: int | None) -> Any:
    from ..data.neurogym import derive_seed
    from ..data.trials import trial_task

    cfg = loaded.config
    task = trial_task(cfg.task)
    seed = derive_seed(cfg.seed, "test") if seed is None else seed
    return task.sample(count, seed, balanced=True)


def _bare(ns: argparse.Namespace) -> tuple[Any, Any, Any, Path]:
    """The legacy form: a state_dict with --areas/--task."""
    from ..data.neurogym import load_trial_task
    from ..engine.maps import DEFAULT_METHOD

    if ns.areas is None:
        raise ValueError(f"{ns.run} is not a run directory (no config.json): give --areas FILE "
                         "and --task TASK to analyse a bare state_dict, or analyse the run "
                         "directory that combonet train wrote")
    weights = _weights_path(ns.run)
    task_name = ns.task or "synthetic"
    task = load_trial_task(task_name)
    model, area_map = build_model(ns.areas, task, dt=0.1 if ns.dt is None else ns.dt,
                                  method=ns.method or DEFAULT_METHOD)
    try:
        data = weights.read_bytes()
    except OSError as err:
        raise ValueError(f"cannot read {weights}: {err.strerror}") from None
    # weights_only, and torch's own advice (weights_only=False) is never passed on
    from ..train.checkpoint import unpickle

    state = unpickle(data, weights)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as err:
        first = str(err).strip().splitlines()[0]
        raise ValueError(f"{weights} does not match the model of {ns.areas} for task "
                         f"{task_name}: {first}") from None
    model.eval()
    trials = task.sample(ns.trials, seed=0 if ns.seed is None else ns.seed, balanced=True)
    out = Path(ns.out) if ns.out else weights.with_name(weights.stem + "-analysis")
    return model, area_map, trials, out


def main_from_args(ns: argparse.Namespace) -> int:
    """Load the model, run the analyses, print where the results went."""
    if ns.threads is not None:
        if ns.threads < 1:
            raise ValueError(f"--threads must be an integer >= 1, got {ns.threads}")
        torch.set_num_threads(ns.threads)
    analyses = _analyses(ns.analyses)
    if ns.trials < 2:
        raise ValueError(f"--trials must be an integer >= 2, got {ns.trials}")
    if is_run_dir(ns.run):
        given = [f"--{k}" for k in _FROM_RUN if getattr(ns, k) is not None]
        if given:
            raise ValueError(f"{', '.join(given)} come(s) from the run's config.json for a run "
                             f"directory ({ns.run}); remove {', '.join(given)}")
        if ns.threads is None:
            torch.set_num_threads(1)  # small per-step products: one thread is fastest
        model, area_map, loaded = load_run(ns.run, ns.weights)
        trials = _trials_of_run(loaded, ns.trials, ns.seed)
        out = Path(ns.out) if ns.out else Path(ns.run) / "analysis"
        print(f"analysing the {ns.weights} weights (epoch {loaded.epoch}) of {ns.run}: "
              f"{loaded.config.model} on {loaded.config.task}, {len(trials)} test trials")
    else:
        model, area_map, trials, out = _bare(ns)
    pairs = _pairs(ns.pairs, area_map)
    if "communication" in analyses and not pairs:
        if ns.analyses != "all":
            raise ValueError("communication needs pairs of areas and the network declares no "
                             "pathways (a combo net's modules are coupled all to all): pass "
                             "--pairs source:target")
        analyses = [a for a in analyses if a != "communication"]
        print("communication: skipped (no declared pathways; pass --pairs source:target)")
    period = [p.strip() for p in ns.period.split(",") if p.strip()]
    report = run_analyses(model, area_map, trials, out, analyses=analyses, by=ns.by,
                          period=period, pairs=pairs)
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


__all__ = ["ANALYSES", "add_arguments", "build_model", "is_run_dir", "load_run",
           "main_from_args", "run_analyses"]
