"""The ``combonet`` command line: ``train``, ``evaluate``, ``certify``, ``bench``, ``experiment``.

Errors in what the user asked for (bad flags, impossible hyperparameters, missing data) print
one line and exit with status 2; set ``COMBONET_DEBUG=1`` to see the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from .train.config import DEVICES, OPTIMIZERS, SCHEDULES, TrainConfig

EXIT_USAGE = 2


class UsageError(ValueError):
    """A problem with what the user asked for (exit status 2)."""


class Parser(argparse.ArgumentParser):
    """``ArgumentParser`` whose errors are one line: ``combonet train: error: ...``."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# -- train flags -----------------------------------------------------------------------------
_HELP: dict[str, str] = {
    "task": "task name (digits, pdigits, mnist1d, mnist1d-shuffled, smnist, psmnist, scifar10)",
    "data_dir": "folder with the MNIST IDX or CIFAR-10 binary files",
    "val_fraction": "fraction of the training pool held out for validation (model selection)",
    "limit_train": "use only this many training examples (seeded subset)",
    "limit_test": "use only this many test examples (seeded subset)",
    "permutation_seed": "seed of the fixed pixel permutation of permuted tasks",
    "model": "sparse-combo, svd-combo, unconstrained-combo, lstm, gru, rnn, lipschitz, "
             "antisymmetric",
    "modules": "p: number of modules (subnetworks) of a combo net",
    "units": "n: units per module",
    "density": "fraction of non-zero weights in each sparse module (paper: 0.033)",
    "magnitude": "non-zero sparse weights are U(-1, 1) * magnitude",
    "coupling_density": "fraction of module pairs coupled (default: all)",
    "init_scale": "initial scale of the coupling B (entries N(0, init_scale^2 / N))",
    "dt": "Euler step dt (tau = 1, so dt must lie in (0, 1])",
    "method": "discrete map: cayley (coupling by a Cayley step) or euler",
    "hidden": "hidden units of the baselines",
    "optimizer": f"one of {list(OPTIMIZERS)}",
    "lr": "learning rate",
    "momentum": "momentum of sgd / rmsprop",
    "schedule": f"learning-rate schedule, one of {list(SCHEDULES)}",
    "lr_step_size": "epochs between decays of the step schedule",
    "lr_gamma": "decay factor of the step schedule",
    "weight_decay": "L2 weight decay",
    "grad_clip": "clip the gradient norm to this value ('none' to disable)",
    "batch_size": "global batch size (split evenly across torchrun processes)",
    "epochs": "number of epochs",
    "seed": "seed of the weights, the validation split and the shuffling",
    "device": f"one of {list(DEVICES)}",
    "out_dir": "run directory (default: runs/TASK-MODEL-TIMESTAMP)",
    "threads": "torch CPU threads (default: torch's choice)",
    "log_interval": "steps between progress updates (0: none)",
    "certify_every": "certify combo nets every k epochs (0: only at the end)",
    "quiet": "no progress bar and no per-epoch lines",
}
_SHORT = {"modules": "-p", "units": "-n"}


def _typed(kind: type, optional: bool) -> Any:
    def convert(text: str) -> Any:
        if optional and text.strip().lower() in ("none", "null"):
            return None
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {'an' if kind is int else 'a'} {kind.__name__}"
                f"{' or none' if optional else ''}, got {text!r}") from None
    convert.__name__ = kind.__name__
    return convert


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per :class:`TrainConfig` field (only given flags override the file/defaults)."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(TrainConfig)
    defaults = TrainConfig()
    parser.add_argument("--config", metavar="FILE",
                        help="YAML (.yaml/.yml) or TOML (.toml) file of settings; flags win")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out-dir from its last checkpoint")
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        names = [flag] + ([_SHORT[f.name]] if f.name in _SHORT else [])
        default = getattr(defaults, f.name)
        help_text = f"{_HELP.get(f.name, '')} (default: {default})"
        if hints[f.name] is bool:
            parser.add_argument(*names, dest=f.name, action="store_true",
                                default=argparse.SUPPRESS, help=_HELP.get(f.name))
            continue
        args = typing.get_args(hints[f.name])
        optional = type(None) in args
        kind = next(a for a in args if a is not type(None)) if args else hints[f.name]
        parser.add_argument(*names, dest=f.name, type=_typed(kind, optional),
                            default=argparse.SUPPRESS, metavar=f.name.upper(), help=help_text)


def resolve_train_config(ns: argparse.Namespace) -> TrainConfig:
    """Defaults < the run's ``config.json`` (``--resume``) < ``--config FILE`` < flags."""
    from .train.config import read_config_file

    names = set(TrainConfig.field_names())
    given = {k: v for k, v in vars(ns).items() if k in names}
    file_data = read_config_file(ns.config) if ns.config else {}
    base = None
    if ns.resume:
        out_dir = given.get("out_dir", file_data.get("out_dir", file_data.get("out-dir")))
        if out_dir is None:
            raise UsageError("--resume needs --out-dir RUN_DIR (the run to continue)")
        saved = Path(out_dir) / "config.json"
        if saved.is_file():
            base = TrainConfig.from_dict(json.loads(saved.read_text())["config"],
                                         source=str(saved))
    cfg = TrainConfig.from_dict(file_data, base=base, source=str(ns.config))
    cfg = TrainConfig.from_dict(given, base=cfg, source="the command line")
    return cfg.validate()


def cmd_train(ns: argparse.Namespace) -> int:
    from .train import train

    cfg = resolve_train_config(ns)
    return train(cfg, resume=ns.resume).exit_code


# -- evaluate / certify ------------------------------------------------------------------------
def _load_run(run_dir: str, weights: str, data_dir: str | None = None
              ) -> tuple[TrainConfig, dict[str, Any], Any, dict[str, Any]]:
    """Config, config.json record, rebuilt model and weights file contents of a run."""
    import torch

    from .models.registry import build_model
    from .train import checkpoint as ckpt
    from .train.loop import CONFIG, load_weights

    folder = Path(run_dir)
    if not (folder / CONFIG).is_file():
        raise UsageError(f"{folder} is not a run directory (no {CONFIG})")
    record = json.loads((folder / CONFIG).read_text())
    cfg = TrainConfig.from_dict(record["config"], source=str(folder / CONFIG))
    if data_dir is not None:
        cfg.data_dir = data_dir
    meta = record["data"]
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, int(meta["features"]), int(meta["num_classes"]))
    path = folder / (ckpt.BEST if weights == "best" else ckpt.CHECKPOINT)
    data = load_weights(model, path)
    if data.get("fingerprint") != cfg.fingerprint():
        raise UsageError(f"{path} does not belong to the configuration in {folder / CONFIG}")
    return cfg, record, model, data


def cmd_evaluate(ns: argparse.Namespace) -> int:
    import torch

    from .train.loop import evaluate, load_data

    cfg, record, model, data = _load_run(ns.run_dir, ns.weights, ns.data_dir)
    if ns.threads:
        torch.set_num_threads(ns.threads)
    splits = load_data(cfg, permutation=record["data"].get("permutation"))
    ds = getattr(splits, ns.split)
    loss, acc = evaluate(model, ds, ns.batch_size, torch.device("cpu"))
    out = {"run_dir": str(ns.run_dir), "split": ns.split, "weights": ns.weights,
           "epoch": int(data["epoch"]), "examples": len(ds), "loss": loss, "accuracy": acc}
    if ns.json:
        print(json.dumps(out))
    else:
        print(f"{ns.split} accuracy {100 * acc:.2f}% (loss {loss:.4f}) on {len(ds)} examples, "
              f"{ns.weights} weights (epoch {out['epoch']}) of {ns.run_dir}")
    return 0


def cmd_certify(ns: argparse.Namespace) -> int:
    from .train.loop import certificate_of

    cfg, _, model, data = _load_run(ns.run_dir, ns.weights)
    cert = certificate_of(model)
    if cert is None:
        print(f"model '{cfg.model}' is a baseline without a contraction certificate: "
              "NOT CERTIFIED")
        return 1
    if ns.json:
        print(cert.to_json(indent=2))
    else:
        print(f"certificate of the {ns.weights} weights (epoch {int(data['epoch'])}) of "
              f"{ns.run_dir} ({cfg.model}, {cfg.modules}x{cfg.units}):")
        print(cert.summary())
    return 0 if cert.certified else 1


# -- bench / experiment ------------------------------------------------------------------------
def _delegate(sub: argparse.ArgumentParser, module: str) -> None:
    """Let ``combonet.<module>`` add its own arguments; fall back if it is not there yet."""
    import importlib

    try:
        mod = importlib.import_module(f"combonet.{module}")
        mod.add_arguments(sub)
        sub.set_defaults(func=mod.main_from_args)
    except ImportError as err:
        msg = f"combonet {module} is not available in this build ({err})"
        sub.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)

        def unavailable(ns: argparse.Namespace) -> int:
            print(f"error: {msg}", file=sys.stderr)
            return EXIT_USAGE

        sub.set_defaults(func=unavailable)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = Parser(prog="combonet", description="Provably stable networks of RNNs "
                    "(Kozachkov, Ennis & Slotine, NeurIPS 2022).")
    parser.add_argument("--version", action="version", version=f"combonet {__version__}")
    subs = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    tr = subs.add_parser("train", help="train a model (no flags: a small certified Sparse "
                         "Combo Net on MNIST-1D)", description="Train a combo net or a baseline.")
    add_train_arguments(tr)
    tr.set_defaults(func=cmd_train)

    ev = subs.add_parser("evaluate", help="accuracy of a saved run on a split",
                         description="Accuracy of a run's saved weights (same permutation).")
    ev.add_argument("run_dir", metavar="RUN_DIR")
    ev.add_argument("--split", choices=("val", "test"), default="test")
    ev.add_argument("--weights", choices=("best", "final"), default="best",
                    help="best-validation weights (default) or the final epoch's")
    ev.add_argument("--data-dir", default=None, help="override the run's data directory")
    ev.add_argument("--batch-size", type=_typed(int, False), default=500)
    ev.add_argument("--threads", type=_typed(int, False), default=None)
    ev.add_argument("--json", action="store_true", help="print one JSON line")
    ev.set_defaults(func=cmd_evaluate)

    ce = subs.add_parser("certify", help="recompute the certificate of a saved run; exit 0 iff "
                         "certified", description="Recompute a run's contraction certificate "
                         "from its saved weights. Exit status 0 iff certified.")
    ce.add_argument("run_dir", metavar="RUN_DIR")
    ce.add_argument("--weights", choices=("best", "final"), default="final")
    ce.add_argument("--json", action="store_true", help="print the certificate as JSON")
    ce.set_defaults(func=cmd_certify)

    _delegate(subs.add_parser("bench", help="benchmark the recurrence engine"), "bench")
    _delegate(subs.add_parser("experiment", help="run the paper's experiments"), "experiments")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``combonet`` console script and of ``python -m combonet``."""
    parser = build_parser()
    ns = parser.parse_args(argv)
    if getattr(ns, "func", None) is None:
        parser.print_help()
        return EXIT_USAGE
    debug = os.environ.get("COMBONET_DEBUG") not in (None, "", "0")
    try:
        return int(ns.func(ns) or 0)
    except KeyboardInterrupt:
        print("interrupted; continue with: combonet train --resume --out-dir RUN_DIR",
              file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, NotADirectoryError, PermissionError) as err:
        if debug:
            raise
        text = " ".join(str(err).split()) or type(err).__name__
        print(f"combonet {ns.command}: error: {text}", file=sys.stderr)
        return EXIT_USAGE


__all__ = ["Parser", "UsageError", "add_train_arguments", "build_parser", "main",
           "resolve_train_config"]
