"""The options and the entry point of ``combonet tune``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..train.config import TrainConfig, read_config_file
from .study import StudyResult, TrialRecord, run_study

#: Rows of the final table (the best completed trials).
SHOWN = 10
#: ``--set`` keys that have their own flag (or are the study's to choose).
OWN_FLAG = {"out_dir": "--out-dir STUDY_DIR (trial runs go to STUDY_DIR/trials/NNNN)",
            "threads": "--threads", "init_from": "nothing: tuning starts every trial afresh"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``combonet tune``."""
    add = parser.add_argument
    add("--config", metavar="FILE", default=None,
        help="base settings, a YAML/TOML file as `combonet train --config` takes (default: the "
        "`combonet train` defaults); its out_dir is ignored")
    add("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
        help="one base setting, e.g. --set epochs=20 (repeatable; wins over --config)")
    add("--out-dir", required=True, metavar="STUDY_DIR",
        help="the study directory (new, empty, or a study to resume)")
    add("--trials", type=int, default=None, metavar="N",
        help="finished (completed + pruned) trials the study should hold; the same command "
        "with a larger N continues the study")
    add("--timeout-s", type=float, default=None, metavar="S",
        help="seconds for this run: no trial starts after them and a running trial stops at "
        "the end of its epoch (recorded as failed)")
    add("--space", metavar="SPACE.yaml", default=None,
        help="search space file, e.g. `lr: {log: [1.0e-3, 0.1]}` (default: one per model "
        "family; see docs/tuning.md)")
    add("--seed", type=int, default=0, help="seed of the TPE sampler (default: 0)")
    add("--threads", type=int, default=1, help="torch threads of every trial (default: 1)")
    add("--allow-uncertified", action="store_true",
        help="keep trials whose final weights are not certified (by default they fail, so the "
        "best configuration is a certified one)")


def _sets(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        name = key.replace("-", "_")
        if name in OWN_FLAG:
            raise ValueError(f"--set {key}: use {OWN_FLAG[name]}")
        out[key] = value
    return out


def resolve_base(ns: argparse.Namespace) -> TrainConfig:
    """Defaults < ``--config FILE`` < ``--set``; a given setting that does not apply to the
    chosen model, optimizer or schedule is refused (as ``combonet train`` does)."""
    file_data = read_config_file(ns.config) if ns.config else {}
    sets = _sets(ns.settings)
    cfg = TrainConfig.from_dict(file_data, source=str(ns.config))
    cfg = TrainConfig.from_dict(sets, base=cfg, source="--set")
    bad = cfg.not_applicable()
    for key in sets:
        if key.replace("-", "_") in bad:
            raise ValueError(f"--set {key} {bad[key.replace('-', '_')]}; remove it")
    for key in file_data:
        if str(key).replace("-", "_") in bad:
            raise ValueError(f"{key} (in {ns.config}) {bad[str(key).replace('-', '_')]}; "
                             "remove it")
    cfg.out_dir = None
    return cfg


def _params(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in params.items())


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def trial_line(r: TrialRecord) -> str:
    """One line per trial as it ends."""
    cert = {True: "certified", False: "NOT certified", None: ""}[r.certified]
    wall = "" if r.wall_s is None else f"{r.wall_s:.1f} s"
    head = f"trial {r.number:4d} {r.state:8s} val {_pct(r.value):>6s} {wall:>8s} {cert}"
    tail = f" ({r.reason})" if r.state == "FAIL" and r.reason else ""
    return f"{head.rstrip()}  {_params(r.params)}{tail}"


def report(res: StudyResult) -> str:
    """The study's counts, its best completed trials, and where the best config is."""
    states = [t.state for t in res.trials]
    counts = ", ".join(f"{states.count(s)} {s.lower()}" for s in ("COMPLETE", "PRUNED", "FAIL")
                       if s in states)
    why = {"trials": "the study holds the trials asked for", "timeout": "the time ran out",
           "failures": "too many trials in a row failed"}[res.stopped]
    lines = [f"study {res.study_dir}: {len(res.trials)} trials ({counts or 'none'}); this run "
             f"added {res.new_trials} and stopped because {why}"]
    done = sorted((t for t in res.trials if t.state == "COMPLETE"), key=lambda t: -(t.value or 0))
    if done:
        lines.append(f"{'trial':>5s}  {'val':>6s}  {'test':>6s}  {'epoch':>5s}  {'wall':>8s}  "
                     "cert  settings")
        for t in done[:SHOWN]:
            cert = {True: "yes", False: "NO", None: "-"}[t.certified]
            wall = "-" if t.wall_s is None else f"{t.wall_s:.1f} s"
            lines.append(f"{t.number:5d}  {_pct(t.value):>6s}  {_pct(t.test_acc):>6s}  "
                         f"{t.best_epoch if t.best_epoch is not None else '-':>5}  {wall:>8s}  "
                         f"{cert:4s}  {_params(t.params)}")
    if res.best is not None:
        lines.append(f"best: trial {res.best.number}, validation accuracy "
                     f"{_pct(res.best.value)}; its settings: {res.best_path}")
        lines.append(f"train it: combonet train --config {res.best_path}")
    lines.append(f"every trial: {res.csv_path}")
    return "\n".join(lines)


def main_from_args(ns: argparse.Namespace) -> int:
    """Run (or resume) the study; print one line per trial and a report. Exit status 0 with a
    best config, 1 when no trial completed, 130 on Ctrl-C."""
    base = resolve_base(ns)
    try:
        res = run_study(base, ns.out_dir, trials=ns.trials, timeout_s=ns.timeout_s,
                        space=_space(ns.space, base), seed=ns.seed, threads=ns.threads,
                        on_trial=lambda r: print(trial_line(r), flush=True))
    except KeyboardInterrupt:
        print(f"interrupted; run the same command again to continue the study in "
              f"{ns.out_dir}", file=sys.stderr)
        return 130
    print(report(res), flush=True)
    if res.best is None:
        print("combonet tune: no trial completed; trials.csv gives the reasons", file=sys.stderr)
        return 1
    return 0


def _space(path: str | None, base: TrainConfig) -> Any:
    from .space import read_space

    return None if path is None else read_space(path, base.validate())


__all__ = ["add_arguments", "main_from_args", "report", "resolve_base", "trial_line"]
