"""``combonet bench --threads-sweep``: the engine's training-step time with 1, 2, ... threads,
on an idle machine and with a competing busy process, at representative shapes; the
measurements behind the ``--threads auto`` rule of :mod:`combonet.threads`.

For each shape and repeat, the two conditions alternate -- ``idle`` (nothing of ours competes;
other processes' share is reported) and ``busy`` (a child Python process spins on one core,
started before and stopped after that condition's timings) -- and within each the thread
counts alternate (order rotated every repeat). The number reported is the min over repeats.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from typing import Any

import torch
from torch import nn

from .. import threads as threads_mod
from .contenders import build_combo
from .measure import BusyProcess, CompetingLoad, cpu_name, git_state, timed

#: name -> (modules p, units n, batch, steps): permuted digits (8x8 pixels), MNIST-1D, psMNIST
SHAPES: dict[str, tuple[int, int, int, int]] = {
    "pdigits": (16, 16, 64, 64),
    "mnist1d": (8, 32, 64, 40),
    "psmnist": (16, 32, 128, 784),
}
CONDITIONS = ("idle", "busy")


def parse_shape(text: str) -> tuple[str, tuple[int, int, int, int]]:
    """``NAME`` of :data:`SHAPES` or ``PxNxBxT`` (modules x units x batch x steps)."""
    if text in SHAPES:
        return text, SHAPES[text]
    parts = text.lower().split("x")
    if len(parts) == 4 and all(p.isdigit() and int(p) >= 1 for p in parts):
        p, n, b, t = (int(v) for v in parts)
        return text, (p, n, b, t)
    raise ValueError(f'--sweep-shapes: invalid shape "{text}". Must be one of '
                     f"{sorted(SHAPES)} or PxNxBxT (e.g. 4x8x64x100)")


def parse_counts(text: str | None) -> list[int]:
    """``--sweep-threads`` ``1,2,4``; default 1 and 2 (or 1 alone on a one-core machine)."""
    if text is None:
        return [1, 2] if threads_mod.available_cores() >= 2 else [1]
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or int(part) < 1:
            raise ValueError(f'--sweep-threads must be a comma list of integers >= 1, got "{text}"')
        out.append(int(part))
    return sorted(set(out))


def _sweep_shape(args: argparse.Namespace, shape: tuple[int, int, int, int], counts: list[int],
                 repeats: int) -> dict[str, Any]:
    p, n, bsz, steps = shape
    if args.steps is not None:
        steps = args.steps
    model = build_combo(args.model, p, n, density=args.density, magnitude=args.magnitude,
                        method=args.method, dt=args.dt, seed=args.seed,
                        coupling_rank=args.coupling_rank)
    gen = torch.Generator().manual_seed(args.seed)
    inputs = torch.rand(bsz, steps, 1, generator=gen)
    labels = torch.randint(0, 10, (bsz,), generator=gen)
    params = [q for q in model.parameters() if q.requires_grad]
    rank = threads_mod.running_rank(model)  # the step the engine runs sizes the rule
    probe = (torch.randn(bsz, p * n), torch.randn(p * n, p * n))

    def train() -> None:
        for q in params:
            q.grad = None
        nn.functional.cross_entropy(model(inputs), labels).backward()

    times: dict[str, dict[int, list[float]]] = {c: {k: [] for k in counts} for c in CONDITIONS}
    loads: dict[str, list[float]] = {c: [] for c in CONDITIONS}  # other processes, cores
    cpu = torch.device("cpu")
    train()  # warm-up
    for rep in range(repeats):
        order = counts[rep % len(counts):] + counts[:rep % len(counts)]
        for cond in CONDITIONS:
            ctx = BusyProcess() if cond == "busy" else contextlib.nullcontext()
            with ctx, CompetingLoad() as load:
                for k in order:
                    torch.set_num_threads(k)
                    for _ in range(3):  # wake the resized pool before timing
                        torch.mm(*probe)
                    times[cond][k].append(timed(train, cpu))
            if load.cores is not None:
                loads[cond].append(load.cores)
    best = {c: {k: min(v) for k, v in d.items()} for c, d in times.items()}
    busy = {c: (sum(v) / len(v) if v else None) for c, v in loads.items()}
    n_units = p * n
    return {
        "modules": p, "units": n, "units_total": n_units, "batch": bsz, "steps": steps,
        "running_rank": rank,
        "step_work": threads_mod.step_work(n_units, bsz, rank),
        "train_s": {c: {str(k): v for k, v in d.items()} for c, d in best.items()},
        "ms_per_step": {c: {str(k): 1e3 * v / steps for k, v in d.items()}
                        for c, d in best.items()},
        "best_threads": {c: min(d, key=d.get) for c, d in best.items()},
        # what the rule picks for this shape with that condition's measured other load
        "auto": {c: threads_mod.resolve_threads("auto", units=n_units, batch=bsz,
                                                busy=busy[c] or 0.0, rank=rank)
                 for c in CONDITIONS},
        "auto_idle_machine": threads_mod.resolve_threads("auto", units=n_units, batch=bsz,
                                                         rank=rank),
        "other_busy_cores": busy,
    }


def threads_sweep(args: argparse.Namespace) -> dict[str, Any]:
    """Run the sweep; every number reported (JSON-ready)."""
    if args.device not in ("auto", "cpu"):
        raise ValueError("--threads-sweep measures CPU threads: use --device cpu")
    names = args.sweep_shapes.split(",") if args.sweep_shapes else list(SHAPES)
    shapes = [parse_shape(s.strip()) for s in names]
    counts = parse_counts(args.sweep_threads)
    repeats = 3 if args.repeats is None else args.repeats
    if repeats < 1:
        raise ValueError(f"--repeats must be an integer >= 1, got {repeats}")
    torch.set_flush_denormal(True)
    t_start = time.perf_counter()
    old = torch.get_num_threads()
    try:
        results = {name: _sweep_shape(args, shape, counts, repeats) for name, shape in shapes}
    finally:
        torch.set_num_threads(old)
    return {
        "mode": "threads-sweep", "threads": counts, "repeats": repeats,
        "cpus": os.cpu_count(), "cores_available": threads_mod.available_cores(),
        "work_per_thread": threads_mod.WORK_PER_THREAD, "method": args.method,
        "model": args.model, "torch": torch.__version__, "machine": cpu_name(),
        **git_state(), "wall_s": time.perf_counter() - t_start, "shapes": results,
    }


def sweep_report(r: dict[str, Any]) -> str:
    """Human-readable table of :func:`threads_sweep`'s result."""
    counts = r["threads"]
    head = "".join(f"{f'{c} {k}t':>10s}" for c in CONDITIONS for k in counts)
    lines = [
        f"{r['model']} ({r['method']}) training step (forward + cross-entropy + backward): ms "
        f"per step, min of {r['repeats']} repeats; {r['cores_available']} of {r['cpus']} cores "
        f"available; 'busy': we start one process spinning on a core; {r['wall_s']:.0f} s wall",
        f"{'shape':12s}{'p x n':>7s}{'batch':>6s}{'steps':>6s}{'work':>7s}{head}"
        f"{'best':>10s}{'auto':>10s}{'others':>12s}",
        f"{'':38s}{'':>{10 * len(counts) * 2}s}{'idle/busy':>10s}{'idle/busy':>10s}"
        f"{'idle/busy':>12s}",
    ]
    for name, s in r["shapes"].items():
        cells = "".join(f"{s['ms_per_step'][c][str(k)]:10.3f}" for c in CONDITIONS
                        for k in counts)
        busy = s["other_busy_cores"]
        others = "/".join("?" if busy[c] is None else f"{busy[c]:.1f}" for c in CONDITIONS)
        best = "/".join(str(s["best_threads"][c]) for c in CONDITIONS)
        auto = "/".join(str(s["auto"][c]) for c in CONDITIONS)
        lines.append(f"{name:12s}{s['modules']:>3d}x{s['units']:<3d}{s['batch']:>6d}"
                     f"{s['steps']:>6d}{s['step_work'] / 2**20:6.1f}M{cells}{best:>10s}"
                     f"{auto:>10s}{others:>12s}")
    lines += [
        "others: CPUs' worth used by other processes while timing (busy: our spinner included)",
        "work: multiply-adds of the per-step coupling products, B N^2 (dense) or 4 B N r "
        "(rank r), in Mi",
        f"auto rule: threads = clamp(work // {r['work_per_thread']}, 1, free cores) "
        "(combonet.threads)",
    ]
    return "\n".join(lines)
