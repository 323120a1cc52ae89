"""Each lever of a certified model measured, one at a time, against one base configuration.

The base is ``configs/pdigits.toml`` (the demo) at ``--epochs`` epochs; every other row changes
one setting (readout, coupling scale, module magnitude/density, step, module kind, hybrid, time
constants). Every run is one thread, trained in turn in this process, and reports the test
accuracy at its best-validation epoch, its certificate and its wall time. Run::

    python benchmarks/levers.py --epochs 30 --out runs/levers --json docs/data/levers-pdigits.json

Runs already finished in ``--out`` are reused (rerunning the command only fills gaps).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from combonet.train import RunDir, TrainConfig, train
from combonet.train.config import read_config_file

#: lever -> the settings it changes from the base
LEVERS: dict[str, dict] = {
    "base (configs/pdigits.toml)": {},
    "readout: mean of all states": {"readout": "mean"},
    "readout: attention": {"readout": "attention"},
    "coupling init scale 0.3": {"init_scale": 0.3},
    "coupling init scale 3": {"init_scale": 3.0},
    "module magnitude 1": {"magnitude": 1.0},
    "module density 0.1, magnitude 1": {"density": 0.1, "magnitude": 1.0},
    "dt 0.05": {"dt": 0.05},
    "dt 0.3": {"dt": 0.3},
    "trainable sparse modules (Theorem 1)": {"model": "trainable-sparse-combo"},
    "mixed Theorem-1 / Theorem-5 modules": {"model": "mixed-combo"},
    "SVD modules (Theorem 5)": {"model": "svd-combo", "lr": 0.02},
    "hybrid: fast input module -> slow memory (tau_max 10)": {
        "model": "hybrid-combo", "lr": 0.02, "tau_max": 10.0},
    "time constants log-spaced in (1, 10), fixed": {"tau_max": 10.0},
    "time constants trained per module in [1, 10]": {"tau_max": 10.0, "tau_train": "module"},
    "time constants trained per unit in [1, 10]": {"tau_max": 10.0, "tau_train": "unit"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/pdigits.toml")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--out", default="runs/levers")
    parser.add_argument("--json", default=None, help="write the rows here")
    ns = parser.parse_args()
    base = read_config_file(ns.config)
    rows = []
    for i, (name, change) in enumerate(LEVERS.items()):
        run_dir = Path(ns.out) / f"{i:02d}"
        run = RunDir(run_dir)
        if run.status() != "finished":
            cfg = TrainConfig.from_dict({**base, **change, "epochs": ns.epochs,
                                         "threads": "1", "quiet": True,
                                         "out_dir": str(run_dir)})
            t0 = time.time()
            try:
                train(cfg)
            except ValueError as err:  # a lever the model cannot take: say so in the table
                rows.append({"lever": name, "settings": change, "error": str(err)})
                continue
            print(f"{name}: {time.time() - t0:.0f} s", flush=True)
        s = run.summary()
        cert = s.get("certificate") or {}
        rows.append({"lever": name, "settings": change, "run_dir": str(run_dir),
                     "parameters": s["parameters"]["total"], "best_epoch": s["best_epoch"],
                     "val_acc": s["best"]["val_acc"], "test_acc": s["best"]["test_acc"],
                     "certified": cert.get("certified"), "wall_s": s["wall_time_s"]})
    print("| lever | parameters | test acc. (best-val epoch) | certified | wall s |")
    print("|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['lever']} | - | refused: {r['error']} | - | - |")
            continue
        print(f"| {r['lever']} | {r['parameters']:,} | {100 * r['test_acc']:.1f} % "
              f"(epoch {r['best_epoch']}) | {r['certified']} | {r['wall_s']:.0f} |")
    if ns.json:
        Path(ns.json).write_text(json.dumps({
            "command": f"python benchmarks/levers.py --epochs {ns.epochs} --config {ns.config}",
            "machine": platform.processor() or platform.machine(), "epochs": ns.epochs,
            "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
