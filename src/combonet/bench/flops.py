"""The exact FLOP count of the recurrence (T steps, batch B, N units, diagonal blocks of n)::

    forward = T * (2 B N^2 + 2 B N n)          dense coupling product + block-diagonal W
    train   = 2 * forward + T * 2 B N^2        forward + state-gradient recursion + dL (or dC)
              (+ T * 2 B N n when W is trained: dW; the Sparse Combo Net's W is fixed)

These are the matrix-product FLOPs per step of the model's map (DESIGN.md §1-2); one-off work
per pass (building ``L`` and the Cayley matrix, the encoder and readout) is left out.
``tests/test_bench.py`` checks both formulas against torch's ``FlopCounterMode`` on what the
engine runs. The FLOP-bound fraction of a contender is ``train / time / peak``, with
``peak`` the measured rate of one ``(B x N) @ (N x N)`` product.
"""

from __future__ import annotations


def recurrence_flops(bsz: int, steps: int, n_units: int, block: int,
                     coupled: bool = True) -> float:
    """FLOPs of the forward recurrence: ``T (2 B N^2 + 2 B N n)`` (module docstring)."""
    dense = 2.0 * bsz * n_units * n_units if coupled else 0.0
    return steps * (dense + 2.0 * bsz * n_units * block)


def train_flops(bsz: int, steps: int, n_units: int, block: int, w_trained: bool) -> float:
    """FLOPs of forward + backward of the recurrence (module docstring)."""
    fwd = recurrence_flops(bsz, steps, n_units, block)
    grads = steps * 2.0 * bsz * n_units * (n_units + (block if w_trained else 0))
    return 2 * fwd + grads
