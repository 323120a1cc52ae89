"""Every experiment's ``smoke`` preset runs end to end and writes what it promises.

All experiments share one output folder (module-scoped), so runs with identical settings are
trained once, as with ``combonet experiment all``. Each test checks the JSON, CSV and PNG of one
experiment: the rows it must contain, their keys and values that must hold by construction.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from combonet.cli import main
from combonet.experiments import EXPERIMENTS
from combonet.experiments.report import write_report
from combonet.experiments.stability import (
    designed_input,
    perturbed_logits,
    simulate_2unit,
    switching_growth,
)


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield tmp_path_factory.mktemp("experiments")
    torch.set_num_threads(threads)


def run(name: str, out: Path, *extra: str) -> dict:
    """Run ``combonet experiment NAME --preset smoke`` into ``out``; return its JSON record
    after checking that the JSON, CSV and PNG exist and agree."""
    code = main(["experiment", name, "--preset", "smoke", "--out", str(out), "--quiet",
                 *extra])
    assert code == 0
    record = json.loads((out / f"{name}-smoke.json").read_text())
    assert record["experiment"] == name and record["preset"] == "smoke"
    assert record["command"].startswith(f"combonet experiment {name} --preset smoke")
    assert record["hardware"]["cores"] >= 1 and record["wall_time_s"] >= 0
    with open(out / f"{name}-smoke.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(record["rows"]) > 0
    assert set(record["columns"]) <= set(rows[0])
    png = out / f"{name}-smoke.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return record


def check_training_rows(record: dict, labels: set[str]) -> None:
    """Every training row finished, has an accuracy in [0, 1], a parameter count, and combo
    nets carry their certificate read from certificate.json."""
    assert {r["label"] for r in record["rows"]} == labels
    for r in record["rows"]:
        assert r["status"] == "finished", r
        assert 0.0 <= r["test_acc"] <= 1.0 and r["params"] > 0
        assert Path(r["run_dir"], "summary.json").is_file()
        if r["model"] in ("sparse-combo", "svd-combo"):
            assert r["certified"] is True and r["rate"] > 0 and r["discrete_factor"] < 1
            assert r["metric_condition_number"] >= 1
        if r["model"] == "unconstrained-combo":
            assert r["certified"] is False
        assert "paper" in r


def test_theorem7(out):
    rec = run("theorem7", out)
    rows = {r["c"]: r for r in rec["rows"]}
    assert set(rows) == {1.0, 4.0}
    for r in rows.values():
        assert r["sym_condition_holds"] is True  # W_sym = 0: g W_sym - I = -I < 0
    assert rows[1.0]["lmi_feasible"] is True and rows[1.0]["best_constant_rate"] == 0.5
    assert rows[4.0]["lmi_feasible"] is False and rows[4.0]["certified_infeasible"] is True
    assert rows[1.0]["switching_growth"] < 0 < rows[4.0]["switching_growth"]
    assert rows[4.0]["fitted_separation_rate"] > 0 > rows[1.0]["fitted_separation_rate"]


def test_switching_growth_threshold_and_designed_path():
    assert switching_growth(2.0)[0] < 0 < switching_growth(3.1)[0]
    x_star, u = designed_input(5.0, 0.7)
    traj = simulate_2unit(5.0, u, x_star(0.0)[None], t_end=1.0, h=0.001)
    assert abs(traj[-1, 0] - x_star(1.0)).max() < 1e-3  # x* solves eq. 1 under u


def test_control_and_contraction(out):
    rec = run("control", out)
    check_training_rows(rec, {"feedback (eq. 3)", "unconstrained L = B"})
    assert {s["label"] for s in rec["summary"]} == {"feedback (eq. 3)", "unconstrained L = B"}
    rec = run("contraction", out)
    rows = {r["label"]: r for r in rec["rows"]}
    fb = rows["feedback (eq. 3)"]
    assert fb["certified"] is True and fb["envelope_holds"] is True
    # what the certificate promises, measured on trajectories
    assert fb["worst_step_ratio"] <= fb["discrete_factor"] + 1e-9
    assert fb["measured_factor"] <= fb["discrete_factor"] + 1e-9
    assert fb["final_over_initial"] < 1
    assert rows["unconstrained L = B"]["certified"] is False


def test_robustness(out):
    rec = run("robustness", out)
    kinds = {r["kind"] for r in rec["rows"]}
    assert any(k.startswith("state at step") for k in kinds) and "input" in kinds
    for r in rec["rows"]:
        assert 0 <= r["accuracy"] <= 1
        assert (r["recovery"] is None) == (r["sigma"] == 0 or r["kind"] == "input")
    assert {s["label"] for s in rec["summary"]} == {"feedback (eq. 3)", "unconstrained L = B"}


def test_perturbed_logits_without_noise_equal_the_classifier(out):
    from combonet.models import sparse_combo_net

    torch.manual_seed(0)
    model = sparse_combo_net(2, 3, density=0.3, input_size=1, num_classes=4, dt=0.1)
    x = torch.randn(5, 12, 1)
    with torch.no_grad():
        logits, _ = perturbed_logits(model, x, 6, None)
        assert torch.allclose(logits, model(x), atol=1e-5)
        moved, _ = perturbed_logits(model, x, 6, torch.ones(5, 6))
        assert not torch.allclose(moved, logits)


def test_size(out):
    rec = run("size", out)
    check_training_rows(rec, {f"{m}-{p}x4" for m in ("sparse-combo", "svd-combo")
                              for p in (1, 2)})
    assert {s["modules"] for s in rec["summary"]} == {1, 2}


def test_sparsity_and_magnitude(out):
    rec = run("sparsity", out)
    check_training_rows(rec, {"density-0.265", "density-0.1"})
    rec = run("magnitude", out)
    check_training_rows(rec, {"magnitude-0.5", "magnitude-1"})
    assert [r["magnitude"] for r in rec["rows"]] == [0.5, 1.0]


def test_modularity(out):
    rec = run("modularity", out)
    check_training_rows(rec, {"1x8", "2x4"})
    assert all(r["modules"] * r["units"] == 8 for r in rec["rows"])


def test_repeatability_with_seeds(out):
    rec = run("repeatability", out, "--seeds", "0", "3")
    assert sorted(r["seed"] for r in rec["rows"]) == [0, 3] and rec["seeds"] == [0, 3]
    (s,) = rec["summary"]
    assert s["n"] == 2 and s["min"] <= s["mean"] <= s["max"] and s["var"] >= 0


def test_table(out):
    rec = run("table", out)
    models = {"sparse-combo", "svd-combo", "lstm", "gru", "lipschitz", "antisymmetric"}
    check_training_rows(rec, models)
    assert {s["model"] for s in rec["summary"]} == models
    assert sum(r["selected"] for r in rec["rows"]) == len(models)


def test_sparse_coupling(out):
    rec = run("sparse-coupling", out)
    check_training_rows(rec, {"coupling-1", "coupling-0.5"})
    full, half = sorted(rec["rows"], key=lambda r: -r["coupling"])
    assert half["params"] <= full["params"]  # the mask removes coupling parameters


def test_report_keeps_hand_written_text(out, tmp_path):
    docs = tmp_path / "docs"
    (docs / "data").mkdir(parents=True)
    for name in ("theorem7", "control"):
        rec = json.loads((out / f"{name}-smoke.json").read_text())
        rec["preset"] = "cpu"
        (docs / "data" / f"{name}-cpu.json").write_text(json.dumps(rec))
    (docs / "results.md").write_text("# Results\n\nhand-written\n")
    write_report(docs)
    text = (docs / "results.md").read_text()
    assert "hand-written" in text and text.count("<!-- BEGIN GENERATED: control -->") == 1
    assert "paper (quoted; psMNIST, GPU)" in text and "figures/control-smoke.png" in text
    write_report(docs)  # idempotent: sections are replaced, not appended again
    assert (docs / "results.md").read_text() == text


def test_every_experiment_is_tested():
    tested = {"theorem7", "control", "contraction", "robustness", "size", "sparsity",
              "magnitude", "modularity", "repeatability", "table", "sparse-coupling"}
    assert set(EXPERIMENTS) == tested


def test_paper_preset_is_constructible_and_needs_data(tmp_path, capsys):
    from combonet.experiments import Context
    from combonet.train import TrainConfig

    ctx = Context(name="size", preset="paper", out=tmp_path)
    cfg = TrainConfig.from_dict(ctx.base()).validate()
    assert (cfg.task, cfg.modules, cfg.units, cfg.density) == ("psmnist", 16, 32, 0.033)
    assert cfg.epochs >= 100
    assert main(["experiment", "size", "--preset", "paper", "--out", str(tmp_path)]) == 2
    assert "--data-dir" in capsys.readouterr().err


def test_bad_name_is_a_usage_error():
    with pytest.raises(SystemExit) as stop:
        main(["experiment", "nonsense"])
    assert stop.value.code == 2
