"""``combonet compare``: a certified configuration and the models users would pick instead
(torch GRU and LSTM of about the same parameter count), trained side by side in one process.

The contenders take turns, one epoch each, with the same thread count, so a busy machine slows
them alike; each stops when its epochs are done or its wall-time budget is spent. Every
contender is a full run directory (``combonet certify`` / ``evaluate`` work on it) and the test
split is evaluated every epoch, so test accuracy can be drawn against wall time. The reported
accuracy is the test accuracy at the best-*validation* epoch.

Files in the comparison directory: ``compare.json`` (the plan: every contender's settings;
then the results), ``compare.csv``, ``compare.md`` (the table), ``time_to_accuracy.png`` and one
run directory per contender. ``--resume`` continues an interrupted comparison.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from .train.config import TrainConfig, read_config_file

PLAN = "compare.json"
LOCK = ".compare.lock"
#: Baselines a comparison can train, and the gate count of their cells (parameter matching).
BASELINE_GATES = {"gru": 3, "lstm": 4, "rnn": 1}
#: Adam learning rate of the baselines unless given: a common choice for GRU/LSTM classifiers.
BASELINE_LR = 3e-3
PLAN_FORMAT = 1


@dataclass
class ContenderResult:
    """One contender's outcome, read back from its run directory."""

    name: str
    model: str
    parameters: int
    status: str
    epochs: int
    best_epoch: int | None
    best_val: float | None
    test_at_best_val: float | None
    final_test: float | None
    wall_s: float
    certified: bool | None
    #: (cumulative wall seconds, test accuracy) after each epoch
    curve: list[tuple[float, float | None]] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "curve"}


@dataclass
class CompareResult:
    out_dir: Path
    contenders: list[ContenderResult]

    def table(self) -> str:
        """A markdown table, one row per contender."""
        head = ("| contender | model | parameters | epochs | status | test acc. (best-val "
                "epoch) | final test acc. | wall s | certified |\n|---|---|---|---|---|---|---|"
                "---|---|")
        rows = [head]
        for c in self.contenders:
            rows.append(
                f"| {c.name} | {c.model} | {c.parameters:,} | {c.epochs} | {c.status} | "
                f"{_pct(c.test_at_best_val)} (epoch {c.best_epoch}) | {_pct(c.final_test)} | "
                f"{c.wall_s:.0f} | {_yes(c.certified)} |")
        return "\n".join(rows)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def _yes(x: bool | None) -> str:
    return "n/a" if x is None else ("yes" if x else "NO")


def rnn_parameters(cell: str, hidden: int, input_size: int, num_classes: int) -> int:
    """Trainable parameters of a one-layer torch ``cell`` classifier with a linear head."""
    gates = BASELINE_GATES[cell]
    return gates * (hidden * (input_size + hidden) + 2 * hidden) + (hidden + 1) * num_classes


def matched_hidden(cell: str, parameters: int, input_size: int, num_classes: int) -> int:
    """The hidden size whose parameter count is closest to ``parameters``."""
    lo, hi = 1, 1
    while rnn_parameters(cell, hi, input_size, num_classes) < parameters:
        hi *= 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if rnn_parameters(cell, mid, input_size, num_classes) < parameters:
            lo = mid
        else:
            hi = mid
    return min((lo, hi), key=lambda h: abs(rnn_parameters(cell, h, input_size, num_classes)
                                          - parameters))


def parse_baseline(text: str) -> tuple[str, int | None]:
    """``gru`` (hidden size matched to the certified model) or ``gru:128`` (fixed)."""
    cell, sep, size = text.partition(":")
    if cell not in BASELINE_GATES:
        raise ValueError(f'invalid baseline "{text}". Must be a comma list of '
                         f"{list(BASELINE_GATES)}, each optionally with :HIDDEN (e.g. gru:128)")
    if not sep:
        return cell, None
    if not size.isdigit() or int(size) < 1:
        raise ValueError(f'invalid baseline "{text}": the hidden size after ":" must be an '
                         "integer >= 1")
    return cell, int(size)


def plan_contenders(base: TrainConfig, *, baselines: Sequence[str] = ("gru", "lstm"),
                    control: bool = False, hidden: int | None = None,
                    baseline_lr: float = BASELINE_LR, threads: str = "1"
                    ) -> dict[str, TrainConfig]:
    """The contenders' settings: ``base`` (a certifiable model), optionally its control
    (``L = B``: ``unconstrained-combo``, same settings), and each baseline with the same data,
    seed, batch size, epochs, optimiser, schedule and clipping, a hidden size matched to
    ``base``'s parameter count (``gru``), a given one (``gru:128``) or ``hidden``, and learning
    rate ``baseline_lr``. Each contender is named as given (``certified``, ``control``,
    ``gru``, ``gru-128``, ...)."""
    from .models.registry import MODELS, build_model, count_parameters

    base = base.validate()
    spec = MODELS[base.model]
    if not spec.certifiable:
        raise ValueError(f"combonet compare trains a certified model against baselines; "
                         f"model {base.model!r} is not certifiable (choose one of "
                         f"{', '.join(k for k, s in MODELS.items() if s.certifiable)})")
    specs = [parse_baseline(b) for b in baselines]
    if len(set(baselines)) != len(baselines):
        raise ValueError(f"each baseline once, got {list(baselines)}")
    runtime = {"threads": threads, "eval_test": "every", "out_dir": None, "quiet": True}
    out = {"certified": dataclasses.replace(base, **runtime)}
    if control:
        if base.model != "sparse-combo":
            raise ValueError("the control L = B (unconstrained-combo) exists for sparse-combo "
                             f"configurations, got model {base.model!r}; drop --control")
        out["control"] = dataclasses.replace(out["certified"], model="unconstrained-combo",
                                             coupling_rank=None)
    if baselines:
        data = _shapes(base)
        if hidden is None and not all(fixed for _, fixed in specs):
            target = count_parameters(build_model(base, *data))["total"]
        keep = {k: getattr(base, k) for k in (
            "task", "data_dir", "val_fraction", "limit_train", "limit_test", "permutation_seed",
            "optimizer", "momentum", "schedule", "lr_step_size", "lr_gamma", "weight_decay",
            "grad_clip", "batch_size", "epochs", "seed", "device", "certify_every")}
        for text, (cell, fixed) in zip(baselines, specs, strict=True):
            label = text.replace(":", "-")
            h = fixed or hidden or matched_hidden(cell, target, *data)
            out[label] = TrainConfig(**keep, **runtime, model=cell, hidden=h, lr=baseline_lr)
            out[label].validate()
    return out


def _shapes(cfg: TrainConfig) -> tuple[int, int]:
    """(input size, number of classes) of ``cfg``'s task, from a one-example load."""
    from .train.loop import load_data

    small = dataclasses.replace(cfg, limit_train=min(cfg.limit_train or 50, 50),
                                limit_test=min(cfg.limit_test or 10, 10))
    data = load_data(small)
    return data.features, data.num_classes


class Compare:
    """A comparison directory: its plan, lock and contenders' run directories."""

    def __init__(self, out_dir: str | Path) -> None:
        self.path = Path(out_dir)
        self.lock = FileLock(str(self.path / LOCK))

    def acquire(self) -> None:
        try:
            self.lock.acquire(timeout=0)
        except Timeout:
            raise ValueError(f"{self.path} is in use by another combonet compare") from None

    def release(self) -> None:
        self.lock.release()

    def plan(self) -> dict[str, Any]:
        path = self.path / PLAN
        if not path.is_file():
            raise ValueError(f"{self.path} holds no comparison ({PLAN} is missing); start one "
                             "without --resume")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return {"budget_s": data["budget_s"],
                    "contenders": {k: TrainConfig.from_dict(v, source=str(path))
                                   for k, v in data["contenders"].items()}}
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise ValueError(f"{path} is not a comparison plan ({err})") from None

    def write(self, name: str, text: str) -> None:
        tmp = self.path / f".{name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, self.path / name)


def compare(base: TrainConfig | None, out_dir: str | Path, *, baselines: Sequence[str] = (
            "gru", "lstm"), control: bool = False, budget_s: float | None = None,
            hidden: int | None = None, baseline_lr: float = BASELINE_LR, threads: str = "1",
            resume: bool = False, progress: Callable[[str], None] | None = None
            ) -> CompareResult:
    """Train the contenders round-robin (one epoch each in turn) until each has done its
    epochs or spent ``budget_s`` seconds (epochs end at a boundary, so a contender may exceed
    the budget by part of one epoch); ``resume`` continues the comparison in ``out_dir``."""
    from .train.loop import Trainer, TrainingDiverged
    from .train.rundir import RunDir

    say = progress or (lambda _: None)
    if budget_s is not None and not budget_s > 0:
        raise ValueError(f"budget_s must be > 0 seconds, got {budget_s!r}")
    cmp = Compare(out_dir)
    if resume:
        if not cmp.path.is_dir():
            raise ValueError(f"--resume: {cmp.path} is not a directory")
        cmp.acquire()
        try:
            plan = cmp.plan()
        except BaseException:
            cmp.release()
            raise
        budget_s = plan["budget_s"]
        configs = plan["contenders"]
    else:
        if cmp.path.exists() and (not cmp.path.is_dir() or any(cmp.path.iterdir())):
            raise ValueError(f"{cmp.path} exists and is not an empty directory; give a new "
                             "--out-dir (or --resume to continue a comparison there)")
        if base is None:
            raise ValueError("a comparison needs the settings of its certified model")
        configs = plan_contenders(base, baselines=baselines, control=control, hidden=hidden,
                                  baseline_lr=baseline_lr, threads=threads)
        cmp.path.mkdir(parents=True, exist_ok=True)
        cmp.acquire()
        for name, cfg in configs.items():
            cfg.out_dir = str(cmp.path / name)
    trainers: dict[str, Any] = {}
    try:
        if not resume:
            cmp.write(PLAN, json.dumps({"format": PLAN_FORMAT, "budget_s": budget_s,
                                        "contenders": {k: c.to_dict() for k, c in
                                                       configs.items()}}, indent=1))
        for name, cfg in configs.items():
            run = RunDir(cfg.out_dir)
            if run.status() in ("finished", "stopped", "diverged"):
                continue
            again = resume and run.has_checkpoint()
            trainers[name] = Trainer(cfg, resume=again)
            trainers[name].begin()
        spent = {name: sum(r.get("time", 0.0) for r in t.history)
                 for name, t in trainers.items()}
        active = list(trainers)
        while active:
            for name in list(active):
                t = trainers[name]
                try:
                    rec = t.advance()
                except TrainingDiverged as err:
                    t.diverged(err)
                    active.remove(name)
                    say(f"{name}: diverged ({err})")
                    continue
                spent[name] += rec["time"]
                say(f"{name:10s} epoch {rec['epoch']:3d}  val {_pct(rec['val_acc'])}  test "
                    f"{_pct(rec['test_acc'])}  {spent[name]:.0f}s")
                if t.next_epoch() is None:
                    t.finish("finished")
                    active.remove(name)
                elif budget_s is not None and spent[name] >= budget_s:
                    t.finish("stopped", f"the time budget of {budget_s:g} s was spent after "
                             f"epoch {rec['epoch']}")
                    active.remove(name)
    finally:
        for t in trainers.values():
            t.close()
        cmp.release()
    result = CompareResult(cmp.path, [collect(name, cmp.path / name) for name in configs])
    write_outputs(result, budget_s)
    return result


def collect(name: str, path: Path) -> ContenderResult:
    """A contender's result from its run directory (summary and per-epoch metrics)."""
    from .train.rundir import RunDir

    run = RunDir(path)
    s = run.summary() or {}
    history = run.history()
    cfg = run.config()
    elapsed, curve = 0.0, []
    for rec in history:
        elapsed += rec.get("time", 0.0)
        curve.append((elapsed, rec.get("test_acc")))
    best = s.get("best") or {}
    cert = s.get("certificate")
    return ContenderResult(
        name=name, model=cfg.model, parameters=int(run.record()["parameters"]["total"]),
        status=s.get("status", "interrupted"), epochs=len(history),
        best_epoch=best.get("epoch"), best_val=best.get("val_acc"),
        test_at_best_val=best.get("test_acc"),
        final_test=history[-1].get("test_acc") if history else None, wall_s=elapsed,
        certified=None if cert is None else bool(cert["certified"]), curve=curve)


def write_outputs(result: CompareResult, budget_s: float | None) -> None:
    """``compare.json`` (plan and results), ``compare.csv``, ``compare.md`` and the plot."""
    cmp = Compare(result.out_dir)
    plan = json.loads((cmp.path / PLAN).read_text(encoding="utf-8"))
    plan["results"] = [dict(c.row(), curve=c.curve) for c in result.contenders]
    plan["machine"] = {"cpus": os.cpu_count(), "loadavg": list(os.getloadavg())}
    cmp.write(PLAN, json.dumps(plan, indent=1))
    buf = io.StringIO()
    rows = [c.row() for c in result.contenders]
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    cmp.write("compare.csv", buf.getvalue())
    budget = "" if budget_s is None else f", budget {budget_s:g} s per contender"
    cmp.write("compare.md", f"{result.table()}\n\nWall s: the contender's epochs (training, "
              f"validation, test, certificate), taken in turns in one process{budget}.\n")
    plot_time_to_accuracy(result, cmp.path / "time_to_accuracy.png")


def plot_time_to_accuracy(result: CompareResult, path: Path) -> None:
    """Test accuracy against cumulative wall time, one line per contender."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.0, 3.4))
    for c in result.contenders:
        pts = [(t, a) for t, a in c.curve if a is not None]
        if pts:
            label = f"{c.name} ({c.model}, {c.parameters:,} p.)"
            ax.plot([t for t, _ in pts], [100 * a for _, a in pts], marker=".", label=label)
    ax.set_xlabel("wall time (s)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# -- command line ------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``combonet compare``."""
    add = parser.add_argument
    add("--config", metavar="FILE", help="settings of the certified model (YAML or TOML, as "
        "for combonet train; default: the train defaults)")
    add("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override one setting of --config (repeatable), e.g. --set epochs=10")
    add("--data-dir", default=None, help="folder with the MNIST IDX or CIFAR-10 files")
    add("--baselines", default="gru,lstm", metavar="LIST",
        help=f"comma list of {', '.join(BASELINE_GATES)} (hidden size matched to the certified "
        "model's parameters) or NAME:HIDDEN (e.g. gru:128), or none (default: gru,lstm)")
    add("--control", action="store_true",
        help="also train the control L = B (unconstrained-combo) at the same settings")
    add("--hidden", type=int, default=None,
        help="hidden units of every baseline (default: matched to the certified model's "
        "parameter count)")
    add("--baseline-lr", type=float, default=BASELINE_LR,
        help=f"learning rate of the baselines (default: {BASELINE_LR:g})")
    add("--budget-s", type=float, default=None, metavar="SECONDS",
        help="wall-time budget of each contender (default: none; its epochs decide)")
    add("--threads", default="1", help="torch threads, the same for every contender "
        "(default: 1)")
    add("--out-dir", required=True, help="comparison directory (new or empty)")
    add("--resume", action="store_true", help="continue the comparison in --out-dir")
    add("--json", action="store_true", help="print the results as JSON")


def main_from_args(ns: argparse.Namespace) -> int:
    """Entry point of ``combonet compare``."""
    from ._validate import threads as check_threads

    check_threads("threads", ns.threads)
    if ns.threads == "auto":
        raise ValueError("combonet compare needs one fixed --threads for every contender, "
                         "got 'auto'")
    base = None
    if not ns.resume:
        data = read_config_file(ns.config) if ns.config else {}
        for item in ns.overrides:
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise ValueError(f"--set takes KEY=VALUE, got {item!r}")
            data[key.strip()] = value.strip()
        if ns.data_dir is not None:
            data["data_dir"] = ns.data_dir
        base = TrainConfig.from_dict(data, source=ns.config or "--set")
    elif ns.config or ns.overrides:
        raise ValueError("--resume continues the comparison with its saved settings; drop "
                         "--config and --set")
    names = [] if ns.baselines.strip().lower() == "none" else [
        s.strip() for s in ns.baselines.split(",") if s.strip()]
    t0 = time.time()
    result = compare(base, ns.out_dir, baselines=names, control=ns.control,
                     budget_s=ns.budget_s, hidden=ns.hidden, baseline_lr=ns.baseline_lr,
                     threads=str(ns.threads), resume=ns.resume,
                     progress=None if ns.json else lambda line: print(line, flush=True))
    if ns.json:
        print(json.dumps([c.row() for c in result.contenders]))
    else:
        print(result.table())
        print(f"comparison directory: {result.out_dir} (wall time {time.time() - t0:.0f} s)")
    sys.stdout.flush()
    return 0


__all__ = ["CompareResult", "ContenderResult", "add_arguments", "compare", "main_from_args",
           "matched_hidden", "parse_baseline", "plan_contenders", "rnn_parameters"]
