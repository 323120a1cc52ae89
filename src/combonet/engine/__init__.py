"""The recurrence engine: every network of networks in combonet runs through ``run``.

``run`` is the fast path (:mod:`.fast`: preallocated buffers, block-diagonal ``W_a`` as one
bmm, a hand-written backward through time per map); ``run_reference`` is the plain autograd
loop that specifies it. Both run a :class:`~combonet.snapshot.Explicit` snapshot, in its
running coordinates, with the maps of :mod:`.maps`.
"""

from __future__ import annotations

import torch

from ..snapshot import Explicit
from .checks import check_inputs
from .fast import LowRankRecurrence, Recurrence, recurrence_forward
from .maps import DEFAULT_METHOD, MAPS, METHODS, MapSpec, cayley, check_method, step_fraction
from .reference import rk4_reference, run_reference

#: On CPU, ``run`` calls ``torch.set_flush_denormal(True)``: subnormal floats (which decaying
#: states produce) become 0. The effect is global and stays after ``run`` returns: it sets the
#: FTZ/DAZ bits of the calling thread, which threads created later inherit (thread pools
#: already running may keep their mode). Set to False before calling ``run`` to opt out.
FLUSH_DENORMAL = True


def run(snap: Explicit, drive: torch.Tensor, x0: torch.Tensor | None = None, *,
        all_states: bool = True) -> torch.Tensor:
    """Run the snapshot's map over the engine drive ``d`` (batch, steps, N) from ``x0``
    (running coordinates; see :meth:`Explicit.prepare_drive`); states (batch, steps, N) (a
    transposed view of a (steps, batch, N) buffer) or the last state (batch, N).

    Same maps and results as :func:`run_reference`; gradients flow to ``drive``, ``x0``,
    ``snap.blocks``, ``snap.kmat`` and ``snap.decay``. Step-major storage of ``drive``
    (``d = e.transpose(0, 1)`` for a contiguous ``e`` of shape (steps, batch, N), as
    :class:`~combonet.models.SequenceClassifier` builds it) is fastest.
    """
    x0 = check_inputs(snap, drive, x0)
    if FLUSH_DENORMAL and drive.device.type == "cpu":
        torch.set_flush_denormal(True)
    mode, kmat, blocks = snap.mode, snap.kmat, snap.blocks
    uniform = snap.uniform_decay()
    factors = (snap.factors[0], snap.core, snap.factors[1]) if mode == "lowrank" else ()
    tensors = [t for t in (drive, x0, blocks, kmat, snap.decay, *factors) if t is not None]
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        if mode == "lowrank":
            out = LowRankRecurrence.apply(drive, x0, blocks, *factors, snap.decay, uniform,
                                          snap.activation, all_states)
        else:
            out = Recurrence.apply(drive, x0, blocks, kmat, snap.decay, uniform, mode,
                                   snap.activation, all_states)
    else:
        with torch.no_grad():
            bsz, steps, n_units = drive.shape
            states = drive.new_empty(steps + 1 if all_states else 2, bsz, n_units)
            dec = uniform if uniform is not None else snap.decay
            lowrank = (factors[0], factors[2] @ factors[1].T) if factors else None
            out = recurrence_forward(drive, x0, blocks, kmat, dec, mode, snap.activation,
                                     states, factors=lowrank)
            out = states[1:] if all_states else out
    return out.transpose(0, 1) if all_states else out


__all__ = ["DEFAULT_METHOD", "FLUSH_DENORMAL", "MAPS", "METHODS", "MapSpec", "cayley",
           "check_method", "rk4_reference", "run", "run_reference", "step_fraction"]
