"""Analyses of trained networks of areas, each with a figure function (matplotlib, Agg).

* :mod:`.fixedpoints`: the certified equilibrium per task condition, its error bound
  ``||x - x*||_M <= ||f(x)||_M / lam`` and the linearisation's eigenvalues;
* :mod:`.trajectories`: per-area PCA of population activity by condition;
* :mod:`.lesions`: silencing areas and cutting pathways, certificate and per-task performance;
* :mod:`.communication`: reduced-rank regression between areas (Semedo et al., 2019).

:mod:`.cli` holds ``add_arguments`` / ``main_from_args`` of ``combonet analyze``.
"""

import importlib
from typing import Any

#: public name -> submodule; imported on first use (PEP 562), so that ``combonet analyze``'s
#: parser and ``import combonet.analysis.cli`` do not load scikit-learn and matplotlib
_WHERE = {
    "CommunicationResult": "communication", "communication": "communication",
    "coupling_rank": "communication", "plot_communication": "communication",
    "reduced_rank_regression": "communication", "rrr_cross_validated": "communication",
    "FixedPoints": "fixedpoints", "condition_inputs": "fixedpoints",
    "fixed_points": "fixedpoints", "jacobians": "fixedpoints",
    "model_fixed_points": "fixedpoints", "plot_fixed_points": "fixedpoints",
    "residual_bound": "fixedpoints",
    "Lesion": "lesions", "LesionReport": "lesions", "cut_pathway": "lesions",
    "lesion_area": "lesions", "lesion_study": "lesions", "plot_lesions": "lesions",
    "AreaPCA": "trajectories", "area_pca": "trajectories", "plot_area_pca": "trajectories",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])


__all__ = sorted(_WHERE)
