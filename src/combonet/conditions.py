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

Convex problems are solved with cvxpy (imported lazily: ``import combonet.conditions`` stays
cheap), and every solver is tried in turn with exceptions -- including Clarabel's Rust panics --
caught and logged. cvxpy's Clarabel panicked on the Theorem-1 *semidefinite* problem inside its
chordal decomposition (DESIGN.md section 3), so the LMIs with a diagonal unknown (Theorems 5, 6)
default to SCS. The best-conditioned Theorem-1 metric comes from an exactly equivalent
*geometric program* (see :func:`theorem1_metric`) with no semidefinite cone, and the dense
vertex LMIs (:func:`find_constant_metric`, Theorem 7) default to Clarabel then SCS: there
Clarabel was measured 5-50x faster and exact. Theorems 5 and 6 first optimise the diagonal
scaling directly (L-BFGS on ``log P``) and only call the LMI solver when that finds nothing.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.linalg as sla

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

_EPS = float(np.finfo(np.float64).eps)
_SOLVER_OPTIONS: dict[str, dict[str, Any]] = {
    "SCS": {"eps_abs": 1e-7, "eps_rel": 1e-7, "max_iters": 10_000},
    "CLARABEL": {},
}
#: LMIs with a diagonal unknown (Theorems 5, 6): SCS, as DESIGN.md section 3 advises.
_SDP_SOLVERS: tuple[str, ...] = ("SCS",)
#: Theorem-1 geometric program (exponential cones only) and the dense vertex LMIs of
#: find_constant_metric / Theorem 7: Clarabel first (measured 5-50x faster than SCS here and
#: exact), SCS if Clarabel raises or panics.
_GP_SOLVERS: tuple[str, ...] = ("CLARABEL", "SCS")
_VERTEX_SOLVERS: tuple[str, ...] = ("CLARABEL", "SCS")


# -- results ------------------------------------------------------------------------------
def _jsonable(value: Any) -> Any:
    """Nested lists / floats / str / bool / None for numpy arrays, scalars and containers."""
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
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
        return float(ev[-1] / ev[0])

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dictionary (metric as nested lists)."""
        return {
            "theorem": self.theorem,
            "holds": bool(self.holds),
            "margin": _jsonable(self.margin),
            "metric": None if self.metric is None else _jsonable(self.metric),
            "metric_condition_number": _jsonable(self.metric_condition_number),
            "rate": None if self.rate is None else _jsonable(self.rate),
            "message": self.message,
            "details": _jsonable(self.details),
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
            "W": _jsonable(self.W),
            "c": float(self.c),
            "g": float(self.g),
            "eps": float(self.eps),
            "sym_condition_holds": bool(self.sym_condition_holds),
            "sym_margin": _jsonable(self.sym_margin),
            "lmi_feasible": bool(self.lmi_feasible),
            "solver_status": self.solver_status,
            "certified_infeasible": bool(self.certified_infeasible),
            "certificate_margin": _jsonable(self.certificate_margin),
            "certificate": _jsonable(self.certificate),
            "best_constant_rate": float(self.best_constant_rate),
            "message": self.message,
        }


# -- validation ---------------------------------------------------------------------------
def _input_eps(W: Any) -> float:
    """Machine epsilon of the input's floating dtype (float64 for anything else)."""
    dtype = getattr(W, "dtype", None)
    if dtype is None:
        return _EPS
    if hasattr(dtype, "is_floating_point"):  # a torch dtype: bfloat16 is the coarsest 2-byte
        if not dtype.is_floating_point:
            return _EPS
        return {2: 2.0**-7, 4: float(np.finfo(np.float32).eps)}.get(dtype.itemsize, _EPS)
    try:
        dt = np.dtype(dtype)
    except TypeError:
        return _EPS
    return float(np.finfo(dt).eps) if dt.kind == "f" else _EPS


def as_matrix(W: Any, name: str = "W") -> np.ndarray:
    """``W`` as a float64 numpy copy; torch tensors are detached and moved to the CPU.

    Raises ``ValueError`` (naming the argument and the received shape) unless ``W`` is a finite,
    real, square, non-empty 2-D matrix.
    """
    if hasattr(W, "detach"):
        W = W.detach().cpu().double()
    try:
        arr = np.asarray(W)
    except Exception as exc:  # ragged lists and similar
        raise ValueError(f"{name} must be a square 2-D real matrix; could not convert the "
                         f"received {type(W).__name__}: {exc}") from None
    shape = tuple(arr.shape)
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be a real numeric matrix; received dtype {arr.dtype} "
                         f"with shape {shape}")
    if arr.ndim != 2 or shape[0] != shape[1] or shape[0] == 0:
        raise ValueError(f"{name} must be a square 2-D matrix (n x n, n >= 1); received shape "
                         f"{shape}")
    arr = np.array(arr, dtype=np.float64, copy=True)
    bad = int(np.count_nonzero(~np.isfinite(arr)))
    if bad:
        raise ValueError(f"{name} must be finite; received shape {shape} with {bad} NaN/inf "
                         "entries")
    return arr


def _positive(name: str, value: Any, what: str) -> float:
    """``value`` as a float if it is finite and > 0, else ``ValueError``."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} ({what}) must be a finite number > 0; received "
                         f"{value!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} ({what}) must be a finite number > 0; received {value!r}")
    return v


def _g_tau(g: Any, tau: Any) -> tuple[float, float]:
    return (_positive("g", g, "maximum activation slope"),
            _positive("tau", tau, "time constant"))


def _fraction(name: str, value: Any) -> float:
    v = float(value)
    if not (math.isfinite(v) and 0 < v < 1):
        raise ValueError(f"{name} must lie in the open interval (0, 1); received {value!r}")
    return v


def _solver_names(solvers: str | Sequence[str]) -> tuple[str, ...]:
    names = (solvers,) if isinstance(solvers, str) else tuple(solvers)
    if not names or not all(isinstance(s, str) and s for s in names):
        raise ValueError(f"solvers must be a solver name or a non-empty sequence of names "
                         f"(e.g. 'SCS', 'CLARABEL'); received {solvers!r}")
    return tuple(s.upper() for s in names)


# -- linear algebra -----------------------------------------------------------------------
def _sym(a: np.ndarray) -> np.ndarray:
    return (a + a.T) / 2


def _eig_tol(b: np.ndarray) -> float:
    """Round-off allowance for ``lambda_max`` of a float64 matrix built from ``b``."""
    return 64.0 * b.shape[0] * _EPS * (float(np.linalg.norm(b)) + 1.0)


def _spectral_radius(a: np.ndarray) -> float:
    return float(np.max(np.abs(np.linalg.eigvals(a))))


def _normalised_rate(b: np.ndarray) -> float:
    """``-lambda_max((B + B^T) / 2)``."""
    return float(-np.linalg.eigvalsh(_sym(b))[-1])


def rate_in_metric(A: np.ndarray | Sequence[np.ndarray], M: np.ndarray) -> float:
    """Largest ``mu`` with ``M A + A^T M <= -2 mu M`` (the minimum over ``A`` if a sequence).

    ``M`` is either the 1-D diagonal of a positive diagonal metric or a 2-D SPD matrix. For
    Theorem 1 pass the comparison matrix ``A = g|W| - I`` and the diagonal ``P``: for every
    ``D`` in ``[0, g]^n``, ``x^T P(-I + W D)x <= |x|^T P A |x| <= -mu x^T P x``, so the module
    contracts in ``P`` with rate ``mu / tau``. For a generic metric pass the Jacobians
    ``J_v = -I + W D_v`` at the slope-box vertices (the condition is affine in ``D``, so the
    vertices suffice). Computed as ``-lambda_max(sym(R A R^{-1}))`` with ``M = R^T R``.
    """
    mats = np.asarray(A, dtype=np.float64)
    if mats.ndim == 2:
        mats = mats[None]
    m = np.asarray(M, dtype=np.float64)
    n = m.shape[0] if m.ndim in (1, 2) else -1
    if mats.ndim != 3 or mats.shape[1:] != (n, n) or m.shape not in ((n,), (n, n)):
        raise ValueError(f"rate_in_metric needs n x n matrices A and a metric M of shape (n,) "
                         f"or (n, n); received A of shape {mats.shape} and M of shape {m.shape}")
    if m.ndim == 1:
        if not np.all(m > 0) or not np.all(np.isfinite(m)):
            raise ValueError("M (diagonal metric) must have finite entries > 0; received "
                             f"min {m.min():.3g}")
        s = np.sqrt(m)
        return min(_normalised_rate(np.asarray(a) * (s[:, None] / s[None, :])) for a in mats)
    try:
        r = sla.cholesky(_sym(m), lower=False)  # M = R^T R
    except np.linalg.LinAlgError:
        raise ValueError(f"M must be symmetric positive definite; received shape {m.shape} "
                         "that failed a Cholesky factorisation") from None
    out = math.inf
    for a in mats:
        ra = r @ np.asarray(a)
        b = sla.solve_triangular(r, ra.T, trans="T", lower=False).T  # R A R^{-1}
        out = min(out, _normalised_rate(b))
    return out


def _vertex_jacobians(W: np.ndarray, g: float) -> list[np.ndarray]:
    """``-I + W D`` for all ``D`` in ``{0, g}^n`` (``tau = 1``)."""
    n = W.shape[0]
    eye = np.eye(n)
    return [-eye + W * np.asarray(d)[None, :] for d in itertools.product((0.0, g), repeat=n)]


def _diag_kappa(p: np.ndarray) -> float:
    return float(p.max() / p.min())


# -- solver plumbing ----------------------------------------------------------------------
def _cvxpy():
    import cvxpy  # lazy: importing cvxpy takes about a second

    return cvxpy


def _solve(build: Callable[[], tuple[Any, Callable[[], Any]]], solvers: Sequence[str],
           verify: Callable[[Any], tuple[bool, str]],
           options: dict[str, dict[str, Any]] | None = None) -> tuple[Any, str, list[str]]:
    """Try ``solvers`` in turn on a freshly built problem; return the first verified candidate.

    ``build()`` returns ``(problem, extract)``; ``verify(candidate)`` returns ``(ok, note)``.
    Solver exceptions (Clarabel panics surface as ``BaseException``) are recorded, not raised.
    ``options`` overrides ``_SOLVER_OPTIONS`` per solver name. Returns
    ``(candidate or None, last solver status, log)``.
    """
    log: list[str] = []
    status = "not run"
    for name in solvers:
        problem, extract = build()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                opts = {**_SOLVER_OPTIONS.get(name, {}), **(options or {}).get(name, {})}
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


# -- Theorem 1 ----------------------------------------------------------------------------
def comparison_matrix(W: Any, g: float = 1.0) -> np.ndarray:
    """``A = g|W| - I`` with ``|W|_ii := 0`` where ``W_ii <= 0`` (Theorem 1).

    ``A`` is Metzler; Theorem 1 holds iff it is Hurwitz, i.e. ``spectral_radius(A + I) < 1``.
    """
    W = as_matrix(W)
    g = _positive("g", g, "maximum activation slope")
    a = g * np.abs(W)
    np.fill_diagonal(a, g * np.clip(np.diag(W), 0.0, None))
    return a - np.eye(W.shape[0])


def _closed_form_diagonal(a: np.ndarray) -> np.ndarray:
    """``P = diag(w / v)``, ``v = -A^{-1} 1``, ``w = -A^{-T} 1`` (Hurwitz Metzler ``A``)."""
    ones = np.ones(a.shape[0])
    try:
        v = -np.linalg.solve(a, ones)
        w = -np.linalg.solve(a.T, ones)
    except np.linalg.LinAlgError:
        raise ValueError("Theorem 1 fails: g|W| - I is singular, hence not Hurwitz") from None
    if not (np.all(v > 0) and np.all(w > 0) and np.all(np.isfinite(v))
            and np.all(np.isfinite(w))):
        raise ValueError("Theorem 1 fails: g|W| - I is not Hurwitz (-A^{-1} 1 is not positive), "
                         "so no diagonal metric exists")
    p = w / v
    if not np.all(np.isfinite(p)) or p.max() / p.min() > 1e300:
        raise ValueError("Theorem 1 closed-form metric overflows float64")
    return p / p.min()


def _best_diagonal_gp(a: np.ndarray,
                      mu_min: float) -> Callable[[], tuple[Any, Callable[[], np.ndarray]]]:
    """Geometric program for the best-conditioned diagonal ``P`` with rate ``>= mu_min``.

    ``B = A + mu_min I`` is Metzler, so the symmetric Metzler ``S = P B + B^T P`` is ``<= 0``
    iff some ``u > 0`` has ``S u <= 0`` (Perron-Frobenius, blockwise for reducible ``S``).
    Row ``i`` of ``S u <= 0`` divided by ``-2 B_ii p_i u_i > 0`` is the posynomial constraint
    ``sum_j B_ij/(-2B_ii) u_j/u_i + B_ji/(-2B_ii) p_j u_j/(p_i u_i) <= 1``, convex in
    ``l = log p``, ``e = log u``. Minimise ``T`` with ``0 <= l_i <= T`` (so ``kappa(P) = e^T``).
    Working in logarithms keeps metrics with ``kappa ~ 1e10`` well scaled for the solver.
    """
    cp = _cvxpy()
    n = a.shape[0]
    b = a + mu_min * np.eye(n)
    off = b.copy()
    np.fill_diagonal(off, 0.0)
    d = -2.0 * np.diag(b)

    def build():
        ell, eta, top = cp.Variable(n), cp.Variable(n), cp.Variable()
        cons = [ell >= 0, ell <= top]
        for i in range(n):
            terms = []
            row = np.nonzero(off[i] > 0)[0]
            col = np.nonzero(off[:, i] > 0)[0]
            if row.size:
                terms.append(eta[row] - eta[i] + np.log(off[i, row] / d[i]))
            if col.size:
                terms.append(ell[col] - ell[i] + eta[col] - eta[i] + np.log(off[col, i] / d[i]))
            if terms:
                expr = terms[0] if len(terms) == 1 else cp.hstack(terms)
                cons.append(cp.log_sum_exp(expr) <= 0)
        problem = cp.Problem(cp.Minimize(top), cons)

        def extract() -> np.ndarray:
            if ell.value is None:
                raise ValueError("no solution values")
            lv = np.asarray(ell.value, dtype=np.float64)
            p = np.exp(lv - lv.min())
            if not np.all(np.isfinite(p)):
                raise ValueError("non-finite metric")
            return p

        return problem, extract

    return build


def _theorem1_metric_info(W: np.ndarray, g: float, best: bool, mu_fraction: float,
                          solvers: Sequence[str]) -> tuple[np.ndarray, dict[str, Any]]:
    a = comparison_matrix(W, g)
    p_cf = _closed_form_diagonal(a)
    mu_cf = rate_in_metric(a, p_cf)
    if not mu_cf > _eig_tol(a * np.sqrt(p_cf)[:, None] / np.sqrt(p_cf)[None, :]):
        raise ValueError(f"Theorem 1 closed-form metric failed float64 verification (rate "
                         f"{mu_cf:.3g}); g|W| - I is at best marginally Hurwitz")
    info: dict[str, Any] = {"method": "closed form", "kappa_closed_form": _diag_kappa(p_cf),
                            "rate_closed_form": mu_cf}
    off = a - np.diag(np.diag(a))
    if not best or _diag_kappa(p_cf) <= 1 + 1e-12 or not np.any(off > 0):
        if not np.any(off > 0):
            p_cf = np.ones_like(p_cf)  # diagonal A: the identity is optimal
            info["method"] = "identity (W has no off-diagonal coupling)"
        return p_cf, info
    mu_min = mu_fraction * mu_cf

    def verify(p: np.ndarray) -> tuple[bool, str]:
        mu = rate_in_metric(a, p)
        kappa = _diag_kappa(p)
        ok = bool(mu >= 0.9 * mu_min and kappa <= _diag_kappa(p_cf))
        return ok, f"verified rate {mu:.4g} (need {0.9 * mu_min:.4g}), kappa {kappa:.4g}"

    # the float64 check decides, so SCS may stop early (eps 1e-8 costs ~1 s at n = 32)
    p_best, status, log = _solve(_best_diagonal_gp(a, mu_min), solvers, verify,
                                 {"SCS": {"eps_abs": 1e-6, "eps_rel": 1e-6}})
    info["solver_log"] = log
    if p_best is None:
        info["method"] = "closed form (best-metric solve failed or was not better)"
        return p_cf, info
    info["method"] = f"best conditioned ({status})"
    return p_best / p_best.min(), info


def theorem1_metric(W: Any, g: float = 1.0, best: bool = True, *, mu_fraction: float = 0.25,
                    solvers: str | Sequence[str] = _GP_SOLVERS) -> np.ndarray:
    """Diagonal of a verified Theorem-1 metric ``P`` (1-D, normalised to ``min P = 1``).

    Closed form (DESIGN.md section 3): ``P = diag(w / v)``, ``v = -A^{-1} 1``,
    ``w = -A^{-T} 1``, ``A = g|W| - I``. With ``best=True`` the best-conditioned diagonal ``P``
    is computed instead: minimise ``t`` subject to ``I <= P <= t I`` and
    ``P A + A^T P <= -2 mu_min P`` with ``mu_min = mu_fraction * mu_closed_form``, solved as the
    equivalent geometric program of ``_best_diagonal_gp``. Requiring a rate trades conditioning
    for speed of contraction: on 32-unit modules ``mu_fraction`` 0.25 -> 0.01 lowers
    ``kappa(P)`` only ~1.5x while dividing the guaranteed rate by 25. Because the closed form is
    feasible, the optimum is never worse conditioned than it. The solution is accepted only if
    float64 verification gives a rate ``>= 0.9 mu_min``; otherwise the closed form is returned.
    Raises ``ValueError`` if Theorem 1 fails (``spectral_radius(g|W|) >= 1``).
    """
    W = as_matrix(W)
    g = _positive("g", g, "maximum activation slope")
    p, _ = _theorem1_metric_info(W, g, bool(best), _fraction("mu_fraction", mu_fraction),
                                 _solver_names(solvers))
    return p


def check_theorem1(W: Any, g: float = 1.0, tau: float = 1.0, best_metric: bool = True, *,
                   mu_fraction: float = 0.25,
                   solvers: str | Sequence[str] = _GP_SOLVERS) -> ConditionResult:
    """Theorem 1: ``g|W| - I`` Hurwitz (``|W|_ii := 0`` where ``W_ii <= 0``) gives a diagonal
    metric ``P`` (see :func:`theorem1_metric`) with rate ``mu / tau`` (:func:`rate_in_metric`).
    """
    W = as_matrix(W)
    g, tau = _g_tau(g, tau)
    mu_fraction = _fraction("mu_fraction", mu_fraction)
    solvers = _solver_names(solvers)
    a = comparison_matrix(W, g)
    rho = _spectral_radius(a + np.eye(W.shape[0]))
    details: dict[str, Any] = {"spectral_radius": rho}
    try:
        p, info = _theorem1_metric_info(W, g, best_metric, mu_fraction, solvers)
    except ValueError as exc:
        margin = min(1.0 - rho, 0.0)
        return ConditionResult("Theorem 1", False, margin, None, None,
                               f"{exc}; spectral_radius(g|W|) = {rho:.6g} (needs < 1)", details)
    mu = rate_in_metric(a, p)
    details.update(info)
    details["kappa"] = _diag_kappa(p)
    msg = (f"spectral_radius(g|W|) = {rho:.6g} < 1, so g|W| - I is Hurwitz; diagonal metric "
           f"P ({info['method']}, kappa {_diag_kappa(p):.4g}) satisfies "
           f"P A + A^T P <= -2 mu P with mu = {mu:.4g}, rate mu / tau = {mu / tau:.4g}")
    return ConditionResult("Theorem 1", True, mu, np.diag(p), mu / tau, msg, details)


# -- Theorem 2 ----------------------------------------------------------------------------
def check_theorem2(W: Any, g: float = 1.0, tau: float = 1.0) -> ConditionResult:
    """Theorem 2: ``W = W^T`` and ``g W < I`` (and ``phi' > 0``).

    No constant metric: the proof's metric is the state-dependent ``D(x) = diag(phi'(x))``.
    Since ``D^{1/2} J D^{-1/2} = (-I + D^{1/2} W D^{1/2}) / tau``, pointwise
    ``D J + J^T D <= -2 lam D`` with ``lam = (1 - g max(lambda_max(W), 0)) / tau``.
    Symmetry tolerance: ``1e-10`` relative (``10 eps`` of the input dtype for float32 input).
    """
    tol = max(1e-10, 10.0 * _input_eps(W))
    W = as_matrix(W)
    g, tau = _g_tau(g, tau)
    scale = max(1.0, float(np.max(np.abs(W))))
    asym = float(np.max(np.abs(W - W.T))) / scale
    lam_max = float(np.linalg.eigvalsh(_sym(W))[-1])
    details = {"asymmetry": asym, "lambda_max": lam_max, "symmetry_tolerance": tol}
    if asym > tol:
        return ConditionResult(
            "Theorem 2", False, -asym, None, None,
            f"W is not symmetric: max |W - W^T| / max(1, max |W|) = {asym:.3g} > {tol:.1g}",
            details)
    margin = 1.0 - g * lam_max
    if margin <= _eig_tol(W) * g:
        return ConditionResult(
            "Theorem 2", False, min(margin, 0.0), None, None,
            f"g W < I fails: g lambda_max(W) = {g * lam_max:.6g} (needs < 1)", details)
    rate = (1.0 - g * max(lam_max, 0.0)) / tau
    msg = (f"W symmetric and g lambda_max(W) = {g * lam_max:.4g} < 1. No constant metric: the "
           "proof's metric is the state-dependent D(x) = diag(phi'(x)), which requires "
           f"phi' > 0; pointwise D J + J^T D <= -2 lam D with lam = {rate:.4g}. The bound is "
           "pointwise in x: D changes along trajectories (cf. Theorem 6's slowly-varying-slopes "
           "condition), and it cannot be used inside a feedback combination")
    return ConditionResult("Theorem 2", True, margin, None, rate, msg, details)


# -- Theorem 3 ----------------------------------------------------------------------------
def _theorem3_rate(W: np.ndarray, M: np.ndarray, g: float) -> tuple[float, float]:
    """Rigorous ``mu`` for ``M`` from ``N = M W``: ``M J + J^T M = -2M + N D + D N^T``.

    With ``N = N_d + N_o`` (diagonal / off-diagonal), ``N_d D + D N_d <= 2 g max(N_ii, 0) I``
    and ``||N_o D + D N_o^T|| <= 2 g ||N_o||``, so ``mu >= 1 - g (max(N_ii, 0) + ||N_o||) /
    lambda_min(M)``. For an exact factorisation ``N = -P1^{-1} P2`` and ``mu = 1``.
    Returns ``(mu, ||N_o|| / ||N||)``.
    """
    n_mat = M @ W
    n_off = n_mat - np.diag(np.diag(n_mat))
    lam_min = float(np.linalg.eigvalsh(M)[0])
    if lam_min <= 0:
        return -math.inf, math.inf
    off = float(np.linalg.norm(n_off, 2))
    excess = max(float(np.max(np.diag(n_mat))), 0.0) + off
    return 1.0 - g * excess / lam_min, off / max(float(np.linalg.norm(n_mat, 2)), 1e-300)


def _as_diag(name: str, x: Any, n: int) -> np.ndarray:
    arr = np.asarray(x.detach().cpu().double() if hasattr(x, "detach") else x, dtype=np.float64)
    if arr.ndim == 2:
        if arr.shape != (n, n) or np.any(arr - np.diag(np.diag(arr))):
            raise ValueError(f"{name} must be a positive diagonal {n}x{n} matrix or a length-{n} "
                             f"vector; received a non-diagonal matrix of shape {arr.shape}")
        arr = np.diag(arr).copy()
    if arr.shape != (n,) or not np.all(np.isfinite(arr)) or not np.all(arr > 0):
        raise ValueError(f"{name} must be a positive diagonal {n}x{n} matrix or a length-{n} "
                         f"vector with finite entries > 0; received shape {arr.shape}")
    return arr


def _rescale_components(M: np.ndarray, comps: list[np.ndarray]) -> np.ndarray:
    """Scale each block of a block-diagonal metric so its eigenvalues centre on 1."""
    M = M.copy()
    for c in comps:
        ev = np.linalg.eigvalsh(M[np.ix_(c, c)])
        M[np.ix_(c, c)] /= math.sqrt(ev[0] * ev[-1])
    return M


def check_theorem3(W: Any, g: float = 1.0, tau: float = 1.0, P1: Any = None, Q: Any = None,
                   P2: Any = None, *, rtol: float | None = None) -> ConditionResult:
    """Theorem 3: ``W = -P1 Q P2`` (``P1, P2`` positive diagonal, ``Q`` SPD) gives the metric
    ``M = (P1 Q P1)^{-1}`` with rate ``1 / tau`` (``M W D = -P1^{-1} P2 D`` is diagonal <= 0).

    With the factors given they are checked and ``W = -P1 Q P2`` is verified (relative
    tolerance ``rtol``). Without them the factorisation is searched exactly: ``W = -P1 Q P2``
    iff there is a positive diagonal ``S`` with ``-S W`` symmetric positive definite (take
    ``S = P1^{-1} P2``, so ``-S W = P2 Q P2``; conversely ``P1 = S^{-1}``, ``P2 = I``,
    ``Q = -S W``). Symmetry of ``S W`` means ``s_i W_ij = s_j W_ji``: the off-diagonal zero
    pattern must be symmetric, paired entries must share their sign, and
    ``log s_i - log s_j = log|W_ji| - log|W_ij|`` on every edge of the graph of ``W``; ``log s``
    is the least-squares solution over all edges and the residual must be within ``rtol``. On
    each connected component ``S`` is unique up to a scale, which does not affect positive
    definiteness; the metric is ``M = S Q^{-1} S = -S W^{-1}`` (each component block is scaled
    to centre its eigenvalues on 1). In both cases the returned rate is the float64-rigorous
    bound of ``_theorem3_rate`` for the given ``W`` (equal to ``1 / tau`` up to round-off).
    Default ``rtol``: ``1e-9`` (``100 eps`` of the input dtype for float32 input).
    """
    if rtol is None:
        rtol = max(1e-9, 100.0 * _input_eps(W))
    rtol = _positive("rtol", rtol, "relative tolerance")
    W = as_matrix(W)
    g, tau = _g_tau(g, tau)
    given = [x is not None for x in (P1, Q, P2)]
    if any(given) and not all(given):
        raise ValueError("pass all three factors P1, Q, P2 (or none, to search); received "
                         + ", ".join(k for k, x in zip(("P1", "Q", "P2"), given, strict=True)
                                     if x))
    if all(given):
        return _theorem3_given(W, g, tau, P1, Q, P2, rtol)
    return _theorem3_search(W, g, tau, rtol)


def _theorem3_finish(W: np.ndarray, g: float, tau: float, M: np.ndarray, q: np.ndarray,
                     details: dict[str, Any], how: str) -> ConditionResult:
    ev_q = np.linalg.eigvalsh(q)
    margin = float(ev_q[0] / ev_q[-1])
    mu, rel_off = _theorem3_rate(W, M, g)
    details.update({"kappa": float(np.linalg.cond(M)), "offdiag_of_MW": rel_off})
    if not mu > 0:
        return ConditionResult(
            "Theorem 3", False, min(margin, 0.0), None, None,
            f"{how}, but the metric could not be verified in float64 (rate bound {mu:.3g}; "
            f"kappa(M) = {details['kappa']:.3g})", details)
    msg = (f"{how}; metric M = (P1 Q P1)^{{-1}} (kappa {details['kappa']:.4g}) gives "
           f"M W D = -P1^{{-1}} P2 D <= 0, rate {mu / tau:.6g} (1 / tau up to round-off)")
    return ConditionResult("Theorem 3", True, margin, M, mu / tau, msg, details)


def _theorem3_given(W, g, tau, P1, Q, P2, rtol) -> ConditionResult:
    n = W.shape[0]
    p1 = _as_diag("P1", P1, n)
    p2 = _as_diag("P2", P2, n)
    q = as_matrix(Q, "Q")
    if q.shape != (n, n):
        raise ValueError(f"Q must be {n}x{n} to match W; received shape {q.shape}")
    qs = _sym(q)
    asym = float(np.max(np.abs(q - q.T))) / max(1.0, float(np.max(np.abs(q))))
    ev = np.linalg.eigvalsh(qs)
    recon = -(p1[:, None] * qs * p2[None, :])
    mismatch = float(np.max(np.abs(W - recon))) / max(float(np.max(np.abs(W))), 1e-300)
    details: dict[str, Any] = {"method": "given factors", "factor_mismatch": mismatch,
                               "Q_asymmetry": asym}
    if asym > rtol or ev[0] <= 0:
        return ConditionResult(
            "Theorem 3", False, float(min(ev[0] / ev[-1], 0.0)) if asym <= rtol else -asym,
            None, None,
            f"Q must be symmetric positive definite: relative asymmetry {asym:.3g}, "
            f"lambda_min(Q) = {ev[0]:.3g}", details)
    if mismatch > rtol:
        return ConditionResult(
            "Theorem 3", False, -mismatch, None, None,
            f"the factors do not reproduce W: max|W + P1 Q P2| / max|W| = {mismatch:.3g} > "
            f"rtol = {rtol:.1g}", details)
    # M = (P1 Q P1)^{-1} = P1^{-1} Q^{-1} P1^{-1}
    qinv = sla.cho_solve(sla.cho_factor(qs), np.eye(n))
    M = _sym(qinv / p1[:, None] / p1[None, :])
    return _theorem3_finish(W, g, tau, M, qs, details,
                            f"W = -P1 Q P2 verified (relative mismatch {mismatch:.2g})")


def _components(adj: np.ndarray) -> list[np.ndarray]:
    n = adj.shape[0]
    seen = np.zeros(n, dtype=bool)
    comps = []
    for start in range(n):
        if seen[start]:
            continue
        stack, members = [start], []
        seen[start] = True
        while stack:
            i = stack.pop()
            members.append(i)
            for j in np.nonzero(adj[i] & ~seen)[0]:
                seen[j] = True
                stack.append(int(j))
        comps.append(np.array(sorted(members)))
    return comps


def _theorem3_search(W: np.ndarray, g: float, tau: float, rtol: float) -> ConditionResult:
    n = W.shape[0]
    details: dict[str, Any] = {"method": "search: positive diagonal S with -S W SPD"}
    nz = W != 0
    np.fill_diagonal(nz, False)
    if np.any(nz != nz.T):
        i, j = np.argwhere(nz != nz.T)[0]
        return ConditionResult(
            "Theorem 3", False, -1.0, None, None,
            f"no factorisation W = -P1 Q P2: the off-diagonal zero pattern is not symmetric "
            f"(W[{i},{j}] = {W[i, j]:.3g} but W[{j},{i}] = {W[j, i]:.3g})", details)
    if np.any(np.sign(W[nz]) != np.sign(W.T[nz])):
        i, j = np.argwhere(nz & (np.sign(W) != np.sign(W.T)))[0]
        return ConditionResult(
            "Theorem 3", False, -1.0, None, None,
            f"no factorisation W = -P1 Q P2: W[{i},{j}] = {W[i, j]:.3g} and W[{j},{i}] = "
            f"{W[j, i]:.3g} have opposite signs (s_i W_ij = s_j W_ji needs equal signs)",
            details)
    if np.any(np.diag(W) >= 0):
        i = int(np.argmax(np.diag(W) >= 0))
        return ConditionResult(
            "Theorem 3", False, -1.0, None, None,
            f"no factorisation W = -P1 Q P2: W[{i},{i}] = {W[i, i]:.3g} >= 0, but the "
            "diagonal of -P1 Q P2 is negative", details)
    # least squares for log s on the edges i < j: log s_i - log s_j = log|W_ji| - log|W_ij|
    ii, jj = np.nonzero(np.triu(nz, 1))
    log_s = np.zeros(n)
    comps = _components(nz)
    if ii.size:
        inc = np.zeros((ii.size, n))
        inc[np.arange(ii.size), ii] = 1.0
        inc[np.arange(ii.size), jj] = -1.0
        rhs = np.log(np.abs(W[jj, ii])) - np.log(np.abs(W[ii, jj]))
        log_s = np.linalg.lstsq(inc, rhs, rcond=None)[0]
        for c in comps:  # centre each component (its scale is free)
            log_s[c] -= log_s[c].mean()
    s = np.exp(log_s)
    sw = s[:, None] * W
    mismatch = float(np.max(np.abs(sw - sw.T))) / float(np.max(np.abs(sw)))
    details.update({"ratio_mismatch": mismatch, "s": s, "components": len(comps)})
    if mismatch > rtol:
        return ConditionResult(
            "Theorem 3", False, -mismatch, None, None,
            f"no factorisation W = -P1 Q P2: the ratios W_ij / W_ji are inconsistent around a "
            f"cycle (no positive diagonal S makes S W symmetric; relative residual "
            f"{mismatch:.3g} > rtol = {rtol:.1g})", details)
    q = -_sym(sw)
    ev = np.linalg.eigvalsh(q)
    if ev[0] <= 0:
        return ConditionResult(
            "Theorem 3", False, float(ev[0] / np.max(np.abs(ev))), None, None,
            f"no factorisation W = -P1 Q P2: S W is symmetric for S = diag(s) (unique per "
            f"component up to scale) but -S W is not positive definite (lambda_min = "
            f"{ev[0]:.3g})", details)
    try:
        qinv_s = sla.cho_solve(sla.cho_factor(q), np.diag(s))
    except np.linalg.LinAlgError:
        return ConditionResult("Theorem 3", False, 0.0, None, None,
                               "-S W is numerically singular; no usable metric", details)
    M = _rescale_components(_sym(s[:, None] * qinv_s), comps)
    details.update({"P1": 1.0 / s, "P2": np.ones(n), "Q": q})
    return _theorem3_finish(W, g, tau, M, q, details,
                            "W = -P1 Q P2 with P1 = S^{-1}, P2 = I, Q = -S W SPD")


# -- Theorem 4 ----------------------------------------------------------------------------
def check_theorem4(W: Any, g: float = 1.0, tau: float = 1.0) -> ConditionResult:
    """Theorem 4: ``g W - I`` (lower or upper) triangular and Hurwitz (``g W_ii < 1``).

    Metric: the Theorem-1 closed form applied to the comparison matrix with diagonal
    ``-1 + g max(W_ii, 0)`` and off-diagonal ``g |W_ij|`` (a triangular Metzler matrix with a
    negative diagonal is Hurwitz); rate ``mu / tau`` from :func:`rate_in_metric`. Triangularity
    is exact (entries off the triangle must be exactly zero).
    """
    W = as_matrix(W)
    g, tau = _g_tau(g, tau)
    upper_bad = np.abs(np.triu(W, 1))
    lower_bad = np.abs(np.tril(W, -1))
    lower, upper = not np.any(upper_bad), not np.any(lower_bad)
    details: dict[str, Any] = {"lower": lower, "upper": upper}
    if not (lower or upper):
        worst = g * min(float(upper_bad.max()), float(lower_bad.max()))
        return ConditionResult(
            "Theorem 4", False, -worst, None, None,
            "g W - I is not triangular: both triangles off the diagonal have nonzero entries "
            f"(the smaller offending triangle has max |g W_ij| = {worst:.3g})", details)
    margin = float(np.min(1.0 - g * np.diag(W)))
    if margin <= 0:
        i = int(np.argmin(1.0 - g * np.diag(W)))
        return ConditionResult(
            "Theorem 4", False, margin, None, None,
            f"g W - I is triangular but not Hurwitz: g W[{i},{i}] - 1 = {-margin:.3g} >= 0",
            details)
    a = comparison_matrix(W, g)
    try:
        p = _closed_form_diagonal(a)
        mu = rate_in_metric(a, p)
    except ValueError as exc:
        return ConditionResult("Theorem 4", False, 0.0, None, None,
                               f"condition holds but the metric failed in float64: {exc}",
                               details)
    if not mu > _eig_tol(a * np.sqrt(p)[:, None] / np.sqrt(p)[None, :]):
        return ConditionResult(
            "Theorem 4", False, 0.0, None, None,
            f"condition holds but the closed-form metric failed float64 verification (rate "
            f"{mu:.3g}, kappa {_diag_kappa(p):.3g})", details)
    details["kappa"] = _diag_kappa(p)
    shape = "lower" if lower else "upper"
    msg = (f"g W - I is {shape} triangular with diagonal <= {-margin:.4g} < 0 (Hurwitz); "
           f"diagonal metric from the comparison matrix (kappa {_diag_kappa(p):.4g}), "
           f"rate {mu / tau:.4g}")
    return ConditionResult("Theorem 4", True, margin, np.diag(p), mu / tau, msg, details)


# -- diagonal scalings (Theorems 5 and 6) -------------------------------------------------
_LOG_BOUND = 200.0  # |log p_i| <= 200 keeps e^{l/2} and its ratios finite in float64


def _scaled(W: np.ndarray, ell: np.ndarray) -> np.ndarray:
    """``e^{L/2} W e^{-L/2}`` for ``L = diag(ell)``."""
    s = np.exp(0.5 * (ell - ell.mean()))
    return W * (s[:, None] / s[None, :])


def _minimise_scaling(fun: Callable[[np.ndarray], tuple[float, np.ndarray]],
                      x0: np.ndarray, maxiter: int = 500) -> np.ndarray:
    """L-BFGS-B on ``ell = log diag(P)``; returns ``x0`` if it fails to improve."""
    import scipy.optimize as so

    n = x0.size
    try:
        with np.errstate(all="ignore"):
            res = so.minimize(fun, x0, jac=True, method="L-BFGS-B",
                              bounds=[(-_LOG_BOUND, _LOG_BOUND)] * n,
                              options={"maxiter": maxiter})
    except (ValueError, np.linalg.LinAlgError, FloatingPointError):
        return x0
    x = np.asarray(res.x, dtype=np.float64)
    if not np.all(np.isfinite(x)) or not np.isfinite(res.fun) or res.fun > fun(x0)[0]:
        return x0
    return x - x.min()


def _osborne_start(W: np.ndarray) -> np.ndarray:
    """``ell`` minimising ``||e^{L/2} W e^{-L/2}||_F`` (Osborne balancing; smooth, convex)."""
    w2 = W * W
    if not np.any(w2 - np.diag(np.diag(w2))):
        return np.zeros(W.shape[0])

    def fun(ell):
        e = np.exp(np.clip(ell[:, None] - ell[None, :], -700, 700)) * w2
        tot = float(e.sum())
        return math.log(tot), (e.sum(1) - e.sum(0)) / tot

    return _minimise_scaling(fun, np.zeros(W.shape[0]), maxiter=200)


# -- Theorem 5 ----------------------------------------------------------------------------
def _theorem5_sigma(W: np.ndarray, g: float, p: np.ndarray) -> float:
    s = np.sqrt(p)
    return g * float(np.linalg.norm(W * (s[:, None] / s[None, :]), 2))


def _sigma_objective(W: np.ndarray) -> Callable[[np.ndarray], tuple[float, np.ndarray]]:
    """``log sigma_max(e^{L/2} W e^{-L/2})`` and its gradient ``(u^2 - v^2) / 2`` (``u, v``
    the top singular vectors); convex in ``ell`` (Sezginer & Overton, 1990)."""

    def fun(ell):
        u, sv, vt = np.linalg.svd(_scaled(W, ell))
        return math.log(max(float(sv[0]), 1e-300)), 0.5 * (u[:, 0] ** 2 - vt[0] ** 2)

    return fun


def check_theorem5(W: Any, g: float = 1.0, tau: float = 1.0, P: Any = None, *,
                   solvers: str | Sequence[str] = _SDP_SOLVERS) -> ConditionResult:
    """Theorem 5: a positive diagonal ``P`` with ``g^2 W^T P W - P < 0``; metric ``P``.

    ``g^2 W^T P W - P < 0`` iff ``sigma = g ||P^{1/2} W P^{-1/2}||_2 < 1``, and then
    ``P^{1/2} J P^{-1/2} = (-I + (P^{1/2} W P^{-1/2}) D) / tau`` gives rate
    ``(1 - sigma) / tau``. With ``P`` given it is only verified. Otherwise:

    1. necessary conditions (any diagonal scaling keeps the spectrum and the diagonal):
       ``g spectral_radius(W) < 1`` and ``g max |W_ii| < 1``;
    2. ``sigma`` is minimised over ``ell = log diag(P)`` (convex in ``ell``, Sezginer & Overton
       1990) by L-BFGS from the Osborne-balanced scaling -- this maximises the rate;
    3. only if that leaves ``sigma >= 1``: cvxpy (SCS by default) solves the LMI
       ``min t`` s.t. ``g^2 W^T P W - P <= -I``, ``0 <= P <= t I``, and its ``P`` is polished
       by step 2.

    The best candidate (identity included) is verified in float64.
    """
    W = as_matrix(W)
    g, tau = _g_tau(g, tau)
    n = W.shape[0]
    details: dict[str, Any] = {"solver_status": "not run"}
    if P is not None:
        candidates = [("given P", _as_diag("P", P, n))]
    else:
        rho = g * _spectral_radius(W)
        dmax = g * float(np.max(np.abs(np.diag(W))))
        details.update({"g_spectral_radius": rho, "g_max_abs_diag": dmax})
        if max(rho, dmax) >= 1:
            what = (f"g spectral_radius(W) = {rho:.6g}" if rho >= dmax else
                    f"g max |W_ii| = {dmax:.6g}")
            return ConditionResult(
                "Theorem 5", False, 1.0 - max(rho, dmax), None, None,
                f"no positive diagonal P can satisfy g^2 W^T P W - P < 0: {what} >= 1, and "
                "g ||P^{1/2} W P^{-1/2}|| is at least both for every P", details)
        fun = _sigma_objective(W)
        ell0 = _osborne_start(W)
        ell = _minimise_scaling(fun, ell0)
        candidates = [("identity", np.ones(n)), ("Osborne balancing", np.exp(ell0)),
                      ("minimised sigma", np.exp(ell))]
        if min(_theorem5_sigma(W, g, p) for _, p in candidates) >= 1:
            p_sol, status, log = _theorem5_sdp(W, g, _solver_names(solvers))
            details.update({"solver_status": status, "solver_log": log})
            if p_sol is not None:
                candidates.append((f"LMI solver ({status})", p_sol))
                ell = _minimise_scaling(fun, np.log(p_sol))
                candidates.append(("LMI solver + minimised sigma", np.exp(ell)))
    scored = [(_theorem5_sigma(W, g, p), name, p / p.min()) for name, p in candidates]
    sigma, name, p = min(scored, key=lambda x: x[0])
    details.update({"sigma": sigma, "metric_source": name})
    margin = 1.0 - sigma
    if margin <= _eig_tol(W) * g:
        why = ("the given P does not satisfy it" if P is not None else
               f"no positive diagonal P found (LMI solver status: {details['solver_status']})")
        return ConditionResult(
            "Theorem 5", False, min(margin, 0.0), None, None,
            f"g^2 W^T P W - P < 0 not established: {why}; best sigma = g ||P^{{1/2}} W "
            f"P^{{-1/2}}|| = {sigma:.6g} (needs < 1)", details)
    details["kappa"] = _diag_kappa(p)
    msg = (f"g^2 W^T P W - P < 0 with diagonal P ({name}, kappa {_diag_kappa(p):.4g}): "
           f"sigma = g ||P^{{1/2}} W P^{{-1/2}}|| = {sigma:.6g} < 1, rate (1 - sigma) / tau = "
           f"{margin / tau:.4g}")
    return ConditionResult("Theorem 5", True, margin, np.diag(p), margin / tau, msg, details)


def _positive_vector(v: Any) -> np.ndarray:
    x = np.asarray(v, dtype=np.float64)
    if not np.all(np.isfinite(x)) or not np.all(x > 0):
        raise ValueError("P not positive")
    return x / x.min()


def _theorem5_sdp(W: np.ndarray, g: float,
                  solvers: Sequence[str]) -> tuple[np.ndarray | None, str, list[str]]:
    cp = _cvxpy()
    n = W.shape[0]

    def build():
        p, t = cp.Variable(n, nonneg=True), cp.Variable()
        big = g * g * (W.T @ cp.diag(p) @ W) - cp.diag(p) + np.eye(n)
        prob = cp.Problem(cp.Minimize(t), [_sym_expr(big) << 0, p <= t])
        return prob, lambda: _positive_vector(p.value)

    def verify(p):
        sig = _theorem5_sigma(W, g, p)
        return sig < 1, f"sigma = {sig:.6g}"

    return _solve(build, solvers, verify)


def _sym_expr(x):
    return (x + x.T) / 2


# -- Theorem 6 ----------------------------------------------------------------------------
def _theorem6_c(W: np.ndarray, g: float, p: np.ndarray) -> float:
    """``c`` with ``(gW - I)P + P(gW^T - I) <= -cP``: ``-2 lambda_max(sym(P^{-1/2}(gW - I)
    P^{1/2}))``."""
    s = np.sqrt(p)
    a = (g * W - np.eye(W.shape[0])) * (s[None, :] / s[:, None])
    return 2.0 * _normalised_rate(a)


def _theorem6_objective(a6: np.ndarray) -> Callable[[np.ndarray], tuple[float, np.ndarray]]:
    """``lambda_max(sym(e^{-L/2} A e^{L/2}))`` and its gradient ``x (B^T x - B x) / 2``."""

    def fun(ell):
        b = _scaled(a6, -ell)
        ev, vec = np.linalg.eigh(_sym(b))
        x = vec[:, -1]
        return float(ev[-1]), 0.5 * x * (b.T @ x - b @ x)

    return fun


def check_theorem6(W: Any, g: float = 1.0, tau: float = 1.0, P: Any = None, *,
                   solvers: str | Sequence[str] = _SDP_SOLVERS) -> ConditionResult:
    """Theorem 6, first condition: a positive diagonal ``P`` and ``c > 0`` with
    ``(gW - I)P + P(gW^T - I) <= -cP`` (diagonal stability of ``g W - I``).

    No constant metric (``metric`` and ``rate`` are ``None``): the theorem contracts in the
    state-dependent ``D = diag(phi')`` with rate ``beta`` *if also* ``Ddot - c g^{-1} D <=
    -beta D`` along trajectories, a property of ``phi`` and the trajectories that no weight
    check can establish. ``P`` (if not given): ``c`` is maximised over ``log diag(P)`` by
    L-BFGS from ``P = I``; if that finds no ``c > 0``, cvxpy (SCS by default) solves ``min t``
    s.t. ``(gW - I)P + P(gW - I)^T <= -I``, ``0 <= P <= t I``, polished the same way. ``P`` and
    ``c`` are reported in ``details`` after a float64 check.
    """
    W = as_matrix(W)
    g, tau = _g_tau(g, tau)
    n = W.shape[0]
    details: dict[str, Any] = {"solver_status": "not run"}
    a6 = g * W - np.eye(n)
    if P is not None:
        candidates = [("given P", _as_diag("P", P, n))]
    else:
        if np.any(g * np.diag(W) >= 1):
            i = int(np.argmax(g * np.diag(W)))
            return ConditionResult(
                "Theorem 6", False, 2.0 * (1.0 - g * W[i, i]), None, None,
                f"g W - I is not diagonally stable: its diagonal entry g W[{i},{i}] - 1 = "
                f"{g * W[i, i] - 1:.4g} >= 0, and (gW - I)P + P(gW^T - I) has diagonal "
                "2 p_i (g W_ii - 1)", details)
        fun = _theorem6_objective(a6)
        ell = _minimise_scaling(fun, np.zeros(n))
        candidates = [("identity", np.ones(n)), ("maximised c", np.exp(ell))]
        if max(_theorem6_c(W, g, p) for _, p in candidates) <= 0:
            p_sol, status, log = _theorem6_sdp(W, g, _solver_names(solvers))
            details.update({"solver_status": status, "solver_log": log})
            if p_sol is not None:
                candidates.append((f"LMI solver ({status})", p_sol))
                ell = _minimise_scaling(fun, np.log(p_sol))
                candidates.append(("LMI solver + maximised c", np.exp(ell)))
    scored = [(_theorem6_c(W, g, p), name, p / p.min()) for name, p in candidates]
    c, name, p = max(scored, key=lambda x: x[0])
    details.update({"c": c, "P": p, "metric_source": name})
    if c <= _eig_tol(W) * g:
        return ConditionResult(
            "Theorem 6", False, min(c, 0.0), None, None,
            f"no positive diagonal P with (gW - I)P + P(gW^T - I) <= -cP, c > 0 was found "
            f"(best c = {c:.4g}; LMI solver status: {details['solver_status']})", details)
    msg = (f"(gW - I)P + P(gW^T - I) <= -cP holds with diagonal P ({name}) and c = {c:.4g}. "
           "This gives no constant metric: Theorem 6 concludes contraction in the "
           "state-dependent metric D = diag(phi'(x)) with rate beta only if, in addition, the "
           f"slopes vary slowly along trajectories: Ddot - (c/g) D <= -beta D (c/g = "
           f"{c / g:.4g}) for some beta > 0 -- a property of phi and the trajectories, not "
           "checked here")
    return ConditionResult("Theorem 6", True, c, None, None, msg, details)


def _theorem6_sdp(W: np.ndarray, g: float,
                  solvers: Sequence[str]) -> tuple[np.ndarray | None, str, list[str]]:
    cp = _cvxpy()
    n = W.shape[0]
    a6 = g * W - np.eye(n)

    def build():
        p, t = cp.Variable(n, nonneg=True), cp.Variable()
        big = a6 @ cp.diag(p) + cp.diag(p) @ a6.T + np.eye(n)
        prob = cp.Problem(cp.Minimize(t), [_sym_expr(big) << 0, p <= t])
        return prob, lambda: _positive_vector(p.value)

    def verify(p):
        c = _theorem6_c(W, g, p)
        return c > 0, f"c = {c:.6g}"

    return _solve(build, solvers, verify)


# -- generic constant metric, Theorem 7 ---------------------------------------------------
def _verify_dual_certificate(js: Sequence[np.ndarray], zs: Sequence[np.ndarray],
                             eps: float) -> float:
    """Float64 check of a certificate that no nonzero PSD ``M`` has
    ``M J_v + J_v^T M <= -eps M`` for all ``v``.

    Certificate: PSD ``Z_v`` with ``S = sum_v (J'_v Z_v + Z_v J'_v^T) > 0``, ``J'_v = J_v +
    eps/2 I``. If such an ``M`` existed, ``0 >= sum_v tr(Z_v (M J'_v + J'_v^T M)) = tr(M S) > 0``.
    Round-off: each ``Z_v`` is replaced by ``Z_v + delta I`` (``delta`` covering its negative
    eigenvalues and eigvalsh error), which lowers ``lambda_min(S)`` by at most
    ``delta sum_v ||J'_v + J'_v^T||``. Returns that verified lower bound on ``lambda_min(S)``
    minus a round-off allowance: the certificate is valid iff the result is > 0.
    """
    n = js[0].shape[0]
    eye = np.eye(n)
    jp = [j + 0.5 * eps * eye for j in js]
    zsym = [_sym(np.asarray(z, dtype=np.float64)) for z in zs]
    delta = 0.0
    for z in zsym:
        delta = max(delta, -float(np.linalg.eigvalsh(z)[0]) + _eig_tol(z))
    s = sum(j @ z + z @ j.T for j, z in zip(jp, zsym, strict=True))
    lam = float(np.linalg.eigvalsh(_sym(s))[0])
    shift = delta * sum(float(np.linalg.norm(j + j.T, 2)) for j in jp)
    roundoff = 64.0 * n * _EPS * sum(2.0 * float(np.linalg.norm(j) * np.linalg.norm(z)) + 1.0
                                     for j, z in zip(jp, zsym, strict=True))
    return lam - shift - roundoff


def _dual_certificate(js: Sequence[np.ndarray], eps: float,
                      solvers: Sequence[str]) -> tuple[list[np.ndarray] | None, float, str]:
    """Solve ``max s`` s.t. ``Z_v >= 0``, ``sum tr Z_v = 1``, ``sum(J'_v Z_v + Z_v J'_v^T) >= s I``
    and verify the result with :func:`_verify_dual_certificate`."""
    cp = _cvxpy()
    n = js[0].shape[0]
    jp = [j + 0.5 * eps * np.eye(n) for j in js]

    def build():
        zs = [cp.Variable((n, n), PSD=True) for _ in jp]
        s = cp.Variable()
        tot = sum(j @ z + z @ j.T for j, z in zip(jp, zs, strict=True))
        cons = [_sym_expr(tot) >> s * np.eye(n), sum(cp.trace(z) for z in zs) == 1]
        prob = cp.Problem(cp.Maximize(s), cons)
        return prob, lambda: [np.asarray(z.value, dtype=np.float64) for z in zs]

    def verify(zs):
        m = _verify_dual_certificate(js, zs, eps)
        return m > 0, f"verified certificate margin {m:.3g}"

    zs, status, _ = _solve(build, solvers, verify)
    if zs is None:
        return None, -math.inf, status
    return zs, _verify_dual_certificate(js, zs, eps), status


def find_constant_metric(W: Any, g: float = 1.0, tau: float = 1.0, max_n: int = 10, *,
                         solvers: str | Sequence[str] = _VERTEX_SOLVERS,
                         certify_infeasible: bool = True) -> ConditionResult:
    """Search a full SPD constant metric by the vertex LMI (no theorem, any ``W``).

    ``M J + J^T M`` is affine in ``D``, so the condition for all ``D`` in ``[0, g]^n`` holds
    iff it holds at the ``2^n`` vertices. cvxpy (Clarabel, then SCS) solves ``min t`` s.t.
    ``M J_v + J_v^T M <= -I`` (``J_v = -I + W D_v``) and ``M <= t I`` (the ``D = 0`` vertex
    forces ``M >= I / 2``; minimising ``t`` keeps ``M`` well conditioned). The result is
    verified in float64 and normalised to ``lambda_min(M) = 1``. If none is found and
    ``certify_infeasible``, the dual problem is solved for a float64-checked certificate that
    no constant metric exists (reported in ``details``). Raises ``ValueError`` for
    ``n > max_n``: the cost is ``2^n`` LMIs of size ``n`` (measured on 2 loaded cores: n = 6
    about 1 s, n = 8 about 3 s, mostly cvxpy compilation; SCS alone took 15-150 s at n = 8).
    """
    W = as_matrix(W)
    g, tau = _g_tau(g, tau)
    n = W.shape[0]
    if isinstance(max_n, bool) or not isinstance(max_n, int) or max_n < 1:
        raise ValueError(f"max_n must be an integer >= 1; received {max_n!r}")
    if n > max_n:
        raise ValueError(
            f"find_constant_metric checks the LMI at all 2^n vertices of the slope box: W has "
            f"n = {n}, i.e. {2 ** n} LMIs of size {n}, above max_n = {max_n} ({2 ** max_n} "
            "LMIs). Raise max_n if you accept that cost, or use a theorem's check instead")
    names = _solver_names(solvers)
    js = _vertex_jacobians(W, g)
    cp = _cvxpy()
    eye = np.eye(n)

    def build():
        m, t = cp.Variable((n, n), symmetric=True), cp.Variable()
        cons = [_sym_expr(m @ j + j.T @ m + eye) << 0 for j in js]
        cons.append(m << t * eye)
        prob = cp.Problem(cp.Minimize(t), cons)

        def extract():
            v = _sym(np.asarray(m.value, dtype=np.float64))
            lam = np.linalg.eigvalsh(v)[0]
            if not lam > 0:
                raise ValueError("M not positive definite")
            return v / lam

        return prob, extract

    def verify(m):
        mu = rate_in_metric(js, m)
        return mu > 1e-12, f"verified rate {mu:.6g}"

    m_sol, status, log = _solve(build, names, verify)
    details: dict[str, Any] = {"vertices": len(js), "solver_status": status, "solver_log": log}
    mu_id = rate_in_metric(js, eye)
    if m_sol is None and mu_id > 0:
        m_sol = eye
    if m_sol is not None:
        mu = rate_in_metric(js, m_sol)
        if mu_id > mu:
            m_sol, mu = eye, mu_id
        details["kappa"] = float(np.linalg.cond(m_sol))
        msg = (f"constant SPD metric found (kappa {details['kappa']:.4g}): M J_v + J_v^T M <= "
               f"-2 lam M at all {len(js)} vertices of [0, g]^n, lam = {mu / tau:.4g}")
        return ConditionResult("constant metric", True, mu, m_sol, mu / tau, msg, details)
    msg = (f"no constant metric found by the vertex LMI (solver status: {status}); "
           f"identity metric rate {mu_id:.4g} <= 0")
    if certify_infeasible:
        zs, cert, cstatus = _dual_certificate(js, 0.0, names)
        details["infeasibility_certificate"] = {"verified": zs is not None, "margin": cert,
                                                "status": cstatus}
        if zs is not None:
            msg += (f"; a float64-verified dual certificate (margin {cert:.3g}) proves that no "
                    "constant metric exists, even with rate 0")
    return ConditionResult("constant metric", False, min(mu_id, 0.0), None, None, msg, details)


def theorem7_counterexample(c: float = 2.0, g: float = 1.0, *, eps: float = 1e-3,
                            solvers: str | Sequence[str] = _VERTEX_SOLVERS) -> Theorem7Result:
    """Theorem 7: ``W = [[0, -c], [c, 0]]`` satisfies ``g W_sym - I < 0`` (``W_sym = 0``), yet
    for ``|c| g >= 2`` no constant metric makes (1) contract.

    (a) ``sym_margin = -lambda_max(g W_sym - I)``. (b) cvxpy (Clarabel, then SCS) on: SPD
    ``M >= I`` with ``M J_v + J_v^T M <= -eps M`` at the four vertices ``D in {0, g}^2``
    (``tau = 1``); a returned ``M`` counts only after a float64 check. (c) An exact dual
    certificate, derived here: with ``a = |c| g``, ``u_+ = (1, sign c)`` and
    ``u_- = (1, -sign c)``, put ``Z = u_- u_-^T / 4`` at ``D = diag(0, g)``,
    ``Z = u_+ u_+^T / 4`` at ``D = diag(g, 0)`` and 0 elsewhere; then
    ``sum_v (J'_v Z_v + Z_v J'_v^T) = (a - 2 + eps) / 2 I``. It is checked in float64 by
    ``_verify_dual_certificate`` and proves for ``a > 2 - eps`` that no nonzero PSD ``M``
    satisfies the vertex inequalities (for ``a > 2`` even with ``eps = 0``). Since ``M = I``
    gives rate ``1 - a/2``, the best constant-metric rate is exactly ``max(0, 1 - a/2)``.
    """
    c = float(c)
    if not math.isfinite(c):
        raise ValueError(f"c must be a finite number; received {c!r}")
    g = _positive("g", g, "maximum activation slope")
    eps = float(eps)
    if not (math.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps (required rate 2 lam) must be a finite number >= 0; received "
                         f"{eps!r}")
    names = _solver_names(solvers)
    W = np.array([[0.0, -c], [c, 0.0]])
    n = 2
    sym_margin = float(-np.linalg.eigvalsh(g * _sym(W) - np.eye(n))[-1])
    js = _vertex_jacobians(W, g)  # order: (0,0), (0,g), (g,0), (g,g)
    cp = _cvxpy()
    eye = np.eye(n)

    def build():
        m = cp.Variable((n, n), symmetric=True)
        cons = [m >> eye] + [_sym_expr(m @ j + j.T @ m + eps * m) << 0 for j in js]
        prob = cp.Problem(cp.Minimize(0), cons)
        return prob, lambda: _sym(np.asarray(m.value, dtype=np.float64))

    def verify(m):
        try:
            mu = rate_in_metric(js, m)
        except ValueError:
            return False, "M not positive definite"
        return mu >= 0.5 * eps * (1 - 1e-6) and mu > 0, f"verified rate {mu:.4g}"

    m_sol, status, _ = _solve(build, names, verify)
    lmi_feasible = m_sol is not None
    sgn = 1.0 if c >= 0 else -1.0
    u_plus, u_minus = np.array([1.0, sgn]), np.array([1.0, -sgn])
    zs = [np.zeros((n, n)), np.outer(u_minus, u_minus) / 4, np.outer(u_plus, u_plus) / 4,
          np.zeros((n, n))]
    cert = _verify_dual_certificate(js, zs, eps)
    cert0 = _verify_dual_certificate(js, zs, 0.0)
    certified = cert > 0
    a = abs(c) * g
    best_rate = max(0.0, 1.0 - a / 2)
    parts = [f"W = [[0, {-c:g}], [{c:g}, 0]], g = {g:g}: g W_sym - I = -I < 0 "
             f"({'holds' if sym_margin > 0 else 'fails'}, margin {sym_margin:.3g})"]
    parts.append(f"vertex LMI (M >= I, M J_v + J_v^T M <= -{eps:g} M) is "
                 f"{'feasible (float64-verified M)' if lmi_feasible else 'infeasible'} "
                 f"per the solver ({status})")
    if certified:
        strength = ("no constant metric exists even with rate 0" if cert0 > 0 else
                    f"no constant metric has rate >= {eps / 2:g}")
        parts.append(f"float64-verified dual certificate (margin {cert:.3g}): {strength}")
    else:
        parts.append(f"no infeasibility certificate: |c| g = {a:g} < {2 - eps:g}, and M = I "
                     f"contracts with rate {best_rate:.4g}")
    parts.append(f"best constant-metric rate = max(0, 1 - |c| g / 2) = {best_rate:.4g}")
    certificate = {"vertices": [list(d) for d in itertools.product((0.0, g), repeat=n)],
                   "Z": zs, "margin_eps0": cert0}
    return Theorem7Result(W, c, g, eps, bool(sym_margin > 0), sym_margin, lmi_feasible, status,
                          bool(certified), float(cert), certificate, best_rate,
                          "; ".join(parts))
