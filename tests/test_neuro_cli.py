"""``combonet train --task neurogym:ID|synthetic --areas FILE`` and ``combonet analyze RUN``,
end to end through the command line: run directory, certificate, resume, analyses, and the
one-line refusals (missing extra, bad areas file, settings that do not apply, baselines)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from combonet.cli import main
from combonet.data.neurogym import EXTRA_HINT
from combonet.data.trials import trial_task
from combonet.train.rundir import RunDir

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "areas"
TINY = """
name = "tiny"
seed = 3
[areas.sensory]
units = 6
module = "svd"
inputs = "all"
[areas.association]
units = 4
module = "svd"
tau = 2.0
[areas.motor]
units = 4
module = "svd"
output = true
[[pathways]]
from = "sensory"
to = "association"
kind = "feedback"
[[pathways]]
from = "association"
to = "motor"
kind = "hierarchical"
"""
SMALL = ["--epoch-trials", "32", "--val-trials", "12", "--test-trials", "12",
         "--batch-size", "16", "--threads", "1", "--quiet"]


def train(*args: str) -> int:
    return main(["train", *args, *SMALL])


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    return err


@pytest.fixture(scope="module")
def areas_run(tmp_path_factory) -> tuple[Path, Path]:
    """A 2-epoch run of a 3-area network (per-area tau) on the 2-rule synthetic task; the
    areas file is removed afterwards (the run must not need it)."""
    root = tmp_path_factory.mktemp("neuro")
    areas = root / "tiny.toml"
    areas.write_text(TINY)
    run = root / "run"
    code = train("--task", "synthetic:2", "--areas", str(areas), "--epochs", "2",
                 "--lr", "0.01", "--out-dir", str(run))
    assert code == 0
    areas.unlink()
    return run, root


def test_train_areas_writes_a_self_contained_certified_run(areas_run, capsys):
    run, _ = areas_run
    record = json.loads((run / "config.json").read_text())
    cfg = record["config"]
    assert cfg["model"] == "areas" and cfg["task"] == "synthetic:2"
    spec = json.loads(cfg["areas"])  # the file's content, not its path
    assert list(spec["areas"]) == ["sensory", "association", "motor"]
    assert spec["areas"]["association"]["tau"] == 2.0 and spec["seed"] == 3
    assert record["area_map"]["areas"]["motor"]["output"] is True
    assert record["data"]["kind"] == "trials" and record["data"]["num_classes"] == 3
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == [1, 2]
    for r in history:  # NeuroGym's performance per task, every epoch
        assert set(r["val_per_task"]) == {"pro0", "anti0"}
        assert 0 <= r["val_acc"] <= 1 and r["certified"] is True
    assert history[-1]["test_per_task"] is not None
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["certificate"]["certified"]
    capsys.readouterr()
    assert main(["certify", str(run)]) == 0  # rebuilt from config.json alone
    out = capsys.readouterr().out
    assert "areas 'tiny', 14 units" in out and "CERTIFIED" in out
    assert main(["evaluate", str(run), "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["examples"] == 12 and set(ev["per_task"]) == {"pro0", "anti0"}


def test_analyze_a_run_directory(areas_run, capsys):
    run, root = areas_run
    capsys.readouterr()
    assert main(["analyze", str(run), "--trials", "12"]) == 0
    out = run / "analysis"
    for name in ("fixed-points.png", "pca.png", "lesions.png", "communication.png",
                 "analysis.json"):
        assert (out / name).stat().st_size > 0, name
    report = json.loads((out / "analysis.json").read_text())
    assert report["trials"] == 12 and report["tasks"] == ["pro0", "anti0"]
    assert report["fixed_points"]["certified"] is True
    assert all(les["certified"] for les in report["lesions"]["lesions"])
    targets = [les["target"] for les in report["lesions"]["lesions"]]
    assert targets == ["sensory", "association", "motor", "sensory <-> association",
                       "association -> motor"]
    assert [c["source"] for c in report["communication"]] == ["sensory", "association"]
    # the run's own test trials (its seed): the intact model scores what the run reported
    summary = json.loads((run / "summary.json").read_text())
    assert report["lesions"]["baseline"]["accuracy"] == pytest.approx(
        summary["final"]["test_acc"])
    # again: refuses to overwrite; --what picks analyses; --out elsewhere
    capsys.readouterr()
    assert main(["analyze", str(run), "--trials", "12"]) == 2
    assert "already exist" in one_line_error(capsys)
    other = root / "pca-only"
    assert main(["analyze", str(run), "--what", "pca", "--trials", "8", "--out",
                 str(other)]) == 0
    assert sorted(p.name for p in other.iterdir()) == ["analysis.json", "pca.png"]
    capsys.readouterr()
    assert main(["analyze", str(run), "--areas", "x.toml", "--out", str(root / "x")]) == 2
    assert "--areas come(s) from the run's config.json" in one_line_error(capsys)
    assert main(["analyze", str(run), "--what", "fixed-points,nothing"]) == 2
    assert 'Invalid analyses "fixed-points,nothing"' in one_line_error(capsys)


def test_resume_continues_on_the_same_fresh_trials(tmp_path, capsys):
    """Every epoch's trials are a function of the seed and the epoch, so a run interrupted
    after epoch 1 and resumed ends with the weights of an uninterrupted run."""
    from combonet.train.loop import Trainer

    areas = tmp_path / "tiny.toml"
    areas.write_text(TINY)
    common = ("--task", "synthetic", "--areas", str(areas), "--epochs", "2")
    assert train(*common, "--out-dir", str(tmp_path / "full")) == 0
    from combonet.cli import build_parser, resolve_train_config

    ns = build_parser().parse_args(["train", *common, *SMALL, "--out-dir",
                                    str(tmp_path / "cut")])
    trainer = Trainer(resolve_train_config(ns))
    trainer.begin()
    trainer.advance()  # epoch 1, then "crash"
    trainer.close()
    assert not (tmp_path / "cut" / "summary.json").exists()
    areas.unlink()  # resuming needs only the run directory
    assert main(["train", "--resume", "--out-dir", str(tmp_path / "cut"), "--quiet"]) == 0
    full = RunDir(tmp_path / "full").load_checkpoint()
    cut = RunDir(tmp_path / "cut").load_checkpoint()
    assert cut["epoch"] == full["epoch"] == 2
    for k, v in full["model"].items():
        assert torch.equal(v, cut["model"][k]), k
    assert [r["val_acc"] for r in full["history"]] == [r["val_acc"] for r in cut["history"]]


def test_per_step_combo_net_and_ctrnn_baseline(tmp_path, capsys):
    combo, ctrnn = tmp_path / "combo", tmp_path / "ctrnn"
    assert train("--task", "synthetic", "--modules", "3", "--units", "4", "--epochs", "1",
                 "--out-dir", str(combo)) == 0
    loaded = RunDir(combo).load_model("final")
    from combonet.models.perstep import CTRNN, PerStepModel

    assert isinstance(loaded.model, PerStepModel) and loaded.model.network.n == 12
    assert train("--task", "synthetic", "--model", "ctrnn", "--hidden", "8", "--lr", "1e-3",
                 "--epochs", "1", "--out-dir", str(ctrnn)) == 0
    model = RunDir(ctrnn).load_model("final").model
    assert isinstance(model, CTRNN) and model.alpha == 1.0 and model.hidden_size == 8
    capsys.readouterr()
    assert main(["certify", str(ctrnn)]) == 1
    assert "baseline without a contraction certificate" in capsys.readouterr().out
    assert main(["analyze", str(ctrnn)]) == 2
    err = one_line_error(capsys)
    assert "model 'ctrnn', a baseline without a" in err and "'areas'" in err
    # a combo net's modules are its areas; no declared pathways -> communication skipped
    assert main(["analyze", str(combo), "--trials", "6", "--what", "lesions,pca"]) == 0
    report = json.loads((combo / "analysis" / "analysis.json").read_text())
    assert [les["target"] for les in report["lesions"]["lesions"]] == \
        ["module0", "module1", "module2"]
    assert main(["analyze", str(combo), "--what", "communication", "--out",
                 str(tmp_path / "c")]) == 2
    assert "pass --pairs source:target" in one_line_error(capsys)


def test_analyze_refuses_a_sequence_task_run(tmp_path, capsys):
    run = tmp_path / "digits"
    assert main(["train", "--task", "digits", "--modules", "2", "--units", "4",
                 "--limit-train", "40", "--limit-test", "20", "--epochs", "1", "--threads",
                 "1", "--quiet", "--out-dir", str(run)]) == 0
    capsys.readouterr()
    assert main(["analyze", str(run)]) == 2
    assert "sequence-classification task digits; analyze works on runs on trial tasks" in \
        one_line_error(capsys)


def test_missing_extra_is_one_line_through_the_cli(tmp_path, monkeypatch, capsys):
    trial_task.cache_clear()
    monkeypatch.setitem(sys.modules, "neurogym", None)  # import neurogym -> ImportError
    try:
        for args in (["--task", "neurogym:PerceptualDecisionMaking-v0"],
                     ["--task", "neurogym:yang19", "--areas",
                      str(CONFIGS / "yang19-multitask.yaml")],
                     ["--task", "neurogym:yang19", "--model", "ctrnn"]):
            out = tmp_path / "never"
            assert train(*args, "--out-dir", str(out)) == 2
            err = one_line_error(capsys)
            assert err.startswith("combonet train: error: NeuroGym tasks need the optional")
            assert err.endswith(EXTRA_HINT) and not out.exists()
    finally:
        trial_task.cache_clear()


@pytest.mark.parametrize(("content", "message"), [
    (None, "areas file {path} does not exist"),
    ("areas = [\n", "cannot be parsed"),
    ("[areas.a]\nunits = 4\nmodule = 'lstm'\n", 'Invalid module "lstm"'),
    ("[areas.a]\nunits = 4\ncolour = 1\n", "unknown key(s) ['colour']"),
    ("[areas.a]\nunits = 3\nmodule = 'svd'\n[areas.b]\nunits = 3\nmodule = 'svd'\n"
     "[[pathways]]\nfrom = 'a'\nto = 'b'\nkind = 'hierarchical'\nrank = 1\n",
     "the core's Hierarchy has no low-rank coupling"),
    ("[areas.a]\nunits = 3\nmodule = 'svd'\ninputs = '0:99'\n", "outside the task's"),
])
def test_bad_areas_files_are_one_line(tmp_path, capsys, content, message):
    path = tmp_path / "bad.toml"
    if content is not None:
        path.write_text(content)
    out = tmp_path / "never"
    assert train("--task", "synthetic", "--areas", str(path), "--out-dir", str(out)) == 2
    err = one_line_error(capsys)
    assert err.startswith("combonet train: error: ")
    assert message.format(path=path) in err
    assert not out.exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--task", "synthetic", "--readout", "mean"],
     "--readout does not apply to task 'synthetic' (only to sequence-classification tasks"),
    (["--task", "pdigits", "--epoch-trials", "9"],
     "--epoch-trials does not apply to task 'pdigits' (only to trial tasks"),
    (["--task", "synthetic", "--data-dir", "x"], "--data-dir does not apply to task"),
    (["--task", "synthetic", "--model", "sparse-combo", "--areas",
      str(CONFIGS / "sensory-association-motor.toml")],
     "--areas does not apply to model 'sparse-combo' (only to areas)"),
    (["--task", "synthetic", "--model", "ctrnn", "--units", "4"],
     "--units does not apply to model 'ctrnn'"),
    (["--task", "synthetic", "--model", "lstm"],
     "model 'lstm' cannot learn task 'synthetic': for trial tasks"),
    (["--task", "pdigits", "--model", "ctrnn"], "model 'ctrnn' cannot learn task 'pdigits'"),
    (["--task", "synthetic", "--model", "areas"], "model 'areas' needs an areas file"),
    (["--task", "neurogym:"], 'Invalid task "neurogym:"'),
    (["--task", "synthetic:x"], "synthetic:K needs an integer K >= 1"),
    (["--task", "synthetic", "--model", "ctrnn", "--ctrnn-tau", "50"],
     "ctrnn_tau=50 ms is shorter than the task's step dt=100 ms"),
])
def test_settings_that_do_not_apply_are_refused(tmp_path, capsys, args, message):
    out = tmp_path / "never"
    assert main(["train", *args, "--threads", "1", "--quiet", "--out-dir", str(out)]) == 2
    assert message in one_line_error(capsys)
    assert not out.exists()


def test_areas_as_a_table_in_a_settings_file_or_inline_json(tmp_path):
    from combonet.train.config import TrainConfig, read_config_file

    (tmp_path / "a.toml").write_text(TINY)
    from_path = TrainConfig(task="synthetic", model="areas", areas=str(tmp_path / "a.toml"))
    settings = tmp_path / "train.toml"
    settings.write_text('task = "synthetic"\nmodel = "areas"\n' + TINY.replace(
        "[areas.", "[areas.areas.").replace("[[pathways]]", "[[areas.pathways]]").replace(
        'name = "tiny"\nseed = 3\n', "") + '\n')
    data = read_config_file(settings)
    table = TrainConfig.from_dict({**data, "areas": {**data["areas"], "name": "tiny",
                                                     "seed": 3}})
    inline = TrainConfig(task="synthetic", model="areas", areas=from_path.areas)
    assert from_path.areas == table.areas == inline.areas
    assert from_path.fingerprint() == table.fingerprint()
    other = TrainConfig(task="synthetic", model="areas",
                        areas=from_path.areas.replace('"seed": 3', '"seed": 4'))
    assert other.fingerprint() != from_path.fingerprint()  # the network is in the fingerprint


# -- real NeuroGym tasks (where the [neuro] extra is installed) --------------------------------
def test_train_certify_analyze_on_real_neurogym_tasks(tmp_path, capsys):
    pytest.importorskip("neurogym")
    run = tmp_path / "pdm"
    assert main(["train", "--task", "neurogym:PerceptualDecisionMaking-v0", "--areas",
                 str(CONFIGS / "sensory-association-motor.toml"), "--epochs", "1",
                 "--epoch-trials", "32", "--val-trials", "8", "--test-trials", "8",
                 "--threads", "1", "--quiet", "--out-dir", str(run)]) == 0
    assert main(["certify", str(run)]) == 0
    assert main(["analyze", str(run), "--what", "fixed-points,lesions", "--trials", "8"]) == 0
    report = json.loads((run / "analysis" / "analysis.json").read_text())
    assert report["tasks"] == ["PerceptualDecisionMaking-v0"]
    assert report["fixed_points"]["certified"]
    multi = tmp_path / "yang19"
    assert main(["train", "--task", "neurogym:yang19", "--areas",
                 str(CONFIGS / "yang19-multitask.yaml"), "--epochs", "1", "--epoch-trials",
                 "16", "--val-trials", "20", "--test-trials", "20", "--batch-size", "16",
                 "--threads", "1", "--quiet", "--out-dir", str(multi)]) == 0
    rec = json.loads((multi / "metrics.jsonl").read_text().splitlines()[0])
    assert len(rec["val_per_task"]) == 20 and "yang19.dm1-v0" in rec["val_per_task"]
    record = json.loads((multi / "config.json").read_text())
    assert record["data"]["features"] == 53 and record["data"]["num_classes"] == 17
    capsys.readouterr()
    assert main(["certify", str(multi)]) == 0
    assert "areas 'yang19-multitask', 256 units" in capsys.readouterr().out


def test_analyze_a_malicious_bare_state_dict_is_refused_without_torch_advice(tmp_path, capsys):
    import os
    import pickle

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    areas = tmp_path / "tiny.toml"
    areas.write_text(TINY)
    evil = tmp_path / "model.pt"
    evil.write_bytes(pickle.dumps({"model": Payload()}))
    assert main(["analyze", str(evil), "--areas", str(areas), "--task", "synthetic"]) == 2
    err = one_line_error(capsys)
    assert "never runs code" in err and "weights_only" not in err
    assert not marker.exists()
