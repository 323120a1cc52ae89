"""Each lever of a certified model measured, one at a time, against one base configuration.

The base is ``--config`` at ``--epochs`` epochs (``--set KEY=VALUE`` changes a base setting,
e.g. ``limit_train=6000``); every other row of the ``--sweep`` changes one or a few settings
(readout, coupling scale, module magnitude/density, step, module kind, hybrid, time constants,
size; the unconstrained control and the torch baselines as references). Every run is one
thread, trained in turn in this process, and reports the test accuracy at its best-validation
epoch, its certificate and its wall time. Run::

    python benchmarks/levers.py --epochs 20 --config configs/pdigits-demo.toml \
        --out runs/levers --json docs/data/levers-pdigits.json
    python benchmarks/levers.py --sweep mnist1d --config configs/mnist1d-attention.toml \
        --epochs 40 --out runs/levers-mnist1d --json docs/data/levers-mnist1d.json
    python benchmarks/levers.py --sweep psmnist --config configs/psmnist.toml --epochs 3 \
        --set limit_train=6000 --set limit_test=2000 --set data_dir=../shared/data/mnist \
        --out runs/levers-psmnist --json docs/data/levers-psmnist-pilot.json
    python benchmarks/levers.py --sweep scifar10 --config configs/scifar10.toml --epochs 3 \
        --set limit_train=2000 --set limit_test=1000 \
        --set data_dir=../shared/data/cifar-10-batches-bin \
        --out runs/levers-scifar10 --json docs/data/levers-scifar10-pilot.json

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

#: lever -> the settings it changes from the base (``--sweep pdigits``)
LEVERS: dict[str, dict] = {
    "base (configs/pdigits-demo.toml)": {},
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
    "readout: max over time": {"readout": "max"},
}

#: ``--sweep mnist1d``: around ``configs/mnist1d-attention.toml`` (the tune study's best:
#: per-unit time constants, dt 0.97, attention readout)
MNIST1D_LEVERS: dict[str, dict] = {
    "base (configs/mnist1d-attention.toml)": {},
    "twice the epochs": {"epochs_factor": 2},
    "16x32 (twice the units)": {"modules": 16},
    "8x16 (half the units)": {"units": 16},
    "lr x2": {"lr": 0.0151},
    "lr /2": {"lr": 0.00377},
    "time constants per unit in [1, 20]": {"tau_max": 20.0},
    "one shared time constant (fixed), same dt": {"tau_train": "none", "tau_max": None},
    "readout: last state": {"readout": "last"},
    "trainable sparse modules (Theorem 1), per-unit tau": {
        "model": "trainable-sparse-combo", "density": 0.1, "magnitude": 1.0, "lr": 0.02},
    "control: unconstrained coupling L = B (not certified)": {"model": "unconstrained-combo"},
    "reference: torch tanh RNN, 128 hidden": {"model": "rnn", "hidden": 128, "lr": 0.003},
    "reference: torch GRU, 128 hidden": {"model": "gru", "hidden": 128, "lr": 0.003},
    "readout: max over time": {"readout": "max"},
    "readout: max, 8x16 (half the units)": {"readout": "max", "units": 16},
    "readout: max, one shared time constant (fixed)": {
        "readout": "max", "tau_train": "none", "tau_max": None},
    "readout: max, lr x2": {"readout": "max", "lr": 0.0151},
    "readout: max, 30 epochs": {"readout": "max", "epochs": 30},
    "readout: max, 8x16, lr x2": {"readout": "max", "units": 16, "lr": 0.0151},
    "readout: max, 8x16, lr x2, 60 epochs": {
        "readout": "max", "units": 16, "lr": 0.0151, "epochs": 60},
}

#: ``--sweep psmnist``: per-unit time constants at long steps on psMNIST (784 steps), around
#: ``configs/psmnist.toml``; the first rows are the previous configuration (dt 0.01, tau 1)
PREVIOUS = {"dt": 0.01, "tau_train": "none", "tau_max": None}
PSMNIST_LEVERS: dict[str, dict] = {
    "dt 0.01, one time constant (the previous configs/psmnist.toml)": PREVIOUS,
    "dt 0.01, one time constant, readout: attention": {**PREVIOUS, "readout": "attention"},
    "per-unit tau in [1, 100], dt 1": {"tau_max": 100.0},
    "per-unit tau in [1, 1000], dt 1 (configs/psmnist.toml)": {},
    "per-unit tau in [1, 100], dt 1, readout: attention": {
        "tau_max": 100.0, "readout": "attention"},
    "SVD modules, per-unit tau in [1, 100], dt 1, readout: attention": {
        "model": "svd-combo", "tau_max": 100.0, "readout": "attention", "lr": 0.0075,
        "init_scale": 0.141},
    "reference: torch GRU, matched (100 hidden)": {"model": "gru", "hidden": 100, "lr": 0.003},
    "reference: torch LSTM, matched (86 hidden)": {"model": "lstm", "hidden": 86, "lr": 0.003},
    "per-unit tau in [1, 1000], dt 1, readout: max": {"readout": "max"},
}

#: ``--sweep scifar10``: the readout on sCIFAR-10 (1,024 steps), around ``configs/scifar10.toml``
SCIFAR10_LEVERS: dict[str, dict] = {
    "readout: last state (the previous configs/scifar10.toml)": {"readout": "last"},
    "readout: max over time (configs/scifar10.toml)": {},
}

SWEEPS = {"pdigits": LEVERS, "mnist1d": MNIST1D_LEVERS, "psmnist": PSMNIST_LEVERS,
          "scifar10": SCIFAR10_LEVERS}


def lever_config(base: dict, change: dict, epochs: int, run_dir: Path) -> TrainConfig:
    """The base with ``change`` applied (``None`` removes a setting, ``epochs`` replaces and
    ``epochs_factor`` multiplies ``epochs``); base settings the changed model does not take are
    dropped."""
    change = dict(change)
    epochs = int(change.pop("epochs", epochs)) * int(change.pop("epochs_factor", 1))
    merged = {**base, **change, "epochs": epochs, "threads": "1", "quiet": True,
              "out_dir": str(run_dir)}
    merged = {k: v for k, v in merged.items() if v is not None}
    cfg = TrainConfig.from_dict(merged)
    drop = set(cfg.not_applicable()) - set(change)
    if drop:
        cfg = TrainConfig.from_dict({k: v for k, v in merged.items()
                                     if k.replace("-", "_") not in drop})
    return cfg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sweep", choices=sorted(SWEEPS), default="pdigits")
    parser.add_argument("--config", default="configs/pdigits-demo.toml")
    parser.add_argument("--set", dest="settings", action="append", default=[],
                        metavar="KEY=VALUE", help="change one base setting (repeatable)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--out", default="runs/levers")
    parser.add_argument("--json", default=None, help="write the rows here")
    ns = parser.parse_args()
    base = read_config_file(ns.config)
    for item in ns.settings:
        key, eq, value = item.partition("=")
        if not eq:
            parser.error(f"--set expects KEY=VALUE, got {item!r}")
        base[key.strip()] = getattr(TrainConfig.from_dict({key.strip(): value},
                                                          source="--set"),
                                    key.strip().replace("-", "_"))
    rows = []
    for i, (name, change) in enumerate(SWEEPS[ns.sweep].items()):
        run_dir = Path(ns.out) / f"{i:02d}"
        run = RunDir(run_dir)
        if run.status() != "finished":
            t0 = time.time()
            try:
                cfg = lever_config(base, change, ns.epochs, run_dir)
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
            "command": "python benchmarks/levers.py " + " ".join(
                [f"--sweep {ns.sweep}", f"--epochs {ns.epochs}", f"--config {ns.config}"]
                + [f"--set {item}" for item in ns.settings]),
            "machine": platform.processor() or platform.machine(), "epochs": ns.epochs,
            "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
