"""The plain per-step loop: the specification every faster engine must match."""

from __future__ import annotations

import torch

from ..modules.base import Dynamics
from .discretise import cayley, check_inputs


def run_reference(dyn: Dynamics, drive: torch.Tensor, x0: torch.Tensor | None, *, dt: float,
                  method: str = "euler", all_states: bool = True) -> torch.Tensor:
    """Iterate the discretised eq. 2 step by step with autograd (see ``discretise``)."""
    alpha, x = check_inputs(dyn, drive, x0, dt, method)
    phi, w, lmat = dyn.activation, dyn.weight, dyn.coupling
    c = cayley(lmat, alpha) if method == "cayley" and lmat is not None else None
    out = []
    for k in range(drive.shape[1]):
        z = (1 - alpha) * x + alpha * (phi(x) @ w.T + drive[:, k])
        if method == "euler" and lmat is not None:
            z = z + alpha * (x @ lmat.T)
        elif c is not None:
            z = z @ c.T
        x = z
        if all_states:
            out.append(x)
    return torch.stack(out, 1) if all_states else x
