"""Markdown tables of recorded ``combonet bench --json`` results (benchmarks/README.md).

    python benchmarks/bench_table.py docs/data/bench-psmnist-dense.json [more.json ...]

For each file: a heading line with the command's settings, the other processes' share of the
machine, the matmul peak, the agreement with the careful loops and the wall time, then one row
per contender (min-of-repeats wall times, their ratio to the engine, the ratio of CPU seconds,
peak memory, FLOP-bound fraction). ``--threads-sweep`` files give the sweep's table.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

NAMES = {
    "engine": "engine",
    "engine-dense": "engine, dense coupling (same shape)",
    "careful": "careful loop (main reference)",
    "careful-graph": "careful loop in CUDA graphs",
    "rebuild": "per-step rebuild (the authors' code)",
    "gru": "GRU",
    "lstm": "LSTM",
}


def _name(r: dict, n: str) -> str:
    hidden = r["hidden"].get(n)
    return NAMES.get(n, n) + (f", {hidden} hidden + head" if hidden else "")


def bench_table(r: dict) -> str:
    c = r["config"]
    rank = c.get("coupling_rank")
    coupling = "dense eq.-3 coupling" if rank is None else f"rank-{rank} coupling"
    errs = "; ".join(f"{n} {e['logits']:.1e} / {e['grads']:.1e}"
                     for n, e in r["rel_err_vs_careful"].items())
    load = r["competing_load"]
    lines = [
        f"{c['model']} {c['modules']}x{c['units']}, {coupling}, {c['method']}, T = {c['steps']}, "
        f"batch {c['batch']}, {c['threads']} thread(s), min of {c['repeats']} alternating "
        f"repeats; {c['machine']}, torch {c['torch']}; other processes used "
        f"{'?' if load is None else f'{100 * load:.0f}%'} of the {c['cpus']} CPUs; matmul peak "
        f"{r['peak_gflops']:.0f} GFLOP/s; max rel. error vs the careful loop (logits / grads): "
        f"{errs}; wall {r.get('wall_s', float('nan')):.0f} s; commit "
        f"{(c.get('commit') or '?')[:7]}",
        "",
        "| contender | params | train step | x engine | x engine (CPU s) | forward | x engine "
        "| peak memory | FLOP-bound fraction (train) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    params = r["parameters"]
    for n, t in r["time_train_s"].items():
        mem = r["peak_memory_mb"].get(n)
        frac = r["fraction_of_peak"].get(n)
        lines.append(
            f"| {_name(r, n)} | {params.get(n, params['combo']):,} | {t:.2f} s | "
            f"{r['ratio_train'][n]:.2f} | {r['ratio_cpu_train'][n]:.2f} | "
            f"{r['time_forward_s'][n]:.2f} s | {r['ratio_forward'][n]:.2f} | "
            f"{'n/a' if mem is None else f'{mem:.0f} MB'} | "
            f"{'—' if frac is None else f'{frac:.2f}'} |")
    if "dense_over_low_rank" in r:
        d = r["dense_over_low_rank"]
        lines += ["", f"dense / rank {rank}, same run: training step {d['train']:.2f}x, "
                  f"forward {d['forward']:.2f}x (CPU seconds: "
                  f"{r['ratio_cpu_train']['engine-dense']:.2f}x)"]
    return "\n".join(lines)


def sweep_table(r: dict) -> str:
    counts = r["threads"]
    head = " | ".join(f"{c}, {k} thread{'s' * (k > 1)}" for c in ("idle", "busy") for k in counts)
    lines = [f"{r['model']} ({r['method']}), min of {r['repeats']} repeats, "
             f"{r.get('machine', '?')}, torch {r['torch']}, wall {r.get('wall_s', 0):.0f} s",
             "",
             f"| shape | p x n | batch | steps | work (Mi) | {head} | best idle/busy | auto "
             "idle/busy | other processes' CPUs idle/busy |",
             "|---" * (8 + 2 * len(counts)) + "|"]
    for name, s in r["shapes"].items():
        cells = " | ".join(f"{s['ms_per_step'][c][str(k)]:.2f}" for c in ("idle", "busy")
                           for k in counts)
        busy = s["other_busy_cores"]
        lines.append(
            f"| {name} | {s['modules']}x{s['units']} | {s['batch']} | {s['steps']} | "
            f"{s['step_work'] / 2**20:g} | {cells} | {s['best_threads']['idle']}/"
            f"{s['best_threads']['busy']} | {s['auto']['idle']}/{s['auto']['busy']} | "
            + "/".join("?" if busy[c] is None else f"{busy[c]:.1f}" for c in ("idle", "busy"))
            + " |")
    return "\n".join(lines)


def main() -> None:
    for path in sys.argv[1:]:
        r = json.loads(Path(path).read_text())
        print(f"`{path}`\n")
        print(sweep_table(r) if r.get("mode") == "threads-sweep" else bench_table(r))
        print()


if __name__ == "__main__":
    main()
