"""Certified fixed points: under a constant input a contracting network has exactly one
equilibrium, it attracts every trajectory, and any candidate's distance to it is bounded.

Setting (DESIGN.md §2): ``f(x) = (-x + W phi(x) + L x + u) / tau`` contracts in the constant
metric ``M`` with rate ``lam > 0``: ``M J(D) + J(D)^T M <= -2 lam M`` for every slope matrix
``D = diag(d)``, ``d_i in [0, g]``, where ``J(D) = (-I + W D + L) / tau``.

Derivation of the bound ``||x - x*||_M <= ||f(x)||_M / lam``:

1. *Exact mean-value form.* For any ``x, y`` and each unit, ``phi(x_i) - phi(y_i) =
   d_i (x_i - y_i)`` with ``d_i in [0, g]`` (``phi`` is monotone with slope at most ``g``; take
   the difference quotient, or any admissible value when ``x_i = y_i``). So ``f(x) - f(y) =
   J(D) (x - y)`` for one admissible ``D``; no derivative of ``phi`` is needed (ReLU is fine).
2. *One-sided Lipschitz bound.* With ``e = x - y``: ``e^T M (f(x) - f(y)) = e^T M J(D) e =
   1/2 e^T (M J + J^T M) e <= -lam ||e||_M^2``.
3. *Existence, uniqueness, attraction.* By 2, two trajectories satisfy ``d/dt ||x - y||_M^2 <=
   -2 lam ||x - y||_M^2``, so ``||x(t) - y(t)||_M <= exp(-lam t) ||x(0) - y(0)||_M``. The time-T
   flow map is then a contraction of the complete space ``R^N`` and has one fixed point; the
   flow commutes with it, so that point is an equilibrium ``x*`` (``f(x*) = 0``). Another
   equilibrium would give ``0 <= -lam ||e||_M^2`` in 2, so ``x*`` is unique, and every trajectory
   converges to it at rate ``lam``.
4. *The bound.* Take ``y = x*`` in 2 and use Cauchy-Schwarz in ``M``: ``-||e||_M ||f(x)||_M <=
   e^T M f(x) <= -lam ||e||_M^2``, hence ``||x - x*||_M <= ||f(x)||_M / lam`` for *every*
   ``x``, and ``||x - x*||_2 <= ||x - x*||_M / sqrt(lambda_min(M))``.
5. *Linearisation.* ``J v = mu v`` gives ``Re(mu) v^* M v = 1/2 v^* (M J + J^T M) v <=
   -lam v^* M v``: every eigenvalue of the Jacobian at the fixed point has real part
   ``<= -lam``.

:func:`fixed_points` simulates the network's own discrete map to convergence, polishes with
Newton's method on ``rhs`` (autograd Jacobian, float64), and reports the residual, the certified
bound of 4 and the eigenvalues of 5 per condition. This replaces the heuristic multi-start
searches of fixed-point finders with a guarantee: there is nothing else to find.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..modules import ContractingSystem
from ._common import as_numpy, condition_labels, new_figure, ordered_unique, save_figure

__all__ = ["FixedPoints", "condition_inputs", "fixed_points", "jacobians",
           "model_fixed_points", "plot_fixed_points", "residual_bound"]


@dataclass
class FixedPoints:
    """Equilibria ``states`` (K, N) under constant drives (K, N), one per condition."""

    labels: list[str]
    drives: np.ndarray
    states: np.ndarray
    residual: np.ndarray  # ||f(x)||_M at the computed point
    bound: np.ndarray  # certified ||x - x*||_M <= residual / rate (inf when not contracting)
    bound_euclidean: np.ndarray  # the same in the Euclidean norm
    eigenvalues: np.ndarray  # (K, N) complex: eigenvalues of the Jacobian of rhs there
    rate: float
    certified: bool
    newton_iterations: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self, states: bool = False) -> dict[str, Any]:
        """A JSON-serialisable summary (with the states when ``states``)."""
        out = {"labels": self.labels, "rate": self.rate, "certified": self.certified,
               "residual": self.residual.tolist(), "bound": self.bound.tolist(),
               "bound_euclidean": self.bound_euclidean.tolist(),
               "max_real_eigenvalue": self.eigenvalues.real.max(1).tolist(),
               "newton_iterations": self.newton_iterations, "notes": self.notes}
        if states:
            out["states"] = self.states.tolist()
        return out


def _metric_norm(v: Tensor, m: Tensor) -> Tensor:
    return torch.einsum("...i,ij,...j->...", v, m, v).clamp_min(0).sqrt()


def residual_bound(network: ContractingSystem, x: Tensor, drive: Tensor
                   ) -> tuple[Tensor, Tensor, float]:
    """``(||f(x)||_M, ||f(x)||_M / lam, lam)`` for states ``x`` and drives ``drive`` (..., N)
    (float64); the bound is ``inf`` when the network's rate bound is not positive."""
    with torch.no_grad():
        m = network.metric().to(torch.float64)
        lam = float(network.rate())
        f = network.rhs(x, drive).to(torch.float64)
        res = _metric_norm(f, m)
        bound = res / lam if lam > 0 else torch.full_like(res, math.inf)
    return res, bound, lam


def _simulate(net: ContractingSystem, drive: Tensor, dt: float, method: str, chunk: int,
              max_chunks: int, m: Tensor) -> Tensor:
    """Run the network's own map under constant drive until the residual stops shrinking."""
    x = torch.zeros_like(drive)
    seq = drive[:, None, :].expand(-1, chunk, -1).contiguous()
    last = math.inf
    for _ in range(max_chunks):
        x = net(seq, x, dt=dt, method=method, all_states=False)
        res = float(_metric_norm(net.rhs(x, drive), m).max())
        if not math.isfinite(res) or res > 0.9 * last:
            break
        last = res
    return x


def jacobians(network: ContractingSystem, x: Tensor, drive: Tensor) -> Tensor:
    """Autograd Jacobians ``d rhs / dx`` (K, N, N) at states ``x`` (K, N) under ``drive``: one
    backward pass per output unit, shared by all K points (``rhs`` acts row by row)."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        f = network.rhs(x, drive)
        rows = []
        for i in range(f.shape[1]):
            seed = torch.zeros_like(f)
            seed[:, i] = 1
            rows.append(torch.autograd.grad(f, x, seed, retain_graph=i + 1 < f.shape[1])[0])
    return torch.stack(rows, 1).detach()


def _newton(net: ContractingSystem, x: Tensor, u: Tensor, m: Tensor, steps: int,
            tol: float) -> tuple[Tensor, list[int]]:
    """Newton's method on ``rhs`` for all conditions at once, each step backtracked until
    ``||f||_M`` decreases; returns the points and the iterations each took."""
    x = x.detach().clone()
    with torch.no_grad():
        res = _metric_norm(net.rhs(x, u), m)
    iters = [0] * len(x)
    for _ in range(steps):
        active = (res > tol).nonzero().flatten()
        if active.numel() == 0:
            break
        xa, ua = x[active], u[active]
        jac = jacobians(net, xa, ua)
        with torch.no_grad():
            fa = net.rhs(xa, ua)
            try:
                step = torch.linalg.solve(jac, fa)
            except RuntimeError:  # singular (only without a certificate): least squares
                step = torch.linalg.lstsq(jac, fa[..., None]).solution[..., 0]
            t = torch.ones(len(active), dtype=x.dtype)
            ra = res[active]
            done = torch.zeros(len(active), dtype=torch.bool)
            for _ in range(15):
                cand = xa - t[:, None] * step
                cres = _metric_norm(net.rhs(cand, ua), m)
                better = (cres < ra) & ~done
                xa[better], ra[better], done = cand[better], cres[better], done | better
                if bool(done.all()):
                    break
                t = torch.where(done, t, t / 2)
            x[active], res[active] = xa, ra
        for k in active.tolist():
            iters[k] += 1
        if not bool(done.any()):
            break  # no condition improved: the residual is at round-off level
    return x, iters


def fixed_points(network: ContractingSystem, drives: Tensor, *, labels: list[str] | None = None,
                 dt: float = 0.1, method: str = "cayley", chunk: int = 200,
                 max_chunks: int = 50, newton_steps: int = 20, tol: float = 1e-12
                 ) -> FixedPoints:
    """The equilibrium of ``network`` under each constant drive (K, N) (float64).

    The network's discrete map (step ``dt``, ``method``) runs from 0 in chunks of ``chunk``
    steps until the residual stops decreasing; Newton's method on ``rhs`` then removes the
    map's O(dt) offset from the continuous-time equilibrium. The certificate is
    ``||x - x*||_M <= ||f(x)||_M / lam`` (module docstring).
    """
    if not isinstance(network, ContractingSystem):
        raise ValueError(f"network must be a combonet module or combination, got {network!r}")
    drives = torch.as_tensor(drives)
    if drives.dim() != 2 or drives.shape[1] != network.n:
        raise ValueError(f"drives must have shape (conditions, {network.n}), "
                         f"got {tuple(drives.shape)}")
    labels = list(labels) if labels is not None else [f"c{k}" for k in range(len(drives))]
    if len(labels) != len(drives):
        raise ValueError(f"{len(labels)} labels for {len(drives)} drives")
    net = copy.deepcopy(network).to(torch.float64)
    for p in net.parameters():  # derivatives are taken in the state only
        p.requires_grad_(False)
    u = drives.detach().to(torch.float64)
    with torch.no_grad():
        m = net.metric().to(torch.float64)
        x = _simulate(net, u, dt, method, chunk, max_chunks, m)
    xs, iters = _newton(net, x, u, m, newton_steps, tol)
    eigs = torch.linalg.eigvals(jacobians(net, xs, u)).numpy()
    res, bound, lam = residual_bound(net, xs, u)
    mmin = float(torch.linalg.eigvalsh(m)[0])
    notes = []
    if lam <= 0:
        notes.append(f"the rate bound {lam:.4g} is not positive: no fixed point is certified "
                     "(there may be several or none)")
    return FixedPoints(labels, as_numpy(u), as_numpy(xs), as_numpy(res), as_numpy(bound),
                       as_numpy(bound) / math.sqrt(mmin), eigs, lam, lam > 0, iters, notes)


def condition_inputs(trials: Any, *, period: str | list[str] | tuple[str, ...] = (
                     "stimulus", "stim1", "sample"), by: str = "choice"
                     ) -> tuple[list[str], Tensor]:
    """Mean input (K, features) over ``period`` (the first of the names present in a trial)
    for each condition ``by`` (tasks kept apart); trials without the period are skipped."""
    names = [period] if isinstance(period, str) else list(period)
    labels = condition_labels(trials, by)
    sums: dict[str, Tensor] = {}
    counts: dict[str, int] = {}
    for i, label in enumerate(labels):
        periods = trials.periods[i] if trials.periods else {}
        found = next((p for p in names if p in periods and periods[p][1] > periods[p][0]),
                     None)
        if found is None:
            continue
        a, b = periods[found]
        mean = trials.inputs[i, a:b].mean(0)
        sums[label] = sums.get(label, 0) + mean
        counts[label] = counts.get(label, 0) + 1
    if not sums:
        seen = sorted({p for d in trials.periods for p in d}) if trials.periods else []
        raise ValueError(f"no trial has a period named {names}; the trials' periods are {seen}")
    keys = [k for k in ordered_unique(labels) if k in sums]
    return keys, torch.stack([sums[k] / counts[k] for k in keys])


@torch.no_grad()
def model_fixed_points(model: Any, inputs: Tensor, labels: list[str] | None = None,
                       **kwargs: Any) -> FixedPoints:
    """Fixed points of a :class:`~combonet.models.perstep.PerStepModel` under constant inputs
    (K, features): drive ``U s + b`` through the model's masked encoder, step ``model.dt``."""
    if not hasattr(model, "network") or not hasattr(model, "drive"):
        raise ValueError("fixed points need a certified per-step model (PerStepModel); "
                         f"got {type(model).__name__}, which has no contraction certificate")
    drives = model.drive(torch.as_tensor(inputs, dtype=torch.float32)[:, None, :])[:, 0]
    kwargs.setdefault("dt", model.dt)
    kwargs.setdefault("method", model.method)
    return fixed_points(model.network, drives, labels=labels, **kwargs)


def plot_fixed_points(fps: FixedPoints, path: str | Path | None = None) -> Any:
    """Eigenvalues of the linearisation per condition (with the certified ``Re <= -lam``
    line) and the certified error bound per condition."""
    fig, axes = new_figure(2, size=(4.6, 3.6))
    ax = axes[0, 0]
    for label, ev in zip(fps.labels, fps.eigenvalues, strict=True):
        ax.scatter(ev.real, ev.imag, s=6, alpha=0.6, label=label)
    if fps.rate > 0:
        ax.axvline(-fps.rate, color="k", ls="--", lw=1, label=f"-lam = {-fps.rate:.3g}")
    ax.set_xlabel("Re")
    ax.set_ylabel("Im")
    ax.set_title("Jacobian eigenvalues at the fixed points")
    if len(fps.labels) <= 10:
        ax.legend(fontsize=6)
    ax = axes[0, 1]
    pos = np.arange(len(fps.labels))
    ax.bar(pos, np.maximum(fps.bound_euclidean, 1e-300))
    ax.set_yscale("log")
    if len(fps.labels) <= 40:
        ax.set_xticks(pos, fps.labels, rotation=90, fontsize=6)
    else:  # too many to read: the names are in the report (labels, in this order)
        ax.set_xticks([])
        ax.set_xlabel(f"{len(fps.labels)} conditions (names: analysis.json)")
    ax.set_ylabel("certified ||x - x*||_2 bound")
    ax.set_title("error bound (contraction)")
    fig.tight_layout()
    save_figure(fig, path)
    return fig
