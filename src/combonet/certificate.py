"""Certificates: what the map that runs provably satisfies, computed from the tensors that run.

``certify(model, dt, method)`` builds the model's snapshot (:meth:`explicit`) in the dtype the
model runs in -- the very matrices the engine multiplies -- and bounds them in float64
(:mod:`combonet.bounds`): the continuous-time rate by the tree's rules (theorems of Section 3,
combination rules of Section 2) and the contraction factor of the discrete map, with a stated
float64 rounding allowance included. Nothing is cached or trusted: metrics are candidates that
are checked, every rate is recomputed. ``certify`` is total: for any well-formed model it
returns a :class:`Certificate` (NOT CERTIFIED, with the reasons) instead of raising; only bad
arguments raise ``ValueError``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch

from . import bounds
from .engine.maps import DEFAULT_METHOD, check_method, step_fraction
from .snapshot import Explicit

__all__ = ["Certificate", "certify"]

_BUILD_ERRORS = (ValueError, RuntimeError, ArithmeticError, NotImplementedError)


@dataclass(kw_only=True)
class Certificate:
    """A JSON-serialisable statement of what a model's running map provably satisfies."""

    conditions: list[str]
    method: str
    dt: float
    dtype: str
    tau: float  # the smallest time constant
    alpha: float  # the largest dt / tau
    rate: float | None  # continuous-time rate of the running matrices
    continuous_certified: bool
    discrete_factor: float | None = None  # upper bound on the step's factor, allowance included
    discrete_bound: float | None = None  # the analytic bound, before the allowance
    discrete_exact: bool = False  # the factor was computed at every vertex (N <= 12)
    discrete_certified: bool = False
    allowance: float | None = None
    metric: list[list[float]] | list[float] | None = None  # original coordinates
    metric_is_diagonal: bool = False
    metric_condition_number: float | None = None  # original coordinates
    running_metric_condition_number: float | None = None  # coordinates the engine runs in
    normalised_coordinates: bool = False
    coupling_norm: float | None = None  # ||C||_M (cayley) or ||K||_M (euler)
    coupling_skew_residual: float | None = None  # of the running K in the running metric
    max_dt: float | None = None
    modules: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def certified(self) -> bool:
        """The continuous system and the discrete map that runs both contract."""
        return self.continuous_certified and self.discrete_certified and not self.failures

    @property
    def margin(self) -> float:
        """``1 - rho`` for the discrete map (negative when not covered), else the rate."""
        if self.discrete_factor is not None:
            return 1.0 - self.discrete_factor
        return self.rate if self.rate is not None else -math.inf

    def metric_matrix(self) -> Any:
        import numpy as np

        if self.metric is None:
            return None
        m = np.asarray(self.metric, dtype=np.float64)
        return np.diag(m) if self.metric_is_diagonal else m

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["certified"] = self.certified
        d["margin"] = self.margin
        return d

    def to_json(self, **kw: Any) -> str:
        return json.dumps(self.to_dict(), **kw)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Certificate:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def summary(self) -> str:
        """Human-readable lines; the last one is the verdict (with the first failure)."""
        coords = "metric-normalised" if self.normalised_coordinates else "original"
        lines = [f"conditions: {', '.join(self.conditions)}",
                 f"map: {self.method}, dt={self.dt:g} (largest dt/tau {self.alpha:g}), the "
                 f"{self.dtype} matrices the engine multiplies ({coords} coordinates)"]
        if self.rate is not None:
            if self.continuous_certified:
                lines.append(f"continuous-time rate lam = {self.rate:.4g} (holds)")
            elif not self.rate > 0:
                lines.append(f"continuous-time rate lam = {self.rate:.4g} <= 0: NOT certified")
            else:
                lines.append(f"continuous-time rate lam = {self.rate:.4g}: NOT certified (a "
                             "rule fails for the running matrices, see the last line)")
        if self.metric_condition_number is not None:
            run = self.running_metric_condition_number
            lines.append(f"metric condition number = {self.metric_condition_number:.4g}"
                         + (f" (running coordinates: {run:.4g})" if run is not None else ""))
        if self.discrete_factor is not None:
            kind = "exact at all slope vertices" if self.discrete_exact else "bound"
            if self.discrete_certified:
                verdict = "-> holds"
            elif not self.discrete_factor < 1:
                verdict = ">= 1 -> NOT certified"
            else:  # rho < 1, but the continuous-time part fails: rho alone certifies nothing
                verdict = "< 1, but the discrete factor alone does not certify"
            lines.append(f"step contraction factor rho <= {self.discrete_factor:.9f} ({kind}, "
                         f"incl. rounding allowance {self.allowance:.1e}) {verdict}")
        if self.coupling_norm is not None and self.method == "cayley":
            lines.append(f"||C||_M - 1 = {self.coupling_norm - 1:.3g} (the coupling step)")
        if self.max_dt is not None:
            lines.append(f"largest dt covered: {self.max_dt:.6g}")
        lines += self.notes
        if self.certified:
            lines.append("CERTIFIED")
        else:
            reason = self.failures[0] if self.failures else "the discrete map is not covered"
            lines.append(f"NOT CERTIFIED: {reason}")
        return "\n".join(lines)


def _network(model: Any) -> tuple[Any, float | None, str | None]:
    """A SequenceClassifier-like model -> (its network, its dt, its method)."""
    from .modules.base import ContractingSystem

    if isinstance(model, ContractingSystem):
        return model, None, None
    net = getattr(model, "network", None)
    if isinstance(net, ContractingSystem):
        return net, getattr(model, "dt", None), getattr(model, "method", None)
    raise ValueError(f"certify needs a combonet module, combination or classifier with a "
                     f"'network', got {type(model).__name__}")


def certify(model: Any, dt: float | None = None, method: str | None = None, *,
            dtype: torch.dtype | None = None, max_dt: bool = True) -> Certificate:
    """Certify the map ``method`` with step ``dt`` of ``model`` (a module, a combination or a
    classifier, whose own ``dt`` and ``method`` are the defaults) as it runs in ``dtype``
    (default: the model's). ``max_dt=False`` skips the search for the largest covered step."""
    net, model_dt, model_method = _network(model)
    method = check_method(method or model_method or DEFAULT_METHOD)
    dt = dt if dt is not None else (model_dt if model_dt is not None else 0.1)
    alpha = step_fraction(dt, net.tau)
    dtype = dtype or net.run_dtype()
    cert = _evaluate(net, float(dt), method, dtype, alpha)
    if max_dt and cert.continuous_certified:
        cert.max_dt = _largest_dt(net, method, dtype, float(dt), cert.discrete_certified)
        if not cert.discrete_certified and cert.max_dt is not None:
            cert.notes.append(f"dt <= {cert.max_dt:.6g} would be covered")
    return cert


def _build(net: Any, dt: float, method: str, dtype: torch.dtype) -> Explicit:
    with torch.no_grad():
        return net.explicit(dt=dt, method=method, dtype=dtype)


def _metric_spread(module: Any) -> float | None:
    """The condition number of a module's metric (None when it cannot be computed)."""
    try:
        with torch.no_grad():
            if module.metric_is_diagonal():
                p = module.metric_diagonal().to(torch.float64)
                return float(p.max() / p.min())
            ev = torch.linalg.eigvalsh(module.metric().to(torch.float64))
            return float(ev[-1] / ev[0])
    except _BUILD_ERRORS:
        return None


def _weights_finite(module: Any) -> bool:
    try:
        with torch.no_grad():
            return bool(torch.isfinite(module.weight()).all())
    except _BUILD_ERRORS:
        return False


def _nonfinite(snap: Explicit, net: Any) -> list[str]:
    out = []
    for leaf, module in zip(snap.tree.leaves(), net.leaves(), strict=True):
        blk = snap.weight_matrix()[leaf.start:leaf.stop, leaf.start:leaf.stop]
        if bool(torch.isfinite(blk).all()):
            continue
        if not _weights_finite(module):
            out.append(f"{leaf.label}: its weights are not finite")
            continue
        spread = _metric_spread(module)
        why = f" (condition number {spread:.3g})" if spread is not None else ""
        out.append(f"{leaf.label}: its running weights are not finite in "
                   f"{str(snap.dtype).replace('torch.', '')} although W is: its metric"
                   f"{why} is too spread for that dtype")
    named = [("coupling", snap.coupling), ("kmat", snap.kmat), ("scale", snap.scale),
             ("decay", snap.decay), ("cayley core", snap.core)]
    named += [("coupling factors", t) for t in (snap.factors or ())]
    for name, t in named:
        if t is not None and not bool(torch.isfinite(t).all()):
            out.append(f"the running {name} of {snap.tree.label} is not finite")
    return out


def _evaluate(net: Any, dt: float, method: str, dtype: torch.dtype,
              alpha: float) -> Certificate:
    base = {"conditions": list(net.conditions()), "method": method, "dt": dt,
            "dtype": str(dtype).replace("torch.", ""), "tau": float(net.tau), "alpha": alpha}
    defects = net.buffer_defects()
    if defects:  # buffers are never trusted: an edited or corrupted one is the reason
        return Certificate(**base, rate=None, continuous_certified=False,
                           failures=[f"{d}; it was edited or is corrupted" for d in defects])
    try:
        snap = _build(net, dt, method, dtype)
    except _BUILD_ERRORS as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        return Certificate(**base, rate=None, continuous_certified=False,
                           failures=[f"the running matrices cannot be built: {reason}"])
    failures = _nonfinite(snap, net)
    if failures:
        return Certificate(**base, rate=None, continuous_certified=False, failures=failures)
    return _from_snapshot(snap, base)


def _from_snapshot(snap: Explicit, base: dict[str, Any]) -> Certificate:
    cont = bounds.continuous_rate(snap)
    failures = list(cont.failures)
    notes: list[str] = []
    rate = cont.rate
    continuous = math.isfinite(rate) and rate > 0 and not failures
    if not (rate > 0) and not failures:
        failures.append(f"the continuous-time rate bound {rate:.4g} is not positive")
    modules = [{"module": r.label, "rule": r.rule, "rate": _num(r.rate)}
               for r in cont.root.flat() if r.kind == "leaf"]
    cert = Certificate(**base, rate=_num(rate), continuous_certified=continuous,
                       modules=modules, failures=failures, notes=notes,
                       normalised_coordinates=snap.normalised)
    if snap.tree.metric is None:
        notes.append("no constant metric (the proof uses a state-dependent one): the "
                     "discrete-time map is not covered")
        if not failures:
            failures.append(f"{snap.tree.label}: no constant metric, so the discrete map "
                            "is not covered")
        return cert
    try:
        disc = bounds.discrete_factor(snap, rates=bounds.node_rates(snap.tree, cont.root))
    except ValueError as err:
        failures.append(f"{snap.tree.label}: {err}")
        return cert
    _fill_metric(cert, snap, disc)
    for m, f in zip(modules, disc.leaf_factors, strict=True):
        m["step_factor"] = _num(f)
    cert.discrete_factor = _num(disc.factor)
    cert.discrete_bound = _num(disc.bound)
    cert.discrete_exact = disc.exact is not None
    cert.allowance = disc.allowance
    cert.coupling_norm = _num(disc.coupling_norm) if disc.coupling_norm is not None else None
    cert.coupling_skew_residual = disc.skew_residual
    cert.discrete_certified = continuous and disc.factor < 1
    if continuous and not disc.factor < 1:
        failures.append(f"the {base['method']} map with dt={base['dt']:g} is not a contraction "
                        f"by this certificate (factor bound {disc.factor:.9f} >= 1)")
    return cert


def _fill_metric(cert: Certificate, snap: Explicit, disc: bounds.DiscreteResult) -> None:
    """The candidate metric in original coordinates, ``M_x = S M_run S``."""
    m = bounds.f64(snap.tree.metric)
    s = bounds.f64(snap.scale) * snap.unit
    if m.dim() == 1:
        mx = m * s**2
        cert.metric, cert.metric_is_diagonal = mx.tolist(), True
        cert.metric_condition_number = float(mx.max() / mx.min())
    else:
        mx = m * s[:, None] * s[None, :]
        cert.metric = mx.tolist()
        ev = torch.linalg.eigvalsh((mx + mx.T) / 2)
        cert.metric_condition_number = float(ev[-1] / ev[0])
    cert.running_metric_condition_number = disc.metric_condition_number


def _num(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def _verdict(net: Any, dt: float, method: str, dtype: torch.dtype) -> bool:
    alpha = step_fraction(dt, net.tau)
    return _evaluate(net, dt, method, dtype, alpha).certified


def _largest_dt(net: Any, method: str, dtype: torch.dtype, dt: float,
                certified: bool, rel: float = 1e-3) -> float | None:
    """The largest step (to relative precision ``rel``) at which ``certify`` says CERTIFIED,
    found by bisection on full evaluations, so that ``certify(model, dt=max_dt)`` holds."""
    top = float(net.tau)
    if (certified and dt == top) or _verdict(net, top, method, dtype):
        return top
    lo = dt if certified else None
    probe = dt
    while lo is None and probe > top * 1e-6:
        probe /= 4
        if _verdict(net, probe, method, dtype):
            lo = probe
    if lo is None:
        return None
    hi = top
    while hi / lo > 1 + rel:
        mid = math.sqrt(lo * hi)
        if _verdict(net, mid, method, dtype):
            lo = mid
        else:
            hi = mid
    return lo
