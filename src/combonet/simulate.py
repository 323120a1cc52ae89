"""Simulation of any model and the two-trajectory contraction check (DESIGN.md §2)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .certificate import certify
from .engine import run
from .engine.discretise import step_fraction
from .modules.base import ContractingSystem

SIM_METHODS = ("euler", "cayley", "rk4")


def simulate(model: ContractingSystem, inputs: torch.Tensor, x0: torch.Tensor | None = None,
             dt: float = 0.1, method: str = "euler") -> torch.Tensor:
    """Trajectories ``(batch, steps + 1, N)`` (initial state first) under ``inputs``
    ``(batch, steps, N)``, held constant over each step. ``euler``/``cayley`` run the engine's
    discrete maps; ``rk4`` integrates the continuous-time eq. 2 (classical Runge-Kutta)."""
    if method not in SIM_METHODS:
        raise ValueError(f'Invalid method "{method}". Must be one of {list(SIM_METHODS)}')
    if inputs.dim() != 3 or inputs.shape[2] != model.n:
        raise ValueError(
            f"inputs must have shape (batch, steps, {model.n}), got {tuple(inputs.shape)}"
        )
    if x0 is None:
        x0 = inputs.new_zeros(inputs.shape[0], model.n)
    elif tuple(x0.shape) != (inputs.shape[0], model.n):
        raise ValueError(
            f"x0 must have shape ({inputs.shape[0]}, {model.n}) to match drive, got "
            f"{tuple(x0.shape)}"
        )
    if method != "rk4":
        states = run(model.dynamics(), inputs, x0, dt=dt, method=method)
        return torch.cat([x0[:, None], states], 1)
    step_fraction(dt, model.tau)
    x, out = x0, [x0]
    for k in range(inputs.shape[1]):
        u = inputs[:, k]
        k1 = model.rhs(x, u)
        k2 = model.rhs(x + dt / 2 * k1, u)
        k3 = model.rhs(x + dt / 2 * k2, u)
        k4 = model.rhs(x + dt * k3, u)
        x = x + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        out.append(x)
    return torch.stack(out, 1)


@dataclass
class ContractionCheck:
    """Distances ``||x_a - x_b||_M`` along two trajectories and the certified envelope."""

    distances: np.ndarray
    envelope: np.ndarray
    measured_rate: float
    certified_rate: float
    holds: bool


def metric_distance(a: torch.Tensor, b: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """``sqrt((a - b)^T M (a - b))`` over leading dims, in float64."""
    d = (a - b).to(torch.float64)
    return torch.einsum("...i,ij,...j->...", d, m, d).clamp_min(0).sqrt()


def two_trajectory_check(model: ContractingSystem, inputs: torch.Tensor, x0_a: torch.Tensor,
                         x0_b: torch.Tensor, dt: float = 0.1, method: str = "euler",
                         rtol: float = 1e-6) -> ContractionCheck:
    """Run two trajectories from different initial states under the same input and check that
    their distance in the metric decays at least as fast as the certificate says: per step by
    the certified discrete factor (``euler``/``cayley``) or as ``exp(-lam t)`` (``rk4``)."""
    with torch.no_grad():
        xa = simulate(model, inputs, x0_a, dt, method)
        xb = simulate(model, inputs, x0_b, dt, method)
        m = model.metric().to(torch.float64).cpu()
        dist = metric_distance(xa.cpu(), xb.cpu(), m).numpy()  # (batch, steps + 1)
    steps = np.arange(dist.shape[1])
    if method == "rk4":
        rate = model.rate()
        per_step = math.exp(-rate * dt)
    else:
        cert = certify(model, dt=dt, method=method)
        rate = cert.rate
        per_step = cert.discrete_factor if cert.discrete_factor is not None else float("inf")
    envelope = dist[:, :1] * per_step ** steps[None, :]
    holds = bool(np.all(dist <= envelope * (1 + rtol) + 1e-12))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.log(dist[:, -1] / dist[:, 0]) / (-(dist.shape[1] - 1) * dt)
    return ContractionCheck(dist, envelope, float(np.nanmin(ratio)), rate, holds)
