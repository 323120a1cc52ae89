"""Where an epoch's time goes: training steps against validation/test evaluation, the
certificate and checkpointing, for given training configurations.

Each configuration trains for ``--epochs`` epochs (one thread) in a temporary run directory;
the trainer records per epoch ``time_train``, ``time_eval``, ``time_certify`` and
``time_save`` (metrics.jsonl). The report gives their shares of the epoch (the first epoch,
which warms up caches, is left out when there are more). Run::

    python benchmarks/epoch_overhead.py                       # pdigits demo and MNIST-1D
    python benchmarks/epoch_overhead.py --set model=svd-combo --set modules=8 ...

"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from combonet.train import TrainConfig, train

DEFAULTS = {
    "pdigits (the demo)": {},
    "mnist1d svd-combo 8x32": {"task": "mnist1d", "model": "svd-combo", "modules": 8,
                               "units": 32, "lr": 0.02},
}


def measure(settings: dict, epochs: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig.from_dict({**settings, "epochs": epochs, "threads": "1",
                                     "out_dir": str(Path(tmp) / "run"), "quiet": True})
        result = train(cfg)
        rows = [json.loads(line) for line in
                (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    rows = rows[1:] if len(rows) > 1 else rows
    parts = {k: sum(r.get(k, 0.0) for r in rows) for k in
             ("time_train", "time_eval", "time_certify", "time_save")}
    total = sum(parts.values())
    return {"epochs": len(rows), "seconds_per_epoch": total / len(rows),
            **{k: v / total for k, v in parts.items()},
            "outside_training": 1 - parts["time_train"] / total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="one configuration of these settings instead of the defaults")
    ns = parser.parse_args()
    configs = DEFAULTS
    if ns.set:
        configs = {"custom": dict(kv.split("=", 1) for kv in ns.set)}
    print("| configuration | s / epoch | train steps | evaluation | certificate | checkpoint |"
          " outside training |")
    print("|---|---|---|---|---|---|---|")
    for name, settings in configs.items():
        r = measure(settings, ns.epochs)
        print(f"| {name} | {r['seconds_per_epoch']:.2f} | {r['time_train']:.1%} | "
              f"{r['time_eval']:.1%} | {r['time_certify']:.1%} | {r['time_save']:.1%} | "
              f"**{r['outside_training']:.1%}** |")


if __name__ == "__main__":
    main()
