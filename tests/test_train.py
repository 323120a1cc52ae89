"""Training end to end through ``combonet.cli.main`` on a tiny embedded task (no network)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from combonet.cli import main
from combonet.data import make_permutation
from combonet.train import checkpoint as ckpt
from combonet.train import loop
from combonet.train.config import TrainConfig

#: A few seconds per run: 2x8 Sparse Combo Net, permuted sklearn digits, 240 train examples.
TINY = ["--task", "pdigits", "--limit-train", "240", "--limit-test", "100",
        "--val-fraction", "0.25", "--modules", "2", "--units", "8", "--density", "0.2",
        "--magnitude", "1", "--dt", "0.1", "--batch-size", "30", "--threads", "1", "--quiet"]


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def history(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def strip_time(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "time"} for r in records]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One 3-epoch run, settings partly from a YAML file, shared by several tests."""
    folder = tmp_path_factory.mktemp("train")
    cfg_file = folder / "tiny.yaml"
    cfg_file.write_text("lr: 0.02\nschedule: step\nlr-step-size: 2\nlr_gamma: 0.5\n"
                        "epochs: 5\n")
    run_dir = folder / "run"
    code = main(["train", *TINY, "--config", str(cfg_file), "--epochs", "3",
                 "--out-dir", str(run_dir)])
    assert code == 0
    return run_dir


def test_run_writes_every_file(trained):
    for name in ("config.json", "checkpoint.pt", "best.pt", "metrics.jsonl", "summary.json",
                 "certificate.json", "learning_curve.png"):
        assert (trained / name).is_file(), name
    assert not [p.name for p in trained.iterdir() if p.name.endswith(".tmp")]
    png = (trained / "learning_curve.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_metrics_and_summary(trained):
    recs = history(trained)
    assert [r["epoch"] for r in recs] == [1, 2, 3]
    keys = {"train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc", "lr",
            "time", "certified", "margin"}
    assert all(keys <= set(r) for r in recs)
    for r in recs:
        for split in ("train", "val", "test"):
            assert 0.0 <= r[f"{split}_acc"] <= 1.0
            assert math.isfinite(r[f"{split}_loss"])
        assert r["certified"] is True and r["margin"] > 0
    assert recs[-1]["train_loss"] < recs[0]["train_loss"]  # it learns
    assert [r["lr"] for r in recs] == pytest.approx([0.02, 0.02, 0.01])  # flags/file/schedule
    summary = json.loads((trained / "summary.json").read_text())
    assert summary["status"] == "finished"
    assert summary["final"] == recs[-1]
    best = max(recs, key=lambda r: (r["val_acc"], -r["val_loss"]))
    assert summary["best_epoch"] == best["epoch"]
    assert summary["best"]["test_acc"] == best["test_acc"]
    assert summary["parameters"]["total"] == 64 + 32 + 170  # B (block-lower), U, readout
    assert summary["certificate"]["certified"] is True
    assert summary["wall_time_s"] > 0


def test_config_json_has_resolved_config_and_permutation(trained):
    record = json.loads((trained / "config.json").read_text())
    cfg = record["config"]
    assert cfg["epochs"] == 3  # the flag beats the file's 5
    assert cfg["lr"] == 0.02 and cfg["schedule"] == "step"  # from the file
    assert record["data"]["permutation"] == make_permutation(64, 0)
    assert record["fingerprint"] == TrainConfig(**cfg).fingerprint()


def test_certificate_json_of_feedback_net(trained):
    cert = json.loads((trained / "certificate.json").read_text())
    assert cert["certified"] is True
    assert cert["conditions"][0].startswith("Feedback")
    assert cert["discrete_factor"] < 1


def test_checkpoint_is_weights_only_safe(trained):
    data = torch.load(trained / "checkpoint.pt", weights_only=True)
    assert data["epoch"] == 3
    assert data["fingerprint"] == json.loads((trained / "config.json").read_text())[
        "fingerprint"]
    assert set(data["rng"]) == {"torch", "numpy", "python"}
    assert isinstance(data["optimizer"], dict) and isinstance(data["scheduler"], dict)
    best = torch.load(trained / "best.pt", weights_only=True)
    summary = json.loads((trained / "summary.json").read_text())
    assert best["epoch"] == summary["best_epoch"]


def test_evaluate_uses_saved_weights_and_permutation(trained, capsys):
    summary = json.loads((trained / "summary.json").read_text())
    code, out, _ = run(capsys, "evaluate", str(trained), "--json")
    assert code == 0
    res = json.loads(out)
    assert res["split"] == "test" and res["weights"] == "best"
    assert res["accuracy"] == pytest.approx(summary["best"]["test_acc"], abs=1e-9)
    assert res["loss"] == pytest.approx(summary["best"]["test_loss"], rel=1e-5)
    code, out, _ = run(capsys, "evaluate", str(trained), "--split", "val", "--weights", "final")
    assert code == 0
    assert f"{100 * summary['final']['val_acc']:.2f}%" in out


def test_certify_command_confirms(trained, capsys):
    code, out, _ = run(capsys, "certify", str(trained))
    assert code == 0
    assert "CERTIFIED" in out and "NOT CERTIFIED" not in out
    code, out, _ = run(capsys, "certify", str(trained), "--json")
    assert code == 0 and json.loads(out)["certified"] is True


def test_certify_fails_for_unconstrained_coupling(tmp_path, capsys):
    run_dir = tmp_path / "ctrl"
    code, _, _ = run(capsys, "train", *TINY, "--model", "unconstrained-combo", "--init-scale",
                     "2", "--epochs", "1", "--lr", "1e-4", "--out-dir", str(run_dir))
    assert code == 0
    assert json.loads((run_dir / "certificate.json").read_text())["certified"] is False
    assert history(run_dir)[0]["certified"] is False
    code, out, _ = run(capsys, "certify", str(run_dir))
    assert code == 1
    assert "NOT CERTIFIED" in out


def test_resume_equals_uninterrupted_run(trained, tmp_path, capsys):
    """3 epochs in one go vs 1 epoch, then ``--resume`` to 3: identical weights and metrics."""
    cfg_file = trained.parent / "tiny.yaml"
    run_dir = tmp_path / "resumed"
    common = ["train", *TINY, "--config", str(cfg_file), "--out-dir", str(run_dir)]
    code, _, _ = run(capsys, *common, "--epochs", "1")
    assert code == 0
    assert len(history(run_dir)) == 1
    code, out, _ = run(capsys, "train", "--resume", "--out-dir", str(run_dir), "--epochs", "3",
                       "--quiet")
    assert code == 0, out
    full = torch.load(trained / "checkpoint.pt", weights_only=True)
    resumed = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert resumed["epoch"] == 3
    assert full["model"].keys() == resumed["model"].keys()
    for key, value in full["model"].items():
        assert torch.equal(value, resumed["model"][key]), key
    assert strip_time(history(run_dir)) == strip_time(history(trained))
    assert strip_time(resumed["history"]) == strip_time(full["history"])
    best_a = torch.load(trained / "best.pt", weights_only=True)
    best_b = torch.load(run_dir / "best.pt", weights_only=True)
    assert best_a["epoch"] == best_b["epoch"]
    assert all(torch.equal(v, best_b["model"][k]) for k, v in best_a["model"].items())


def test_resume_refuses_a_different_configuration(trained, tmp_path, capsys):
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    for name in ("config.json", "checkpoint.pt"):
        (run_dir / name).write_bytes((trained / name).read_bytes())
    code, _, err = run(capsys, "train", "--resume", "--out-dir", str(run_dir), "--lr", "0.5",
                       "--units", "4", "--epochs", "4")
    assert code == 2
    assert "different configuration" in err
    assert "lr=0.02 (checkpoint) vs 0.5 (now)" in err and "units=8" in err
    assert len(err.strip().splitlines()) == 1
    # a runtime-only change (epochs, threads) is compatible
    code, _, err = run(capsys, "train", "--resume", "--out-dir", str(run_dir), "--epochs", "3",
                       "--threads", "1")
    assert code == 0, err


def test_new_run_refuses_existing_run_dir(trained, capsys):
    code, _, err = run(capsys, "train", *TINY, "--out-dir", str(trained), "--epochs", "1")
    assert code == 2 and "--resume" in err


def test_resume_without_checkpoint(tmp_path, capsys):
    code, _, err = run(capsys, "train", *TINY, "--resume", "--out-dir", str(tmp_path / "none"))
    assert code == 2 and "cannot resume" in err


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, capsys, monkeypatch):
    calls = {"n": 0}
    real = loop.loss_function

    def poisoned(logits, target):
        calls["n"] += 1
        loss = real(logits, target)
        return loss * float("nan") if calls["n"] > 6 else loss  # 6 steps = one epoch

    monkeypatch.setattr(loop, "loss_function", poisoned)
    run_dir = tmp_path / "nan"
    code, _, err = run(capsys, "train", *TINY, "--epochs", "3", "--out-dir", str(run_dir))
    assert code == 1
    assert "nan" in err.lower() and "last good checkpoint (epoch 1)" in err
    data = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert data["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in data["model"].values() if v.is_floating_point())
    assert len(history(run_dir)) == 1
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["final"]["epoch"] == 1
    assert not (run_dir / "certificate.json").exists()


def test_lr_schedules():
    f = loop.lr_factor
    assert f(7, schedule="none", epochs=10, step_size=3, gamma=0.1) == 1.0
    assert f(7, schedule="step", epochs=10, step_size=3, gamma=0.1) == pytest.approx(0.01)
    assert f(0, schedule="cosine", epochs=10, step_size=3, gamma=0.1) == 1.0
    assert f(5, schedule="cosine", epochs=10, step_size=3, gamma=0.1) == pytest.approx(0.5)
    assert f(10, schedule="cosine", epochs=10, step_size=3, gamma=0.1) == pytest.approx(0.0)


def test_rng_state_roundtrip_through_weights_only_file(tmp_path):
    import random

    import numpy as np

    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    state = ckpt.rng_state()
    ckpt.atomic_save({"rng": state}, tmp_path / "r.pt")
    expected = (torch.rand(3), np.random.rand(3), random.random())
    loaded = torch.load(tmp_path / "r.pt", weights_only=True)
    ckpt.set_rng_state(loaded["rng"])
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], again[0])
    assert np.array_equal(expected[1], again[1]) and expected[2] == again[2]
    assert [p.name for p in tmp_path.iterdir()] == ["r.pt"]


def test_atomic_save_keeps_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "c.pt"
    ckpt.atomic_save({"a": torch.ones(2)}, path)

    def broken(fh):
        fh.write(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError):
        ckpt.atomic_write_bytes(path, broken)
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]
