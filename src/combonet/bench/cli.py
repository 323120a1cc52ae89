"""The options and the entry point of ``combonet bench`` (modes: the side-by-side benchmark,
``--threads-sweep``, ``--train-seconds``)."""

from __future__ import annotations

import argparse
import json
import sys

from ..engine.maps import DEFAULT_METHOD, METHODS
from .run import SKIPPABLE, benchmark, disagreements, report

EXIT_OK, EXIT_DISAGREE, EXIT_USAGE = 0, 1, 2


def _skip_list(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    bad = [n for n in names if n not in SKIPPABLE]
    if bad:
        raise argparse.ArgumentTypeError(
            f'invalid contender "{bad[0]}" to skip. Must be a comma list of {list(SKIPPABLE)}')
    return names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``combonet bench``."""
    add = parser.add_argument
    add("--model", choices=("sparse-combo", "svd-combo"), default="sparse-combo",
        help="combo net to benchmark (default: sparse-combo)")
    add("--modules", type=int, default=None, help="number of modules p (default 16)")
    add("--units", type=int, default=None, help="units per module n (default 32)")
    add("--density", type=float, default=0.033, help="density of each W_i (sparse-combo)")
    add("--magnitude", type=float, default=3.0, help="magnitude of each W_i (sparse-combo)")
    add("--coupling-rank", type=int, default=None, metavar="R",
        help="rank of a low-rank coupling B = U V^T (passed to the builder; default dense); "
        "the dense net of the same shape is timed too, as engine-dense")
    add("--batch", type=int, default=None, help="batch size (default 128)")
    add("--steps", type=int, default=None, help="sequence length (default 784, psMNIST)")
    add("--repeats", type=int, default=None, help="timed repeats per contender (default 3)")
    add("--quick", action="store_true",
        help="smoke-test shape: 4x8 units, 20 steps, batch 4, 1 repeat (explicit flags win)")
    add("--method", choices=METHODS, default=DEFAULT_METHOD)
    add("--dt", type=float, default=0.1, help="time step (dt / tau in (0, 1])")
    add("--device", choices=("auto", "cpu", "cuda"), default="auto")
    add("--threads", default="auto",
        help='torch intra-op threads: "auto" (combonet.threads rule) or a number')
    add("--seed", type=int, default=0)
    add("--skip", type=_skip_list, default=[], metavar="LIST",
        help=f"contenders to leave out, comma-separated, of {', '.join(SKIPPABLE)}")
    add("--cuda-graphs", action="store_true",
        help="also time the careful loop with its recurrence captured in CUDA graphs (CUDA)")
    add("--tolerance", type=float, default=1e-4,
        help="max relative error of logits/gradients against the careful loop (exit 1 above)")
    add("--json", action="store_true", help="print one JSON object")
    mode = parser.add_argument_group("other modes")
    mode.add_argument("--threads-sweep", action="store_true",
                      help="time the engine's training step with 1, 2, ... threads, idle and "
                      "with a competing busy process, at representative shapes (CPU)")
    mode.add_argument("--sweep-shapes", default=None, metavar="LIST",
                      help="shapes of --threads-sweep: pdigits, mnist1d, psmnist or PxNxBxT "
                      "(default: the three named)")
    mode.add_argument("--sweep-threads", default=None, metavar="LIST",
                      help="thread counts of --threads-sweep, e.g. 1,2,4 (default 1,2)")
    mode.add_argument("--train-seconds", type=float, default=None, metavar="S",
                      help="train for S seconds on synthetic data of the benchmark's shape "
                      "and print one summary (throughput, loss, certificate)")
    mode.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate "
                      "(--train-seconds)")


def _print(result: dict, text: str, as_json: bool) -> None:
    print(json.dumps(result) if as_json else text, flush=True)


def main_from_args(args: argparse.Namespace) -> int:
    """Run the mode ``args`` selects; print a report (or JSON); return the exit status."""
    try:
        if args.threads_sweep and args.train_seconds is not None:
            raise ValueError("--threads-sweep and --train-seconds are separate modes: "
                             "pass one of them")
        if args.threads_sweep:
            from .sweep import sweep_report, threads_sweep

            result = threads_sweep(args)
            _print(result, sweep_report(result), args.json)
            return EXIT_OK
        if args.train_seconds is not None:
            from .budget import budget_report, train_budget

            result = train_budget(args)
            _print(result, budget_report(result), args.json)
            return EXIT_OK
        if not args.tolerance > 0:
            raise ValueError(f"--tolerance must be a number > 0, got {args.tolerance}")
        result = benchmark(args)
    except ValueError as exc:
        print(f"combonet bench: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_USAGE
    _print(result, report(result, args.tolerance), args.json)
    bad = disagreements(result, args.tolerance)
    for line in bad:
        print(f"combonet bench: {line}", file=sys.stderr)
    return EXIT_DISAGREE if bad else EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """``python -m combonet.bench``-style entry point (the CLI uses :func:`main_from_args`)."""
    from . import __doc__ as doc

    parser = argparse.ArgumentParser(prog="combonet bench",
                                     description=(doc or "").split("\n")[0])
    add_arguments(parser)
    return main_from_args(parser.parse_args(argv))


__all__ = ["EXIT_DISAGREE", "EXIT_OK", "EXIT_USAGE", "add_arguments", "main", "main_from_args"]
