"""Former home of the Metzler maths; re-exports :mod:`combonet.conditions.metzler`, where the
single implementation now lives (import from there)."""

from __future__ import annotations

from .conditions.metzler import (
    KAPPA_MAX,
    MetricRangeError,
    NotHurwitzError,
    closed_form_metric,
    comparison_matrix,
    rate_in_diagonal_metric,
    spectral_radius,
    theorem1_radius,
)

__all__ = [
    "KAPPA_MAX",
    "MetricRangeError",
    "NotHurwitzError",
    "closed_form_metric",
    "comparison_matrix",
    "rate_in_diagonal_metric",
    "spectral_radius",
    "theorem1_radius",
]
