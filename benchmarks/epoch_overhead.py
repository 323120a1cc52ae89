"""Where an epoch's time goes: training steps against validation/test evaluation, the
certificate and checkpointing, for given training configurations.

Each configuration trains for ``--epochs`` epochs (one thread) in a temporary run directory;
the trainer records per epoch ``time_train``, ``time_eval``, ``time_certify`` and
``time_save`` (metrics.jsonl). The report gives their shares of the epoch (the first epoch,
which warms up caches, is left out when there are more) and in how many of those epochs the
test split was evaluated (``--eval-test best``, the default: at every new best-validation
epoch, frequent early in training, and the last epoch). Run::

    python benchmarks/epoch_overhead.py                       # pdigits demo and MNIST-1D
    python benchmarks/epoch_overhead.py --set model=svd-combo --set modules=8 ...
    python benchmarks/epoch_overhead.py --only pdigits --epochs 6 --rounds 2 \\
        --compare-evaluate --json docs/data/bench-epoch-overhead.json

``--compare-evaluate`` trains every configuration twice per round, alternating: with the
library's ``evaluate`` and with the previous one (``no_grad``, the combo net's snapshot --
``W``, ``L`` and the Cayley matrix -- rebuilt for every evaluation batch), to measure what the
change of ``evaluate`` saves (the two give the same numbers; only the time differs).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

import combonet.train.loop as train_loop
from combonet.bench.measure import cpu_name, git_state
from combonet.threads import OtherLoad
from combonet.train import TrainConfig, train

DEFAULTS = {
    "pdigits": {},
    "mnist1d svd-combo 8x32": {"task": "mnist1d", "model": "svd-combo", "modules": 8,
                               "units": 32, "lr": 0.02},
}
PARTS = ("time_train", "time_eval", "time_certify", "time_save")


def per_batch_evaluate(model: Any, ds: Any, batch_size: int, device: torch.device,
                       info: Any = None, *, loss_fn: Any = train_loop.cross_entropy,
                       metric_fn: Any = train_loop.accuracy) -> tuple[float, float]:
    """The previous ``evaluate``: ``no_grad`` and one snapshot per batch (for comparison)."""
    info = info or train_loop.ddp.DistInfo(device=device)
    model.eval()
    idx = torch.arange(info.rank, len(ds), info.world)
    loss_sum, correct, count = 0.0, 0.0, 0.0
    with torch.no_grad():
        for start in range(0, len(idx), batch_size):
            sel = idx[start:start + batch_size]
            x, y = ds.inputs[sel].to(device), ds.labels[sel].to(device)
            out = model(x)
            c, n = metric_fn(out, y)
            loss_sum += float(loss_fn(out, y)) * n
            correct += c
            count += n
    loss_sum, correct, count = train_loop.ddp.all_reduce_sum([loss_sum, correct, count], info)
    return loss_sum / max(count, 1), correct / max(count, 1)


@contextlib.contextmanager
def evaluate_as(kind: str) -> Iterator[None]:
    """``library``: as is; ``per-batch``: :func:`per_batch_evaluate` in the training loop."""
    if kind == "library":
        yield
        return
    real = train_loop.evaluate
    train_loop.evaluate = per_batch_evaluate
    try:
        yield
    finally:
        train_loop.evaluate = real


def measure(settings: dict, epochs: int, evaluate: str = "library") -> dict:
    with tempfile.TemporaryDirectory() as tmp, evaluate_as(evaluate), OtherLoad() as load:
        cfg = TrainConfig.from_dict({**settings, "epochs": epochs, "threads": "1",
                                     "out_dir": str(Path(tmp) / "run"), "quiet": True})
        t0 = time.perf_counter()
        result = train(cfg)
        wall = time.perf_counter() - t0
        rows = [json.loads(line) for line in
                (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    rows = rows[1:] if len(rows) > 1 else rows
    parts = {k: sum(r.get(k, 0.0) for r in rows) for k in PARTS}
    total = sum(parts.values())
    return {"evaluate": evaluate, "epochs_counted": len(rows), "wall_s": wall,
            "seconds_per_epoch": total / len(rows),
            **{k: v / total for k, v in parts.items()},
            "outside_training": 1 - parts["time_train"] / total,
            "test_evaluated_epochs": sum(r.get("test_acc") is not None for r in rows),
            "eval_seconds": parts["time_eval"],
            "final_val_acc": rows[-1].get("val_acc"),
            "competing_load_cores": load.cores}


def _row(name: str, r: dict) -> str:
    return (f"| {name} | {r['seconds_per_epoch']:.2f} | {r['time_train']:.1%} | "
            f"{r['time_eval']:.1%} ({r['test_evaluated_epochs']}/{r['epochs_counted']}) | "
            f"{r['time_certify']:.1%} | {r['time_save']:.1%} | **{r['outside_training']:.1%}** |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="one configuration of these settings instead of the defaults")
    parser.add_argument("--only", choices=("pdigits", "mnist1d"), default=None,
                        help="one of the default configurations")
    parser.add_argument("--compare-evaluate", action="store_true",
                        help="also train with the previous per-batch evaluate, alternating")
    parser.add_argument("--rounds", type=int, default=1, help="repeats of every run")
    parser.add_argument("--json", default=None, metavar="PATH", help="write every number here")
    ns = parser.parse_args()
    configs = DEFAULTS
    if ns.set:
        configs = {"custom": dict(kv.split("=", 1) for kv in ns.set)}
    elif ns.only:
        configs = {k: v for k, v in DEFAULTS.items() if k.startswith(ns.only)}
    kinds = ["library", "per-batch"] if ns.compare_evaluate else ["library"]
    t0 = time.perf_counter()
    runs: list[dict] = []
    print("| configuration | s / epoch | train steps | evaluation (epochs with test) | "
          "certificate | checkpoint | outside training |")
    print("|---|---|---|---|---|---|---|")
    for rnd in range(ns.rounds):
        order = kinds if rnd % 2 == 0 else kinds[::-1]
        for name, settings in configs.items():
            for kind in order:
                r = {"configuration": name, "settings": settings, "round": rnd,
                     **measure(settings, ns.epochs, kind)}
                runs.append(r)
                label = name if len(kinds) == 1 else f"{name}, {kind} evaluate"
                print(_row(label, r), flush=True)
    wall = time.perf_counter() - t0
    print(f"wall {wall:.0f} s; one thread; {ns.epochs} epochs per run (first left out)")
    if ns.json:
        out = {"command": "python benchmarks/epoch_overhead.py " + " ".join(sys.argv[1:]),
               "epochs": ns.epochs, "rounds": ns.rounds, "wall_s": wall,
               "machine": cpu_name(), "cpus": os.cpu_count(), "torch": torch.__version__,
               **git_state(), "runs": runs}
        Path(ns.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
