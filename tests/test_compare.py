"""``combonet compare``: contenders side by side, parameter matching, budget, resume, errors."""

from __future__ import annotations

import json

import pytest
import torch

from combonet.cli import main
from combonet.compare import compare, matched_hidden, plan_contenders, rnn_parameters
from combonet.models.registry import build_model
from combonet.train import RunDir
from combonet.train.config import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")

#: A few seconds per contender: 2x8 Sparse Combo Net on permuted sklearn digits.
TINY = dict(task="pdigits", limit_train=240, limit_test=100, val_fraction=0.25, modules=2,
            units=8, density=0.2, magnitude=1.0, batch_size=30, epochs=3, lr=0.02)
SETS = [x for k, v in TINY.items() for x in ("--set", f"{k}={v}")]


def history(path) -> list[dict]:
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


def strip_time(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith("time")} for r in records]


@pytest.mark.parametrize("cell", ["gru", "lstm", "rnn"])
@pytest.mark.parametrize(("inputs", "classes"), [(1, 10), (3, 7)])
def test_parameter_count_and_matching_agree_with_torch(cell, inputs, classes):
    cfg = TrainConfig(model=cell, hidden=37)
    model = build_model(cfg, inputs, classes)
    counted = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert rnn_parameters(cell, 37, inputs, classes) == counted
    target = 20_000
    h = matched_hidden(cell, target, inputs, classes)
    gap = abs(rnn_parameters(cell, h, inputs, classes) - target)
    for other in (h - 1, h + 1):
        assert gap <= abs(rnn_parameters(cell, other, inputs, classes) - target)


def test_plan_shares_data_optimisation_and_threads():
    plan = plan_contenders(TrainConfig(**TINY), baselines=("gru", "lstm", "gru:128"),
                           control=True, baseline_lr=0.004, threads="1")
    assert list(plan) == ["certified", "control", "gru", "lstm", "gru-128"]
    assert plan["gru-128"].hidden == 128 and plan["gru"].hidden != 128
    assert plan["control"].model == "unconstrained-combo"
    for cfg in plan.values():
        for key in ("task", "limit_train", "limit_test", "val_fraction", "batch_size", "epochs",
                    "seed", "schedule", "optimizer", "grad_clip"):
            assert getattr(cfg, key) == getattr(plan["certified"], key), key
        assert cfg.threads == "1" and cfg.eval_test == "every"
    assert plan["gru"].lr == plan["lstm"].lr == 0.004
    assert plan["certified"].lr == TINY["lr"]


def test_compare_end_to_end(tmp_path, capsys):
    out = tmp_path / "cmp"
    code = main(["compare", *SETS, "--baselines", "gru", "--control", "--out-dir", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "| certified | sparse-combo |" in text and "| gru | gru |" in text
    for name in ("compare.json", "compare.csv", "compare.md", "time_to_accuracy.png"):
        assert (out / name).is_file(), name
    results = {r["name"]: r for r in json.loads((out / "compare.json").read_text())["results"]}
    assert set(results) == {"certified", "control", "gru"}
    for name, res in results.items():
        recs = history(out / name)
        assert len(recs) == TINY["epochs"] and all(r["test_acc"] is not None for r in recs)
        # the reported accuracy is the test accuracy of the best-validation epoch (ties: the
        # earlier epoch unless its validation loss is higher), read from the run's own records
        best = recs[0]
        for r in recs[1:]:
            if r["val_acc"] > best["val_acc"] or (r["val_acc"] == best["val_acc"]
                                                  and r["val_loss"] < best["val_loss"]):
                best = r
        assert res["best_epoch"] == best["epoch"]
        assert res["test_at_best_val"] == best["test_acc"]
        assert res["wall_s"] == pytest.approx(sum(r["time"] for r in recs))
    assert results["certified"]["certified"] is True
    assert results["control"]["certified"] is False  # L = B is not covered by eq. 3
    assert results["gru"]["certified"] is None
    assert main(["certify", str(out / "certified")]) == 0
    # the GRU's parameter count matches the certified model's as closely as a hidden size can
    p_cert, p_gru = results["certified"]["parameters"], results["gru"]["parameters"]
    h = RunDir(out / "gru").config().hidden
    assert abs(p_gru - p_cert) <= abs(rnn_parameters("gru", h + 1, 64, 10) - p_cert)


def test_budget_stops_each_contender_after_its_epoch(tmp_path):
    res = compare(TrainConfig(**TINY), tmp_path / "cmp", baselines=("lstm",), budget_s=1e-3)
    for c in res.contenders:
        assert c.status == "stopped" and c.epochs == 1
        assert RunDir(tmp_path / "cmp" / c.name).status() == "stopped"
    assert res.contenders[0].certified is True  # a stopped combo net is certified too


def test_interrupted_comparison_resumes_to_the_same_histories(tmp_path):
    base = TrainConfig(**TINY)
    whole = compare(base, tmp_path / "whole", baselines=("gru",))
    lines: list[str] = []

    def stop_after_three(line: str) -> None:
        lines.append(line)
        if len(lines) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        compare(base, tmp_path / "cut", baselines=("gru",), progress=stop_after_three)
    assert len(history(tmp_path / "cut" / "certified")) == 2
    resumed = compare(None, tmp_path / "cut", resume=True)
    assert [c.status for c in resumed.contenders] == ["finished", "finished"]
    for name in ("certified", "gru"):
        assert strip_time(history(tmp_path / "cut" / name)) == \
            strip_time(history(tmp_path / "whole" / name))
        final = {k: v for k, v in RunDir(tmp_path / "cut" / name).load_checkpoint()[
            "model"].items()}
        same = RunDir(tmp_path / "whole" / name).load_checkpoint()["model"]
        assert all(torch.equal(final[k], same[k]) for k in same)
    assert [c.test_at_best_val for c in resumed.contenders] == \
        [c.test_at_best_val for c in whole.contenders]


@pytest.mark.parametrize(("args", "message"), [
    (["--set", "model=gru"], "is not certifiable"),
    (["--set", "model=svd-combo", "--control"], "exists for sparse-combo"),
    (["--baselines", "gru,transformer"], 'invalid baseline "transformer"'),
    (["--baselines", "gru:0"], "integer >= 1"),
    (["--baselines", "gru,gru"], "each baseline once"),
    (["--threads", "auto"], "one fixed --threads"),
    (["--set", "epochs"], "--set takes KEY=VALUE"),
    (["--set", "nonsense=1"], "unknown key"),
    (["--budget-s", "0"], "budget_s must be > 0"),
])
def test_bad_input_is_one_line(tmp_path, capsys, args, message):
    code = main(["compare", "--out-dir", str(tmp_path / "cmp"), *args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "cmp").exists()  # nothing was created


def test_existing_directory_is_never_reused(tmp_path, capsys):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("my work")
    code = main(["compare", "--out-dir", str(tmp_path / "mine")])
    err = capsys.readouterr().err
    assert code == 2 and "not an empty directory" in err
    assert (tmp_path / "mine" / "notes.txt").read_text() == "my work"
    code = main(["compare", "--resume", "--out-dir", str(tmp_path / "mine")])
    assert code == 2 and "holds no comparison" in capsys.readouterr().err


def _compare_seeds():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "compare_seeds.py"
    spec = importlib.util.spec_from_file_location("compare_seeds", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_compare_seeds_summarises_runs_per_contender(tmp_path, capsys):
    import numpy as np

    accs = {"certified": [0.9, 0.8, 0.95], "gru-128": [0.85, 0.9, 0.7]}
    walls = {"certified": [10.0, 12.0, 9.0], "gru-128": [5.0, 4.0, 6.0]}
    dirs = []
    for seed in range(3):
        results = [{"name": n, "model": n, "parameters": 100 + i, "certified": n == "certified",
                    "test_at_best_val": accs[n][seed], "wall_s": walls[n][seed]}
                   for i, n in enumerate(accs)]
        d = tmp_path / f"seed{seed}"
        d.mkdir()
        (d / "compare.json").write_text(json.dumps({"results": results}))
        dirs.append(d)
    cs = _compare_seeds()
    rows = {r["contender"]: r for r in cs.summarise([cs.load(d) for d in dirs], "gru-128")}
    for name in accs:
        assert rows[name]["mean"] == pytest.approx(np.mean(accs[name]))
        assert rows[name]["sd"] == pytest.approx(np.std(accs[name], ddof=1))
        ratio = np.mean(np.array(walls[name]) / np.array(walls["gru-128"]))
        assert rows[name]["wall_ratio_to_reference"] == pytest.approx(ratio)
    (dirs[1] / "compare.json").write_text(json.dumps({"format": 1}))
    with pytest.raises(SystemExit, match="has no results"):
        cs.load(dirs[1])
    with pytest.raises(SystemExit, match="does not exist"):
        cs.load(tmp_path / "nowhere")
