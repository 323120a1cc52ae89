"""``combonet bench`` at a tiny size: correctness and the report's keys (no timing checks)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from combonet import bench
from combonet.activations import ACTIVATIONS
from combonet.engine.fast import Recurrence
from combonet.models import sparse_combo_net

TINY = ["--modules", "4", "--units", "8", "--steps", "20", "--batch", "4", "--repeats", "1",
        "--threads", "1"]


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    return parser.parse_args(argv)


def run_json(argv: list[str], capsys) -> dict:
    threads = torch.get_num_threads()
    try:
        assert bench.main_from_args(parse([*TINY, *argv, "--json"])) == 0
    finally:
        torch.set_num_threads(threads)
    return json.loads(capsys.readouterr().out)


def test_bench_json_tiny(capsys):
    r = run_json(["--method", "cayley"], capsys)
    for key in ("speedup_train", "speedup_forward", "max_rel_err", "gflops", "peak_gflops",
                "fraction_of_peak", "peak_memory_mb", "time_train_s", "time_forward_s"):
        assert key in r, key
    assert r["max_rel_err"] < 1e-4
    assert r["max_rel_err_spec"] < 1e-4
    assert set(r["time_train_s"]) == {"engine", "reference", "spec"}
    for key in ("speedup_train", "speedup_forward", "gflops", "peak_gflops"):
        assert r[key] > 0
    n_units, block = 4 * 8, 8
    assert r["flops_forward"] == 20 * (2 * 4 * n_units**2 + 2 * 4 * n_units * block)
    # The Sparse Combo Net's W is fixed: backward = state recursion + dC only.
    assert r["flops_train"] == 2 * r["flops_forward"] + 20 * 2 * 4 * n_units**2
    assert r["competing_load"] is None or 0 <= r["competing_load"] <= 1


def test_bench_euler_without_spec(capsys):
    r = run_json(["--method", "euler", "--no-spec"], capsys)
    assert r["max_rel_err"] < 1e-4 and r["max_rel_err_spec"] is None
    assert set(r["time_train_s"]) == {"engine", "reference"}


def test_human_report_and_bad_arguments(capsys):
    threads = torch.get_num_threads()
    try:
        assert bench.main_from_args(parse([*TINY, "--no-spec"])) == 0
        assert "speed-up vs reference" in capsys.readouterr().out
        assert bench.main_from_args(parse([*TINY, "--steps", "0"])) == 2
        assert "--steps" in capsys.readouterr().err
    finally:
        torch.set_num_threads(threads)


def test_reference_loop_is_the_same_function():
    """The public-style loop (rebuilding W, L, C each step) equals the model in float64."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        for method in ("euler", "cayley"):
            model = sparse_combo_net(3, 5, density=0.2, method=method, seed=4)
            inputs = torch.rand(2, 12, 1, generator=torch.Generator().manual_seed(0))
            ref = bench.ReferenceLoop(model)
            torch.testing.assert_close(model(inputs), ref(inputs), rtol=1e-12, atol=1e-12)
    finally:
        torch.set_default_dtype(old)


def test_max_rel_err_detects_differences():
    a = [torch.ones(3), torch.tensor([2.0, -4.0])]
    assert bench.max_rel_err(a, a) == 0.0
    b = [torch.ones(3), torch.tensor([2.0, -4.4])]
    assert abs(bench.max_rel_err(a, b) - 0.4 / 4.4) < 1e-6


@pytest.mark.parametrize("mode", ["euler", "cayley"])
@pytest.mark.parametrize("w_trained", [False, True])
def test_flop_formulas_match_torch_flop_counter(mode, w_trained):
    """The FLOPs the report divides by are those the engine's matmuls perform (counted by
    torch's own FlopCounterMode over forward and backward)."""
    bsz, steps, p, n = 3, 7, 4, 5
    n_units = p * n
    gen = torch.Generator().manual_seed(0)
    drive = torch.randn(bsz, steps, n_units, generator=gen, requires_grad=True)
    x0 = torch.zeros(bsz, n_units)
    blocks = torch.randn(p, n, n, generator=gen).requires_grad_(w_trained)
    kmat = (0.1 * torch.randn(n_units, n_units, generator=gen)).requires_grad_(True)
    act = ACTIVATIONS["relu"]
    decay = torch.full((n_units,), 0.9)
    with FlopCounterMode(display=False) as fwd:
        last = Recurrence.apply(drive, x0, blocks, kmat, decay, 0.9, mode, act, False)
    assert fwd.get_total_flops() == bench.recurrence_flops(bsz, steps, n_units, n)
    with FlopCounterMode(display=False) as both:
        Recurrence.apply(drive, x0, blocks, kmat, decay, 0.9, mode, act, False).sum().backward()
    assert both.get_total_flops() == bench.train_flops(bsz, steps, n_units, n, w_trained)
    assert last.shape == (bsz, n_units)


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="needs Linux /proc/stat")
def test_competing_load_sees_another_process():
    """A second process spinning for the whole window shows up as competing CPU time."""
    spin = "import time\nt = time.time()\nwhile time.time() - t < 1.0: pass"
    with bench.CompetingLoad() as load:
        subprocess.run([sys.executable, "-c", spin], check=True)
    share_floor = 0.8 / (os.cpu_count() or 1)  # ~1 of the CPUs busy for ~the whole window
    assert load.share is not None and load.share >= share_floor
