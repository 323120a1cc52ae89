"""The study of ``combonet tune``: Optuna over the training loop, stored in its directory.

A study directory holds

* ``tune.json``   the base config, the space and the sampler seed it was created with;
* ``study.db``    the Optuna study (SQLite): running the same command again resumes it;
* ``trials/NNNN`` one full run directory per trial (``combonet certify`` works on it);
* ``best.yaml``   the best trial's settings, a file ``combonet train --config`` accepts;
* ``trials.csv``  one row per trial;
* ``.tune.lock``  held by the process running the study.

The objective is the best *validation* accuracy of a trial's run (the test split is logged, never
used); the median rule prunes a trial whose validation accuracy falls below the median of the
completed trials' at the same epoch.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import _validate as v
from ..train.checkpoint import atomic_write_text
from ..train.config import ConfigError, TrainConfig
from .space import Param, Space, default_space, parse_space, space_to_dict, suggest

META = "tune.json"
STUDY_DB = "study.db"
TRIALS = "trials"
BEST_CONFIG = "best.yaml"
TRIALS_CSV = "trials.csv"
LOCK = ".tune.lock"
STUDY_NAME = "combonet-tune"
FORMAT = 1
#: Settings of the base config that may differ when a study resumes (where files live, output).
RESUME_FREE = ("out_dir", "data_dir", "quiet", "log_interval")
#: Settings left out of ``best.yaml`` (the run directory, a start from other weights, output).
NOT_IN_BEST = ("out_dir", "init_from", "quiet")


@dataclass
class TrialRecord:
    """One trial as ``trials.csv`` lists it (``value``: its best validation accuracy)."""

    number: int
    state: str
    value: float | None
    params: dict[str, Any]
    wall_s: float | None = None
    certified: bool | None = None
    best_epoch: int | None = None
    test_acc: float | None = None
    reason: str = ""
    run_dir: str | None = None


@dataclass
class StudyResult:
    """What :func:`run_study` returns. ``stopped`` says why this call ended: ``trials`` (enough
    finished trials), ``timeout`` or ``failures`` (too many failed trials in a row)."""

    study_dir: Path
    trials: list[TrialRecord]
    best: TrialRecord | None
    best_config: TrainConfig | None
    best_path: Path | None
    csv_path: Path
    stopped: str
    new_trials: int = 0
    study: Any = field(default=None, repr=False)

    @property
    def finished(self) -> int:
        """Completed plus pruned trials (what ``--trials`` counts)."""
        return sum(t.state in ("COMPLETE", "PRUNED") for t in self.trials)


# -- the study directory ------------------------------------------------------------------------
def _meta(base: TrainConfig, space: Space, seed: int) -> dict[str, Any]:
    from .. import __version__

    fixed = {k: val for k, val in base.to_dict().items() if k not in RESUME_FREE}
    return json.loads(json.dumps({"format": FORMAT, "base": fixed, "space": space_to_dict(space),
                                  "seed": seed, "combonet_version": __version__}))


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    out = []
    a, b = old.get("base", {}), new["base"]
    for k in sorted(set(a) | set(b)):
        if a.get(k, "absent") != b.get(k, "absent"):
            out.append(f"{k}={a.get(k, 'absent')!r} (study) vs {b.get(k, 'absent')!r} (now)")
    a, b = old.get("space", {}), new["space"]
    for k in sorted(set(a) | set(b)):
        if a.get(k) != b.get(k):
            out.append(f"space {k}: {a.get(k, 'absent')} (study) vs {b.get(k, 'absent')} (now)")
    if old.get("seed") != new["seed"]:
        out.append(f"seed={old.get('seed')!r} (study) vs {new['seed']!r} (now)")
    return out


def _read_meta(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read {path}: {err}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path} is not a combonet tune study record (format {FORMAT})")
    return data


class StudyDir:
    """A study directory, claimed for one process (``filelock``) until :meth:`release`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock: Any = None

    def file(self, name: str) -> Path:
        return self.path / name

    def _refuse_foreign(self) -> None:
        entries = sorted(e for e in os.listdir(self.path) if e != LOCK)
        if entries and not self.file(META).is_file():
            shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
            raise ValueError(f"{self.path} is not empty ({shown}) and is not a combonet tune "
                             "study; choose a new or empty --out-dir (nothing was changed)")

    def claim(self, meta: dict[str, Any]) -> bool:
        """Lock the directory and check (or write) ``tune.json``; True when the study is new."""
        from filelock import FileLock, Timeout

        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"--out-dir {self.path} exists and is not a directory")
        if self.path.is_dir():
            self._refuse_foreign()  # before anything is written into a user's folder
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ValueError(f"cannot create study directory {self.path}: {err.strerror}") \
                from None
        lock = FileLock(str(self.file(LOCK)), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise ValueError(f"{self.path} is in use by another combonet tune process (it "
                             f"holds {self.file(LOCK)}); wait for it or choose another "
                             "--out-dir") from None
        self._lock = lock
        try:
            self._refuse_foreign()
            if not self.file(META).is_file():
                atomic_write_text(self.file(META), json.dumps(meta, indent=2) + "\n")
                return True
            diffs = _differences(_read_meta(self.file(META)), meta)
            if diffs:
                raise ValueError(f"{self.path} holds a study of other settings: "
                                 f"{'; '.join(diffs)}; run the command that created it to "
                                 "resume, or choose a new --out-dir")
            return False
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None


# -- one trial ----------------------------------------------------------------------------------
def _record(trial: Any, study_dir: Path) -> TrialRecord:
    """A :class:`TrialRecord` of a finished Optuna ``FrozenTrial``."""
    a = trial.user_attrs
    value = trial.value if trial.state.name == "COMPLETE" else a.get("best_val_acc")
    return TrialRecord(trial.number, trial.state.name, value, dict(trial.params),
                       a.get("wall_s"), a.get("certified"), a.get("best_epoch"),
                       a.get("test_acc"), a.get("reason", ""), a.get("run_dir"))


def _summarise(trial: Any, trainer: Any, result: Any) -> None:
    """Copy what the run's summary says into the trial's user attributes."""
    best = trainer.best or {}
    cert = (result.summary or {}).get("certificate") if result is not None else None
    trial.set_user_attr("best_epoch", best.get("epoch"))
    trial.set_user_attr("best_val_acc", best.get("val_acc"))
    trial.set_user_attr("test_acc", best.get("test_acc"))
    trial.set_user_attr("certified", None if cert is None else bool(cert["certified"]))


def _verdict(trial: Any, epoch: int, last: bool, deadline: float | None) -> tuple[str, str]:
    """After an epoch that is not the last: go on (``COMPLETE``), prune, or stop for time."""
    if last:
        return "COMPLETE", ""
    if trial.should_prune():
        return "PRUNED", (f"pruned after epoch {epoch}: validation accuracy below the median "
                          "of the completed trials' at that epoch")
    if deadline is not None and time.monotonic() >= deadline:
        return "FAIL", f"stopped after epoch {epoch}: the time budget (--timeout-s) ran out"
    return "COMPLETE", ""


def _train(trial: Any, cfg: TrainConfig, deadline: float | None, rel: str) -> tuple[str, str]:
    """Train one trial's run in ``rel``, reporting validation accuracy each epoch;
    ``(state, reason)``."""
    from ..train.loop import Trainer, TrainingDiverged

    trainer = Trainer(cfg)
    trial.set_user_attr("run_dir", rel)
    result, state, reason = None, "COMPLETE", ""
    try:
        trainer.begin()
        while trainer.next_epoch() is not None:
            rec = trainer.advance()
            trial.report(rec["val_acc"], rec["epoch"])
            state, reason = _verdict(trial, rec["epoch"], trainer.next_epoch() is None, deadline)
            if state != "COMPLETE":
                break
        result = trainer.finish("finished" if state == "COMPLETE" else "stopped", reason)
    except TrainingDiverged as err:
        result = trainer.diverged(err)
        state, reason = "FAIL", f"diverged: {_one_line(err)}"
    finally:
        trainer.close()
    _summarise(trial, trainer, result)
    return state, reason


def _run_trial(study: Any, space: Space, base: TrainConfig, study_dir: Path,
               deadline: float | None, require_certified: bool = True) -> TrialRecord:
    """Ask for a trial, train it, tell the study how it ended."""
    from optuna.trial import TrialState

    trial = study.ask()
    t0 = time.monotonic()
    rel = f"{TRIALS}/{trial.number:04d}"
    state, reason = "FAIL", ""
    try:
        try:
            values = suggest(trial, space, base)
            cfg = TrainConfig.from_dict({**values, "out_dir": str(study_dir / rel)}, base=base)
            cfg.validate()
        except ValueError as err:  # ConfigError included: e.g. an infeasible Theorem-1 setting
            reason = f"invalid settings: {_one_line(err)}"
        else:
            try:
                state, reason = _train(trial, cfg, deadline, rel)
            except ValueError as err:  # refused while building (data, model, run directory)
                reason = f"cannot train: {_one_line(err)}"
    except BaseException as err:  # Ctrl-C or a bug: the trial is failed, the study kept
        what = "interrupted" if isinstance(err, KeyboardInterrupt) else _one_line(err)
        trial.set_user_attr("reason", f"error: {what}")
        trial.set_user_attr("wall_s", time.monotonic() - t0)
        study.tell(trial, state=TrialState.FAIL)
        raise
    trial.set_user_attr("wall_s", time.monotonic() - t0)
    if state == "COMPLETE" and require_certified and trial.user_attrs.get("certified") is False:
        state = "FAIL"  # a certifiable model whose final weights are not certified
        reason = ("the final weights are NOT certified (combonet certify "
                  f"{study_dir / rel}); a certified configuration is required "
                  "(run_study(require_certified=False) / --allow-uncertified to keep it)")
    if reason:
        trial.set_user_attr("reason", reason)
    if state == "COMPLETE":
        frozen = study.tell(trial, trial.user_attrs["best_val_acc"])
    else:
        frozen = study.tell(trial, state=TrialState[state])
    return _record(frozen, study_dir)


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


# -- outputs ------------------------------------------------------------------------------------
def best_settings(cfg: TrainConfig) -> dict[str, Any]:
    """``cfg`` as a ``combonet train --config`` file: without :data:`NOT_IN_BEST` and the
    settings that do not apply to its model, optimizer or schedule (``train`` refuses them)."""
    skip = set(NOT_IN_BEST) | set(cfg.not_applicable())
    return {k: val for k, val in cfg.to_dict().items() if k not in skip}


def write_best(path: Path, cfg: TrainConfig, best: TrialRecord) -> None:
    import yaml

    head = (f"# combonet tune: trial {best.number}, best validation accuracy "
            f"{best.value:.4f} (epoch {best.best_epoch})\n"
            f"# train it: combonet train --config {path}\n")
    atomic_write_text(path, head + yaml.safe_dump(best_settings(cfg), sort_keys=False))


def write_csv(path: Path, records: list[TrialRecord]) -> None:
    names: list[str] = []
    for r in records:
        names += [n for n in r.params if n not in names]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["number", "state", "value", *(f"params_{n}" for n in names), "wall_s",
                "certified", "best_epoch", "test_acc", "run_dir", "reason"])
    for r in records:
        w.writerow([r.number, r.state, "" if r.value is None else r.value,
                    *(r.params.get(n, "") for n in names),
                    "" if r.wall_s is None else f"{r.wall_s:.2f}",
                    "" if r.certified is None else r.certified,
                    "" if r.best_epoch is None else r.best_epoch,
                    "" if r.test_acc is None else r.test_acc, r.run_dir or "", r.reason])
    atomic_write_text(path, buf.getvalue())


# -- the study ----------------------------------------------------------------------------------
def _check_budget(trials: int | None, timeout_s: float | None) -> None:
    if trials is None and timeout_s is None:
        raise ValueError("give a budget: --trials N (finished trials in the study) and/or "
                         "--timeout-s S (seconds for this run)")
    if trials is not None:
        v.integer("trials", trials, 1)
    if timeout_s is not None:
        v.positive("timeout_s", timeout_s)


def _open_study(sd: StudyDir, seed: int, pruner_startup: int, pruner_warmup: int) -> Any:
    """Create or load the SQLite study; fail the trials a killed process left running."""
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(f"sqlite:///{sd.file(STUDY_DB).resolve()}")
    optuna.create_study(storage=storage, study_name=STUDY_NAME, direction="maximize",
                        load_if_exists=True)
    study_id = storage.get_study_id_from_name(STUDY_NAME)
    for t in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
        storage.set_trial_user_attr(trial_id, "reason", "interrupted: the process running it "
                                    "ended before it did")
        storage.set_trial_state_values(trial_id, TrialState.FAIL)
    # a resumed study draws new numbers: seed the sampler past the trials already drawn
    n = storage.get_n_trials(study_id)
    return optuna.load_study(
        study_name=STUDY_NAME, storage=storage,
        sampler=optuna.samplers.TPESampler(seed=seed + n),
        # steps are epochs, from 1: the first ``pruner_warmup`` epochs are never pruned
        pruner=optuna.pruners.MedianPruner(n_startup_trials=pruner_startup,
                                           n_warmup_steps=pruner_warmup + 1))


def _as_space(space: Space | dict[str, Any] | None, base: TrainConfig) -> Space:
    if space is None:
        return default_space(base)
    if space and all(isinstance(p, Param) for p in space.values()):
        return dict(space)
    return parse_space(dict(space), base)


def run_study(base: TrainConfig, out_dir: str | Path, *, trials: int | None = None,
              timeout_s: float | None = None, space: Space | dict[str, Any] | None = None,
              seed: int = 0, threads: int = 1, enqueue: Iterable[dict[str, Any]] | None = None,
              pruner_startup: int = 3, pruner_warmup: int = 1, max_failures: int = 20,
              require_certified: bool = True,
              on_trial: Callable[[TrialRecord], None] | None = None) -> StudyResult:
    """Tune ``base`` over ``space`` (default: :func:`~.space.default_space`) in ``out_dir``.

    Runs trials until the study holds ``trials`` finished (completed + pruned) ones, or
    ``timeout_s`` seconds have passed (a running trial stops at the end of its epoch and is
    failed), or ``max_failures`` trials in a row failed. Median pruning starts once
    ``pruner_startup`` trials completed and spares each trial's first ``pruner_warmup``
    epochs. ``enqueue``: settings to try first (each a mapping of space names to values).
    ``require_certified``: a trial of a certifiable model whose final weights are NOT
    certified (e.g. the discrete map at a long ``dt`` after a large learning rate) is failed,
    so ``best.yaml`` is always a certified configuration.
    Prints nothing; ``on_trial`` sees each trial as it ends. Raises ``ValueError`` (one line)
    for bad input, before any trial.
    """
    _check_budget(trials, timeout_s)
    v.seed("seed", seed)
    v.integer("threads", threads, 1, 1024)
    v.integer("pruner_startup", pruner_startup, 0)
    v.integer("pruner_warmup", pruner_warmup, 0)
    v.integer("max_failures", max_failures, 1)
    if base.init_from is not None:
        raise ConfigError("init_from cannot be tuned from: remove it from the base config")
    base = dataclasses.replace(base, out_dir=None, threads=str(threads)).validate()
    space = _as_space(space, base)
    queued = [dict(p) for p in (enqueue or ())]
    for params in queued:
        unknown = sorted(set(params) - set(space))
        if unknown:
            raise ValueError(f"enqueued setting(s) {unknown} are not in the space "
                             f"({', '.join(space)})")
    sd = StudyDir(out_dir)
    sd.claim(_meta(base, space, seed))
    try:
        study = _open_study(sd, seed, pruner_startup, pruner_warmup)
        for params in queued:
            study.enqueue_trial(params, skip_if_exists=True)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        new, in_a_row = 0, 0
        while True:
            done = sum(t.state.name in ("COMPLETE", "PRUNED")
                       for t in study.get_trials(deepcopy=False))
            if trials is not None and done >= trials:
                stopped = "trials"
                break
            if deadline is not None and time.monotonic() >= deadline:
                stopped = "timeout"
                break
            if in_a_row >= max_failures:
                stopped = "failures"
                break
            rec = _run_trial(study, space, base, sd.path, deadline, require_certified)
            new += 1
            in_a_row = in_a_row + 1 if rec.state == "FAIL" else 0
            if on_trial is not None:
                on_trial(rec)
        return _finish(study, sd, base, stopped, new)
    finally:
        sd.release()


def _finish(study: Any, sd: StudyDir, base: TrainConfig, stopped: str, new: int
            ) -> StudyResult:
    """Write ``trials.csv`` and ``best.yaml``; the result."""
    records = [_record(t, sd.path) for t in study.get_trials(deepcopy=False)
               if t.state.name != "WAITING"]
    best = best_cfg = best_path = None
    complete = [r for r in records if r.state == "COMPLETE" and r.value is not None
                and math.isfinite(r.value)]
    if complete:
        number = study.best_trial.number
        best = next(r for r in complete if r.number == number)
        best_cfg = TrainConfig.from_dict(best.params, base=base)
        best_path = sd.file(BEST_CONFIG)
        write_best(best_path, best_cfg, best)
    write_csv(sd.file(TRIALS_CSV), records)
    return StudyResult(sd.path, records, best, best_cfg, best_path, sd.file(TRIALS_CSV), stopped,
                       new, study)


__all__ = ["BEST_CONFIG", "LOCK", "META", "STUDY_DB", "TRIALS", "TRIALS_CSV", "StudyDir",
           "StudyResult", "TrialRecord", "best_settings", "run_study"]
