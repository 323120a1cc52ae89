"""Subnormal floats in decaying states, with and without flushing them (FTZ/DAZ).

Runs the engine's forward pass (no grad) of the Sparse Combo Net at psMNIST shapes under three
drives, each in a fresh process per setting (the FTZ/DAZ bits are per thread and inherited by
threads created later, so a setting is only clean in a new process):

* ``normal``: ``u ~ N(0, 1)`` every step (no subnormals: the baseline);
* ``decaying``: an impulse ``u_0 = N(0, 1) * 1e-20``, then ``u = 0``: the states decay by about
  ``1 - alpha`` per step, leave the float32 normal range (>= 1.2e-38) after ~400 steps and are
  subnormal for the next ~150 (then exactly 0);
* ``subnormal``: ``u ~ N(0, 1) * 1e-39`` every step (states stay subnormal throughout).

``on``: ``torch.set_flush_denormal(True)`` before anything runs (the engine's default);
``off``: the engine's flush disabled (``combonet.engine.FLUSH_DENORMAL = False``).
It also counts the fraction of subnormal state entries in the ``off`` runs.

Usage: ``python benchmarks/denormal.py [--threads 2] [--repeats 3] [--steps 784]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

DRIVES = ("normal", "decaying", "subnormal")


def child(flush: str, drive_kind: str, args: argparse.Namespace) -> dict:
    import torch

    import combonet.engine as engine

    torch.set_flush_denormal(flush == "on")  # before any thread pool exists
    engine.FLUSH_DENORMAL = flush == "on"
    if args.threads:
        torch.set_num_threads(args.threads)
    from combonet.models import sparse_combo_net

    model = sparse_combo_net(16, 32, density=0.033, method=args.method)
    gen = torch.Generator().manual_seed(0)
    bsz, steps, n_units = args.batch, args.steps, model.network.n
    drive = torch.randn(bsz, steps, n_units, generator=gen)
    if drive_kind == "decaying":
        drive[:, 1:] = 0
        drive *= 1e-20
    elif drive_kind == "subnormal":
        drive *= 1e-39
    dyn = model.network.dynamics()
    with torch.no_grad():
        engine.run(dyn, drive[:, :20], None, dt=model.dt, method=args.method)  # warm-up
        times = []
        for _ in range(args.inner):
            t0 = time.perf_counter()
            states = engine.run(dyn, drive, None, dt=model.dt, method=args.method)
            times.append(time.perf_counter() - t0)
    tiny = torch.finfo(torch.float32).tiny
    sub = ((states != 0) & (states.abs() < tiny)).float().mean().item()
    return {"time_s": min(times), "subnormal_fraction": sub}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3, help="fresh processes per setting")
    ap.add_argument("--inner", type=int, default=2, help="timed runs per process (min)")
    ap.add_argument("--steps", type=int, default=784)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--method", default="cayley")
    ap.add_argument("--child", nargs=2, metavar=("FLUSH", "DRIVE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(*args.child, args)))
        return
    passthrough = ["--threads", str(args.threads), "--inner", str(args.inner), "--steps",
                   str(args.steps), "--batch", str(args.batch), "--method", args.method]
    res: dict[str, dict[str, list]] = {}
    for _ in range(args.repeats):  # alternate settings and drives
        for drive_kind in DRIVES:
            for flush in ("off", "on"):
                out = subprocess.run([sys.executable, __file__, *passthrough, "--child", flush,
                                      drive_kind], check=True, capture_output=True, text=True)
                r = json.loads(out.stdout.strip().splitlines()[-1])
                cell = res.setdefault(f"{drive_kind}/{flush}", {"time_s": [], "sub": []})
                cell["time_s"].append(r["time_s"])
                cell["sub"].append(r["subnormal_fraction"])
    summary = {}
    print(f"engine forward, {args.steps} steps, batch {args.batch}, {args.method}, "
          f"threads={args.threads or 'default'}; median over {args.repeats} processes")
    for drive_kind in DRIVES:
        off = statistics.median(res[f"{drive_kind}/off"]["time_s"])
        on = statistics.median(res[f"{drive_kind}/on"]["time_s"])
        sub = statistics.median(res[f"{drive_kind}/off"]["sub"])
        summary[drive_kind] = {"flush_off_s": off, "flush_on_s": on,
                               "subnormal_fraction_off": sub}
        print(f"  {drive_kind:10s} flush off {off:7.3f}s  on {on:7.3f}s  off/on {off / on:5.2f}"
              f"  subnormal states (off) {sub:6.1%}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
