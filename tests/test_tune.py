"""``combonet tune``: a study on tiny runs, read back from the run directories it writes."""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import shutil
from pathlib import Path

import optuna
import pytest

from combonet import tune
from combonet.cli import main
from combonet.train import RunDir, TrainingDiverged
from combonet.train.config import TrainConfig, read_config_file
from combonet.tune.cli import report
from combonet.tune.space import default_space, parse_space, suggest

#: A trial of a second or two: 2x8 Sparse Combo Net, permuted digits, 180 training examples.
TINY = dict(task="pdigits", modules=2, units=8, density=0.2, magnitude=1.0, epochs=2,
            limit_train=240, limit_test=100, val_fraction=0.25, batch_size=30)
BASE = TrainConfig(**TINY)
#: The same settings as ``--set`` options.
SETS = [arg for k, v in TINY.items() for arg in ("--set", f"{k}={v}")]


def cli(*args: str) -> tuple[int, str]:
    """``combonet tune ARGS`` through its own parser; (exit status, stdout)."""
    p = argparse.ArgumentParser()
    tune.add_arguments(p)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = tune.main_from_args(p.parse_args(list(args)))
    return code, out.getvalue()


def states(study_dir: Path) -> dict[int, optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name="combonet-tune",
                              storage=f"sqlite:///{study_dir / 'study.db'}")
    return {t.number: t for t in study.get_trials()}


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> tuple[Path, str, Path]:
    """Two trials through the command's options: base from a YAML file plus ``--set``."""
    folder = tmp_path_factory.mktemp("tune")
    cfg = folder / "base.yaml"
    cfg.write_text("".join(f"{k}: {v}\n" for k, v in TINY.items() if k != "epochs"))
    code, out = cli("--config", str(cfg), "--set", "epochs=2", "--out-dir",
                    str(folder / "study"), "--trials", "2", "--seed", "3")
    assert code == 0, out
    return folder / "study", out, cfg


def test_study_writes_runs_best_config_and_table(study):
    study_dir, out, _ = study
    for name in ("study.db", "tune.json", "best.yaml", "trials.csv"):
        assert (study_dir / name).is_file(), name
    runs = sorted((study_dir / "trials").iterdir())
    assert [r.name for r in runs] == ["0000", "0001"]
    # the objective, read back independently: each run's best validation accuracy
    best_val = {int(r.name): RunDir(r).summary()["best"]["val_acc"] for r in runs}
    trials = states(study_dir)
    assert all(t.state.name == "COMPLETE" for t in trials.values())
    for n, t in trials.items():
        assert t.value == pytest.approx(best_val[n])
    best = max(best_val, key=best_val.get)
    # best.yaml is a `combonet train --config` file equal to the best trial's config
    data = read_config_file(study_dir / "best.yaml")
    assert "out_dir" not in data and "quiet" not in data and "init_from" not in data
    written = TrainConfig.from_dict(data).validate()
    ran = RunDir(study_dir / "trials" / f"{best:04d}").config()
    ran.out_dir = None
    assert written == ran
    assert written.lr != BASE.lr  # a tuned setting
    assert f"best: trial {best}," in out and str(study_dir / "best.yaml") in out
    rows = list(csv.DictReader((study_dir / "trials.csv").open()))
    assert [int(r["number"]) for r in rows] == [0, 1]
    assert {r["certified"] for r in rows} == {"True"}
    assert float(rows[best]["value"]) == pytest.approx(best_val[best])
    assert float(rows[best]["params_lr"]) == pytest.approx(written.lr)


def test_best_trial_certifies_and_trains(study, tmp_path, capsys):
    study_dir = study[0]
    assert main(["certify", str(study_dir / "trials" / "0000")]) == 0
    assert main(["train", "--config", str(study_dir / "best.yaml"), "--epochs", "1", "--quiet",
                 "--out-dir", str(tmp_path / "again")]) == 0
    capsys.readouterr()


def test_resume_continues_and_fails_a_killed_trial(study, tmp_path):
    study_dir = tmp_path / "copy"
    shutil.copytree(study[0], study_dir)
    before = states(study_dir)
    # a process killed mid-trial leaves it RUNNING
    storage = f"sqlite:///{study_dir / 'study.db'}"
    optuna.load_study(study_name="combonet-tune", storage=storage).ask()
    res = tune.run_study(BASE, study_dir, trials=3, seed=3)
    after = states(study_dir)
    assert len(after) == 4 and res.new_trials == 1 and res.finished == 3
    for n, t in before.items():
        assert (after[n].state, after[n].value, after[n].params) == (t.state, t.value, t.params)
    assert after[2].state.name == "FAIL" and "interrupted" in after[2].user_attrs["reason"]
    assert after[3].state.name in ("COMPLETE", "PRUNED")
    assert after[3].params != after[0].params  # the resumed sampler draws anew
    assert (study_dir / "trials" / "0003" / "summary.json").is_file()
    assert len(list(csv.DictReader((study_dir / "trials.csv").open()))) == 4


def test_other_settings_are_refused_with_one_line(study, capsys):
    study_dir, _, cfg = study
    mtime = (study_dir / "study.db").stat().st_mtime_ns
    code = main(["tune", "--config", str(cfg), "--set", "epochs=2", "--set", "lr=0.02",
                 "--out-dir", str(study_dir), "--trials", "5", "--seed", "3"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("combonet tune: error:") and err.count("\n") == 1
    assert "lr=0.05 (study) vs 0.02 (now)" in err
    with pytest.raises(ValueError, match="space lr") as info:
        tune.run_study(BASE, study_dir, trials=5, seed=3, space={"lr": {"log": [1e-3, 1e-2]}})
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match=r"seed=3 \(study\) vs 4"):
        tune.run_study(BASE, study_dir, trials=5, seed=4)
    assert (study_dir / "study.db").stat().st_mtime_ns == mtime


def test_a_study_in_use_is_refused(study):
    from filelock import FileLock

    with FileLock(str(study[0] / ".tune.lock")), \
            pytest.raises(ValueError, match="in use by another combonet tune process"):
        tune.run_study(BASE, study[0], trials=5, seed=3)


def test_median_rule_prunes_a_hopeless_learning_rate(tmp_path):
    base = TrainConfig(**{**TINY, "epochs": 3, "dt": 0.5})
    res = tune.run_study(base, tmp_path / "s", trials=2, space={"lr": {"log": [1e-9, 0.1]}},
                         enqueue=[{"lr": 0.05}, {"lr": 1e-9}], pruner_startup=1,
                         pruner_warmup=0)
    trials = states(tmp_path / "s")
    assert trials[0].state.name == "COMPLETE" and trials[1].state.name == "PRUNED"
    assert trials[1].params["lr"] == 1e-9 and "pruned after epoch" in \
        trials[1].user_attrs["reason"]
    good = RunDir(tmp_path / "s" / "trials" / "0000").history()
    bad = RunDir(tmp_path / "s" / "trials" / "0001")
    hist = bad.history()
    k = len(hist)  # it stopped after epoch k < 3, below the good run's accuracy there
    assert k < 3 and bad.status() == "stopped"
    assert max(r["val_acc"] for r in hist) < good[k - 1]["val_acc"]
    assert res.best.number == 0


@pytest.mark.filterwarnings("ignore:Fixed parameter")
def test_infeasible_trial_fails_with_its_reason_and_the_study_goes_on(tmp_path):
    base = TrainConfig(**{**TINY, "epochs": 1})
    res = tune.run_study(base, tmp_path / "s", trials=1,
                         enqueue=[{"magnitude": 60.0, "density": 0.9}])
    trials = states(tmp_path / "s")
    assert [t.state.name for t in trials.values()] == ["FAIL", "COMPLETE"]
    assert "Theorem 1" in trials[0].user_attrs["reason"]
    assert not (tmp_path / "s" / "trials" / "0000").exists() and res.trials[0].run_dir is None
    assert res.best.number == 1 and res.trials[0].reason.startswith("invalid settings")


def test_diverged_trials_fail_and_a_run_of_failures_ends_the_study(tmp_path, monkeypatch):
    def diverge(self):
        raise TrainingDiverged("the training loss became nan at epoch 1, step 1")

    monkeypatch.setattr("combonet.train.loop.Trainer.advance", diverge)
    res = tune.run_study(BASE, tmp_path / "s", trials=1, max_failures=2)
    trials = states(tmp_path / "s")
    assert res.stopped == "failures" and res.best is None
    assert [t.state.name for t in trials.values()] == ["FAIL", "FAIL"]
    assert trials[0].user_attrs["reason"].startswith("diverged: the training loss became nan")
    assert RunDir(tmp_path / "s" / "trials" / "0000").status() == "diverged"
    assert "too many trials in a row failed" in report(res)
    assert not (tmp_path / "s" / "best.yaml").exists()


def test_a_trial_whose_final_weights_are_not_certified_fails(tmp_path, monkeypatch):
    """The final certificate decides: a NOT certified run never becomes ``best.yaml`` (unless
    uncertified trials are allowed)."""
    import dataclasses

    from combonet.train import loop

    real = loop.certificate_of

    def refuse_final(model, max_dt=True):  # per-epoch checks pass; the final one does not
        cert = real(model, max_dt=max_dt)
        return cert if not max_dt else dataclasses.replace(
            cert, discrete_certified=False, failures=["the discrete map is not covered"])

    monkeypatch.setattr(loop, "certificate_of", refuse_final)
    base = TrainConfig(**{**TINY, "epochs": 1})
    res = tune.run_study(base, tmp_path / "s", trials=1, max_failures=1)
    assert res.stopped == "failures" and res.best is None
    trial = states(tmp_path / "s")[0]
    assert trial.state.name == "FAIL" and "NOT certified" in trial.user_attrs["reason"]
    assert RunDir(tmp_path / "s" / "trials" / "0000").certificate_record()["certified"] is False
    kept = tune.run_study(base, tmp_path / "k", trials=1, require_certified=False)
    assert kept.best is not None and kept.best.certified is False


def test_timeout_starts_no_trial_after_the_budget(tmp_path):
    res = tune.run_study(BASE, tmp_path / "s", timeout_s=1e-9)
    assert res.stopped == "timeout" and res.trials == [] and res.best is None
    assert (tmp_path / "s" / "trials.csv").is_file()


def test_default_spaces_follow_the_model():
    sparse = default_space(BASE)
    assert {"lr", "dt", "init_scale", "readout", "tau_train", "tau_max", "density",
            "magnitude"} <= set(sparse)
    svd = default_space(TrainConfig(model="svd-combo"))
    assert "dt" in svd and "density" not in svd and "magnitude" not in svd
    gru = default_space(TrainConfig(model="gru"))
    assert set(gru) == {"lr"} and (gru["lr"].low, gru["lr"].high) == (1e-4, 3e-2)
    fixed = {"lr": 0.01, "dt": 0.1, "init_scale": 1.0, "readout": "last", "tau_max": 10.0,
             "density": 0.1, "magnitude": 1.0}
    none = suggest(optuna.trial.FixedTrial({**fixed, "tau_train": "none"}), sparse, BASE)
    assert "tau_max" not in none
    unit = suggest(optuna.trial.FixedTrial({**fixed, "tau_train": "unit"}), sparse, BASE)
    assert unit["tau_max"] == 10.0
    TrainConfig.from_dict(unit, base=BASE).validate()
    # a user space: YAML reads 1e-3 as text; hidden does not apply to combo nets
    space = parse_space({"lr": {"log": ["1e-3", 0.1]}, "units": {"int": [4, 8]},
                         "readout": {"choice": ["last", "mean"]}}, BASE)
    assert space["lr"].low == 1e-3 and space["units"].kind == "int"


@pytest.mark.parametrize("text, match", [
    ("lr: {log: [0.001, 0.1]}\nbogus: {float: [0, 1]}\n", "unknown setting 'bogus'"),
    ("lr: {uniform: [0.001, 0.1]}\n", "must be a mapping of one of log, float, int, choice"),
    ("lr: {log: [0, 0.1]}\n", "a log range needs low > 0"),
    ("lr: {log: [0.1, 0.001]}\n", "low must be < high"),
    ("units: {float: [4, 8]}\n", "units .* is an integer setting"),
    ("readout: {choice: [last, sideways]}\n", 'Invalid readout "sideways"'),
    ("hidden: {int: [8, 16]}\n", "hidden .* does not apply to model 'sparse-combo'"),
    ("epochs: {int: [1, 5]}\n", "epochs .* is every trial's budget"),
    ("tau_train: {choice: [none, unit]}\n", "needs tau_max"),
    ("", "holds no settings to tune"),
])
def test_bad_space_files_are_one_line(tmp_path, text, match):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=match) as info:
        cli("--out-dir", str(tmp_path / "s"), "--trials", "1", "--space", str(path),
            *SETS)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "s").exists()


def test_bad_input_is_one_line_and_changes_nothing(tmp_path):
    with pytest.raises(ValueError, match="give a budget"):
        cli("--out-dir", str(tmp_path / "s"))
    with pytest.raises(ValueError, match="--set expects KEY=VALUE"):
        cli("--out-dir", str(tmp_path / "s"), "--trials", "1", "--set", "lr")
    with pytest.raises(ValueError, match="--set hidden does not apply"):
        cli("--out-dir", str(tmp_path / "s"), "--trials", "1", "--set", "hidden=8")
    with pytest.raises(ValueError, match="not in the space"):
        tune.run_study(BASE, tmp_path / "s", trials=1, enqueue=[{"hidden": 8}])
    assert not (tmp_path / "s").exists()
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"not empty \(notes.txt\) and is not a "
                       "combonet tune study"):
        tune.run_study(BASE, other, trials=1)
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]
    with pytest.raises(ValueError, match="timeout_s must be a finite number > 0"):
        tune.run_study(BASE, tmp_path / "t", timeout_s=-1)
