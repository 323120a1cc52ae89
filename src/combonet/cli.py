"""The ``combonet`` command line: ``train``, ``evaluate``, ``certify``, ``analyze``, ``bench``,
``experiment``, ``compare`` and ``tune``.

Errors in what the user asked for (bad flags, impossible hyperparameters, missing or corrupt
files) print one line and exit with status 2; failures of the machine (a full disk) print one
line and exit with status 1; Ctrl-C prints the command that continues the run (status 130).
Set ``COMBONET_DEBUG=1`` to see the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from ._validate import integer, threads
from .train.config import TrainConfig

EXIT_USAGE = 2
#: Environment failures (a full disk, ...): one line too, but not the user's input.
EXIT_FAILURE = 1


class UsageError(ValueError):
    """A problem with what the user asked for (exit status 2)."""


class Parser(argparse.ArgumentParser):
    """``ArgumentParser`` whose errors are one line: ``combonet train: error: ...``."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# -- train flags: help generated from the registries, so it cannot go stale -------------------
_HELP: dict[str, str] = {
    "data_dir": "folder with the MNIST IDX or CIFAR-10 binary files",
    "val_fraction": "fraction of the training pool held out for validation (model selection)",
    "limit_train": "use only this many training examples (seeded subset)",
    "limit_test": "use only this many test examples (seeded subset)",
    "permutation_seed": "seed of the fixed pixel permutation of permuted tasks",
    "modules": "p: number of modules (subnetworks) of a combo net",
    "units": "n: units per module",
    "density": "fraction of non-zero weights in each sparse module (paper: 0.033)",
    "magnitude": "non-zero sparse weights are U(-1, 1) * magnitude",
    "coupling_density": "fraction of module pairs coupled (default: all)",
    "init_scale": "initial scale of the coupling B (entries N(0, init_scale^2 / N))",
    "hidden": "hidden units of the baselines",
    "lr": "learning rate",
    "momentum": "momentum, in [0, 1)",
    "lr_step_size": "epochs between decays of the step schedule",
    "lr_gamma": "decay factor of the step schedule",
    "weight_decay": "L2 weight decay",
    "grad_clip": "clip the gradient norm to this value ('none' to disable)",
    "batch_size": "global batch size (split evenly across torchrun processes)",
    "epochs": "number of epochs",
    "seed": "seed of the weights, the validation split and the shuffling, in [0, 2^32 - 1]",
    "out_dir": "run directory, new or empty (default: runs/TASK-MODEL-TIMESTAMP-RANDOM)",
    "threads": "torch CPU threads: auto (1 for small per-step products, else the free cores; "
               "benchmarks/README.md) or 1 to 1024",
    "coupling_rank": "rank r of a low-rank eq.-3 coupling B = U V^T (a shared communication "
                     "subspace; O(N r) per step)",
    "tau_train": "train the time constants: none, module (one per module) or unit (one per "
                 "unit); started log-spaced in (1, tau_max)",
    "tau_max": "largest time constant (tau in [1, tau_max] when trained)",
    "readout": "last state, mean of all states, attention (a learned combination) or max "
               "(each unit's largest state over time)",
    "eval_test": "best: evaluate the test split at new best-validation epochs and the last "
                 "(where it is reported); every: every epoch",
    "log_interval": "steps between progress updates (0: none)",
    "certify_every": "certify combo nets every k epochs (0: only at the end)",
    "quiet": "no progress bar and no per-epoch lines",
    "init_from": "start a new run from the final weights of the finished run RUN_DIR (same "
                 "model and data; fresh optimiser and schedule), e.g. to train longer",
    "epoch_trials": "fresh training trials per epoch (seeded by seed and epoch)",
    "val_trials": "fixed validation trials (balanced over tasks)",
    "test_trials": "fixed test trials (balanced over tasks)",
    "other_weight": "loss weight of the unscored steps of a trial (the scored decision steps "
                    "weigh 1; Yang et al. 2019: 0.2; 0 = decision steps only)",
    "areas": "areas file (TOML, YAML or JSON; docs/neuro.md) of a certified network of areas; "
             "implies --model areas; its content is stored in the run's config.json",
    "ctrnn_tau": "time constant of the ctrnn in ms (alpha = task dt / ctrnn_tau; NeuroGym's "
                 "recipe: 100 = dt)",
}
_SHORT = {"modules": "-p", "units": "-n"}


def _registry_help() -> dict[str, str]:
    from .data.registry import task_names
    from .models.registry import MODELS, default_map, discrete_maps
    from .train.config import DEVICES, OPTIMIZERS, SCHEDULES

    return {
        "task": f"task, one of: {', '.join(task_names())} (listed below)",
        "model": f"model, one of: {', '.join(MODELS)} (listed below)",
        "method": f"discrete map, one of: {', '.join(discrete_maps())}",
        "dt": f"step dt of the discrete map (the default map is {default_map()}); tau = 1, so "
              "dt must lie in (0, 1]",
        "optimizer": f"one of: {', '.join(OPTIMIZERS)}",
        "schedule": "learning-rate schedule, one of: "
                    + "; ".join(f"{k} ({o.description})" for k, o in SCHEDULES.items()),
        "device": f"one of: {', '.join(DEVICES)}",
    }


def _applies_to(name: str) -> str:
    """' (only for ...)' for a setting that applies to some tasks/models/optimizers/
    schedules."""
    from .models.registry import MODELS
    from .train.config import OPTIMIZERS, SCHEDULES, SEQUENCE_TASK_FLAGS, TRIAL_TASK_FLAGS

    if name in TRIAL_TASK_FLAGS:
        return " (only for trial tasks)"
    if name in SEQUENCE_TASK_FLAGS and name != "readout":
        return " (only for sequence-classification tasks)"

    for kind, registry in (("models", MODELS), ("optimizers", OPTIMIZERS),
                           ("schedules", SCHEDULES)):
        users = [k for k, spec in registry.items() if name in spec.flags]
        if users and len(users) < len(registry):
            return f" (only for {kind} {', '.join(users)})"
    return ""


def train_epilog() -> str:
    """The tasks and models, with what each is (from the registries)."""
    from .data import TASKS, TRIAL_TASKS
    from .models.registry import MODELS

    width = 2 + max(map(len, [*TASKS, *TRIAL_TASKS, *MODELS]))
    lines = ["tasks:"]
    lines += [f"  {name:{width}s}{t.description}" + (" (needs --data-dir)" if t.needs_data_dir
                                                  else "") for name, t in TASKS.items()]
    lines += [f"  {name:{width}s}{t.description}" for name, t in TRIAL_TASKS.items()]
    lines.append("models:")
    lines += [f"  {name:{width}s}{spec.description}" for name, spec in MODELS.items()]
    return "\n".join(lines)


def demo_text() -> str:
    """What ``combonet train`` with no flags trains (from the defaults and registries)."""
    from .data import TASKS
    from .models.registry import MODELS

    d = TrainConfig()
    return (f"a {d.modules}x{d.units} {MODELS[d.model].description.split(' (')[0]} on "
            f"{TASKS[d.task].description} ({d.task}), {d.epochs} epochs")


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
    helps = {**_HELP, **_registry_help()}
    parser.add_argument("--config", metavar="FILE",
                        help="YAML (.yaml/.yml) or TOML (.toml) file of settings; flags win")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out-dir from its last checkpoint (same "
                        "settings; epochs too under the cosine schedule)")
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        names = [flag] + ([_SHORT[f.name]] if f.name in _SHORT else [])
        default = getattr(defaults, f.name)
        text = helps.get(f.name, "") + _applies_to(f.name)
        if hints[f.name] is bool:
            parser.add_argument(*names, dest=f.name, action="store_true",
                                default=argparse.SUPPRESS, help=text)
            continue
        args = typing.get_args(hints[f.name])
        optional = type(None) in args
        kind = next(a for a in args if a is not type(None)) if args else hints[f.name]
        metavar = {"init_from": "RUN_DIR", "areas": "FILE"}.get(f.name, f.name.upper())
        parser.add_argument(*names, dest=f.name, type=_typed(kind, optional),
                            default=argparse.SUPPRESS, metavar=metavar,
                            help=text if "(default:" in text else f"{text} (default: {default})")


def resolve_train_config(ns: argparse.Namespace) -> TrainConfig:
    """Defaults < the run's ``config.json`` (``--resume``) or the source run's
    (``--init-from``) < ``--config FILE`` < flags. A setting the user gave (flag or file) that
    does not apply to the chosen model, optimizer or schedule is refused."""
    from .train.config import read_config_file
    from .train.rundir import CONFIG, RunDir

    names = set(TrainConfig.field_names())
    given = {k: v for k, v in vars(ns).items() if k in names}
    file_data = read_config_file(ns.config) if ns.config else {}
    file_keys = {str(k).replace("-", "_"): str(k) for k in file_data}

    def setting(name: str) -> Any:
        if name in given:
            return given[name]
        return next((v for k, v in file_data.items() if str(k).replace("-", "_") == name),
                    None)

    out_dir, init_from = setting("out_dir"), setting("init_from")
    base = None
    if ns.resume and init_from is not None:
        raise UsageError("--resume continues a run in place and --init-from starts a new one "
                         "from a finished run's weights: give one of them")
    if ns.resume:
        if out_dir is None:
            raise UsageError("--resume needs --out-dir RUN_DIR (the run to continue)")
        run = RunDir(out_dir)
        if run.file(CONFIG).exists():
            base = run.config()
    elif init_from is not None:
        base = RunDir(init_from).config()
        base.out_dir = None
    if setting("areas") is not None and setting("model") is None and \
            (base is None or base.areas is None):
        given["model"] = "areas"  # --areas FILE is a network of areas unless --model says else
    cfg = TrainConfig.from_dict(file_data, base=base, source=str(ns.config))
    cfg = TrainConfig.from_dict(given, base=cfg, source="the command line")
    bad = cfg.not_applicable()  # before validate(): "does not apply" beats "out of range"
    for name in given:
        if name in bad:
            raise UsageError(f"--{name.replace('_', '-')} {bad[name]}; remove it")
    for name, key in file_keys.items():
        if name in bad:
            raise UsageError(f"{key} (in {ns.config}) {bad[name]}; remove it")
    cfg.validate()
    return cfg


def cmd_train(ns: argparse.Namespace) -> int:
    from .train import ConsoleReporter, CurvePlotter, Reporters, train

    cfg = resolve_train_config(ns)
    reporter = Reporters([ConsoleReporter(quiet=cfg.quiet, log_interval=cfg.log_interval,
                                          prog="combonet train"), CurvePlotter()])
    return train(cfg, resume=ns.resume, reporter=reporter).exit_code


# -- evaluate / certify ------------------------------------------------------------------------
def cmd_evaluate(ns: argparse.Namespace) -> int:
    import torch

    from . import threads as thread_rule
    from .data import is_trial_task
    from .train.loop import evaluate_split, load_data
    from .train.rundir import RunDir

    try:
        integer("--batch-size", ns.batch_size, 1)
        setting = threads("--threads", ns.threads)
    except ValueError as err:
        raise UsageError(str(err)) from None
    run = RunDir(ns.run_dir).load_model(ns.weights, data_dir=ns.data_dir)
    net = getattr(run.model, "network", None)
    thread_rule.apply_threads(setting, units=net.n if net is not None else run.config.hidden,
                              batch=ns.batch_size, rank=thread_rule.running_rank(run.model))
    if ns.data_dir is not None and is_trial_task(run.config.task):
        raise UsageError(f"--data-dir does not apply to the trial task {run.config.task} (its "
                         "trials are made from the run's seed); remove it")
    splits = load_data(run.config, permutation=run.record["data"].get("permutation"))
    ds = getattr(splits, ns.split)
    loss, acc, per_task = evaluate_split(run.model, splits, ns.split, ns.batch_size,
                                         torch.device("cpu"))
    out = {"run_dir": str(ns.run_dir), "split": ns.split, "weights": ns.weights,
           "epoch": run.epoch, "examples": len(ds), "loss": loss, "accuracy": acc}
    if per_task is not None:
        out["per_task"] = per_task
    if ns.json:
        print(json.dumps(out))
    else:
        what = "performance" if per_task is not None else "accuracy"
        unit = "trials" if per_task is not None else "examples"
        print(f"{ns.split} {what} {100 * acc:.2f}% (loss {loss:.4f}) on {len(ds)} {unit}, "
              f"{ns.weights} weights (epoch {out['epoch']}) of {ns.run_dir}")
        if per_task is not None and len(per_task) > 1:
            for task, value in per_task.items():
                print(f"  {task}: {100 * value:.1f}%")
    return 0


def cmd_certify(ns: argparse.Namespace) -> int:
    from .models.registry import model_spec
    from .train.loop import certificate_of
    from .train.rundir import RunDir

    folder = RunDir(ns.run_dir)
    cfg = folder.config()
    if not model_spec(cfg.model).certifiable:
        print(f"model '{cfg.model}' is a baseline without a contraction certificate: "
              "NOT CERTIFIED")
        return 1
    run = folder.load_model(ns.weights)
    cert = certificate_of(run.model)  # re-derived from the saved tensors, as they run
    if ns.json:
        print(cert.to_json(indent=2))
    else:
        area_map = getattr(run.model, "area_map", None)
        shape = (f"areas '{area_map.name}', {area_map.n} units" if area_map is not None
                 else f"{cfg.model}, {cfg.modules}x{cfg.units}")
        print(f"certificate of the {ns.weights} weights (epoch {run.epoch}) of "
              f"{ns.run_dir} ({shape}):")
        print(cert.summary())
    if not cert.certified:  # one line that names the module or condition that fails
        reason = cert.failures[0] if cert.failures else "the discrete map is not covered"
        print(f"combonet certify: NOT CERTIFIED: {reason}", file=sys.stderr)
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

    tr = subs.add_parser("train", help=f"train a model (no flags: the demo, {demo_text()})",
                         description="Train a combo net or a baseline.\nA setting that does "
                         "not apply to the chosen model, optimizer or schedule is refused.",
                         epilog=train_epilog(),
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    add_train_arguments(tr)
    tr.set_defaults(func=cmd_train)

    ev = subs.add_parser("evaluate", help="accuracy of a saved run on a split",
                         description="Accuracy of a run's saved weights (same permutation).")
    ev.add_argument("run_dir", metavar="RUN_DIR")
    ev.add_argument("--split", choices=("val", "test"), default="test")
    ev.add_argument("--weights", choices=("best", "final"), default="best",
                    help="best-validation weights (default) or the final epoch's")
    ev.add_argument("--data-dir", default=None, help="override the run's data directory")
    ev.add_argument("--batch-size", type=_typed(int, False), default=500,
                    help="examples per batch, >= 1 (default: 500)")
    ev.add_argument("--threads", default="auto",
                    help="torch CPU threads: auto (default) or 1 to 1024")
    ev.add_argument("--json", action="store_true", help="print one JSON line")
    ev.set_defaults(func=cmd_evaluate)

    ce = subs.add_parser("certify", help="recompute the certificate of a saved run; exit 0 iff "
                         "certified", description="Recompute a run's contraction certificate "
                         "from its saved weights. Exit status 0 iff certified.")
    ce.add_argument("run_dir", metavar="RUN_DIR")
    ce.add_argument("--weights", choices=("best", "final"), default="final")
    ce.add_argument("--json", action="store_true", help="print the certificate as JSON")
    ce.set_defaults(func=cmd_certify)

    _delegate(subs.add_parser("analyze", help="analyses of a trained network of areas: "
                              "certified fixed points, per-area PCA, lesions, communication",
                              description="Analyses of a run on a trial task (its config "
                              "rebuilds the model and regenerates its test trials): certified "
                              "fixed points, per-area PCA, lesions and pathway cuts with their "
                              "certificates, reduced-rank regression between areas. Figures "
                              "and analysis.json go to --out (default RUN/analysis)."),
              "analysis.cli")
    _delegate(subs.add_parser("bench", help="benchmark the recurrence engine"), "bench")
    _delegate(subs.add_parser("experiment", help="run the paper's experiments"), "experiments")
    _delegate(subs.add_parser("compare", help="train a certified config and GRU/LSTM baselines "
                              "side by side (test accuracy against wall time)"), "compare")
    _delegate(subs.add_parser("tune", help="tune a configuration with Optuna (validation "
                              "accuracy, median pruning, resumable SQLite study)"), "tune")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``combonet`` console script and of ``python -m combonet``."""
    parser = build_parser()
    ns = parser.parse_args(argv)
    if getattr(ns, "func", None) is None:
        parser.print_help()
        return EXIT_USAGE
    debug = os.environ.get("COMBONET_DEBUG") not in (None, "", "0")
    from .train.loop import TrainingInterrupted

    try:
        return int(ns.func(ns) or 0)
    except TrainingInterrupted as stop:
        print(stop.hint(), file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError,
            PermissionError) as err:
        if debug:
            raise
        return _error(ns.command, err, EXIT_USAGE)
    except OSError as err:  # a full disk, an I/O error: not the user's input, still one line
        if debug:
            raise
        return _error(ns.command, err, EXIT_FAILURE)


def _error(command: str, err: BaseException, code: int) -> int:
    text = " ".join(str(err).split()) or type(err).__name__
    print(f"combonet {command}: error: {text}", file=sys.stderr)
    return code


__all__ = ["Parser", "UsageError", "add_train_arguments", "build_parser", "demo_text", "main",
           "resolve_train_config", "train_epilog"]
