"""RunDir: which directories a run may take, verified checkpoints, checked run records.

Issue 11, items 1 and 4: every refusal is one line (exit status 2) naming the file, and the
directory is left exactly as it was.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import stat
from pathlib import Path

import pytest
import torch

from combonet.cli import main
from combonet.train import CheckpointError, RunDir, RunDirError, RunDirWriteError
from combonet.train import checkpoint as ckpt
from combonet.train.rundir import load_state

TINY = ["--task", "pdigits", "--limit-train", "120", "--limit-test", "50",
        "--val-fraction", "0.25", "--modules", "2", "--units", "8", "--density", "0.2",
        "--magnitude", "1", "--batch-size", "30", "--threads", "1", "--quiet"]


def one_line(capsys, argv: list[str], code: int = 2) -> str:
    got = main(argv)
    out, err = capsys.readouterr()
    assert got == code, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("rundir") / "base"
    assert main(["train", *TINY, "--epochs", "2", "--out-dir", str(run_dir)]) == 0
    return run_dir


@pytest.fixture
def run(base, tmp_path) -> Path:
    """A private copy of the trained run."""
    return Path(shutil.copytree(base, tmp_path / "run"))


def rewrite(run: Path, name: str, obj) -> None:
    """Replace checkpoint ``name`` with ``obj`` and update the manifest, as someone who knows
    the format would: the checksum then passes and the content checks must catch it."""
    data = obj if isinstance(obj, bytes) else ckpt.to_bytes(obj)
    (run / name).write_bytes(data)
    man = json.loads((run / "manifest.json").read_text())
    man["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
                          "epoch": 2}
    (run / "manifest.json").write_text(json.dumps(man))


# -- item 4: corrupt or mismatched checkpoints ----------------------------------------------
def test_flipped_bytes_are_refused_by_evaluate_certify_and_resume(run, capsys):
    for name in ("best.pt", "checkpoint.pt"):
        data = bytearray((run / name).read_bytes())
        mid = len(data) // 2
        data[mid:mid + 64] = bytes(b ^ 0xFF for b in data[mid:mid + 64])
        (run / name).write_bytes(bytes(data))
    before = snapshot(run)
    line = one_line(capsys, ["evaluate", str(run)])
    assert f"{run / 'best.pt'} fails its SHA-256 check against manifest.json" in line
    line = one_line(capsys, ["certify", str(run), "--weights", "best"])
    assert "best.pt fails its SHA-256 check" in line
    line = one_line(capsys, ["certify", str(run)])
    assert "checkpoint.pt fails its SHA-256 check" in line
    line = one_line(capsys, ["train", "--resume", "--out-dir", str(run), "--epochs", "2"])
    assert "checkpoint.pt fails its SHA-256 check" in line
    assert snapshot(run) == before


def test_truncated_checkpoint_is_refused_before_reading(run, capsys):
    data = (run / "best.pt").read_bytes()
    (run / "best.pt").write_bytes(data[:1000])
    line = one_line(capsys, ["evaluate", str(run)])
    assert f"has 1000 bytes but manifest.json records {len(data)}" in line


def test_weights_and_config_from_different_runs(run, capsys):
    rec = json.loads((run / "config.json").read_text())
    rec["config"]["units"] = 4  # another run's config.json next to these weights
    (run / "config.json").write_text(json.dumps(rec))
    line = one_line(capsys, ["evaluate", str(run)])
    assert (f"{run / 'best.pt'} was written by a different configuration than "
            f"{run / 'config.json'}: units=8 (best.pt) vs 4 (config.json)") in line


def test_shapes_are_checked_before_loading(tmp_path):
    from combonet.models import sparse_combo_net

    model = sparse_combo_net(2, 4, 0.3, 1.0, input_size=1, num_classes=3)
    other = sparse_combo_net(2, 5, 0.3, 1.0, input_size=1, num_classes=3).state_dict()
    with pytest.raises(CheckpointError, match=r"w\.pt does not fit the model: .* has shape"):
        load_state(model, other, tmp_path / "w.pt")
    del other["readout.bias"]
    with pytest.raises(CheckpointError, match=r"missing 'readout\.bias'"):
        load_state(model, other, tmp_path / "w.pt")


def test_malicious_pickle_is_refused_without_torch_advice(run, capsys, tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    rewrite(run, "best.pt", pickle.dumps({"format": ckpt.FORMAT, "model": Payload()}))
    line = one_line(capsys, ["evaluate", str(run)])
    assert "holds objects other than tensors" in line and "never runs code" in line
    assert "weights_only" not in line  # torch's advice (weights_only=False) is not passed on
    assert not marker.exists()


def test_non_finite_tensor_is_refused(run, capsys):
    data = torch.load(run / "best.pt", weights_only=True)
    key = next(k for k, v in data["model"].items() if v.is_floating_point())
    data["model"][key] = data["model"][key].clone().fill_(float("nan"))
    rewrite(run, "best.pt", data)
    line = one_line(capsys, ["evaluate", str(run)])
    assert f"holds NaN or inf values (in model.{key})" in line


def test_checkpoint_without_model(run, capsys):
    data = torch.load(run / "best.pt", weights_only=True)
    del data["model"]
    rewrite(run, "best.pt", data)
    line = one_line(capsys, ["evaluate", str(run)])
    assert f"{run / 'best.pt'} is incomplete: it has no 'model' entry" in line


def test_checkpoint_not_in_the_manifest(run, capsys):
    (run / "manifest.json").unlink()
    assert "manifest.json does not exist" in one_line(capsys, ["evaluate", str(run)])


@pytest.mark.parametrize("content,match", [
    (b'{"config": {}}', "has no 'data' entry"),
    (b"[1, 2, 3]", "must hold a JSON object (the run record), got a list"),
    (b'{"config": 1, "data": {}}', "must hold a JSON object (its 'config' entry), got a int"),
    (b'{"config": {}, "data": {"features": 0, "num_classes": 10}}',
     "data.features must be an integer >= 1, got 0"),
    (b'{"config": {}, "config": {}, "data": {}}', "holds the key 'config' twice"),
    (b"{not json", "is not valid JSON (line 1, column 2"),
    (b'{"config": "\xff"}', "is not UTF-8 text (byte 0xff at offset 12)"),
])
def test_broken_config_json(run, capsys, content, match):
    (run / "config.json").write_bytes(content)
    for cmd in ("evaluate", "certify"):
        assert match in one_line(capsys, [cmd, str(run)])


def test_missing_best_before_the_first_epoch(run, capsys):
    (run / "best.pt").unlink()
    assert "best.pt does not exist (no epoch has completed yet)" in one_line(
        capsys, ["evaluate", str(run)])


# -- item 1: which directories a new run may take --------------------------------------------
def test_a_folder_of_the_users_own_files_is_not_touched(tmp_path, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "config.json").write_text('{"my": "settings"}')
    (folder / "summary.json").write_text('{"my": "notes"}')
    before = snapshot(folder)
    line = one_line(capsys, ["train", *TINY, "--out-dir", str(folder)])
    assert "is not empty (config.json, summary.json) and is not a combonet run" in line
    assert "nothing was changed" in line
    assert snapshot(folder) == before and sorted(os.listdir(folder)) == sorted(before)


def test_a_run_whose_checkpoint_was_deleted_is_not_overwritten(run, capsys):
    (run / "checkpoint.pt").unlink()
    before = snapshot(run)
    assert "already holds a run" in one_line(capsys, ["train", *TINY, "--out-dir", str(run)])
    line = one_line(capsys, ["train", "--resume", "--out-dir", str(run)])
    assert f"cannot resume: {run / 'checkpoint.pt'} does not exist" in line
    assert snapshot(run) == before


def test_an_out_dir_that_is_a_file(tmp_path, capsys):
    path = tmp_path / "notes.txt"
    path.write_text("keep me")
    line = one_line(capsys, ["train", *TINY, "--out-dir", str(path)])
    assert f"--out-dir {path} is a file, not a directory" in line
    assert path.read_text() == "keep me"


def test_an_empty_directory_is_accepted_and_a_failed_start_leaves_it_empty(tmp_path, capsys):
    folder = tmp_path / "empty"
    folder.mkdir()
    line = one_line(capsys, ["train", *TINY, "--task", "psmnist", "--out-dir", str(folder)])
    assert "--data-dir" in line
    assert os.listdir(folder) == []


# -- the manifest and the files ----------------------------------------------------------------
def test_an_interrupted_replace_still_verifies(tmp_path, monkeypatch):
    """Manifest first, then the file: a crash (here a failing write) between the two leaves
    the old file, which the manifest still accepts as 'previous'."""
    rd = RunDir(tmp_path / "r")
    rd.claim_new()
    try:
        state = {"format": ckpt.FORMAT, "epoch": 1, "fingerprint": "f", "config": {},
                 "model": {"w": torch.ones(2)}}
        rd.save_checkpoint("best.pt", state)
        real = ckpt._write_file

        def fail(path, fh, data):
            if path.name == "best.pt":
                raise OSError(28, "No space left on device")
            real(path, fh, data)

        monkeypatch.setattr(ckpt, "_write_file", fail)
        with pytest.raises(RunDirWriteError, match="No space left on device"):
            rd.save_checkpoint("best.pt", dict(state, epoch=2, model={"w": torch.zeros(2)}))
        monkeypatch.setattr(ckpt, "_write_file", real)
        assert RunDir(rd.path).load_checkpoint("best.pt")["epoch"] == 1
        rd.save_checkpoint("best.pt", dict(state, epoch=3))
        assert RunDir(rd.path).load_checkpoint("best.pt")["epoch"] == 3
        rd.save_checkpoint("best.pt", dict(state, epoch=4))
        (rd.path / "best.pt").write_bytes(ckpt.to_bytes(dict(state, epoch=1)))  # an old file
        with pytest.raises(CheckpointError, match="fails its SHA-256 check"):
            RunDir(rd.path).load_checkpoint("best.pt")  # only the last two are accepted
    finally:
        rd.release()


def test_orphan_temp_files_are_removed_only_under_the_lock(tmp_path):
    rd = RunDir(tmp_path / "r")
    rd.path.mkdir()
    ours = rd.path / ".checkpoint.pt.x1y2.tmp"
    theirs = rd.path / ".notes.txt.tmp"
    kept = rd.path / ".config.json.bak"  # a prefix of ours, but not a temp file
    ours.write_bytes(b"half")
    theirs.write_bytes(b"user")
    kept.write_bytes(b"user")
    with pytest.raises(RunDirError, match="needs the lock"):
        rd.clean_orphans()
    rd._acquire()
    try:
        assert rd.clean_orphans() == [ours.name]
    finally:
        rd.release()
    assert not ours.exists() and theirs.exists() and kept.exists()


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_files_get_the_mode_open_would_give(tmp_path, umask):
    old = os.umask(umask)
    try:
        ckpt.atomic_write_bytes(tmp_path / "f.json", b"{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f.json").stat().st_mode) == 0o666 & ~umask


def test_history_skips_a_line_still_being_written(tmp_path):
    rd = RunDir(tmp_path)
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1}\n{"epoch": 2}\n{"epo')
    assert rd.history() == [{"epoch": 1}, {"epoch": 2}]
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1}\n[2]\n')
    with pytest.raises(RunDirError, match="must hold a JSON object"):
        rd.history()


def test_records_of_a_finished_run(base):
    rd = RunDir(base)
    assert rd.is_finished() and rd.status() == "finished"
    assert [r["epoch"] for r in rd.history()] == [1, 2]
    assert rd.certificate().certified is True
    loaded = rd.load_model("final")
    assert loaded.epoch == 2 and not loaded.model.training
    assert rd.config().units == 8
    with pytest.raises(ValueError, match="Invalid weights"):
        rd.load_model("last")
