"""The plain per-step loops: the specification every faster engine must match.

``run_reference`` iterates a snapshot's map with autograd (same tensors as the fast engine);
``rk4_reference`` integrates the continuous-time eq. 2 of the same snapshot (``simulate``'s
``rk4``), the reference entry of :data:`~combonet.engine.maps.MAPS`.
"""

from __future__ import annotations

import torch

from ..snapshot import Explicit
from .checks import check_inputs


def run_reference(snap: Explicit, drive: torch.Tensor, x0: torch.Tensor | None = None, *,
                  all_states: bool = True) -> torch.Tensor:
    """Iterate the snapshot's map step by step (running coordinates, see ``snapshot``)."""
    x = check_inputs(snap, drive, x0)
    mode = snap.mode
    phi, w, b, kmat = snap.activation, snap.weight_matrix(), snap.decay, snap.kmat
    if mode == "lowrank":  # the same map, through its factors
        fx, fg, fy = snap.factors[0], snap.core, snap.factors[1]
    out = []
    for k in range(drive.shape[1]):
        h = phi(x) @ w.T + drive[:, k]
        if mode == "lowrank":
            z = b * x + h
            x = z + ((z @ fy) @ fg.T) @ fx.T
        elif mode == "cayley":
            x = (b * x + h) @ kmat.T
        elif mode == "euler":
            x = x @ kmat.T + h
        else:
            x = b * x + h
        if all_states:
            out.append(x)
    return torch.stack(out, 1) if all_states else x


def rk4_reference(snap: Explicit, drive: torch.Tensor, x0: torch.Tensor | None = None
                  ) -> torch.Tensor:
    """Classical Runge-Kutta with step ``dt`` of ``dy/dt = (-A y + W_a phi(y) + K y + d) / dt``
    (eq. 2 in running coordinates, the drive held constant over each step); states
    (batch, steps, N)."""
    x = check_inputs(snap, drive, x0)
    dt, a, w, k_mat, phi = snap.dt, snap.alpha, snap.weight_matrix(), \
        snap.coupling_matrix(), snap.activation

    def f(y: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        out = -a * y + phi(y) @ w.T + d
        if k_mat is not None:
            out = out + y @ k_mat.T
        return out / dt

    out = []
    for step in range(drive.shape[1]):
        d = drive[:, step]
        k1 = f(x, d)
        k2 = f(x + dt / 2 * k1, d)
        k3 = f(x + dt / 2 * k2, d)
        k4 = f(x + dt * k3, d)
        x = x + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        out.append(x)
    return torch.stack(out, 1)
