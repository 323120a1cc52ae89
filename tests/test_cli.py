"""The command line: parsing, config files, one-line errors with exit status 2, sub-commands."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import combonet
from combonet.cli import build_parser, main, resolve_train_config
from combonet.data import TASKS
from combonet.train import TrainConfig
from combonet.train.config import ConfigError, read_config_file

TINY = ["--task", "pdigits", "--limit-train", "120", "--limit-test", "50",
        "--val-fraction", "0.25", "--modules", "2", "--units", "4", "--density", "0.3",
        "--magnitude", "1", "--batch-size", "30", "--threads", "1", "--quiet", "--epochs", "1"]


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
    assert a.fingerprint() == TrainConfig(epochs=99, out_dir="x", device="cpu", threads=1,
                                          quiet=True).fingerprint()
    assert a.fingerprint() != TrainConfig(lr=0.5).fingerprint()
    assert a.fingerprint() != TrainConfig(permutation_seed=1).fingerprint()


# -- one-line errors, exit status 2 ------------------------------------------------------------
@pytest.mark.parametrize("argv,match", [
    (["--dt", "1.5"], "dt must lie in (0, 1]"),
    (["--density", "0"], "density must lie in (0, 1]"),
    (["--modules", "0"], "modules must be an integer >= 1"),
    (["--lr", "-1"], "lr must be a finite number > 0"),
    (["--val-fraction", "0"], "val_fraction"),
    (["--model", "transformer"], 'Invalid model "transformer"'),
    (["--task", "imagenet"], 'Invalid task "imagenet"'),
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
    assert main(["train", *TINY, "--model", "gru", "--hidden", "8", "--out-dir",
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
