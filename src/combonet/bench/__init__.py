"""``combonet bench``: the engine side by side with the baselines a user would compare it with.

In one process, alternating within every repeat and with the same threads, it times a
training step (forward + cross-entropy + backward) and a forward pass of

* ``engine``  -- the combo net itself, ``model(inputs)`` (``sparse_combo_net`` by default:
  16 x 32, density 0.033, magnitude 3, cayley, T = 784, batch 128; ``--model svd-combo``);
* ``engine-dense`` -- with ``--coupling-rank R``: the same builder, shape and seed with the dense
  eq.-3 coupling (the rank's side-by-side comparison; checked against its own careful loop);
* ``careful`` -- the same model written by a careful user (``W``, ``L``, ``C`` built once per
  forward, per-step input views, plain autograd): the main reference;
* ``rebuild`` -- the same model rebuilding ``W`` and ``L`` (eq. 3) at every step, as the
  authors' public code does;
* ``gru`` / ``lstm`` -- torch ``nn.GRU`` / ``nn.LSTM`` with a linear head, of about the combo
  net's parameter count (counted the paper's way);
* ``careful-graph`` (CUDA, ``--cuda-graphs``) -- the careful loop with its recurrence in CUDA
  graphs;

checks that every combo contender computes the careful loop's logits and gradients (max
relative error; exit status 1 above ``--tolerance``), and reports min-of-repeats times, ratios
to the engine, the FLOP-bound fraction (exact recurrence FLOPs over the measured matmul peak,
:mod:`.flops`), peak memory and the CPU time other processes used meanwhile.

Other modes: ``--threads-sweep`` (:mod:`.sweep`, the measurements behind ``--threads auto``)
and ``--train-seconds S`` (:mod:`.budget`, fixed-budget training on synthetic data).
"""

from __future__ import annotations

from .cli import add_arguments, main, main_from_args
from .contenders import CarefulLoop, RebuildLoop, cayley_matrix, matched_hidden, matched_rnn
from .flops import recurrence_flops, train_flops
from .measure import BusyProcess, CompetingLoad, matmul_peak, max_rel_err, peak_memory_mb
from .run import CONTENDERS, benchmark, report

__all__ = ["CONTENDERS", "BusyProcess", "CarefulLoop", "CompetingLoad", "RebuildLoop",
           "add_arguments", "benchmark", "cayley_matrix", "main", "main_from_args",
           "matched_hidden", "matched_rnn", "matmul_peak", "max_rel_err", "peak_memory_mb",
           "recurrence_flops", "report", "train_flops"]
