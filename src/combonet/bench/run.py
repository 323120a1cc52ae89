"""The side-by-side benchmark: checks that the combo contenders compute the same function, then
times a training step (forward + cross-entropy + backward) and a forward pass of every
contender, alternating them within each repeat, and reports min-of-repeats times, ratios to
the engine, the FLOP-bound fraction and peak memory (contenders: :mod:`.contenders`)."""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from torch import nn

from .. import threads as threads_mod
from .contenders import (
    CarefulLoop,
    RebuildLoop,
    build_combo,
    matched_hidden,
    matched_rnn,
    parameter_count,
)
from .flops import recurrence_flops, train_flops
from .measure import (
    CompetingLoad,
    cpu_name,
    git_state,
    matmul_peak,
    max_rel_err,
    peak_memory_mb,
    timed,
)

T = TypeVar("T")

#: Every contender, in report order; ``careful-graph`` runs only on CUDA with --cuda-graphs,
#: ``engine-dense`` only with --coupling-rank (the dense-coupling net of the same shape).
CONTENDERS = ("engine", "engine-dense", "careful", "careful-graph", "rebuild", "gru", "lstm")
COMBO = ("engine", "engine-dense", "careful", "careful-graph", "rebuild")
SKIPPABLE = ("engine-dense", "rebuild", "gru", "lstm")
#: The reference each combo contender is checked against (default ``careful``).
REFERENCE = {"engine-dense": "careful-dense"}
LABELS = {
    "engine": "combonet engine: model(inputs)",
    "engine-dense": "combonet engine, the same net with a dense eq.-3 coupling (checked "
                    "against its own careful loop)",
    "careful": "careful plain loop: W, L, C once per forward, unbind, autograd",
    "careful-graph": "careful loop, recurrence captured in CUDA graphs",
    "rebuild": "per-step rebuild of W, L (eq. 3), C: what the authors' public code does",
    "gru": "torch nn.GRU + linear head, equal parameters",
    "lstm": "torch nn.LSTM + linear head, equal parameters",
}
#: The full-size defaults (the paper's psMNIST network) and the ``--quick`` smoke shape.
FULL = dict(modules=16, units=32, batch=128, steps=784, repeats=3)
QUICK = dict(modules=4, units=8, batch=4, steps=20, repeats=1)


def resolve_shape(args: argparse.Namespace) -> dict[str, int]:
    """The shape options, unset ones from ``--quick`` or the full-size defaults."""
    base = QUICK if getattr(args, "quick", False) else FULL
    out = {}
    for name, default in base.items():
        value = getattr(args, name, None)
        value = default if value is None else value
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"--{name} must be an integer >= 1, got {value!r}")
        out[name] = value
    return out


def device_of(name: str) -> torch.device:
    """``--device``: ``auto`` picks CUDA where it is available."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available (use --device cpu)")
    if name not in ("cpu", "cuda"):
        raise ValueError(f'Invalid device "{name}". Must be one of ["auto", "cpu", "cuda"]')
    return torch.device(name)


@dataclass
class Contender:
    """One runner and the parameters its training step differentiates."""

    name: str
    module: nn.Module
    params: list[torch.Tensor]
    times: dict[str, list[float]] = field(default_factory=lambda: {"forward": [], "train": []})
    #: CPU seconds of this process for the same calls (all its threads): less sensitive than
    #: wall time to other processes taking the cores (on CPU)
    cpu: dict[str, list[float]] = field(default_factory=lambda: {"forward": [], "train": []})
    memory_mb: float | None = None
    error: str | None = None
    rank: int | None = None  # the coupling rank the engine runs (None: dense)


def _combo(args: argparse.Namespace, shape: dict[str, int], device: torch.device,
           coupling_rank: int | None) -> nn.Module:
    torch.manual_seed(args.seed)
    return build_combo(args.model, shape["modules"], shape["units"], density=args.density,
                       magnitude=args.magnitude, method=args.method, dt=args.dt,
                       seed=args.seed, coupling_rank=coupling_rank).to(device)


def _build(args: argparse.Namespace, shape: dict[str, int], device: torch.device,
           skip: set[str]) -> tuple[nn.Module, dict[str, Contender], dict[str, Contender],
                                    dict[str, Any]]:
    """The timed contenders, the references they are checked against (not timed) and the
    parameter counts."""
    model = _combo(args, shape, device, args.coupling_rank)
    params = [p for p in model.parameters() if p.requires_grad]
    rank = threads_mod.running_rank(model)
    runners: dict[str, Contender] = {
        "engine": Contender("engine", model, params, rank=rank),
        "careful": Contender("careful", CarefulLoop(model), params, rank=rank),
    }
    refs = {"careful": runners["careful"]}
    total = parameter_count(model)
    info: dict[str, Any] = {"parameters": {"combo": total}, "hidden": {}}
    if args.coupling_rank is not None and "engine-dense" not in skip:
        # the dense eq.-3 coupling, same builder, shape, modules and seed: the side-by-side
        # comparison of the rank; checked against its own careful loop
        dense = _combo(args, shape, device, None)
        dparams = [p for p in dense.parameters() if p.requires_grad]
        runners["engine-dense"] = Contender("engine-dense", dense, dparams)
        refs["careful-dense"] = Contender("careful-dense", CarefulLoop(dense), dparams)
        info["parameters"]["engine-dense"] = parameter_count(dense)
    if args.cuda_graphs:
        if device.type != "cuda":
            raise ValueError("--cuda-graphs needs --device cuda (CUDA graphs are CUDA only)")
        from .graphs import GraphedCarefulLoop

        runners["careful-graph"] = Contender("careful-graph", GraphedCarefulLoop(model), params)
    if "rebuild" not in skip:
        runners["rebuild"] = Contender("rebuild", RebuildLoop(model), params, rank=rank)
    for cell in ("gru", "lstm"):
        if cell in skip:
            continue
        torch.manual_seed(args.seed)
        rnn = matched_rnn(cell, total, 1, 10).to(device)
        info["hidden"][cell] = matched_hidden(cell, total, 1, 10)
        info["parameters"][cell] = parameter_count(rnn)
        runners[cell] = Contender(cell, rnn, [p for p in rnn.parameters() if p.requires_grad])
    return model, runners, refs, info


def _train_fn(c: Contender, inputs: torch.Tensor, labels: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        for p in c.params:
            p.grad = None
        nn.functional.cross_entropy(c.module(inputs), labels).backward()
    return step


def _forward_fn(c: Contender, inputs: torch.Tensor) -> Callable[[], None]:
    def fwd() -> None:
        with torch.no_grad():
            c.module(inputs)
    return fwd


def _outputs_and_grads(c: Contender, inputs: torch.Tensor, labels: torch.Tensor
                       ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    for p in c.params:
        p.grad = None
    logits = c.module(inputs)
    nn.functional.cross_entropy(logits, labels).backward()
    grads = [torch.zeros_like(p) if p.grad is None else p.grad.detach().clone()
             for p in c.params]
    for p in c.params:
        p.grad = None
    return logits.detach().clone(), grads


def check_agreement(runners: dict[str, Contender], inputs: torch.Tensor,
                    labels: torch.Tensor, refs: dict[str, Contender] | None = None
                    ) -> dict[str, dict[str, float]]:
    """Max relative error of logits and gradients of each combo contender against its careful
    loop (``careful``; ``careful-dense`` for ``engine-dense``: ``refs``); a contender that
    fails is dropped, its error kept. Also the warm-up of the combo contenders."""
    refs = {"careful": runners["careful"]} if refs is None else refs
    wanted: dict[str, tuple[torch.Tensor, list[torch.Tensor]]] = {}
    errs: dict[str, dict[str, float]] = {}
    for name in [n for n in COMBO if n in runners and n != "careful"]:
        ref = REFERENCE.get(name, "careful")
        if ref not in wanted:
            wanted[ref] = _outputs_and_grads(refs[ref], inputs, labels)
        want_out, want_grads = wanted[ref]
        got = _guarded(runners[name], lambda c: _outputs_and_grads(c, inputs, labels))
        if got is None:
            continue
        out, grads = got
        errs[name] = {"logits": max_rel_err([out], [want_out]),
                      "grads": max_rel_err(grads, want_grads)}
    if "careful" not in wanted:  # warm up the main reference too
        _outputs_and_grads(runners["careful"], inputs, labels)
    return errs


def _time_all(runners: dict[str, Contender], inputs: torch.Tensor, labels: torch.Tensor,
              repeats: int, device: torch.device, mm_shape: tuple[int, int],
              dtype: torch.dtype) -> list[float]:
    """Alternate the contenders (order rotated every repeat); the first training step of each
    also gives its peak memory. Returns the matmul peak measured in every repeat."""
    names = [n for n in CONTENDERS if n in runners and runners[n].error is None]
    for n in names:  # warm-up (also the no-grad capture of careful-graph); the combo
        # contenders' training steps warmed up in the check
        if n in ("gru", "lstm"):
            _train_fn(runners[n], inputs, labels)()
        _guarded(runners[n], lambda c: _forward_fn(c, inputs)())
    names = [n for n in names if runners[n].error is None]
    peaks = []
    for rep in range(repeats):
        order = names[rep % len(names):] + names[:rep % len(names)]
        peaks.append(matmul_peak(*mm_shape, device, dtype))
        for n in order:
            _guarded(runners[n], lambda c: _record(c, "forward", _forward_fn(c, inputs),
                                                   device))
        for n in order:
            _guarded(runners[n], lambda c, rep=rep: _time_train(c, inputs, labels, device, rep))
    return peaks


def _time_train(c: Contender, inputs: torch.Tensor, labels: torch.Tensor,
                device: torch.device, rep: int) -> None:
    train = _train_fn(c, inputs, labels)
    if rep == 0:
        cpu0 = time.process_time()
        c.memory_mb, t = peak_memory_mb(train, device)
        c.times["train"].append(t)
        c.cpu["train"].append(time.process_time() - cpu0)
    else:
        _record(c, "train", train, device)


def _record(c: Contender, what: str, fn: Callable[[], None], device: torch.device) -> None:
    cpu0 = time.process_time()
    c.times[what].append(timed(fn, device))
    c.cpu[what].append(time.process_time() - cpu0)


def _guarded(c: Contender, work: Callable[[Contender], T]) -> T | None:
    """``work(c)`` unless ``c`` failed before (then None); a ``careful-graph`` failure is
    recorded in ``c.error`` (the other contenders' errors are bugs and propagate)."""
    if c.error is not None:
        return None
    if c.name != "careful-graph":
        return work(c)
    try:
        return work(c)
    except (RuntimeError, ValueError, AssertionError) as exc:
        c.error = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
        return None


def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Run the checks and the timings; return every number reported (JSON-ready)."""
    t_start = time.perf_counter()
    shape = resolve_shape(args)
    skip = set(args.skip)
    device = device_of(args.device)
    n_units = shape["modules"] * shape["units"]
    model, runners, refs, info = _build(args, shape, device, skip)
    rank = runners["engine"].rank  # the threads rule sizes by the step the engine runs
    busy = None  # what ``--threads auto`` saw other processes use, CPUs' worth
    if threads_mod.parse_threads(args.threads) is None:
        busy = threads_mod.other_busy_cores()
    nthreads = threads_mod.apply_threads(args.threads, units=n_units, batch=shape["batch"],
                                         busy=busy or 0.0, rank=rank)
    if device.type == "cpu":
        torch.set_flush_denormal(True)  # what the engine sets; the same for every contender
    gen = torch.Generator().manual_seed(args.seed)
    bsz, steps = shape["batch"], shape["steps"]
    inputs = torch.rand(bsz, steps, 1, generator=gen).to(device)
    labels = torch.randint(0, 10, (bsz,), generator=gen).to(device)
    dtype = next(model.parameters()).dtype
    with CompetingLoad() as load:
        errs = check_agreement(runners, inputs, labels, refs)
        peaks = _time_all(runners, inputs, labels, shape["repeats"], device, (bsz, n_units),
                          dtype)
    config = {
        "model": args.model, **shape, "density": args.density,
        "magnitude": args.magnitude, "method": args.method, "dt": args.dt,
        "coupling_rank": args.coupling_rank, "running_rank": rank, "units_total": n_units,
        "device": str(device), "dtype": str(dtype).split(".")[-1],
        "threads": nthreads, "threads_setting": str(args.threads),
        "threads_auto_saw_busy_cores": busy,
        "cpus": os.cpu_count(), "cores_available": threads_mod.available_cores(),
        "torch": torch.__version__, "machine": cpu_name(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "seed": args.seed, **git_state(),
    }
    w_trained = any(p.requires_grad for leaf in model.network.leaves()
                    for p in leaf.parameters())
    return {"config": config, "wall_s": time.perf_counter() - t_start,
            "labels": {n: LABELS[n] for n in runners},
            "competing_load": load.share, **info, "rel_err_vs_careful": errs,
            **_timings(runners, peaks, shape, w_trained)}


def _timings(runners: dict[str, Contender], peaks: list[float], shape: dict[str, int],
             w_trained: bool) -> dict[str, Any]:
    """Min-of-repeats times, ratios to the engine, FLOP rates and peak memory."""
    live = {n: runners[n] for n in CONTENDERS if n in runners and runners[n].error is None}
    best = {n: {k: min(v) for k, v in c.times.items()} for n, c in live.items()}
    peak = max(peaks)
    bsz, steps = shape["batch"], shape["steps"]
    n_units, block = shape["modules"] * shape["units"], shape["units"]

    def fwd_flops(name: str) -> float:
        return recurrence_flops(bsz, steps, n_units, block, rank=runners[name].rank)

    def trn_flops(name: str) -> float:
        return train_flops(bsz, steps, n_units, block, w_trained, rank=runners[name].rank)

    flops_fwd, flops_train = fwd_flops("engine"), trn_flops("engine")
    eng = best["engine"]
    combo = [n for n in COMBO if n in best]
    out = {
        "failed": {n: c.error for n, c in runners.items() if c.error is not None},
        "time_train_s": {n: b["train"] for n, b in best.items()},
        "time_forward_s": {n: b["forward"] for n, b in best.items()},
        "times_train_s": {n: c.times["train"] for n, c in live.items()},
        "times_forward_s": {n: c.times["forward"] for n, c in live.items()},
        "ratio_train": {n: b["train"] / eng["train"] for n, b in best.items()},
        "ratio_forward": {n: b["forward"] / eng["forward"] for n, b in best.items()},
        "cpu_train_s": {n: min(live[n].cpu["train"]) for n in best},
        "cpu_forward_s": {n: min(live[n].cpu["forward"]) for n in best},
        "ratio_cpu_train": {n: min(live[n].cpu["train"]) / min(live["engine"].cpu["train"])
                            for n in best},
        "flops_train": flops_train,
        "flops_forward": flops_fwd,
        "flops_train_by": {n: trn_flops(n) for n in combo},
        "flops_forward_by": {n: fwd_flops(n) for n in combo},
        "w_trained": w_trained,
        "gflops_train": {n: trn_flops(n) / best[n]["train"] / 1e9 for n in combo},
        "gflops_forward": flops_fwd / eng["forward"] / 1e9,
        "peak_gflops": peak,
        "peak_gflops_all": peaks,
        "fraction_of_peak": {n: trn_flops(n) / best[n]["train"] / 1e9 / peak for n in combo},
        "peak_memory_mb": {n: c.memory_mb for n, c in live.items()},
    }
    if "engine-dense" in best:  # the rank's side-by-side comparison, one run
        dense = best["engine-dense"]
        out["dense_over_low_rank"] = {"train": dense["train"] / eng["train"],
                                      "forward": dense["forward"] / eng["forward"]}
    return out


def disagreements(r: dict[str, Any], tolerance: float) -> list[str]:
    """One line per combo contender whose logits or gradients differ from the careful loop's
    by more than ``tolerance`` (relative)."""
    out = []
    for name, e in r["rel_err_vs_careful"].items():
        for what in ("logits", "grads"):
            if not e[what] <= tolerance:
                ref = " of the dense net" if name == "engine-dense" else ""
                out.append(f"{name} and the careful loop{ref} disagree: max relative error of "
                           f"{what} {e[what]:.2e} > {tolerance:g}")
    return out


def _load_line(r: dict[str, Any]) -> str:
    share, cpus = r["competing_load"], r["config"]["cpus"]
    if share is None:
        return "CPU time used by other processes during the run: unknown"
    line = f"CPU time used by other processes during the run: {100 * share:.0f}% of {cpus} CPUs"
    if share > 0.1:
        line += " -- busy machine: timings and the FLOP-bound fraction are pessimistic"
    return line


def _mb(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.0f} MB"


def flop_formulas(rank: int | None, w_trained: bool) -> tuple[str, str]:
    """The forward and training formulas of :mod:`.flops` that apply (``rank``: the coupling
    rank the engine runs, None for dense)."""
    dw = " + 2BNn" if w_trained else ""
    if rank is None:
        return "T(2BN^2 + 2BNn)", f"2 forward + T(2BN^2{dw})"
    return "T(8BNr + 2BNn)", f"2 forward + T(12BNr{dw})"


def flop_lines(r: dict[str, Any]) -> list[str]:
    """The recurrence FLOPs of the engine (and of the dense engine, where it ran)."""
    c, w = r["config"], r["w_trained"]
    by_f, by_t = r.get("flops_forward_by", {}), r.get("flops_train_by", {})
    rank = c.get("running_rank")
    what = "dense coupling" if rank is None else f"low-rank coupling, r = {rank}"
    rows = [(f"recurrence FLOPs ({what})", rank, r["flops_forward"], r["flops_train"])]
    if "engine-dense" in by_f:
        rows.append(("  engine-dense (dense coupling)", None, by_f["engine-dense"],
                     by_t["engine-dense"]))
    out = []
    for what, rank, fwd, trn in rows:
        ffwd, ftrn = flop_formulas(rank, w)
        out.append(f"{what}: forward {ffwd} = {fwd / 1e9:.2f} G; train (forward + backward"
                   f"{', W trained' if w else ''}) {ftrn} = {trn / 1e9:.2f} G")
    return out


def report(r: dict[str, Any], tolerance: float) -> str:
    """Human-readable summary of :func:`benchmark`'s result."""
    c = r["config"]
    where = c["gpu"] or c["machine"]
    lines = [
        f"{c['model']} {c['modules']}x{c['units']} (N = {c['units_total']}, density "
        f"{c['density']}, magnitude {c['magnitude']}), {c['method']}, {c['steps']} steps, "
        f"batch {c['batch']}, {c['dtype']}",
        f"{c['device']} ({where}), {c['threads']} threads (--threads {c['threads_setting']}), "
        f"torch {c['torch']}; min of {c['repeats']} alternating repeats; "
        f"{r.get('wall_s', 0):.0f} s wall",
        _load_line(r),
        "training step = forward + cross-entropy + backward; (CPU): the ratio of this "
        "process's CPU seconds (less sensitive to other processes than wall time)",
        "",
        f"{'contender':15s}{'params':>9s}{'train':>10s}{'x engine':>9s}{'(CPU)':>7s}"
        f"{'forward':>10s}{'x engine':>9s}{'peak mem':>10s}  what",
    ]
    params = r["parameters"]
    for name in r["time_train_s"]:
        count = params.get(name, params["combo"])
        lines.append(
            f"{name:15s}{count:9,d}{r['time_train_s'][name]:9.3f}s{r['ratio_train'][name]:9.2f}"
            f"{r['ratio_cpu_train'][name]:7.2f}"
            f"{r['time_forward_s'][name]:9.3f}s{r['ratio_forward'][name]:9.2f}"
            f"{_mb(r['peak_memory_mb'][name]):>10s}  {r['labels'][name]}"
        )
    for name, err in r["failed"].items():
        lines.append(f"{name:15s} failed: {err}")
    hidden = ", ".join(f"{k} {v}" for k, v in r["hidden"].items())
    if hidden:
        lines.append(f"hidden sizes of equal parameter count: {hidden}")
    twin = ("; engine-dense: against the careful loop of the dense net"
            if "engine-dense" in r["rel_err_vs_careful"] else "")
    lines += ["", f"max relative error against the careful loop (logits, gradients{twin}):"]
    for name, e in r["rel_err_vs_careful"].items():
        lines.append(f"  {name:13s} {e['logits']:.2e}, {e['grads']:.2e}")
    if "dense_over_low_rank" in r:
        d = r["dense_over_low_rank"]
        lines += ["", f"dense coupling against rank {c['coupling_rank']} (same shape, this run): "
                  f"the dense engine takes {d['train']:.2f}x the low-rank engine's training-step "
                  f"time, {d['forward']:.2f}x its forward time"]
    lines += ["", *flop_lines(r)]
    lines.append(f"mm peak (B x N @ N x N, best of every repeat): {r['peak_gflops']:.1f} GFLOP/s"
                 + (" (that of the dense product, also for the low-rank step)"
                    if c.get("running_rank") is not None else ""))
    for name, frac in r["fraction_of_peak"].items():
        lines.append(f"  {name:13s} train {r['gflops_train'][name]:8.1f} GFLOP/s = "
                     f"{frac:.2f} of the FLOP-bound limit")
    bad = disagreements(r, tolerance)
    if bad:
        lines += ["", *[f"ERROR: {b}" for b in bad]]
    return "\n".join(lines)
