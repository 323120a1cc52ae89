"""Result types of the condition checkers (paper Section 3): :class:`ConditionResult` for
Theorems 1-6 and the generic constant-metric search, :class:`Theorem7Result` for Theorem 7."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def jsonable(value: Any) -> Any:
    """Nested lists / floats / str / bool / None for numpy arrays, scalars and containers;
    non-finite floats become the strings ``"inf"``, ``"-inf"``, ``"nan"``."""
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.bool_ | bool):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating | float):
        v = float(value)
        return v if math.isfinite(v) else str(v)
    return value


@dataclass(frozen=True, eq=False)
class ConditionResult:
    """Outcome of one weight condition (paper Section 3).

    ``metric`` (float64 SPD, or ``None`` when the condition gives no constant metric) and
    ``rate`` (continuous-time lower bound ``lam`` in that metric, ``1 / tau`` included) satisfy
    ``M J + J^T M <= -2 rate M`` for every ``D`` in ``[0, g]^n`` whenever ``holds`` and both are
    given; Theorem 2's rate is pointwise in the state-dependent metric ``D`` (see its message).
    ``details`` holds auxiliary numbers (condition number of the metric, solver log, ...).
    """

    theorem: str
    holds: bool
    margin: float
    metric: np.ndarray | None
    rate: float | None
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def metric_condition_number(self) -> float | None:
        """``kappa(M) = lambda_max / lambda_min`` of the metric (``None`` without one)."""
        if self.metric is None:
            return None
        ev = np.linalg.eigvalsh(self.metric)
        with np.errstate(over="ignore"):
            return float(ev[-1] / ev[0])

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dictionary (metric as nested lists)."""
        return {
            "theorem": self.theorem,
            "holds": bool(self.holds),
            "margin": jsonable(self.margin),
            "metric": None if self.metric is None else jsonable(self.metric),
            "metric_condition_number": jsonable(self.metric_condition_number),
            "rate": None if self.rate is None else jsonable(self.rate),
            "message": self.message,
            "details": jsonable(self.details),
        }

    def __str__(self) -> str:
        verdict = "holds" if self.holds else "does not hold"
        rate = "-" if self.rate is None else f"{self.rate:.4g}"
        return f"{self.theorem} {verdict} (margin {self.margin:.4g}, rate {rate}): {self.message}"


@dataclass(frozen=True, eq=False)
class Theorem7Result:
    """Theorem 7's counterexample ``W = [[0, -c], [c, 0]]`` evaluated numerically.

    ``sym_condition_holds``: ``g W_sym - I < 0`` (margin ``-lambda_max(g W_sym - I)``).
    ``lmi_feasible``: the solver found an SPD ``M >= I`` with ``M J_v + J_v^T M <= -eps M`` at
    the four vertices ``D in {0, g}^2`` *and* it passed a float64 check. ``certified_infeasible``:
    a float64-checked dual certificate proves that no nonzero PSD ``M`` satisfies those vertex
    inequalities (``certificate_margin`` is its verified slack). ``best_constant_rate`` is the
    largest rate any constant metric can give, ``max(0, 1 - |c| g / 2)`` (``tau = 1``): attained
    by ``M = I`` and proved optimal by the same certificate.
    """

    W: np.ndarray
    c: float
    g: float
    eps: float
    sym_condition_holds: bool
    sym_margin: float
    lmi_feasible: bool
    solver_status: str
    certified_infeasible: bool
    certificate_margin: float
    certificate: dict[str, Any]
    best_constant_rate: float
    message: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dictionary."""
        return {
            "W": jsonable(self.W),
            "c": float(self.c),
            "g": float(self.g),
            "eps": float(self.eps),
            "sym_condition_holds": bool(self.sym_condition_holds),
            "sym_margin": jsonable(self.sym_margin),
            "lmi_feasible": bool(self.lmi_feasible),
            "solver_status": self.solver_status,
            "certified_infeasible": bool(self.certified_infeasible),
            "certificate_margin": jsonable(self.certificate_margin),
            "certificate": jsonable(self.certificate),
            "best_constant_rate": float(self.best_constant_rate),
            "message": self.message,
        }
