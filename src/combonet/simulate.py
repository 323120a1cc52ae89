"""Simulation of any model and the two-trajectory contraction check (DESIGN.md §2)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .certificate import certify
from .engine import rk4_reference, run
from .engine.maps import DEFAULT_METHOD, check_method
from .modules.base import ContractingSystem


def simulate(model: ContractingSystem, inputs: torch.Tensor, x0: torch.Tensor | None = None,
             dt: float = 0.1, method: str = DEFAULT_METHOD) -> torch.Tensor:
    """Trajectories ``(batch, steps + 1, N)`` (initial state first, original coordinates)
    under ``inputs`` ``(batch, steps, N)``, held constant over each step. ``euler``/``cayley``
    run the engine's discrete maps in the model's dtype -- the map ``certify`` certifies --
    and refuse inputs or ``x0`` of another floating dtype (``ValueError``); ``rk4`` integrates
    the continuous-time eq. 2 (the reference entry of the map registry, certified as no map)
    in the inputs' floating dtype, e.g. float64 for a float32 model."""
    check_method(method, discrete=False)
    if not isinstance(inputs, torch.Tensor) or inputs.dim() != 3 or inputs.shape[2] != model.n:
        shape = tuple(inputs.shape) if isinstance(inputs, torch.Tensor) else type(inputs)
        raise ValueError(f"inputs must have shape (batch, steps, {model.n}), got {shape}")
    if method == "rk4":
        dtype = inputs.dtype if inputs.is_floating_point() else model.run_dtype()
        inputs = inputs.to(dtype)
        x0 = x0.to(dtype) if isinstance(x0, torch.Tensor) else x0
    else:
        inputs, x0 = model.as_run_input(inputs, "inputs"), model.as_run_input(x0, "x0")
    if x0 is None:
        x0 = inputs.new_zeros(inputs.shape[0], model.n)
    elif tuple(x0.shape) != (inputs.shape[0], model.n):
        raise ValueError(
            f"x0 must have shape ({inputs.shape[0]}, {model.n}) to match inputs, got "
            f"{tuple(x0.shape)}"
        )
    snap = model.explicit(dt=dt, method=None if method == "rk4" else method,
                          dtype=inputs.dtype, device=inputs.device)
    drive, y0 = snap.prepare_drive(inputs), snap.to_running(x0)
    ys = rk4_reference(snap, drive, y0) if method == "rk4" else run(snap, drive, y0)
    return torch.cat([x0[:, None], snap.from_running(ys)], 1)


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
                         x0_b: torch.Tensor, dt: float = 0.1, method: str = DEFAULT_METHOD,
                         rtol: float = 1e-6) -> ContractionCheck:
    """Run two trajectories from different initial states under the same input and check that
    their distance in the metric decays at least as fast as the certificate says: per step by
    the certified discrete factor (``euler``/``cayley``) or as ``exp(-lam t)`` (``rk4``)."""
    with torch.no_grad():
        xa = simulate(model, inputs, x0_a, dt, method)
        xb = simulate(model, inputs, x0_b, dt, method)
    if method == "rk4":
        rate = model.rate()
        per_step = math.exp(-rate * dt)
        m = model.metric().detach().to(torch.float64).cpu()
    else:
        # the dtype simulate ran the map in (it refuses inputs of any other floating dtype)
        cert = certify(model, dt=dt, method=method, dtype=model.run_dtype(), max_dt=False)
        rate = cert.rate if cert.rate is not None else -math.inf
        per_step = cert.discrete_factor if cert.discrete_factor is not None else math.inf
        m = torch.as_tensor(cert.metric_matrix()) if cert.metric is not None else \
            model.metric().detach().to(torch.float64).cpu()
    dist = metric_distance(xa.cpu(), xb.cpu(), m).numpy()  # (batch, steps + 1)
    steps = np.arange(dist.shape[1])
    envelope = dist[:, :1] * per_step ** steps[None, :]
    holds = bool(np.all(dist <= envelope * (1 + rtol) + 1e-12))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.log(dist[:, -1] / dist[:, 0]) / (-(dist.shape[1] - 1) * dt)
    return ContractionCheck(dist, envelope, float(np.nanmin(ratio)), rate, holds)
