"""Distributed data parallel: ``torchrun --nproc_per_node=2 -m combonet train`` on 2 CPU
processes (gloo, 127.0.0.1) matches the single-process run within tolerance."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import combonet
from combonet.cli import main

ARGS = ["--task", "pdigits", "--limit-train", "240", "--limit-test", "100",
        "--val-fraction", "0.25", "--modules", "2", "--units", "8", "--density", "0.2",
        "--magnitude", "1", "--dt", "0.1", "--batch-size", "30", "--threads", "1", "--quiet",
        "--epochs", "2",
        "--lr", "0.02", "--schedule", "none", "--certify-every", "0"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def history(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_two_process_ddp_matches_single_process(tmp_path, capsys):
    single = tmp_path / "single"
    assert main(["train", *ARGS, "--out-dir", str(single)]) == 0
    capsys.readouterr()

    multi = tmp_path / "ddp"
    env = dict(os.environ)
    src = str(Path(combonet.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
           "--master_addr=127.0.0.1", f"--master_port={free_port()}", "-m", "combonet",
           "train", *ARGS, "--out-dir", str(multi)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]

    # only rank 0 wrote, once
    assert len(history(multi)) == 2
    summary = json.loads((multi / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["status"] == "finished"
    ref, got = history(single), history(multi)
    for a, b in zip(ref, got, strict=True):
        for key in ("train_loss", "val_loss", "test_loss"):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), key
        for key in ("train_acc", "val_acc", "test_acc"):
            assert abs(b[key] - a[key]) <= 0.02, key  # at most one example flips
    wa = torch.load(single / "checkpoint.pt", weights_only=True)["model"]
    wb = torch.load(multi / "checkpoint.pt", weights_only=True)["model"]
    assert wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wb[key], wa[key], rtol=1e-4, atol=1e-5, msg=key)
    # and the DDP run is a real, certifiable run directory
    assert main(["certify", str(multi)]) == 0


def test_batch_must_divide_over_processes(monkeypatch, tmp_path, capsys):
    """The global batch is split evenly across ranks (checked before any process group)."""
    from combonet.train import distributed

    monkeypatch.setattr(distributed, "setup",
                        lambda device="auto": distributed.DistInfo(0, 4, 0))
    code = main(["train", *ARGS, "--batch-size", "30", "--out-dir", str(tmp_path / "x")])
    assert code == 2
    assert "divisible by the number of processes (4)" in capsys.readouterr().err
