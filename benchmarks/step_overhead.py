"""Per-step overhead of the engine at small shapes (issue 12 item 5).

For a network of ``p x n`` units at batch ``B`` and ``T`` steps it times, in one process and
alternately, (a) the engine's training step (forward + backward of the recurrence, through
``engine.run`` on the model's snapshot) and (b) the same number of bare matrix products the
step needs (the per-step ``bmm`` of the blocks and the coupling ``mm``, forward and backward,
plus the end-of-sequence weight-gradient products), and reports the fraction of (a) that is
not arithmetic: Python, kernel launches, elementwise passes. Run::

    python benchmarks/step_overhead.py                     # MNIST-1D shape: 8x32, B 64, T 40
    python benchmarks/step_overhead.py --modules 16 --units 32 --batch 128 --steps 784

"""

from __future__ import annotations

import argparse
import time

import torch

from combonet.engine import run
from combonet.models import sparse_combo_net


def best_of(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modules", type=int, default=8)
    parser.add_argument("--units", type=int, default=32)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=20)
    ns = parser.parse_args()
    torch.set_num_threads(1)
    p, n, bsz, steps = ns.modules, ns.units, ns.batch, ns.steps
    model = sparse_combo_net(p, n, density=0.033, magnitude=1.0, seed=0)
    n_units = p * n
    drive = torch.randn(steps, bsz, n_units).transpose(0, 1)

    def engine_step() -> None:
        snap = model.snapshot()
        out = run(snap, snap.prepare_drive(drive), all_states=False)
        out.sum().backward()

    y = torch.randn(bsz, n_units)
    blocks = torch.randn(p, n, n)
    c = torch.randn(n_units, n_units)
    hbuf, obuf = torch.empty(p, bsz, n), torch.empty(bsz, n_units)
    yb = y.view(bsz, p, n).transpose(0, 1)
    big_a, big_b = torch.randn(n_units, steps * bsz), torch.randn(steps * bsz, n_units)

    def products() -> None:
        for _ in range(2 * steps):  # forward and backward: one bmm and one mm per step
            torch.bmm(yb, blocks, out=hbuf)
            torch.mm(y, c, out=obuf)
        big_a @ big_b  # dC = G^T Z over all steps

    t_engine = best_of(engine_step, ns.repeats)
    t_products = best_of(products, ns.repeats)
    print(f"shape {p}x{n} (N={n_units}), batch {bsz}, {steps} steps, 1 thread")
    print(f"engine training step of the recurrence: {t_engine * 1e3:.2f} ms "
          f"({t_engine / steps * 1e6:.0f} us per step)")
    print(f"its matrix products alone: {t_products * 1e3:.2f} ms")
    print(f"outside the products (Python, launches, elementwise): "
          f"{max(0.0, 1 - t_products / t_engine):.0%}")


if __name__ == "__main__":
    main()
