"""Where a small model's training step goes (issue 12 item 5), and one attempt to shorten it.

For a Sparse Combo Net of ``p x n`` units (Cayley map) at batch ``B`` and ``T`` steps it times,
in one process, alternating within every repeat (one thread, min of repeats):

* ``step``        -- the engine's training step of the recurrence: ``model.snapshot()`` (builds
                     ``W``, ``L`` (eq. 3) and ``C = (I - K/2)^{-1}(I + K/2)``), ``engine.run``,
                     backward through both;
* ``snapshot``    -- the snapshot alone, forward and backward (a random upstream gradient on
                     ``C``): the once-per-pass work, which does not shrink with ``T``;
* ``recurrence``  -- the engine's recurrence alone (``Recurrence.apply`` on detached
                     tensors), forward and backward: the per-step loop and the
                     end-of-sequence gradient products;
* ``products``    -- only the matrix products that recurrence needs: per step one block
                     ``bmm`` and one ``N x N`` ``mm`` each way, and ``dC = E^T Z`` (one
                     ``N x TB x N`` product); everything else in ``recurrence`` is per-step
                     elementwise passes, Python and kernel launches;
* ``step-inv``    -- the attempt: ``step`` with the Cayley matrix built as ``2 A^{-1} - I``
                     (``A = I - K/2``) by a custom autograd function whose backward is two
                     ``N x N`` products ``A^{-T} G A^{-T}`` instead of autograd's triangular
                     solve with ``A^T`` (the same map; its gradients are checked against the
                     engine's to float tolerance before timing).

It also counts the minor page faults per training step (fresh ``(T, B, N)`` buffers each
pass, whose pages the kernel zeroes on first touch); ``--malloc-keep`` reruns the script with
glibc's ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` raised, so that freed buffers
stay in the heap and are reused without faults (the second attempt); ``--alternate-malloc K``
runs ``K`` pairs of child processes (without, then with ``--malloc-keep``; the environment
must be set before a process starts) and reports the ratio of their training steps.

Run from the repository root (with the package installed, e.g. `.venv/bin/python`)::

    python benchmarks/step_overhead.py                    # MNIST-1D: 8x32, B 64, T 40
    python benchmarks/step_overhead.py --modules 16 --units 32 --batch 128 --steps 784
    python benchmarks/step_overhead.py --json             # one JSON object
    python benchmarks/step_overhead.py --malloc-keep      # buffers kept in the heap
    python benchmarks/step_overhead.py --alternate-malloc 3   # 3 pairs of processes, alternating

"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

import torch

import combonet.modules.base as module_base
from combonet.engine import run
from combonet.engine.fast import Recurrence
from combonet.models import sparse_combo_net
from combonet.threads import OtherLoad


class CayleyByInverse(torch.autograd.Function):
    """``C = 2 A^{-1} - I`` with ``A = I - K/2`` (equal to ``A^{-1}(I + K/2)``); backward
    ``dK = A^{-T} dC A^{-T}`` (from ``dC = 2 A^{-1} (dK / 2) A^{-1}``)."""

    @staticmethod
    def forward(ctx, k: torch.Tensor) -> torch.Tensor:
        eye = torch.eye(k.shape[0], dtype=k.dtype, device=k.device)
        ainv = torch.linalg.inv(eye - k / 2)
        ctx.save_for_backward(ainv)
        return 2 * ainv - eye

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (ainv,) = ctx.saved_tensors
        ait = ainv.T
        return ait @ grad @ ait


def alternate_malloc(ns: argparse.Namespace) -> None:
    """``ns.alternate_malloc`` pairs of child processes, alternating (module docstring)."""
    import subprocess

    base = [sys.executable, __file__, "--modules", str(ns.modules), "--units", str(ns.units),
            "--batch", str(ns.batch), "--steps", str(ns.steps), "--repeats", str(ns.repeats),
            "--json"]
    t0 = time.perf_counter()
    pairs = []
    for _ in range(ns.alternate_malloc):
        pair = {}
        for kind, extra in (("default", []), ("malloc-keep", ["--malloc-keep"])):
            out = subprocess.run(base + extra, capture_output=True, text=True, check=True)
            pair[kind] = json.loads(out.stdout)
        pair["step_ratio"] = pair["malloc-keep"]["best_s"]["step"] / pair["default"]["best_s"][
            "step"]
        pairs.append(pair)
    ratios = sorted(p["step_ratio"] for p in pairs)
    result = {"mode": "alternate-malloc", "pairs": pairs, "step_ratios": ratios,
              "median_step_ratio": ratios[len(ratios) // 2],
              "wall_s": time.perf_counter() - t0}
    if ns.json:
        print(json.dumps(result))
        return
    for p in pairs:
        d, k = p["default"], p["malloc-keep"]
        print(f"step {1e3 * d['best_s']['step']:.1f} ms ({d['minor_faults_per_step']:.0f} faults)"
              f" -> {1e3 * k['best_s']['step']:.1f} ms ({k['minor_faults_per_step']:.0f} faults)"
              f" with --malloc-keep: {p['step_ratio']:.3f}x")
    print(f"median {result['median_step_ratio']:.3f}x; {result['wall_s']:.0f} s wall")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modules", type=int, default=8)
    parser.add_argument("--units", type=int, default=32)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--malloc-keep", action="store_true",
                        help="rerun with glibc's mmap and trim thresholds at 4 GiB")
    parser.add_argument("--alternate-malloc", type=int, default=0, metavar="K",
                        help="K pairs of child runs, without and with --malloc-keep")
    ns = parser.parse_args()
    if ns.alternate_malloc:
        alternate_malloc(ns)
        return
    keep = {"MALLOC_MMAP_THRESHOLD_": str(2**32), "MALLOC_TRIM_THRESHOLD_": str(2**32)}
    if ns.malloc_keep and any(os.environ.get(k) != v for k, v in keep.items()):
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **keep})
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    p, n, bsz, steps = ns.modules, ns.units, ns.batch, ns.steps
    model = sparse_combo_net(p, n, density=0.033, magnitude=1.0, seed=0)
    n_units = p * n
    drive = torch.randn(steps, bsz, n_units).transpose(0, 1)  # step-major, as the model's
    params = [q for q in model.parameters() if q.requires_grad]
    original_cayley = module_base.cayley

    def engine_step() -> None:
        for q in params:
            q.grad = None
        snap = model.snapshot()
        run(snap, snap.prepare_drive(drive), all_states=False).sum().backward()

    def inverse_step() -> None:
        module_base.cayley = CayleyByInverse.apply
        try:
            engine_step()
        finally:
            module_base.cayley = original_cayley

    upstream = torch.randn(n_units, n_units)

    def snapshot_only() -> None:
        for q in params:
            q.grad = None
        (model.snapshot().kmat * upstream).sum().backward()

    with torch.no_grad():
        snap0 = model.snapshot()
    rec_in = [snap0.prepare_drive(drive).detach(), torch.zeros(bsz, n_units),
              snap0.blocks.detach(), snap0.kmat.detach().requires_grad_(), snap0.decay.detach()]
    uniform = snap0.uniform_decay()

    def recurrence_only() -> None:
        rec_in[3].grad = None
        Recurrence.apply(*rec_in, uniform, snap0.mode, snap0.activation, False).sum().backward()

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
        big_a @ big_b  # dC = E^T Z over all steps

    # the attempt computes the same gradients (to float tolerance)
    engine_step()
    used = [q for q in params if q.grad is not None]  # the network's (encoder/readout unused)
    want = [q.grad.clone() for q in used]
    inverse_step()
    got = [q.grad.clone() for q in used]
    rel = max(float((a - b).abs().max() / b.abs().max()) for a, b in zip(got, want, strict=True))

    fns = {"step": engine_step, "step-inv": inverse_step, "snapshot": snapshot_only,
           "recurrence": recurrence_only, "products": products}
    times: dict[str, list[float]] = {k: [] for k in fns}
    faults = 0
    for f in fns.values():
        f()  # warm-up
    t_wall = time.perf_counter()
    names = list(fns)
    with OtherLoad() as load:
        for rep in range(ns.repeats):
            for name in names[rep % len(names):] + names[:rep % len(names)]:
                f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                t = time.perf_counter()
                fns[name]()
                times[name].append(time.perf_counter() - t)
                if name == "step":
                    faults += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
    wall = time.perf_counter() - t_wall
    best = {k: min(v) for k, v in times.items()}
    step = best["step"]
    elementwise = max(0.0, best["recurrence"] - best["products"])
    other = max(0.0, step - best["snapshot"] - best["recurrence"])
    result = {
        "shape": {"modules": p, "units": n, "units_total": n_units, "batch": bsz,
                  "steps": steps},
        "threads": 1, "repeats": ns.repeats, "wall_s": wall, "torch": torch.__version__,
        "malloc_keep": all(os.environ.get(k) == v for k, v in keep.items()),
        "minor_faults_per_step": faults / ns.repeats,
        "competing_load_cores": load.cores, "cpus": os.cpu_count(),
        "best_s": best,
        "share_of_step": {"matrix products": best["products"] / step,
                          "per-pass snapshot (fwd + bwd)": best["snapshot"] / step,
                          "per-step elementwise, Python, launches": elementwise / step,
                          "other (drive, autograd glue)": other / step},
        "outside_products": max(0.0, 1 - best["products"] / step),
        "attempt_inverse_cayley": {"time_ratio": best["step-inv"] / step,
                                   "max_rel_grad_diff": rel},
    }
    if ns.json:
        print(json.dumps(result))
        return
    busy = "?" if load.cores is None else f"{load.cores:.1f}"
    print(f"shape {p}x{n} (N = {n_units}), batch {bsz}, {steps} steps, 1 thread, min of "
          f"{ns.repeats} alternating repeats; other processes used {busy} of "
          f"{os.cpu_count()} CPUs; {wall:.0f} s")
    for k, v in best.items():
        print(f"  {k:12s} {v * 1e3:9.2f} ms")
    print("share of the training step:")
    for k, v in result["share_of_step"].items():
        print(f"  {k:42s} {v:6.1%}")
    print(f"outside the matrix products: {result['outside_products']:.0%}")
    print(f"minor page faults per training step: {result['minor_faults_per_step']:.0f}"
          + (" (--malloc-keep)" if result["malloc_keep"] else ""))
    a = result["attempt_inverse_cayley"]
    print(f"attempt, Cayley by inverse with a two-product backward: {a['time_ratio']:.3f}x the "
          f"step's time (max relative gradient difference {a['max_rel_grad_diff']:.1e})")


if __name__ == "__main__":
    main()
