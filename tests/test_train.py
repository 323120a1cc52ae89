"""Training end to end through ``combonet.cli.main`` on a tiny embedded task (no network)."""

from __future__ import annotations

import json
import math
import os
import shlex
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import combonet
from combonet.cli import build_parser, main, resolve_train_config
from combonet.data import make_permutation
from combonet.train import RunDir, loop, train
from combonet.train import checkpoint as ckpt
from combonet.train.config import TrainConfig

UMASK = ckpt.current_umask()
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
    return [{k: v for k, v in r.items() if not k.startswith("time")} for r in records]


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
                 "certificate.json", "learning_curve.png", "manifest.json"):
        assert (trained / name).is_file(), name
        # what a plain open() gives under the umask (was 0600 from mkstemp)
        assert stat.S_IMODE((trained / name).stat().st_mode) == 0o666 & ~UMASK, name
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
    for name in ("config.json", "checkpoint.pt", "manifest.json"):
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


def tiny_config(*extra: str) -> TrainConfig:
    return resolve_train_config(build_parser().parse_args(["train", *TINY, *extra]))


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, capsys):
    """The loss is an argument of train() (no module global to patch); train() prints
    nothing, the CLI's reporter prints the one-line error."""
    calls = {"n": 0}

    def poisoned(logits, target):
        calls["n"] += 1
        loss = loop.cross_entropy(logits, target)
        return loss * float("nan") if calls["n"] > 6 else loss  # 6 steps = one epoch

    run_dir = tmp_path / "nan"
    result = train(tiny_config("--epochs", "3", "--out-dir", str(run_dir)), loss_fn=poisoned)
    assert capsys.readouterr() == ("", "")  # train() itself prints nothing
    assert result.status == "diverged" and result.exit_code == 1
    assert "nan" in result.message.lower()
    assert "last good checkpoint (epoch 1)" in result.message
    data = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert data["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in data["model"].values() if v.is_floating_point())
    assert len(history(run_dir)) == 1
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["final"]["epoch"] == 1
    assert not (run_dir / "certificate.json").exists()


def test_divergence_in_epoch_one_keeps_the_initial_checkpoint(tmp_path, capsys):
    run_dir = tmp_path / "boom"
    code = main(["train", *TINY, "--lr", "1e30", "--grad-clip", "none", "--epochs", "2",
                 "--out-dir", str(run_dir)])
    _, err = capsys.readouterr()
    assert code == 1
    assert len(err.strip().splitlines()) == 1 and err.startswith("combonet train: error: ")
    assert "last good checkpoint (epoch 0 = the initial weights)" in err
    assert RunDir(run_dir).load_checkpoint()["epoch"] == 0


def test_custom_metric_and_loss_are_used(tmp_path):
    """A per-step (masked) loss later plugs in the same way: loss_fn(outputs, targets) and
    metric_fn(outputs, targets) -> (correct, count)."""
    seen = {"loss": 0, "metric": 0}

    def loss_fn(out, y):
        seen["loss"] += 1
        return torch.nn.functional.cross_entropy(out, y)

    def metric_fn(out, y):
        seen["metric"] += 1
        return 0.0, float(y.numel())  # a metric that never counts a hit

    result = train(tiny_config("--epochs", "1", "--out-dir", str(tmp_path / "m")),
                   loss_fn=loss_fn, metric_fn=metric_fn)
    assert result.status == "finished" and seen["loss"] > 6 and seen["metric"] > 6
    assert result.summary["final"]["train_acc"] == 0.0
    assert result.summary["final"]["val_acc"] == 0.0 == result.summary["final"]["test_acc"]


def test_resume_with_other_epochs_is_refused_under_cosine(tmp_path, capsys):
    """Issue 11, item 2: a 2-epoch cosine run resumed with --epochs 4 trained epoch 3 at
    lr 0. Now refused, with the command that trains longer instead (--init-from)."""
    run_dir = tmp_path / "cos"
    assert main(["train", *TINY, "--epochs", "2", "--out-dir", str(run_dir)]) == 0
    capsys.readouterr()
    before = (run_dir / "checkpoint.pt").read_bytes()
    for epochs in ("4", "1"):
        code = main(["train", "--resume", "--out-dir", str(run_dir), "--epochs", epochs])
        _, err = capsys.readouterr()
        assert code == 2 and len(err.strip().splitlines()) == 1
        assert f"epochs=2 (checkpoint) vs {epochs} (now)" in err
        assert f"combonet train --init-from {run_dir} --epochs N" in err
    assert (run_dir / "checkpoint.pt").read_bytes() == before  # nothing changed

    longer = tmp_path / "longer"
    assert main(["train", "--init-from", str(run_dir), "--epochs", "2", "--out-dir",
                 str(longer)]) == 0
    record = json.loads((longer / "config.json").read_text())
    assert record["config"]["init_from"] == str(run_dir)
    src = json.loads((run_dir / "manifest.json").read_text())["files"]["checkpoint.pt"]
    assert record["init_from"]["sha256"] == src["sha256"]
    assert record["init_from"]["epoch"] == 2 and record["init_from"]["weights"] == "final"
    assert record["config"]["units"] == 8  # the source's settings, not the defaults
    assert [r["epoch"] for r in history(longer)] == [1, 2]
    assert history(longer)[0]["lr"] == pytest.approx(0.05)  # a fresh schedule


def test_init_from_starts_from_the_final_weights(trained, tmp_path):
    cfg = TrainConfig.from_dict(dict(RunDir(trained).config().to_dict(), out_dir=str(
        tmp_path / "n"), init_from=str(trained), epochs=1))
    trainer = loop.Trainer(cfg)
    try:
        final = torch.load(trained / "checkpoint.pt", weights_only=True)["model"]
        for key, value in trainer.model.state_dict().items():
            assert torch.equal(value, final[key]), key
    finally:
        trainer.close()


def test_init_from_refuses_other_models_and_unfinished_runs(trained, tmp_path, capsys):
    code = main(["train", "--init-from", str(trained), "--units", "4", "--out-dir",
                 str(tmp_path / "x")])
    _, err = capsys.readouterr()
    assert code == 2 and "units=8 (source) vs 4 (now)" in err
    assert not (tmp_path / "x").exists()
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    for name in ("config.json", "checkpoint.pt", "manifest.json"):
        (unfinished / name).write_bytes((trained / name).read_bytes())
    code = main(["train", "--init-from", str(unfinished), "--out-dir", str(tmp_path / "y")])
    _, err = capsys.readouterr()
    assert code == 2 and "not finished" in err and "--resume" in err


def test_resume_with_fewer_epochs_than_completed_is_refused(trained, tmp_path, capsys):
    run_dir = tmp_path / "copy"
    run_dir.mkdir()
    for p in trained.iterdir():
        (run_dir / p.name).write_bytes(p.read_bytes())
    code = main(["train", "--resume", "--out-dir", str(run_dir), "--epochs", "2"])
    _, err = capsys.readouterr()
    assert code == 2  # the step schedule does not depend on epochs, but 3 are done already
    assert "cannot resume with epochs=2" in err and "already completed 3 epochs" in err
    assert json.loads((run_dir / "summary.json").read_text())["epochs_completed"] == 3


def test_resume_of_a_finished_run_is_refused_and_changes_nothing(trained, tmp_path, capsys):
    run_dir = tmp_path / "copy"
    run_dir.mkdir()
    for p in trained.iterdir():
        (run_dir / p.name).write_bytes(p.read_bytes())
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    code = main(["train", "--resume", "--out-dir", str(run_dir)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "already finished its 3 epochs; nothing to resume" in err
    assert f"--init-from {run_dir}" in err
    after = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    assert {k: v for k, v in after.items() if k != ".combonet.lock"} == \
        {k: v for k, v in before.items() if k != ".combonet.lock"}
    # the step schedule does not depend on epochs: a larger --epochs continues the run
    assert main(["train", "--resume", "--out-dir", str(run_dir), "--epochs", "4"]) == 0
    assert json.loads((run_dir / "summary.json").read_text())["epochs_completed"] == 4


def test_a_full_disk_for_the_figure_alone_does_not_fail_a_finished_run(tmp_path, capsys,
                                                                      monkeypatch):
    import errno

    from combonet.train import rundir

    real = rundir.RunDir.write_bytes

    def no_figure(self, name, data):
        if name == rundir.CURVE:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(self, name, data)

    monkeypatch.setattr(rundir.RunDir, "write_bytes", no_figure)
    run_dir = tmp_path / "run"
    code = main(["train", *TINY, "--epochs", "1", "--out-dir", str(run_dir)])
    err = capsys.readouterr().err
    assert code == 0 and "learning_curve.png was not written" in err
    assert RunDir(run_dir).is_finished() and not (run_dir / "learning_curve.png").exists()


def test_full_disk_is_one_line_and_loses_nothing(trained, tmp_path, capsys, monkeypatch):
    """ENOSPC while writing the epoch-2 checkpoint: one line (exit 1), the epoch-1 checkpoint
    still verifies, and --resume after 'freeing space' ends bit-identical to a clean run."""
    import errno

    real = ckpt._write_file
    state = {"checkpoints": 0}

    def full(path, fh, data):
        if path == run_dir / "checkpoint.pt":
            state["checkpoints"] += 1
            if state["checkpoints"] == 3:  # epoch 0, epoch 1, then epoch 2 fails
                fh.write(data[:100])
                raise OSError(errno.ENOSPC, "No space left on device")
        real(path, fh, data)

    run_dir = tmp_path / "full"
    cfg_file = trained.parent / "tiny.yaml"
    monkeypatch.setattr(ckpt, "_write_file", full)
    code = main(["train", *TINY, "--config", str(cfg_file), "--epochs", "3", "--out-dir",
                 str(run_dir)])
    _, err = capsys.readouterr()
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "No space left on device (ENOSPC)" in err
    assert f"continue with: combonet train --resume --out-dir {run_dir}" in err
    assert not [p for p in os.listdir(run_dir) if p.endswith(".tmp")]
    assert RunDir(run_dir).load_checkpoint()["epoch"] == 1  # verified (manifest: previous)
    monkeypatch.setattr(ckpt, "_write_file", real)
    assert main(["train", "--resume", "--out-dir", str(run_dir)]) == 0
    full_w = torch.load(trained / "checkpoint.pt", weights_only=True)["model"]
    got = torch.load(run_dir / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(v, got[k]) for k, v in full_w.items())


def test_interrupt_in_epoch_one_prints_a_command_that_works(trained, tmp_path, capsys,
                                                            monkeypatch):
    """Ctrl-C in the first epoch: the hint names the real directory (not RUN_DIR) and the
    command it prints resumes the run (from the epoch-0 checkpoint) to the same weights."""
    real = loop.Trainer.train_epoch

    def interrupted(self, epoch):
        raise KeyboardInterrupt

    monkeypatch.setattr(loop.Trainer, "train_epoch", interrupted)
    run_dir = tmp_path / "run with space"
    code = main(["train", *TINY, "--config", str(trained.parent / "tiny.yaml"), "--epochs",
                 "3", "--out-dir", str(run_dir)])
    _, err = capsys.readouterr()
    assert code == 130
    (line,) = err.strip().splitlines()
    assert "RUN_DIR" not in line
    command = line.split("continue with: ", 1)[1]
    argv = shlex.split(command)
    assert argv[:2] == ["combonet", "train"] and argv[-1] == str(run_dir)
    monkeypatch.setattr(loop.Trainer, "train_epoch", real)
    assert main(argv[1:]) == 0
    full_w = torch.load(trained / "checkpoint.pt", weights_only=True)["model"]
    got = torch.load(run_dir / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(v, got[k]) for k, v in full_w.items())
    assert strip_time(history(run_dir)) == strip_time(history(trained))


def _env() -> dict[str, str]:
    env = dict(os.environ)
    src = str(Path(combonet.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    return env


def test_kill_9_then_resume_is_bit_identical(trained, tmp_path, capsys):
    """kill -9 after the first checkpoint: the lock dies with the process, a crash's temp
    file is cleaned up on --resume, and the resumed run equals the uninterrupted one."""
    run_dir = tmp_path / "killed"
    cmd = [sys.executable, "-m", "combonet", "train", *TINY, "--config",
           str(trained.parent / "tiny.yaml"), "--epochs", "3", "--out-dir", str(run_dir)]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            try:
                man = json.loads((run_dir / "manifest.json").read_text())
                if man["files"]["checkpoint.pt"]["epoch"] >= 1:
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.05)
        proc.kill()
    finally:
        proc.wait()
    assert proc.returncode == -9, "the run finished before it could be killed"
    orphan = run_dir / ".checkpoint.pt.k1ll3d.tmp"  # what a kill during a write leaves
    orphan.write_bytes(b"half a checkpoint")
    assert main(["train", "--resume", "--out-dir", str(run_dir)]) == 0
    capsys.readouterr()
    assert not orphan.exists()
    full_w = torch.load(trained / "checkpoint.pt", weights_only=True)["model"]
    got = torch.load(run_dir / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(v, got[k]) for k, v in full_w.items())
    assert strip_time(history(run_dir)) == strip_time(history(trained))


def test_a_directory_in_use_is_refused(tmp_path, capsys):
    """Issue 11, item 1: two runs with one --out-dir. The second is refused while the first
    holds the lock (here a process holding it), and nothing in the directory changes."""
    run_dir = tmp_path / "busy"
    run_dir.mkdir()
    lock = run_dir / ".combonet.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, filelock; lock = filelock.FileLock(sys.argv[1]); "
         "lock.acquire(); print('locked', flush=True); sys.stdin.read()", str(lock)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        for argv in (["train", *TINY, "--out-dir", str(run_dir)],
                     ["train", "--resume", "--out-dir", str(run_dir)]):
            code = main(argv)
            _, err = capsys.readouterr()
            assert code == 2 and "is in use by another combonet process" in err, err
        assert sorted(os.listdir(run_dir)) == [".combonet.lock"]
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert main(["train", *TINY, "--epochs", "1", "--out-dir", str(run_dir)]) == 0  # free now


def test_default_run_directories_are_unique(tmp_path, monkeypatch, capsys):
    """Two runs started in the same second with no --out-dir used to share a directory."""
    from combonet.train import rundir

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(rundir.time, "strftime", lambda fmt: "20260101-000000")
    a = RunDir.unique("runs", "pdigits-sparse-combo")
    b = RunDir.unique("runs", "pdigits-sparse-combo")
    assert a.path != b.path and a.path.is_dir() and b.path.is_dir()
    assert a.path.name.startswith("pdigits-sparse-combo-20260101-000000-")
    assert main(["train", *TINY, "--epochs", "1"]) == 0
    out = capsys.readouterr().out
    made = sorted(set(os.listdir("runs")) - {a.path.name, b.path.name})
    assert len(made) == 1 and f"run directory: runs/{made[0]}" in out


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
