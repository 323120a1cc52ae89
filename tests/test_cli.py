"""The command line: parsing, config files, one-line errors with exit status 2, sub-commands."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import combonet
from combonet.cli import build_parser, main, resolve_train_config
from combonet.data import TASKS
from combonet.train import TrainConfig
from combonet.train.config import ConfigError, read_config_file
from conftest import examples

#: Data and optimisation settings of a tiny run (any model); TINY adds a 2x4 Sparse Combo Net.
TINY_RUN = ["--task", "pdigits", "--limit-train", "120", "--limit-test", "50",
            "--val-fraction", "0.25", "--batch-size", "30", "--threads", "1", "--quiet",
            "--epochs", "1"]
TINY = [*TINY_RUN, "--modules", "2", "--units", "4", "--density", "0.3", "--magnitude", "1"]


def one_line_error(capsys, argv: list[str]) -> str:
    """Run ``main(argv)``; it must exit 2 with exactly one line on stderr and no traceback."""
    try:
        code = main(argv)
    except SystemExit as stop:  # argparse errors
        code = stop.code
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def resolve(*argv: str) -> TrainConfig:
    ns = build_parser().parse_args(["train", *argv])
    return resolve_train_config(ns)


# -- defaults and resolution -------------------------------------------------------------------
def test_default_train_needs_no_data_download():
    cfg = TrainConfig().validate()
    assert cfg.model == "sparse-combo"
    assert not TASKS[cfg.task].needs_data_dir
    assert resolve() == cfg


def test_flags_map_to_config_fields():
    cfg = resolve("--model", "svd-combo", "-p", "3", "-n", "5", "--lr", "1e-3",
                  "--grad-clip", "none", "--coupling-density", "0.5", "--quiet")
    assert (cfg.model, cfg.modules, cfg.units, cfg.lr) == ("svd-combo", 3, 5, 1e-3)
    assert cfg.grad_clip is None and cfg.coupling_density == 0.5 and cfg.quiet is True


def test_yaml_file_and_flag_precedence(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: gru\nhidden: 32\nlr: 1e-3\nlimit-train: 100\ngrad_clip: null\n")
    cfg = resolve("--config", str(path), "--hidden", "16")
    assert cfg.model == "gru" and cfg.hidden == 16  # the flag wins
    assert cfg.lr == 1e-3 and isinstance(cfg.lr, float)  # YAML's "1e-3" string coerced
    assert cfg.limit_train == 100 and cfg.grad_clip is None


def test_toml_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[train]\ntask = "digits"\nmodules = 3\ndt = 0.2\nschedule = "step"\n')
    cfg = resolve("--config", str(path))
    assert (cfg.task, cfg.modules, cfg.dt, cfg.schedule) == ("digits", 3, 0.2, "step")


def test_unknown_key_in_file_lists_valid_keys(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("modules: 2\nlearning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"learning_rate.*valid keys: task, data_dir"):
        resolve("--config", str(path))
    line = one_line_error(capsys, ["train", "--config", str(path)])
    assert "unknown key(s) ['learning_rate']" in line and "lr" in line


@pytest.mark.parametrize("text,suffix,match", [
    ("modules: [1, 2\n", ".yaml", "cannot parse"),
    ("modules = \n", ".toml", "cannot parse"),
    ("- 1\n- 2\n", ".yaml", "mapping"),
    ("modules: 2\n", ".json", r"\.yaml, \.yml or \.toml"),
    ("modules: two\n", ".yaml", "modules must be an int"),
    ("epochs: 2.5\n", ".yaml", "epochs must be an int"),
])
def test_bad_config_files(tmp_path, text, suffix, match):
    path = tmp_path / f"c{suffix}"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        TrainConfig.from_dict(read_config_file(path), source=str(path))


def test_fingerprint_ignores_runtime_fields_only():
    a = TrainConfig()
    assert a.fingerprint() == TrainConfig(out_dir="x", device="cpu", threads=1,
                                          quiet=True, certify_every=3).fingerprint()
    assert a.fingerprint() != TrainConfig(lr=0.5).fingerprint()
    assert a.fingerprint() != TrainConfig(permutation_seed=1).fingerprint()
    assert a.fingerprint() != TrainConfig(init_from="runs/a").fingerprint()


def test_epochs_enter_the_fingerprint_only_under_the_cosine_schedule():
    # the cosine schedule's learning rate at epoch k depends on epochs (issue 11, item 2)
    assert TrainConfig(epochs=2).fingerprint() != TrainConfig(epochs=4).fingerprint()
    step = {"schedule": "step"}
    assert TrainConfig(epochs=2, **step).fingerprint() == TrainConfig(epochs=4,
                                                                       **step).fingerprint()


def test_settings_that_do_not_apply_stay_out_of_the_fingerprint():
    gru = TrainConfig(model="gru")
    assert gru.fingerprint() == TrainConfig(model="gru", density=0.5, modules=3,
                                            dt=0.2).fingerprint()
    assert gru.fingerprint() != TrainConfig(model="gru", hidden=7).fingerprint()
    combo = TrainConfig()
    assert combo.fingerprint() == TrainConfig(hidden=7, momentum=0.1,
                                              lr_step_size=3).fingerprint()
    assert combo.fingerprint() != TrainConfig(density=0.1).fingerprint()
    assert TrainConfig(model="svd-combo").fingerprint() == TrainConfig(
        model="svd-combo", magnitude=9.0).fingerprint()
    assert set(TrainConfig(model="lstm").not_applicable()) >= {"density", "modules", "dt"}


# -- one-line errors, exit status 2 ------------------------------------------------------------
@pytest.mark.parametrize("argv,match", [
    (["--dt", "1.5"], "dt must lie in (0, 1]"),
    (["--density", "0"], "density must lie in (0, 1]"),
    (["--modules", "0"], "modules must be an integer >= 1"),
    (["--lr", "-1"], "lr must be a finite number > 0"),
    (["--val-fraction", "0"], "val_fraction"),
    (["--model", "transformer"], "Invalid model: must be one of ['sparse-combo'"),
    (["--task", "imagenet"], "Invalid task: must be one of ['digits'"),
    (["--method", "rk4"], "Invalid method: must be one of ['cayley', 'euler'], got 'rk4'"),
    (["--lr", "1e300"], "lr must be a finite number > 0 and <= 3.40282e+38, got 1e+300"),
    (["--magnitude", "1e308"], "magnitude must be a finite number > 0 and <= 3.40282e+38"),
    (["--seed", "99999999999999999999"], "seed must be an integer in [0, 4294967295], got "
                                         "99999999999999999999"),
    (["--seed", "-1"], "seed must be an integer in [0, 4294967295], got -1"),
    (["--permutation-seed", str(2**32)], "permutation_seed must be an integer in"),
    (["--threads", "100000"], "threads must be an integer in [1, 1024], got 100000"),
    (["--threads", "0"], "threads must be an integer in [1, 1024], got 0"),
    (["--optimizer", "sgd", "--momentum", "1"], "momentum must be a finite number >= 0 and < 1"),
    (["--epochs", "two"], "expected an int"),
    (["--no-such-flag"], "unrecognized arguments"),
    (["--config", "/nonexistent/c.yaml"], "does not exist"),
])
def test_bad_train_arguments(capsys, tmp_path, argv, match):
    line = one_line_error(capsys, ["train", *argv, "--out-dir", str(tmp_path / "r")])
    assert match in line
    assert not (tmp_path / "r").exists()


def test_missing_data_dir(capsys, tmp_path):
    line = one_line_error(capsys, ["train", "--task", "psmnist", "--out-dir",
                                   str(tmp_path / "r")])
    assert "data" in line.lower() and "--data-dir" in line
    line = one_line_error(capsys, ["train", "--task", "scifar10", "--data-dir",
                                   str(tmp_path / "nothing"), "--out-dir", str(tmp_path / "r")])
    assert "nothing" in line
    assert not (tmp_path / "r").exists()


def test_impossible_magnitude_is_a_clear_error(capsys, tmp_path):
    line = one_line_error(capsys, ["train", *TINY, "--density", "1", "--magnitude", "50",
                                   "--out-dir", str(tmp_path / "r")])
    assert "Theorem 1" in line and "magnitude" in line


def test_evaluate_and_certify_need_a_run_dir(capsys, tmp_path):
    assert "not a run directory" in one_line_error(capsys, ["evaluate", str(tmp_path)])
    assert "not a run directory" in one_line_error(capsys, ["certify", str(tmp_path)])
    assert "invalid choice" in one_line_error(capsys, ["evaluate", str(tmp_path), "--split",
                                                       "train"])


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "train" in capsys.readouterr().out


def test_experiment_is_wired(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["experiment", "--help"])
    assert stop.value.code == 0
    assert "usage: combonet experiment" in capsys.readouterr().out


def test_bench_is_wired(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["bench", "--help"])
    assert stop.value.code == 0
    assert "--modules" in capsys.readouterr().out


def test_subcommands_have_their_own_parsers():
    parser = build_parser()
    ns = parser.parse_args(["evaluate", "runs/x", "--split", "val"])
    assert (ns.run_dir, ns.split, ns.weights) == ("runs/x", "val", "best")
    ns = parser.parse_args(["certify", "runs/x"])
    assert ns.weights == "final"
    assert isinstance(ns, argparse.Namespace)


def test_baseline_run_has_no_certificate(capsys, tmp_path):
    run_dir = tmp_path / "gru"
    assert main(["train", *TINY_RUN, "--model", "gru", "--hidden", "8", "--out-dir",
                 str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "certificate" not in out.lower()
    assert not (run_dir / "certificate.json").exists()
    rec = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])
    assert "margin" not in rec
    assert main(["certify", str(run_dir)]) == 1
    assert "NOT CERTIFIED" in capsys.readouterr().out
    assert main(["evaluate", str(run_dir), "--json"]) == 0
    assert 0 <= json.loads(capsys.readouterr().out)["accuracy"] <= 1


def test_python_dash_m_is_the_same_command():
    env = dict(os.environ)
    src = str(Path(combonet.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-m", "combonet", "train", "--dt", "2"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("combonet train: error: dt must lie in (0, 1], got 2.0 "
                                   "(dt / tau must lie in (0, 1] and the modules use tau = 1)")


def test_top_level_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("train", "evaluate", "certify", "bench", "experiment"):
        assert cmd in out


# -- issue 11: settings that do not apply, config files, help from the registries -------------
@pytest.mark.parametrize("argv,match", [
    (["--model", "gru", "--density", "0.1"],
     "--density does not apply to model 'gru' (only to sparse-combo, unconstrained-combo, "
     "trainable-sparse-combo, mixed-combo)"),
    (["--model", "lstm", "-p", "3"], "--modules does not apply to model 'lstm'"),
    (["--model", "svd-combo", "--magnitude", "2"], "--magnitude does not apply to model"),
    (["--hidden", "8"], "--hidden does not apply to model 'sparse-combo'"),
    (["--momentum", "0.5"], "--momentum does not apply to optimizer 'adam' (only to sgd, "
                            "rmsprop)"),
    (["--lr-step-size", "3"], "--lr-step-size does not apply to schedule 'cosine'"),
])
def test_settings_that_do_not_apply_are_refused(capsys, tmp_path, argv, match):
    line = one_line_error(capsys, ["train", *argv, "--out-dir", str(tmp_path / "r")])
    assert match in line and "remove it" in line
    assert not (tmp_path / "r").exists()


def test_settings_in_a_file_that_do_not_apply_are_refused(capsys, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: lstm\nunits: 4\n")
    line = one_line_error(capsys, ["train", "--config", str(path)])
    assert f"units (in {path}) does not apply to model 'lstm'" in line


def test_settings_that_apply_are_accepted():
    cfg = resolve("--optimizer", "sgd", "--momentum", "0.5", "--schedule", "step",
                  "--lr-step-size", "3", "--model", "gru", "--hidden", "4")
    assert (cfg.momentum, cfg.lr_step_size, cfg.hidden) == (0.5, 3, 4)


def test_config_file_with_non_utf8_bytes(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_bytes(b"lr: 0.1\n\xff\xfe: 2\n")
    line = one_line_error(capsys, ["train", "--config", str(path)])
    assert f"config file {path} is not UTF-8 text (byte 0xff at offset 8)" in line


def test_duplicate_yaml_keys_are_refused(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 0.1\nepochs: 2\nlr: 0.2\n")
    line = one_line_error(capsys, ["train", "--config", str(path)])
    assert "duplicate key 'lr' on lines 1 and 3" in line
    nested = tmp_path / "n.yaml"
    nested.write_text("train:\n  modules: 2\n  modules: 3\n")
    assert "duplicate key 'modules' on lines 2 and 3" in one_line_error(
        capsys, ["train", "--config", str(nested)])
    toml = tmp_path / "c.toml"
    toml.write_text("lr = 0.1\nlr = 0.2\n")
    assert "cannot parse config file" in one_line_error(capsys, ["train", "--config",
                                                                 str(toml)])


def test_config_file_that_is_not_a_regular_file(tmp_path, capsys):
    fifo = tmp_path / "c.yaml"
    os.mkfifo(fifo)  # reading it would block forever
    line = one_line_error(capsys, ["train", "--config", str(fifo)])
    assert f"config file {fifo} is not a regular file (a FIFO)" in line
    link = tmp_path / "zero.yaml"
    link.symlink_to("/dev/zero")
    line = one_line_error(capsys, ["train", "--config", str(link)])
    assert "is not a regular file (a character device)" in line


def test_magnitude_errors_name_the_magnitude(capsys, tmp_path):
    line = one_line_error(capsys, ["train", *TINY, "--units", "8", "--density", "0.2",
                                   "--magnitude", "1e6", "--out-dir", str(tmp_path / "r")])
    assert "magnitude=1e+06" in line and "--magnitude" in line and "Theorem 1" in line


def test_hopeless_theorem1_search_is_refused_before_sampling(capsys, tmp_path, monkeypatch):
    """n = 256, density 0.5, magnitude 3 took 129 s to fail: now refused by a bound, and the
    builder (which would start sampling) is never called."""
    import dataclasses

    from combonet.models import registry

    def boom(*args, **kwargs):
        raise AssertionError("the builder must not run for a hopeless configuration")

    spec = registry.MODELS["sparse-combo"]
    monkeypatch.setitem(registry.MODELS, "sparse-combo", dataclasses.replace(spec, builder=boom))
    line = one_line_error(capsys, ["train", "--modules", "1", "--units", "256", "--density",
                                   "0.5", "--magnitude", "3", "--out-dir", str(tmp_path / "r")])
    assert "cannot satisfy Theorem 1" in line and "Lower --magnitude" in line
    assert "units=256, density=0.5, magnitude=3" in line
    assert not (tmp_path / "r").exists()


@settings(max_examples=examples(25), deadline=None)
@given(n=st.integers(2, 10), magnitude=st.floats(1.0, 20.0))
def test_theorem1_pass_bound_is_above_the_exact_row_probability(n, magnitude):
    """Density 1: every off-diagonal entry is U(0, m) in |W|, so one row sum of n - 1 of them
    is below 1 with the Irwin-Hall probability (1/m)^(n-1) / (n-1)!; a draw can pass
    Theorem 1 only if some row sum is below 1, so the bound must be at least that."""
    import math

    from combonet.models.registry import theorem1_pass_bound

    exact_row = (1.0 / magnitude) ** (n - 1) / math.factorial(n - 1)
    assert exact_row <= theorem1_pass_bound(n, 1.0, magnitude) * (1 + 1e-9)


@pytest.mark.parametrize("n,density,magnitude", [(8, 0.5, 4.0), (6, 0.5, 6.0), (4, 1.0, 2.0)])
def test_theorem1_pass_bound_against_sampled_row_sums(n, density, magnitude):
    """Monte Carlo with an independent sampler of the documented distribution (round(density
    n^2) off-diagonal positions, entries U(-1, 1) * magnitude): the chance that the smallest
    row sum of |W| is below 1 (necessary to pass Theorem 1) is below the bound."""
    import math

    import numpy as np

    from combonet.models.registry import theorem1_pass_bound

    rng = np.random.default_rng(0)
    off = [(i, j) for i in range(n) for j in range(n) if i != j]
    k = min(len(off), max(1, round(density * n * n)))
    draws, hits = 4000, 0
    for _ in range(draws):
        w = np.zeros((n, n))
        for idx in rng.choice(len(off), size=k, replace=False):
            w[off[idx]] = rng.uniform(-1, 1) * magnitude
        hits += np.abs(w).sum(1).min() < 1
    rate, bound = hits / draws, theorem1_pass_bound(n, density, magnitude)
    assert rate > 0 and bound < 1  # both sides informative
    assert rate <= bound + 4 * math.sqrt(bound * (1 - bound) / draws), (rate, bound)


def test_help_is_generated_from_the_registries(capsys):
    from combonet.models import MODELS
    from combonet.models.registry import default_map

    with pytest.raises(SystemExit):
        main(["--help"])
    top = " ".join(capsys.readouterr().out.split())
    default = TrainConfig()
    assert f"{TASKS[default.task].description} ({default.task})" in top
    assert "MNIST-1D" not in top
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name in [*TASKS, *MODELS]:
        assert name in text
    parser = build_parser()
    train_parser = parser._subparsers._group_actions[0].choices["train"]
    dt = next(a for a in train_parser._actions if "--dt" in a.option_strings)
    assert f"the default map is {default_map()}" in dt.help and "Euler" not in dt.help
    density = next(a for a in train_parser._actions if "--density" in a.option_strings)
    assert "only for models sparse-combo, unconstrained-combo" in density.help


@pytest.mark.parametrize("argv,match", [
    (["--batch-size", "-3"], "--batch-size must be an integer >= 1, got -3"),
    (["--batch-size", "0"], "--batch-size must be an integer >= 1, got 0"),
    (["--threads", "-2"], "--threads must be an integer in [1, 1024], got -2"),
])
def test_bad_evaluate_arguments(capsys, tmp_path, argv, match):
    assert match in one_line_error(capsys, ["evaluate", str(tmp_path), *argv])


def test_resume_and_init_from_exclude_each_other(capsys, tmp_path):
    line = one_line_error(capsys, ["train", "--resume", "--out-dir", str(tmp_path),
                                   "--init-from", str(tmp_path)])
    assert "--resume" in line and "--init-from" in line


# -- issue 10: `combonet certify RUN` re-derives everything from the saved tensors -----------
def test_certify_run_with_edited_weights_names_the_module(capsys, tmp_path):
    """A user edits one sparse module's W (x3, Theorem 1 fails) in the final checkpoint and
    re-records its checksum: the weights load (the manifest verifies), and the certificate,
    recomputed from them, is NOT CERTIFIED with one stderr line naming that module; editing
    without the manifest is refused as a corrupt file."""
    import torch

    from combonet.conditions.metzler import theorem1_radius
    from combonet.train.rundir import CHECKPOINT, RunDir

    run_dir = tmp_path / "run"
    assert main(["train", *TINY, "--out-dir", str(run_dir)]) == 0
    assert main(["certify", str(run_dir)]) == 0
    capsys.readouterr()
    path = run_dir / CHECKPOINT
    state = torch.load(path, map_location="cpu", weights_only=True)
    key = "network.systems.1._w"
    state["model"][key] = state["model"][key] * 3
    assert theorem1_radius(state["model"][key].double().numpy()) >= 1
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))  # changed, but not re-recorded in the manifest: refused
    assert main(["certify", str(run_dir)]) == 2
    assert "checkpoint.pt" in capsys.readouterr().err
    RunDir(run_dir).save_checkpoint(CHECKPOINT, state)  # the edit, with its checksum
    assert main(["certify", str(run_dir)]) == 1
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("combonet certify: NOT CERTIFIED: ")
    assert "systems.1" in lines[0] and "Theorem 1" in lines[0]
    assert "(certified)" not in out and out.strip().splitlines()[-1].startswith("NOT CERTIFIED")
