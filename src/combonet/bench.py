"""``combonet bench``: the recurrence engine against a plain per-step reference loop.

Builds the paper's best configuration (Sparse Combo Net, ``sparse_combo_net(16, 32,
density=0.033)``) at psMNIST shapes (784 steps, 1 input, 10 classes, batch 128) and a *reference
implementation of the identical model written as public code does*: one PyTorch loop that
rebuilds the dense ``W = blockdiag(W_i)`` and the eq.-3 coupling ``L = B - M^{-1} B^T M`` (and,
for ``--method cayley``, ``C``) at every step, with ordinary autograd, sharing the model's
weights. It checks that outputs and gradients agree, then times -- alternating the contenders
-- a forward pass and a training step (forward, cross-entropy, backward, Adam step).

FLOPs counted (the recurrence only, T steps, batch B, N units, blocks of n units)::

    forward = T * (2 B N^2 + 2 B N n)          dense coupling product + block-diagonal W
    train   = 2 * forward + T * 2 B N^2        forward + state-gradient recursion + dL (or dC)
              (+ T * 2 B N n when W is trained: dW; the Sparse Combo Net's W is fixed)

``peak_gflops`` is the best measured rate of ``torch.mm`` of (B x N) @ (N x N) in a loop
(measured in every repeat, between the timings), so
``fraction_of_peak = gflops / peak_gflops`` is the fraction of the FLOP-bound limit reached.
Peak memory: CPU -- the peak resident set size of the process during one training step minus
the resident size just before it (Linux ``/proc/self/clear_refs`` resets the peak; freed heap
memory is returned with ``malloc_trim`` first); CUDA -- ``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .engine import run_reference
from .engine.maps import step_fraction

CONTENDERS = ("engine", "reference", "spec")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``combonet bench``."""
    parser.add_argument("--modules", type=int, default=16, help="number of modules p")
    parser.add_argument("--units", type=int, default=32, help="units per module n")
    parser.add_argument("--density", type=float, default=0.033, help="density of each W_i")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=784, help="sequence length (psMNIST: 784)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per contender")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--method", choices=("euler", "cayley"), default="cayley")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch intra-op threads (0: leave torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-spec", action="store_true",
                        help="skip timing engine.run_reference (the package's own plain loop)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


# -- the reference: the identical model, written as a plain per-step loop ------------------
class ReferenceLoop(nn.Module):
    """The Sparse Combo Net of ``model`` as public code writes it (shares its weights).

    Every step rebuilds ``W = blockdiag(W_i)`` and ``L = B - M^{-1} B^T M`` (eq. 3, dense
    products) -- and ``C = (I - alpha/2 L)^{-1} (I + alpha/2 L)`` for cayley -- and applies the
    input layer to that step's input; autograd records everything.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        net = model.network
        if not hasattr(net, "masked_b") or not hasattr(net, "children_metric"):
            raise ValueError("the reference loop expects an eq.-3 feedback combination")
        dtype = net.b.dtype
        self.register_buffer("m", net.children_metric().to(dtype))
        self.register_buffer("m_inv", net.children_metric(inverse=True).to(dtype))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        model, net = self.model, self.model.network
        alpha = step_fraction(model.dt, net.tau)
        phi = net.activation.fn
        eye = torch.eye(net.n, dtype=inputs.dtype, device=inputs.device)
        x = inputs.new_zeros(inputs.shape[0], net.n)
        for t in range(inputs.shape[1]):
            w = torch.block_diag(*[leaf.weight() for leaf in net.leaves()])
            b = net.masked_b()
            lmat = b - self.m_inv @ b.T @ self.m
            u = model.encoder(inputs[:, t])
            if model.method == "cayley":
                c = torch.linalg.solve(eye - alpha / 2 * lmat, eye + alpha / 2 * lmat)
                x = ((1 - alpha) * x + alpha * (phi(x) @ w.T + u)) @ c.T
            else:
                x = x + alpha * (-x + phi(x) @ w.T + x @ lmat.T + u)
        return model.readout(x)


class SpecLoop(nn.Module):
    """``model`` with its recurrence run by ``engine.run_reference`` (matrices built once)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        model = self.model
        snap = model.snapshot()
        drive = snap.prepare_drive(model.encoder(inputs))
        x = run_reference(snap, drive, None, all_states=False)
        return model.readout(snap.from_running(x))


# -- measurements ---------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Any], device: torch.device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def matmul_peak(bsz: int, n_units: int, device: torch.device, dtype: torch.dtype,
                trial_s: float = 0.05, trials: int = 7) -> float:
    """Best measured GFLOP/s of ``torch.mm`` (B x N) @ (N x N) ``out=`` in a loop."""
    a = torch.randn(bsz, n_units, device=device, dtype=dtype)
    b = torch.randn(n_units, n_units, device=device, dtype=dtype) / math.sqrt(n_units)
    out = torch.empty(bsz, n_units, device=device, dtype=dtype)
    flops = 2.0 * bsz * n_units * n_units

    def loop(reps: int) -> float:
        return _timed(lambda: [torch.mm(a, b.T, out=out) for _ in range(reps)], device)

    reps = 1
    while reps < 4096 and loop(reps) < trial_s:
        reps *= 2
    return max(reps * flops / loop(reps) / 1e9 for _ in range(trials))


def _rss_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _release_memory() -> None:
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # glibc only
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def peak_memory_mb(fn: Callable[[], Any], device: torch.device,
                   times: list[float] | None = None) -> float | None:
    """Peak memory of ``fn()`` above the memory in use before it (module docstring); its
    run time is appended to ``times``."""
    _release_memory()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        t = _timed(fn, device)
        peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20
    else:
        base = _rss_kb("VmRSS")
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset the peak resident set size (VmHWM) to the current size
        except OSError:
            base = None
        t = _timed(fn, device)
        hwm = _rss_kb("VmHWM")
        peak = None if base is None or hwm is None else (hwm - base) / 1024
    if times is not None:
        times.append(t)
    return peak


def max_rel_err(got: list[torch.Tensor], want: list[torch.Tensor]) -> float:
    """``max_i max|got_i - want_i| / max|want_i|`` over the tensors (normwise, per tensor)."""
    err = 0.0
    for a, b in zip(got, want, strict=True):
        scale = float(b.abs().max())
        if scale > 0:
            err = max(err, float((a - b).abs().max()) / scale)
        else:
            err = max(err, float((a - b).abs().max()))
    return err


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


def _machine_busy_s() -> float | None:
    """CPU seconds all processes have used since boot (Linux ``/proc/stat``), else None."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        hz = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, AttributeError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    guest = sum(fields[8:10])  # already counted in user / nice
    return (sum(fields) - idle - guest) / hz


def _self_cpu_s() -> float:
    """CPU seconds this process has used (user + system)."""
    t = os.times()
    return t.user + t.system


class CompetingLoad:
    """How much of the machine other processes used while the benchmark ran: the share of
    all cores' time not spent by this process (``None`` where ``/proc/stat`` is missing).
    Above ~0.1 the timings and the FLOP-bound fraction are pessimistic."""

    def __enter__(self) -> CompetingLoad:
        self.busy0, self.self0, self.t0 = _machine_busy_s(), _self_cpu_s(), time.perf_counter()
        self.share: float | None = None
        return self

    def __exit__(self, *exc: object) -> None:
        busy1 = _machine_busy_s()
        if self.busy0 is None or busy1 is None:
            return
        wall = (time.perf_counter() - self.t0) * (os.cpu_count() or 1)
        other = (busy1 - self.busy0) - (_self_cpu_s() - self.self0)
        self.share = min(max(other / wall, 0.0), 1.0) if wall > 0 else None


# -- the benchmark --------------------------------------------------------------------------
def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available")
    return torch.device(name)


def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Run the checks and timings; return every number reported."""
    from .models import sparse_combo_net

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    for name in ("modules", "units", "batch", "steps", "repeats"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(args, name)}")
    device = _device(args.device)
    torch.manual_seed(args.seed)
    model = sparse_combo_net(args.modules, args.units, density=args.density, input_size=1,
                             num_classes=10, method=args.method, seed=args.seed).to(device)
    net = model.network
    n_units, block = net.n, args.units
    bsz, steps = args.batch, args.steps
    gen = torch.Generator().manual_seed(args.seed)
    inputs = torch.rand(bsz, steps, 1, generator=gen).to(device)
    labels = torch.randint(0, 10, (bsz,), generator=gen).to(device)
    runners: dict[str, nn.Module] = {"engine": model, "reference": ReferenceLoop(model)}
    if not args.no_spec:
        runners["spec"] = SpecLoop(model)
    params = [p for p in model.parameters() if p.requires_grad]
    optims = {k: torch.optim.Adam(params, lr=1e-4) for k in runners}

    def outputs_and_grads(name: str) -> list[torch.Tensor]:
        model.zero_grad(set_to_none=True)
        logits = runners[name](inputs)
        nn.functional.cross_entropy(logits, labels).backward()
        out = [logits.detach()] + [p.grad.detach().clone() for p in params]
        model.zero_grad(set_to_none=True)
        return out

    want = outputs_and_grads("reference")
    err = max_rel_err(outputs_and_grads("engine"), want)
    err_spec = max_rel_err(outputs_and_grads("spec"), want) if "spec" in runners else None

    def forward(name: str) -> Callable[[], Any]:
        def fn() -> None:
            with torch.no_grad():
                runners[name](inputs)
        return fn

    def train(name: str) -> Callable[[], Any]:
        def fn() -> None:
            optims[name].zero_grad(set_to_none=True)
            nn.functional.cross_entropy(runners[name](inputs), labels).backward()
            optims[name].step()
        return fn

    # The checks above were the warm-up. Alternate the contenders; the first training step of
    # each also gives its peak memory (the measurement itself costs nothing).
    times: dict[str, dict[str, list[float]]] = {k: {"forward": [], "train": []} for k in runners}
    memory: dict[str, float | None] = {}
    dtype = next(model.parameters()).dtype
    peaks = []  # the mm peak is measured in every repeat too; a busy moment cannot fake it
    with CompetingLoad() as load:
        for rep in range(args.repeats):
            peaks.append(matmul_peak(bsz, n_units, device, dtype))
            for name in runners:
                times[name]["forward"].append(_timed(forward(name), device))
            for name in runners:
                if rep == 0:
                    memory[name] = peak_memory_mb(train(name), device, times[name]["train"])
                else:
                    times[name]["train"].append(_timed(train(name), device))
    med = {k: {kind: statistics.median(v) for kind, v in d.items()} for k, d in times.items()}

    peak = max(peaks)
    flops_fwd = recurrence_flops(bsz, steps, n_units, block)
    w_trained = any(p.requires_grad for leaf in net.leaves() for p in leaf.parameters())
    flops_train = train_flops(bsz, steps, n_units, block, w_trained)
    gflops = flops_train / med["engine"]["train"] / 1e9
    result: dict[str, Any] = {
        "device": str(device),
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "competing_load": load.share,
        "method": args.method,
        "modules": args.modules, "units": args.units, "density": args.density,
        "batch": bsz, "steps": steps, "repeats": args.repeats,
        "max_rel_err": err,
        "max_rel_err_spec": err_spec,
        "speedup_train": med["reference"]["train"] / med["engine"]["train"],
        "speedup_forward": med["reference"]["forward"] / med["engine"]["forward"],
        "time_train_s": {k: v["train"] for k, v in med.items()},
        "time_forward_s": {k: v["forward"] for k, v in med.items()},
        "flops_train": flops_train,
        "flops_forward": flops_fwd,
        "gflops": gflops,
        "gflops_forward": flops_fwd / med["engine"]["forward"] / 1e9,
        "peak_gflops": peak,
        "fraction_of_peak": gflops / peak,
        "peak_memory_mb": memory,
    }
    if "spec" in runners:
        result["speedup_train_vs_spec"] = med["spec"]["train"] / med["engine"]["train"]
        result["speedup_forward_vs_spec"] = med["spec"]["forward"] / med["engine"]["forward"]
    return result


def _load_line(r: dict[str, Any]) -> str:
    share = r["competing_load"]
    if share is None:
        return "CPU time used by other processes during the run: unknown"
    line = (f"CPU time used by other processes during the run: {100 * share:.0f}% of "
            f"{r['cpus']} CPUs")
    if share > 0.1:
        line += " -- busy machine: timings and the FLOP-bound fraction are pessimistic"
    return line


def _fmt_mb(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.0f} MB"


def report(r: dict[str, Any]) -> str:
    """Human-readable summary of :func:`benchmark`'s result."""
    t, f, m = r["time_train_s"], r["time_forward_s"], r["peak_memory_mb"]
    lines = [
        f"Sparse Combo Net {r['modules']}x{r['units']} (density {r['density']}), "
        f"{r['steps']} steps, batch {r['batch']}, method {r['method']}, "
        f"{r['device']} ({r['threads']} threads)",
        _load_line(r),
        f"max relative error engine vs reference (logits, grads): {r['max_rel_err']:.2e}",
        "",
        f"{'':12s}{'forward':>12s}{'train step':>12s}{'peak memory':>14s}",
    ]
    for name in t:
        lines.append(f"{name:12s}{f[name]:11.3f}s{t[name]:11.3f}s{_fmt_mb(m[name]):>14s}")
    lines += [
        "",
        f"speed-up vs reference: train {r['speedup_train']:.2f}x, "
        f"forward {r['speedup_forward']:.2f}x",
    ]
    if "speedup_train_vs_spec" in r:
        lines.append(f"speed-up vs engine.run_reference: train {r['speedup_train_vs_spec']:.2f}x,"
                     f" forward {r['speedup_forward_vs_spec']:.2f}x")
    lines += [
        f"recurrence FLOPs: forward T(2BN^2 + 2BNn) = {r['flops_forward'] / 1e9:.1f} G, "
        f"train (forward + backward) = {r['flops_train'] / 1e9:.1f} G",
        f"achieved: train {r['gflops']:.1f} GFLOP/s, forward {r['gflops_forward']:.1f} GFLOP/s;"
        f" mm peak (B x N @ N x N) {r['peak_gflops']:.1f} GFLOP/s",
        f"fraction of the FLOP-bound limit (train): {r['fraction_of_peak']:.2f}",
    ]
    return "\n".join(lines)


def main_from_args(args: argparse.Namespace) -> int:
    """Run the benchmark described by ``args``; print a report (or JSON); exit status."""
    try:
        result = benchmark(args)
    except ValueError as exc:
        print(f"combonet bench: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result) if args.json else report(result))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="combonet bench", description=__doc__.split("\n")[0])
    add_arguments(parser)
    return main_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
