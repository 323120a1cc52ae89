"""The recurrence engine: every network of networks in combonet runs through ``run``.

``run`` is the fast path (:mod:`.fast`: preallocated buffers, block-diagonal ``W`` as one bmm,
a hand-written backward through time); ``run_reference`` is the plain autograd loop that
specifies it. Both run the maps of :mod:`.discretise` (DESIGN.md §1-2).
"""

from __future__ import annotations

import torch

from ..modules.base import Dynamics
from .discretise import METHODS, cayley, check_inputs, step_fraction
from .fast import Recurrence, recurrence_forward
from .reference import run_reference

#: On CPU, ``run`` calls ``torch.set_flush_denormal(True)``: subnormal floats (which decaying
#: states produce) become 0. The effect is global and stays after ``run`` returns: it sets the
#: FTZ/DAZ bits of the calling thread, which threads created later inherit (thread pools
#: already running may keep their mode). Set to False before calling ``run`` to opt out.
FLUSH_DENORMAL = True


def run(dyn: Dynamics, drive: torch.Tensor, x0: torch.Tensor | None = None, *, dt: float,
        method: str = "euler", all_states: bool = True) -> torch.Tensor:
    """Run the discretised eq. 2 over ``drive`` (batch, steps, N); states (batch, steps, N)
    (a transposed view of a (steps, batch, N) buffer) or the last state (batch, N).

    Same maps and results as :func:`run_reference`; gradients flow to ``drive``, ``x0``,
    ``dyn.blocks`` (or ``dyn.weight`` when ``blocks`` is None) and ``dyn.coupling``. Any
    layout of ``drive`` works; step-major storage (``drive = d.transpose(0, 1)`` for a
    contiguous ``d`` of shape (steps, batch, N), as :class:`SequenceClassifier` builds it)
    is fastest: each step's drive is then one contiguous block.
    """
    alpha, x0 = check_inputs(dyn, drive, x0, dt, method)
    if FLUSH_DENORMAL and drive.device.type == "cpu":
        torch.set_flush_denormal(True)
    blocks = dyn.blocks if dyn.blocks is not None else dyn.weight[None]
    lmat = dyn.coupling
    if lmat is None:
        mode, kmat = "plain", None
    elif method == "cayley":
        mode, kmat = "cayley", cayley(lmat, alpha)  # built once per forward pass
    else:
        mode, kmat = "euler", lmat
    tensors = [t for t in (drive, x0, blocks, kmat) if t is not None]
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        out = Recurrence.apply(drive, x0, blocks, kmat, alpha, mode, dyn.activation,
                               all_states)
    else:
        with torch.no_grad():
            bsz, steps, n_units = drive.shape
            states = drive.new_empty(steps + 1 if all_states else 2, bsz, n_units)
            out = recurrence_forward(drive, x0, blocks, kmat, alpha, mode, dyn.activation,
                                     states)
            out = states[1:] if all_states else out
    return out.transpose(0, 1) if all_states else out


__all__ = ["FLUSH_DENORMAL", "METHODS", "cayley", "run", "run_reference", "step_fraction"]
