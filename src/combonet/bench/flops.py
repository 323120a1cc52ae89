"""The exact FLOP count of the recurrence (T steps, batch B, N units, diagonal blocks of n)::

    forward = T * (2 B N^2 + 2 B N n)          dense coupling product + block-diagonal W
    train   = 2 * forward + T * 2 B N^2        forward + state-gradient recursion + dL (or dC)
              (+ T * 2 B N n when W is trained: dW; the Sparse Combo Net's W is fixed)

With a low-rank coupling (``B = U V^T`` of rank ``r``, ``k = 2 r``: the engine runs
``y+ = z + (z H) X^T``) the coupling's ``2 B N^2`` per step becomes ``4 B N k`` in each
direction, and its weight gradients (``dX = E^T (Z H)``, ``dH = Z^T (E X)``) ``6 B N k``.

These are the matrix-product FLOPs per step of the model's map (DESIGN.md §1-2); one-off work
per pass (building ``L`` and the Cayley matrix, the encoder and readout) is left out.
``tests/test_bench.py`` checks both formulas against torch's ``FlopCounterMode`` on what the
engine runs. The FLOP-bound fraction of a contender is ``train / time / peak``, with
``peak`` the measured rate of one ``(B x N) @ (N x N)`` product.
"""

from __future__ import annotations


def _coupling_flops(bsz: int, n_units: int, rank: int | None) -> float:
    return 2.0 * bsz * n_units * n_units if rank is None else 8.0 * bsz * n_units * rank


def recurrence_flops(bsz: int, steps: int, n_units: int, block: int,
                     coupled: bool = True, rank: int | None = None) -> float:
    """FLOPs of the forward recurrence: ``T (2 B N^2 + 2 B N n)`` (module docstring)."""
    coupling = _coupling_flops(bsz, n_units, rank) if coupled else 0.0
    return steps * (coupling + 2.0 * bsz * n_units * block)


def train_flops(bsz: int, steps: int, n_units: int, block: int, w_trained: bool,
                rank: int | None = None) -> float:
    """FLOPs of forward + backward of the recurrence (module docstring)."""
    fwd = recurrence_flops(bsz, steps, n_units, block, rank=rank)
    coupling = 2.0 * bsz * n_units * n_units if rank is None else 12.0 * bsz * n_units * rank
    grads = steps * (coupling + (2.0 * bsz * n_units * block if w_trained else 0.0))
    return 2 * fwd + grads
