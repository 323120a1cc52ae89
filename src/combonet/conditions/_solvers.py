"""cvxpy plumbing shared by the LMI and geometric-program searches (Theorems 1, 5, 6, 7 and the
generic vertex LMI): lazy import, solver order and options, and a loop that tries each solver and
returns only a float64-verified candidate."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

SOLVER_OPTIONS: dict[str, dict[str, Any]] = {
    "SCS": {"eps_abs": 1e-7, "eps_rel": 1e-7, "max_iters": 10_000},
    "CLARABEL": {},
}
#: LMIs with a diagonal unknown (Theorems 5, 6): SCS, as DESIGN.md section 3 advises.
SDP_SOLVERS: tuple[str, ...] = ("SCS",)
#: Theorem-1 geometric program (exponential cones only) and the dense vertex LMIs of
#: find_constant_metric / Theorem 7: Clarabel first (measured 5-50x faster than SCS here and
#: exact), SCS if Clarabel raises or panics.
GP_SOLVERS: tuple[str, ...] = ("CLARABEL", "SCS")
VERTEX_SOLVERS: tuple[str, ...] = ("CLARABEL", "SCS")


def cvxpy():
    """The cvxpy module, imported on first use (importing it takes about a second)."""
    import cvxpy as cp

    return cp


def sym_expr(x):
    """``(x + x^T) / 2`` of a cvxpy expression (cvxpy needs it to accept ``<< 0``)."""
    return (x + x.T) / 2


def positive_vector(v: Any) -> np.ndarray:
    """A solver's diagonal as a positive float64 vector normalised to ``min = 1``."""
    x = np.asarray(v, dtype=np.float64)
    if not np.all(np.isfinite(x)) or not np.all(x > 0):
        raise ValueError("P not positive")
    return x / x.min()


def solve(build: Callable[[], tuple[Any, Callable[[], Any]]], solvers: Sequence[str],
          verify: Callable[[Any], tuple[bool, str]],
          options: dict[str, dict[str, Any]] | None = None) -> tuple[Any, str, list[str]]:
    """Try ``solvers`` in turn on a freshly built problem; return the first verified candidate.

    ``build()`` returns ``(problem, extract)``; ``verify(candidate)`` returns ``(ok, note)``.
    Exceptions while building or solving (Clarabel panics surface as ``BaseException``) are
    recorded, not raised. ``options`` overrides ``SOLVER_OPTIONS`` per solver name. Returns
    ``(candidate or None, last solver status, log)``.
    """
    log: list[str] = []
    status = "not run"
    for name in solvers:
        try:
            problem, extract = build()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                opts = {**SOLVER_OPTIONS.get(name, {}), **(options or {}).get(name, {})}
                problem.solve(solver=name, **opts)
        except (KeyboardInterrupt, SystemExit, GeneratorExit):
            raise
        except BaseException as exc:
            status = f"{name} raised {type(exc).__name__}"
            log.append(f"{status}: {str(exc)[:160]}")
            continue
        status = f"{name}: {problem.status}"
        if problem.status not in ("optimal", "optimal_inaccurate"):
            log.append(status)
            continue
        try:
            cand = extract()
        except (ValueError, TypeError, np.linalg.LinAlgError) as exc:
            log.append(f"{status}, unusable solution ({exc})")
            continue
        ok, note = verify(cand)
        log.append(f"{status}, {note}")
        if ok:
            return cand, status, log
    return None, status, log
