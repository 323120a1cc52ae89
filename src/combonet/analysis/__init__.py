"""Analyses of trained networks of areas, each with a figure function (matplotlib, Agg).

* :mod:`.fixedpoints`: the certified equilibrium per task condition, its error bound
  ``||x - x*||_M <= ||f(x)||_M / lam`` and the linearisation's eigenvalues;
* :mod:`.trajectories`: per-area PCA of population activity by condition;
* :mod:`.lesions`: silencing areas and cutting pathways, certificate and per-task performance;
* :mod:`.communication`: reduced-rank regression between areas (Semedo et al., 2019).

:mod:`.cli` holds ``add_arguments`` / ``main_from_args`` of ``combonet analyze``.
"""

from .communication import (
    CommunicationResult,
    communication,
    coupling_rank,
    plot_communication,
    reduced_rank_regression,
    rrr_cross_validated,
)
from .fixedpoints import (
    FixedPoints,
    condition_inputs,
    fixed_points,
    jacobians,
    model_fixed_points,
    plot_fixed_points,
    residual_bound,
)
from .lesions import Lesion, LesionReport, cut_pathway, lesion_area, lesion_study, plot_lesions
from .trajectories import AreaPCA, area_pca, plot_area_pca

__all__ = [
    "AreaPCA",
    "CommunicationResult",
    "FixedPoints",
    "Lesion",
    "LesionReport",
    "area_pca",
    "communication",
    "condition_inputs",
    "coupling_rank",
    "cut_pathway",
    "fixed_points",
    "jacobians",
    "lesion_area",
    "lesion_study",
    "model_fixed_points",
    "plot_area_pca",
    "plot_communication",
    "plot_fixed_points",
    "plot_lesions",
    "reduced_rank_regression",
    "residual_bound",
    "rrr_cross_validated",
]
