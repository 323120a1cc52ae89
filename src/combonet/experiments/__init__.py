"""The paper's experiments (Section 4) and the stability demonstrations, one command each.

``combonet experiment NAME --preset {smoke,cpu,paper} [--out DIR] [--data-dir DIR]
[--seeds ...]`` trains with :func:`combonet.train.train` (no second training loop), writes
``NAME-PRESET.json``/``.csv``/``.png`` into ``--out`` (copied to ``docs/data`` and
``docs/figures`` for the cpu and paper presets) and prints a short table.
``combonet experiment report`` rewrites the generated sections of ``docs/results.md``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

from .._validate import choice, integer, seed, threads
from . import stability, sweeps
from ._common import PRESETS, Context, ExperimentError, ExperimentResult, finish, hardware

__all__ = ["EXPERIMENTS", "PRESETS", "Context", "ExperimentResult", "add_arguments",
           "main_from_args", "run_experiment"]

#: Name -> experiment, cheapest first (``all`` runs them in this order).
EXPERIMENTS: dict[str, Callable[[Context], ExperimentResult]] = {
    "theorem7": stability.theorem7,
    "control": sweeps.control,
    "contraction": stability.contraction,
    "robustness": stability.robustness,
    "repeatability": sweeps.repeatability,
    "magnitude": sweeps.magnitude,
    "sparsity": sweeps.sparsity,
    "modularity": sweeps.modularity,
    "table": sweeps.table,
    "sparse-coupling": sweeps.sparse_coupling,
    "size": sweeps.size,
}
SPECIAL = ("all", "report")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``combonet experiment``."""
    parser.description = ("Run one of the paper's experiments end to end (training via "
                          "combonet.train), write JSON/CSV/PNG results and print a table.")
    parser.add_argument("name", choices=[*EXPERIMENTS, *SPECIAL], metavar="NAME",
                        help=f"one of {', '.join(EXPERIMENTS)}; 'all' runs every experiment "
                        "(cheapest first); 'report' rewrites docs/results.md from docs/data")
    parser.add_argument("--preset", choices=PRESETS, default="cpu",
                        help="smoke: seconds (tests); cpu: minutes on 2 CPU cores; paper: "
                        "the paper's settings (needs a GPU) (default: cpu)")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="results and run directories (default: runs/experiments/PRESET; "
                        "runs with identical settings are reused across experiments)")
    parser.add_argument("--data-dir", default=None, metavar="DIR",
                        help="MNIST IDX folder: the cpu preset then uses psMNIST on a subset "
                        "(the paper preset needs it)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, metavar="SEED",
                        help="seeds (default: the experiment's own)")
    parser.add_argument("--epochs", type=int, default=None, help="override the epochs")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads per run (default: 1)")
    parser.add_argument("--docs", default=None, metavar="DIR",
                        help="copy results to DIR/data and DIR/figures and update "
                        "DIR/results.md (default: docs for cpu/paper, none for smoke; "
                        "'none' disables)")
    parser.add_argument("--quiet", action="store_true", help="print only the final table")


def _docs_dir(ns: argparse.Namespace) -> Path | None:
    if ns.docs is None:
        return None if ns.preset == "smoke" else Path("docs")
    return None if ns.docs.lower() == "none" else Path(ns.docs)


def _command(ns: argparse.Namespace, name: str) -> str:
    parts = ["combonet", "experiment", name, "--preset", ns.preset]
    if ns.data_dir:
        parts += ["--data-dir", ns.data_dir]
    if ns.seeds:
        parts += ["--seeds", *map(str, ns.seeds)]
    if ns.epochs is not None:
        parts += ["--epochs", str(ns.epochs)]
    return " ".join(parts)


def run_experiment(name: str, ctx: Context) -> dict:
    """Run experiment ``name`` in ``ctx``; write and return its record."""
    try:
        choice("experiment", name, EXPERIMENTS)
    except ValueError as err:
        raise ExperimentError(str(err)) from None
    if ctx.preset == "paper" and name not in ("theorem7",) and ctx.data_dir is None:
        raise ExperimentError("the paper preset trains on psMNIST: pass --data-dir with the "
                              "MNIST IDX files (and a GPU; see docs/results.md)")
    if ctx.threads is not None:
        import torch

        # also for the simulations and evaluations outside train(): on 2 busy cores torch's
        # default intra-op threads make the small per-step products far slower
        torch.set_num_threads(ctx.threads)
    hw = hardware()
    t0 = time.time()
    ctx.say(f"experiment {name}, preset {ctx.preset}, out {ctx.out}")
    res = EXPERIMENTS[name](ctx)
    record = finish(ctx, res, t0, hw)
    if ctx.docs is not None:
        from .report import write_report

        write_report(ctx.docs, ctx.preset)
    return record


def main_from_args(ns: argparse.Namespace) -> int:
    """Entry point of ``combonet experiment`` (exit status 0, 2 for usage errors)."""
    docs = _docs_dir(ns)
    if ns.name == "report":
        from .report import write_report

        path = write_report(docs or Path("docs"), ns.preset if ns.preset != "smoke" else "cpu")
        print(f"wrote {path}")
        return 0
    try:
        if ns.threads is not None:
            threads("--threads", ns.threads)
        if ns.epochs is not None:
            integer("--epochs", ns.epochs, 1)
        for value in ns.seeds or []:
            seed("--seeds", value)
    except ValueError as err:
        raise ExperimentError(str(err)) from None
    out = Path(ns.out) if ns.out else Path("runs") / "experiments" / ns.preset
    names = list(EXPERIMENTS) if ns.name == "all" else [ns.name]
    for name in names:
        ctx = Context(name=name, preset=ns.preset, out=out, data_dir=ns.data_dir,
                      seeds=ns.seeds, docs=docs, threads=ns.threads, epochs=ns.epochs,
                      quiet=ns.quiet, command=_command(ns, name))
        run_experiment(name, ctx)
    return 0
