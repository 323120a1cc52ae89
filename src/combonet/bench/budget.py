"""``combonet bench --train-seconds S``: train a combo net for a fixed wall-clock budget on
synthetic data of the benchmark's shape (psMNIST: batch 128, 784 steps, 1 input, 10 classes)
and report throughput, the loss trend and the certificate at the end.

No data files are needed (a machine with a device may have none): a fixed pool of uniform
random sequences is labelled by a fixed random linear teacher over all steps
(``label = argmax_c sum_t V_ct s_t``), so the task is learnable and the loss should fall.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch
from torch import nn

from .. import threads as threads_mod
from .contenders import build_combo
from .measure import sync
from .run import device_of, resolve_shape

POOL_BATCHES = 16


def synthetic_pool(batches: int, bsz: int, steps: int, classes: int, seed: int,
                   device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(inputs (batches, B, T, 1), labels (batches, B))`` from a linear teacher."""
    gen = torch.Generator().manual_seed(seed)
    inputs = torch.rand(batches, bsz, steps, 1, generator=gen)
    teacher = torch.randn(classes, steps, generator=gen)
    scores = (inputs.squeeze(-1) - 0.5) @ teacher.T
    return inputs.to(device), scores.argmax(-1).to(device)


def train_budget(args: argparse.Namespace) -> dict[str, Any]:
    """Train for ``args.train_seconds`` seconds of steps; every number reported."""
    budget = float(args.train_seconds)
    if not budget > 0:
        raise ValueError(f"--train-seconds must be a number > 0, got {args.train_seconds!r}")
    shape = resolve_shape(args)
    device = device_of(args.device)
    n_units = shape["modules"] * shape["units"]
    torch.manual_seed(args.seed)
    model = build_combo(args.model, shape["modules"], shape["units"], density=args.density,
                        magnitude=args.magnitude, method=args.method, dt=args.dt,
                        seed=args.seed, coupling_rank=args.coupling_rank).to(device)
    nthreads = threads_mod.apply_threads(args.threads, units=n_units, batch=shape["batch"],
                                         rank=threads_mod.running_rank(model))
    inputs, labels = synthetic_pool(POOL_BATCHES, shape["batch"], shape["steps"], 10,
                                    args.seed, device)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=args.lr)
    run = _train_loop(model, opt, inputs, labels, budget, device)
    cert = _certify(model)
    return {
        "mode": "train-seconds", "model": args.model, **shape, "units_total": n_units,
        "method": args.method, "dt": args.dt, "lr": args.lr, "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "threads": nthreads, "torch": torch.__version__,
        "budget_s": budget, **run,
        "s_per_step": run["wall_s"] / run["train_steps"],
        "samples_per_s": run["train_steps"] * shape["batch"] / run["wall_s"],
        "peak_memory_mb": (torch.cuda.max_memory_allocated(device) / 2**20
                           if device.type == "cuda" else None),
        **cert,
    }


def _train_loop(model: nn.Module, opt: torch.optim.Optimizer, inputs: torch.Tensor,
                labels: torch.Tensor, budget: float, device: torch.device) -> dict[str, Any]:
    """Adam steps over the pool until ``budget`` seconds have passed (no per-step device
    sync: losses and hits stay on the device until the end)."""
    first = None
    trace: list[torch.Tensor] = []  # mean loss of each pass over the pool
    recent: list[torch.Tensor] = []  # correct predictions of the last pass's steps
    epoch = torch.zeros((), device=device)
    sync(device)
    t0 = time.perf_counter()
    step = 0
    while True:
        i = step % POOL_BATCHES
        opt.zero_grad(set_to_none=True)
        logits = model(inputs[i])
        loss = nn.functional.cross_entropy(logits, labels[i])
        loss.backward()
        opt.step()
        step += 1
        with torch.no_grad():
            first = loss.detach().clone() if first is None else first
            epoch += loss.detach()
            recent = [*recent[-(POOL_BATCHES - 1):], (logits.argmax(-1) == labels[i]).sum()]
            if step % POOL_BATCHES == 0:
                trace.append(epoch / POOL_BATCHES)
                epoch = torch.zeros((), device=device)
        if time.perf_counter() - t0 >= budget:
            break
    sync(device)
    wall = time.perf_counter() - t0
    losses = [float(t) for t in trace] or [float(loss.detach())]
    hits = sum(int(c) for c in recent)
    return {"wall_s": wall, "train_steps": step, "loss_first": float(first),
            "loss_last": losses[-1], "loss_per_pass": losses,
            "train_accuracy_recent": hits / (len(recent) * labels.shape[1])}


def _certify(model: nn.Module) -> dict[str, Any]:
    """The certificate of the trained weights (never raises: a failure is reported)."""
    from .. import certify

    t0 = time.perf_counter()
    try:
        cert = certify(model.network, dt=model.dt, method=model.method)
    except Exception as exc:  # report it in the summary rather than lose the run's numbers
        return {"certified": None, "certify_error": f"{type(exc).__name__}: {exc}"[:300]}
    # ``failures`` (one line per failing condition) is the contract's; older cores lack it
    failures = getattr(cert, "failures", None)
    if failures is None:
        failures = [] if cert.certified else list(cert.notes)
    return {"certified": bool(cert.certified), "certify_s": time.perf_counter() - t0,
            "rate": float(cert.rate), "discrete_factor": cert.discrete_factor,
            "certificate_failures": list(failures)}


def budget_report(r: dict[str, Any]) -> str:
    """One-paragraph summary of :func:`train_budget`'s result."""
    where = r["gpu"] or f"{r['threads']} threads"
    acc = r["train_accuracy_recent"]
    cert = {True: "CERTIFIED", False: "NOT CERTIFIED", None: "certify failed"}[r["certified"]]
    lines = [
        f"fixed-budget training: {r['model']} {r['modules']}x{r['units']} ({r['method']}), "
        f"synthetic data batch {r['batch']} x {r['steps']} steps, {r['device']} ({where})",
        f"{r['train_steps']} steps in {r['wall_s']:.1f} s (budget {r['budget_s']:.0f} s): "
        f"{r['s_per_step']:.3f} s/step, {r['samples_per_s']:.0f} samples/s",
        f"loss: first step {r['loss_first']:.3f}, last pass over the pool "
        f"{r['loss_last']:.3f}; training accuracy of the last {POOL_BATCHES} steps "
        f"{100 * acc:.1f} %",
        f"certificate of the final weights: {cert}"
        + (f" ({r['certify_s']:.1f} s)" if "certify_s" in r else ""),
    ]
    if r["peak_memory_mb"] is not None:
        lines.append(f"peak device memory {r['peak_memory_mb']:.0f} MB")
    for line in r.get("certificate_failures") or []:
        lines.append(f"  failure: {line}")
    if "certify_error" in r:
        lines.append(f"  {r['certify_error']}")
    return "\n".join(lines)
