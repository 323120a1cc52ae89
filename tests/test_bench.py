"""``combonet bench`` at a tiny size: correctness and the report's keys (no timing checks)."""

from __future__ import annotations

import argparse
import json

import torch

from combonet import bench
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
    assert r["flops_train"] == 3 * r["flops_forward"]


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
