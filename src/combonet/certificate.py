"""Certificates: the metric and rate a model contracts with, for the map it actually runs.

Continuous time (DESIGN.md §2): ``M J + J^T M <= -2 lam M`` for every admissible slope matrix,
from the model's own structure (theorems of Section 3 and combination rules of Section 2).

Discrete time: with ``alpha = dt / tau``, ``mu = lam tau`` and ``K = W D + L`` in normalised
coordinates ``K~ = M^{1/2} K M^{-1/2}`` (whose symmetric part is ``<= (1 - mu) I``):

* ``euler``:  ``||I + alpha J||_M^2 <= 1 - 2 alpha mu + alpha^2 (k^2 - 1 + 2 mu)``, ``k >= ||K~||``;
* ``cayley``: ``rho <= ||C||_M * max_i rho_i`` with the same bound per module ``i`` (the module
  map is block diagonal) and ``||C||_M`` computed exactly (1 for eq. 3 couplings).

For ``N <= 12`` the factor is also computed exactly: the map's Jacobian is affine in the slopes,
so its ``M``-norm is largest at a vertex of the slope box; all ``2^N`` vertices are checked.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from ._linalg import normalise, spd_sqrt
from .engine.discretise import cayley, check_method, step_fraction
from .modules.base import ContractingSystem, NoConstantMetricError, NotContractingError

EXACT_MAX_N = 12
TOL = 1e-9


@dataclass
class Certificate:
    """A JSON-serialisable statement of what a model provably satisfies (float64)."""

    conditions: list[str]
    rate: float
    continuous_certified: bool
    metric: list[list[float]] | list[float] | None
    metric_is_diagonal: bool
    metric_condition_number: float | None
    tau: float
    dt: float
    method: str
    alpha: float
    discrete_factor: float | None
    discrete_exact: bool
    discrete_certified: bool
    max_dt: float | None
    coupling_skew_residual: float | None
    notes: list[str] = field(default_factory=list)

    @property
    def certified(self) -> bool:
        """Both the continuous system and the discrete map it runs contract."""
        return self.continuous_certified and self.discrete_certified

    @property
    def margin(self) -> float:
        """``1 - rho`` for the discrete map (negative when not covered), else the rate."""
        if self.discrete_factor is not None:
            return 1.0 - self.discrete_factor
        return self.rate

    def metric_matrix(self) -> np.ndarray | None:
        if self.metric is None:
            return None
        m = np.asarray(self.metric, dtype=np.float64)
        return np.diag(m) if self.metric_is_diagonal else m

    def to_dict(self) -> dict:
        d = asdict(self)
        d["certified"] = self.certified
        d["margin"] = self.margin
        return d

    def to_json(self, **kw) -> str:
        return json.dumps(self.to_dict(), **kw)

    @classmethod
    def from_dict(cls, d: dict) -> Certificate:
        fields = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**fields)

    def summary(self) -> str:
        """A few human-readable lines."""
        lines = [
            f"conditions: {', '.join(self.conditions)}",
            f"continuous-time rate lam = {self.rate:.4g} "
            f"({'certified' if self.continuous_certified else 'NOT certified'})",
        ]
        if self.metric_condition_number is not None:
            lines.append(f"metric condition number = {self.metric_condition_number:.4g}")
        if self.discrete_factor is not None:
            kind = "exact" if self.discrete_exact else "bound"
            lines.append(
                f"{self.method} map, dt={self.dt:g} (alpha={self.alpha:g}): contraction factor "
                f"rho <= {self.discrete_factor:.6f} ({kind}) -> "
                f"{'certified' if self.discrete_certified else 'NOT certified'}"
            )
        if self.max_dt is not None:
            lines.append(f"largest dt covered by this certificate: {self.max_dt:.4g}")
        lines += self.notes
        lines.append("CERTIFIED" if self.certified else "NOT CERTIFIED")
        return "\n".join(lines)


def _leaf_bounds(model: ContractingSystem) -> list[tuple[float, float]]:
    """Per leaf: ``(mu_i, k_i)``, dimensionless rate and bound on ``||M^{1/2} W D M^{-1/2}||``."""
    out = []
    for leaf in model.leaves():
        w = leaf.weight().detach().to(torch.float64).cpu()
        m = leaf.metric().detach().to(torch.float64).cpu()
        s, si = spd_sqrt(m, diagonal=leaf.metric_is_diagonal())
        if leaf.metric_is_diagonal():
            k = leaf.g * float(torch.linalg.matrix_norm(normalise(w, s, si), ord=2))
        else:
            k = leaf.g * float(torch.linalg.matrix_norm(s @ w, ord=2)
                               * torch.linalg.matrix_norm(si, ord=2))
        out.append((leaf.rate() * leaf.tau, k))
    return out


def _rho_bound(alpha: float, mu: float, k: float) -> float:
    """``sqrt(1 - 2 alpha mu + alpha^2 (k^2 - 1 + 2 mu))`` (see module docstring)."""
    return math.sqrt(max(0.0, 1 - 2 * alpha * mu + alpha**2 * (k**2 - 1 + 2 * mu)))


class _Discrete:
    """Discrete contraction factor of one model for a given method, as a function of alpha."""

    def __init__(self, model: ContractingSystem, m: torch.Tensor, method: str) -> None:
        self.model, self.method = model, method
        self.s, self.si = spd_sqrt(m, diagonal=model.metric_is_diagonal())
        lmat = model.coupling()
        self.l = None if lmat is None else lmat.detach().to(torch.float64).cpu()
        self.w = model.weight().detach().to(torch.float64).cpu()
        self.leaves = _leaf_bounds(model)
        self.mu = model.rate() * model.tau
        l_norm = 0.0 if self.l is None else float(
            torch.linalg.matrix_norm(normalise(self.l, self.s, self.si), ord=2))
        self.k = max(k for _, k in self.leaves) + l_norm

    def bound(self, alpha: float) -> float:
        if self.method == "euler":
            return _rho_bound(alpha, self.mu, self.k)
        rho_mod = max(_rho_bound(alpha, mu, k) for mu, k in self.leaves)
        return self.c_norm(alpha) * rho_mod

    def c_norm(self, alpha: float) -> float:
        if self.l is None:
            return 1.0
        c = normalise(cayley(self.l, alpha), self.s, self.si)
        return float(torch.linalg.matrix_norm(c, ord=2))

    def exact(self, alpha: float) -> float:
        n, g = self.w.shape[0], self.model.g
        eye = torch.eye(n, dtype=torch.float64)
        c = eye if (self.method == "euler" or self.l is None) else cayley(self.l, alpha)
        best = 0.0
        for vertex in itertools.product((0.0, g), repeat=n):
            d = torch.tensor(vertex, dtype=torch.float64)
            a = (1 - alpha) * eye + alpha * self.w * d[None, :]
            if self.method == "euler" and self.l is not None:
                a = a + alpha * self.l
            a = c @ a
            best = max(best, float(torch.linalg.matrix_norm(normalise(a, self.s, self.si),
                                                           ord=2)))
        return best

    def is_metric_skew(self) -> bool:
        """Whether ``L`` is skew in ``M`` (eq. 3): then ``||C||_M = 1`` for every step size."""
        if self.l is None:
            return True
        lt = normalise(self.l, self.s, self.si)
        scale = max(float(torch.linalg.matrix_norm(lt)), 1e-300)
        return float(torch.linalg.matrix_norm(lt + lt.T)) <= 1e-12 * scale

    def max_alpha(self) -> float:
        """Largest alpha in (0, 1] below which the bound is < 1 (closed form where the bound
        is a quadratic in alpha, else the largest point of a geometric grid)."""
        if self.method == "euler":
            return _quadratic_max_alpha(self.mu, self.k)
        if self.is_metric_skew():
            return min(_quadratic_max_alpha(mu, k) for mu, k in self.leaves)
        good = 0.0
        for a in np.geomspace(1e-4, 1.0, 25):
            if self.bound(float(a)) < 1 - TOL:
                good = float(a)
            else:
                break
        return good


def _quadratic_max_alpha(mu: float, k: float) -> float:
    """Largest alpha in (0, 1] with ``1 - 2 alpha mu + alpha^2 (k^2 - 1 + 2 mu) < 1``."""
    if mu <= 0:
        return 0.0
    denom = k**2 - 1 + 2 * mu
    return 1.0 if denom <= 0 else min(1.0, 2 * mu / denom * (1 - 1e-9))


def certify(model: ContractingSystem, dt: float = 0.1, method: str = "euler") -> Certificate:
    """Certify ``model`` (module or combination) for the map ``method`` with step ``dt``."""
    check_method(method)
    alpha = step_fraction(dt, model.tau)
    notes: list[str] = []
    with torch.no_grad():
        rate = float(model.rate())
        try:
            m = model.metric().detach().to(torch.float64).cpu()
        except (NoConstantMetricError, NotContractingError) as err:
            kind = "no constant metric" if isinstance(err, NoConstantMetricError) else "no metric"
            notes.append(f"{kind}: {err}")
            notes.append("the discrete-time map is not covered (needs a constant metric)")
            return Certificate(model.conditions(), rate, rate > 0, None, False, None,
                               model.tau, float(dt), method, alpha, None, False, False, None,
                               None, notes)
        evals = torch.linalg.eigvalsh((m + m.T) / 2)
        cond = float(evals[-1] / evals[0])
        residual = _skew_residual(model, m)
        disc = _Discrete(model, m, method)
        factor = disc.bound(alpha)
        exact = False
        if model.n <= EXACT_MAX_N:
            factor = min(factor, disc.exact(alpha))
            exact = True
        max_dt = disc.max_alpha() * model.tau
    continuous = rate > 0
    if not continuous:
        notes.append(f"the continuous-time rate bound {rate:.4g} is not positive: no guarantee")
    discrete = continuous and factor < 1 - TOL
    if continuous and not discrete:
        notes.append(
            f"continuous time is certified, but the {method} map with dt={dt:g} is not covered; "
            f"dt <= {max_dt:.4g} would be" if max_dt > 0 else
            f"continuous time is certified, but no step size of the {method} map is covered"
        )
    diagonal = model.metric_is_diagonal()
    metric = torch.diagonal(m).tolist() if diagonal else m.tolist()
    return Certificate(model.conditions(), rate, continuous, metric, diagonal, cond, model.tau,
                       float(dt), method, alpha, factor, exact, discrete,
                       max_dt if max_dt > 0 else None, residual, notes)


def _skew_residual(model: ContractingSystem, m: torch.Tensor) -> float | None:
    """``||M L + L^T M|| / (||M|| ||L||)`` for the model's own feedback coupling (eq. 3)."""
    from .combinations import Feedback

    if not isinstance(model, Feedback):
        return None
    lmat = model.own_coupling(torch.float64).detach().cpu()
    denom = float(torch.linalg.matrix_norm(m) * torch.linalg.matrix_norm(lmat))
    if denom == 0:
        return 0.0
    return float(torch.linalg.matrix_norm(m @ lmat + lmat.T @ m)) / denom
