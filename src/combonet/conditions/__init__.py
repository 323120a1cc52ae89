"""Weight conditions for one module (paper Section 3, Theorems 1-7), checked in float64.

One module is ``tau dx/dt = -x + W phi(x) + u`` with slopes ``0 <= phi' <= g``; its Jacobian is
``J(D) = (-I + W D) / tau`` with ``D`` diagonal in ``[0, g]``. *Contracting in the constant
SPD metric M with rate lam* means ``M J + J^T M <= -2 lam M`` for every admissible ``D``
(DESIGN.md section 2). Every ``check_theorem*`` function returns a :class:`ConditionResult` whose
metric and rate (when given) have been verified here in float64 -- solver output is never
returned unverified.

``margin`` is > 0 exactly when ``holds`` is true; its meaning per condition:

========== =================================================================================
Theorem 1  ``mu = -lambda_max(P^{-1/2}(P A + A^T P)P^{-1/2}) / 2`` in the returned metric
           (``A = g|W| - I``); on failure ``1 - spectral_radius(g|W|)``
Theorem 2  ``1 - g lambda_max(W)`` (``-relative asymmetry`` if W is not symmetric)
Theorem 3  ``lambda_min(Q) / lambda_max(Q)`` (1 / condition number of the SPD factor);
           negative (mismatch size, or -1) when no factorisation exists
Theorem 4  ``min_i (1 - g W_ii)`` (``-g max |entry off the triangle|`` if not triangular)
Theorem 5  ``1 - g ||P^{1/2} W P^{-1/2}||_2`` in the best diagonal ``P`` found
Theorem 6  ``c`` of ``(gW - I)P + P(gW^T - I) <= -cP`` in the best diagonal ``P`` found
generic    ``mu`` (rate times ``tau``) of :func:`find_constant_metric`
========== =================================================================================

Convex problems are solved with cvxpy (imported lazily, on first use), and every solver is
tried in turn with exceptions -- including Clarabel's Rust panics -- caught and logged. cvxpy's
Clarabel panicked on the Theorem-1 *semidefinite* problem inside its chordal decomposition
(DESIGN.md section 3), so the LMIs with a diagonal unknown (Theorems 5, 6) default to SCS. The
best-conditioned Theorem-1 metric comes from an exactly equivalent *geometric program* (see
:func:`theorem1_metric`) with no semidefinite cone, and the dense vertex LMIs
(:func:`find_constant_metric`, Theorem 7) default to Clarabel then SCS: there Clarabel was
measured 5-50x faster and exact. Theorems 5 and 6 first optimise the diagonal scaling directly
(L-BFGS on ``log P``) and only call the LMI solver when that finds nothing.

Every ``check_theorem*`` is total for finite input across the float64 range: matrices with
entries beyond ``2^+-500`` (and, always, Theorem 3's scale-invariant factorisation) are divided
exactly by a power of two ``s``, the rest is evaluated in units that cannot overflow, and a
condition that holds but whose metric cannot be represented in float64 is reported as not
holding, with the reason. Only malformed input raises ``ValueError``.

Layout, one proof family per module: :mod:`.metzler` (Theorems 1 and 4: comparison matrix,
closed-form and best-conditioned diagonal metric, rate in a diagonal metric, spectral radius --
the single implementation, in float64 torch, that the modules use too), :mod:`.symmetric`
(Theorem 2), :mod:`.factorisation` (Theorem 3), :mod:`.scaling` (diagonal scalings: Theorems 5
and 6), :mod:`.vertex` (vertex LMIs, the dual certificate, Theorem 7), :mod:`.results`
(result types); ``_inputs``, ``_linalg`` and ``_solvers`` hold argument checks, shared float64
helpers and the cvxpy plumbing.
"""

from ._inputs import as_matrix
from .factorisation import check_theorem3
from .metzler import MetricRangeError as MetricRangeError  # not in __all__ (unchanged)
from .metzler import NotHurwitzError as NotHurwitzError
from .metzler import (
    check_theorem1,
    check_theorem4,
    comparison_matrix,
    theorem1_metric,
)
from .results import ConditionResult, Theorem7Result
from .scaling import check_theorem5, check_theorem6
from .symmetric import check_theorem2
from .vertex import find_constant_metric, rate_in_metric, theorem7_counterexample

__all__ = [
    "ConditionResult",
    "Theorem7Result",
    "as_matrix",
    "check_theorem1",
    "check_theorem2",
    "check_theorem3",
    "check_theorem4",
    "check_theorem5",
    "check_theorem6",
    "comparison_matrix",
    "find_constant_metric",
    "rate_in_metric",
    "theorem1_metric",
    "theorem7_counterexample",
]
