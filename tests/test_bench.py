"""``combonet bench`` at tiny sizes: the contenders compute the same function, the report's
numbers are the ones it claims to be (FLOPs against torch's counter, parameter matching against
real modules), bad input is refused. No timing is asserted."""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.linalg as sla
import torch
from torch.utils.flop_counter import FlopCounterMode

from combonet import bench
from combonet.bench import contenders, run
from combonet.bench.budget import synthetic_pool
from combonet.bench.sweep import parse_counts, parse_shape
from combonet.models import GRUClassifier, LSTMClassifier, count_parameters, sparse_combo_net
from combonet.models import svd_combo_net as svd_net
from combonet.threads import resolve_threads
from conftest import default_dtype

TINY = ["--quick", "--threads", "1"]


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    return parser.parse_args(argv)


@pytest.fixture(autouse=True)
def keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def f64():
    """Build and run in float64 for this test only (conftest's ``float64`` is module-wide)."""
    with default_dtype(torch.float64):
        yield


def run_json(argv: list[str], capsys, status: int = 0) -> dict:
    assert bench.main_from_args(parse([*TINY, *argv, "--json"])) == status
    return json.loads(capsys.readouterr().out)


def test_bench_json_all_contenders(capsys):
    r = run_json([], capsys)
    cfg = r["config"]
    assert set(r["time_train_s"]) == {"engine", "careful", "rebuild", "gru", "lstm"}
    assert set(r["time_forward_s"]) == set(r["time_train_s"])
    assert set(r["rel_err_vs_careful"]) == {"engine", "rebuild"}
    for e in r["rel_err_vs_careful"].values():
        assert e["logits"] < 1e-5 and e["grads"] < 1e-5
    assert r["failed"] == {}
    assert r["ratio_train"]["engine"] == 1.0 and r["ratio_forward"]["engine"] == 1.0
    assert r["ratio_cpu_train"]["engine"] == 1.0 and set(r["cpu_train_s"]) == set(r["time_train_s"])
    for name, t in r["cpu_train_s"].items():
        assert t >= 0 and math.isclose(r["ratio_cpu_train"][name] * r["cpu_train_s"]["engine"], t)
    assert r["wall_s"] > 0 and "commit" in cfg and "worktree_dirty" in cfg
    for name, t in r["time_train_s"].items():
        assert t > 0 and math.isclose(r["ratio_train"][name], t / r["time_train_s"]["engine"])
        assert min(r["times_train_s"][name]) == t
    cfg = r["config"]
    assert (cfg["modules"], cfg["units"], cfg["steps"], cfg["batch"]) == (4, 8, 20, 4)
    assert cfg["threads"] == 1 and cfg["magnitude"] == 3.0
    n_units, block = 32, 8
    assert r["flops_forward"] == 20 * (2 * 4 * n_units**2 + 2 * 4 * n_units * block)
    assert r["flops_train"] == 2 * r["flops_forward"] + 20 * 2 * 4 * n_units**2  # W fixed
    assert not r["w_trained"]
    assert len(r["peak_gflops_all"]) == 1 and r["peak_gflops"] > 0
    assert set(r["fraction_of_peak"]) == {"engine", "careful", "rebuild"}
    assert r["competing_load"] is None or 0 <= r["competing_load"] <= 1
    combo = count_parameters(sparse_combo_net(4, 8, density=0.033, magnitude=3.0))["total"]
    assert r["parameters"]["combo"] == combo
    for cell in ("gru", "lstm"):
        assert r["parameters"][cell] == contenders.rnn_parameters(cell, r["hidden"][cell], 1, 10)


def test_euler_svd_and_skip(capsys):
    r = run_json(["--method", "euler", "--model", "svd-combo", "--skip", "rebuild,gru,lstm",
                  "--repeats", "2"], capsys)
    assert set(r["time_train_s"]) == {"engine", "careful"}
    assert r["rel_err_vs_careful"]["engine"]["grads"] < 1e-5
    assert r["w_trained"]  # SVD modules are trained: dW is counted
    fwd = r["flops_forward"]
    assert r["flops_train"] == 2 * fwd + 20 * 2 * 4 * 32 * (32 + 8)
    assert len(r["times_train_s"]["engine"]) == 2


def test_human_report(capsys):
    assert bench.main_from_args(parse([*TINY, "--skip", "lstm"])) == 0
    out = capsys.readouterr().out
    for text in ("careful plain loop", "what the authors' public code does", "nn.GRU",
                 "max relative error against the careful loop", "FLOP-bound limit",
                 "CPU time used by other processes"):
        assert text in out, text
    assert "nn.LSTM" not in out and "ERROR" not in out


def test_disagreement_is_reported_and_fails(capsys, monkeypatch):
    """The check can fail: a careful loop that is off by 1 % makes the bench exit 1."""
    real = contenders.CarefulLoop.forward
    monkeypatch.setattr(contenders.CarefulLoop, "forward",
                        lambda self, inputs: 1.01 * real(self, inputs))
    assert bench.main_from_args(parse([*TINY, "--skip", "gru,lstm"])) == 1
    captured = capsys.readouterr()
    assert "ERROR: engine and the careful loop disagree" in captured.out
    assert "disagree" in captured.err


@pytest.mark.parametrize("argv, needle", [
    (["--steps", "0"], "--steps"),
    (["--batch", "-1"], "--batch"),
    (["--threads", "two"], "threads"),
    (["--threads", "0"], "threads"),
    (["--cuda-graphs", "--device", "cpu"], "--cuda-graphs"),
    (["--tolerance", "0"], "--tolerance"),
    (["--threads-sweep", "--train-seconds", "1"], "separate modes"),
    (["--train-seconds", "0"], "--train-seconds"),
    (["--threads-sweep", "--sweep-shapes", "4x8"], "PxNxBxT"),
    (["--threads-sweep", "--sweep-threads", "1,x"], "--sweep-threads"),
])
def test_bad_arguments_exit_2(argv, needle, capsys):
    assert bench.main_from_args(parse([*TINY, *argv])) == 2
    err = capsys.readouterr().err
    assert err.startswith("combonet bench: error: ") and needle in err
    assert len(err.strip().splitlines()) == 1


def test_coupling_rank_runs_dense_and_low_rank_side_by_side(capsys):
    """``--coupling-rank`` reaches the builder, and the same run times the dense-coupling net
    of the same shape (``engine-dense``, checked against its own careful loop) alternating
    with the others; the report gives the dense / low-rank ratio and the FLOP formula of
    each coupling."""
    r = run_json(["--coupling-rank", "2", "--skip", "rebuild,gru,lstm", "--repeats", "2"],
                 capsys)
    cfg = r["config"]
    assert cfg["coupling_rank"] == 2 and cfg["running_rank"] == 2
    assert list(r["time_train_s"]) == ["engine", "engine-dense", "careful"]
    for name in ("engine", "engine-dense"):
        e = r["rel_err_vs_careful"][name]
        assert e["logits"] < 1e-5 and e["grads"] < 1e-5
        assert len(r["times_train_s"][name]) == 2  # alternated in every repeat
    low = count_parameters(sparse_combo_net(4, 8, density=0.033, magnitude=3.0,
                                            coupling_rank=2))["total"]
    dense = count_parameters(sparse_combo_net(4, 8, density=0.033, magnitude=3.0))["total"]
    assert r["parameters"]["combo"] == low and r["parameters"]["engine-dense"] == dense != low
    t = r["time_train_s"]
    assert math.isclose(r["dense_over_low_rank"]["train"], t["engine-dense"] / t["engine"])
    assert math.isclose(r["dense_over_low_rank"]["forward"],
                        r["time_forward_s"]["engine-dense"] / r["time_forward_s"]["engine"])
    n_units, block, steps, bsz = 32, 8, 20, 4
    assert r["flops_forward"] == bench.recurrence_flops(bsz, steps, n_units, block, rank=2)
    assert r["flops_forward_by"]["engine-dense"] == bench.recurrence_flops(bsz, steps, n_units,
                                                                           block)
    assert r["flops_train_by"]["engine-dense"] == bench.train_flops(bsz, steps, n_units, block,
                                                                    False)
    assert r["flops_train_by"]["engine"] == r["flops_train"] == bench.train_flops(
        bsz, steps, n_units, block, False, rank=2)
    assert bench.main_from_args(parse([*TINY, "--coupling-rank", "2", "--skip",
                                       "rebuild,gru,lstm"])) == 0
    out = capsys.readouterr().out
    low_line = next(x for x in out.splitlines() if x.startswith("recurrence FLOPs"))
    assert "low-rank coupling, r = 2" in low_line and "T(8BNr + 2BNn)" in low_line
    assert "T(12BNr)" in low_line and "BN^2" not in low_line
    dense_line = next(x for x in out.splitlines() if "engine-dense (dense coupling)" in x)
    assert "T(2BN^2 + 2BNn)" in dense_line
    assert "dense coupling against rank 2" in out


def test_flop_header_of_a_dense_coupling(capsys):
    """Without a low-rank step the header gives the dense formula: the default coupling, and
    a rank-2 coupling under the Euler map (which the engine runs through the dense ``A_e``)."""
    for extra in ([], ["--coupling-rank", "2", "--method", "euler"]):
        assert bench.main_from_args(parse([*TINY, *extra, "--skip", "rebuild,gru,lstm,"
                                           "engine-dense"])) == 0
        out = capsys.readouterr().out
        line = next(x for x in out.splitlines() if x.startswith("recurrence FLOPs"))
        assert "(dense coupling)" in line and "T(2BN^2 + 2BNn)" in line and "BNr" not in line
        assert "engine-dense" not in out


def test_dense_twin_disagreement_is_reported(capsys, monkeypatch):
    """The dense net's own check can fail: its careful loop off by 1 % makes the bench exit 1
    naming ``engine-dense``, while the low-rank engine still agrees with its careful loop."""
    real = contenders.CarefulLoop.forward

    def off_when_dense(self, inputs):
        out = real(self, inputs)
        return out if self.model.network.rank is not None else 1.01 * out

    monkeypatch.setattr(contenders.CarefulLoop, "forward", off_when_dense)
    argv = [*TINY, "--coupling-rank", "2", "--skip", "rebuild,gru,lstm", "--json"]
    assert bench.main_from_args(parse(argv)) == 1
    captured = capsys.readouterr()
    r = json.loads(captured.out)
    assert r["rel_err_vs_careful"]["engine"]["logits"] < 1e-5
    assert r["rel_err_vs_careful"]["engine-dense"]["logits"] > 1e-3
    assert "engine-dense and the careful loop of the dense net disagree" in captured.err
    assert "engine and the careful loop" not in captured.err


def test_bad_skip_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as stop:
        parse(["--skip", "engine"])
    assert stop.value.code == 2
    assert "rebuild" in capsys.readouterr().err
    assert parse(["--skip", "engine-dense,gru"]).skip == ["engine-dense", "gru"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without CUDA")
def test_cuda_absent_is_a_usage_error(capsys):
    assert bench.main_from_args(parse([*TINY, "--device", "cuda"])) == 2
    assert "no CUDA device" in capsys.readouterr().err


# -- the contenders compute the model's function ---------------------------------------------
def _numpy_cayley_logits(model, inputs: torch.Tensor) -> np.ndarray:
    """The model's logits by float64 numpy/scipy arithmetic on its matrices (eq. 2, Cayley)."""
    net = model.network
    w = net.weight().detach().double().numpy()
    lmat = net.coupling().detach().double().numpy()
    a = model.dt / net.tau
    eye = np.eye(net.n)
    c = sla.solve(eye - a / 2 * lmat, eye + a / 2 * lmat)
    enc_w = model.encoder.weight.detach().double().numpy()
    enc_b = model.encoder.bias.detach().double().numpy()
    x = np.zeros((inputs.shape[0], net.n))
    for t in range(inputs.shape[1]):
        u = inputs[:, t].double().numpy() @ enc_w.T + enc_b
        x = ((1 - a) * x + a * (np.maximum(x, 0) @ w.T + u)) @ c.T
    rw = model.readout.weight.detach().double().numpy()
    return x @ rw.T + model.readout.bias.detach().double().numpy()


@pytest.mark.parametrize("loop", [contenders.CarefulLoop, contenders.RebuildLoop])
def test_loops_are_the_models_function(loop, f64):
    """Both plain loops equal the engine and (cayley) an independent numpy computation, and
    (euler) the explicit Euler map of the model's own vector field ``rhs`` (eq. 2)."""
    gen = torch.Generator().manual_seed(0)
    inputs = torch.rand(3, 12, 1, generator=gen)
    for method in ("cayley", "euler"):
        model = sparse_combo_net(3, 5, density=0.3, magnitude=1.0, method=method, seed=4)
        got = loop(model)(inputs)
        torch.testing.assert_close(got, model(inputs), rtol=1e-12, atol=1e-12)
        if method == "cayley":
            np.testing.assert_allclose(got.detach().numpy(),
                                       _numpy_cayley_logits(model, inputs), rtol=1e-10,
                                       atol=1e-12)
        else:
            net = model.network
            x = torch.zeros(3, net.n)
            for t in range(12):
                x = x + model.dt * net.rhs(x, model.encoder(inputs[:, t]))
            torch.testing.assert_close(got, model.readout(x), rtol=1e-12, atol=1e-12)


def test_svd_loop_gradients_match_engine(f64):
    """With trained modules (SVD), gradients of W's parameters agree too."""
    model = svd_net(2, 4, method="cayley", seed=1)
    inputs = torch.rand(2, 9, 1, generator=torch.Generator().manual_seed(1))
    params = [p for p in model.parameters() if p.requires_grad]
    g_engine = torch.autograd.grad(model(inputs).square().sum(), params)
    g_loop = torch.autograd.grad(contenders.CarefulLoop(model)(inputs).square().sum(), params)
    for a, b in zip(g_loop, g_engine, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_cayley_matrix_is_the_cayley_transform(f64):
    rng = np.random.default_rng(0)
    lmat = rng.normal(size=(6, 6))
    c = contenders.cayley_matrix(torch.as_tensor(lmat), 0.3).numpy()
    eye = np.eye(6)
    np.testing.assert_allclose((eye - 0.15 * lmat) @ c, eye + 0.15 * lmat, atol=1e-12)


def test_max_rel_err_detects_differences():
    a = [torch.ones(3), torch.tensor([2.0, -4.0])]
    assert bench.max_rel_err(a, a) == 0.0
    b = [torch.ones(3), torch.tensor([2.0, -4.4])]
    assert abs(bench.max_rel_err(a, b) - 0.4 / 4.4) < 1e-6
    assert bench.max_rel_err([torch.tensor([0.5])], [torch.zeros(1)]) == 0.5  # absolute at 0


# -- parameter matching against real modules --------------------------------------------------
@pytest.mark.parametrize("cell, cls", [("gru", GRUClassifier), ("lstm", LSTMClassifier)])
def test_rnn_parameter_formula_and_matching(cell, cls):
    for hidden in (1, 7, 30):
        assert contenders.rnn_parameters(cell, hidden, 1, 10) == \
            count_parameters(cls(1, hidden, 10))["total"]
    for target in (500, 20_000, 129_034):
        h = contenders.matched_hidden(cell, target, 1, 10)
        best = min(range(1, 400), key=lambda k: (abs(contenders.rnn_parameters(
            cell, k, 1, 10) - target), k))
        assert h == best
    rnn = contenders.matched_rnn(cell, 129_034, 1, 10)
    assert abs(count_parameters(rnn)["total"] - 129_034) / 129_034 < 0.01


# -- FLOPs: the formulas are what the engine runs -----------------------------------------------
def _engine_flops(net, steps: int, bsz: int, method: str, backward: bool) -> int:
    gen = torch.Generator().manual_seed(steps)
    drive = torch.randn(bsz, steps, net.n, generator=gen, requires_grad=True)
    with FlopCounterMode(display=False) as counter:
        last = net(drive, dt=0.1, method=method, all_states=False)
        if backward:
            last.square().sum().backward()
    return counter.get_total_flops()


@pytest.mark.parametrize("method", ["euler", "cayley"])
@pytest.mark.parametrize("kind", ["sparse", "svd"])
def test_flop_formulas_match_torch_flop_counter(method, kind):
    """Per-step FLOPs counted by torch's FlopCounterMode over the engine's forward (and
    forward + backward) equal the formulas; the one-off work per pass (building L and C) is
    removed by counting two sequence lengths and taking the difference."""
    p, n, bsz = 4, 5, 3
    if kind == "sparse":
        net = sparse_combo_net(p, n, density=0.3, magnitude=1.0, seed=2).network
    else:
        net = svd_net(p, n, seed=2).network
    n_units = p * n
    w_trained = kind == "svd"
    for backward in (False, True):
        counts = {t: _engine_flops(net, t, bsz, method, backward) for t in (5, 12)}
        if backward:
            want = {t: bench.train_flops(bsz, t, n_units, n, w_trained) for t in counts}
        else:
            want = {t: bench.recurrence_flops(bsz, t, n_units, n) for t in counts}
        assert counts[12] - counts[5] == want[12] - want[5]


def test_low_rank_flop_formulas_match_torch_flop_counter():
    """The same check for the factored Cayley step of a rank-2 coupling (``y+ = z + (zH) X^T``
    forward, ``dX = E^T (Z H)``, ``dH = Z^T (E X)`` backward)."""
    p, n, bsz, rank = 4, 5, 3, 2
    net = sparse_combo_net(p, n, density=0.3, magnitude=1.0, seed=2, coupling_rank=rank).network
    for backward in (False, True):
        counts = {t: _engine_flops(net, t, bsz, "cayley", backward) for t in (5, 12)}
        if backward:
            want = {t: bench.train_flops(bsz, t, p * n, n, False, rank=rank) for t in counts}
        else:
            want = {t: bench.recurrence_flops(bsz, t, p * n, n, rank=rank) for t in counts}
        assert counts[12] - counts[5] == want[12] - want[5]


# -- measuring tools ----------------------------------------------------------------------------
@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="needs Linux /proc/stat")
def test_competing_load_sees_another_process():
    """A second process spinning for the whole window shows up as competing CPU time."""
    spin = "import time\nt = time.time()\nwhile time.time() - t < 1.0: pass"
    with bench.CompetingLoad() as load:
        subprocess.run([sys.executable, "-c", spin], check=True)
    share_floor = 0.8 / (os.cpu_count() or 1)  # ~1 of the CPUs busy for ~the whole window
    assert load.share is not None and load.share >= share_floor


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="needs Linux /proc/stat")
def test_busy_process_competes_and_stops():
    import time

    with bench.BusyProcess() as busy, bench.CompetingLoad() as load:
        time.sleep(1.0)
        assert busy.proc.poll() is None  # still spinning
    assert busy.proc.poll() is not None  # stopped on exit
    assert load.share is not None and load.share >= 0.8 / (os.cpu_count() or 1)


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc")
def test_peak_memory_sees_an_allocation():
    def alloc():
        t = torch.ones(64 * 2**20 // 4)  # 64 MB, touched
        return float(t[-1])

    mb, seconds = bench.peak_memory_mb(alloc, torch.device("cpu"))
    assert seconds > 0
    if mb is not None:
        assert mb >= 48


# -- the other modes ----------------------------------------------------------------------------
def test_threads_sweep_tiny(capsys):
    r = run_json(["--threads-sweep", "--sweep-shapes", "2x4x4x5,3x4x8x6", "--sweep-threads",
                  "1,2", "--repeats", "1"], capsys)
    assert r["mode"] == "threads-sweep" and r["threads"] == [1, 2]
    assert set(r["shapes"]) == {"2x4x4x5", "3x4x8x6"}
    s = r["shapes"]["3x4x8x6"]
    assert (s["modules"], s["units"], s["batch"], s["steps"]) == (3, 4, 8, 6)
    assert s["step_work"] == 8 * 12 * 12
    assert s["auto_idle_machine"] == resolve_threads("auto", units=12, batch=8)
    for cond in ("idle", "busy"):
        busy = s["other_busy_cores"][cond]
        assert busy is None or 0 <= busy <= (os.cpu_count() or 1)
        assert s["auto"][cond] == resolve_threads("auto", units=12, batch=8, busy=busy or 0.0)
    # that the spinner is seen is tested over a 1 s window (test_busy_process_competes_and_
    # stops): these tiny timing windows are a few /proc/stat ticks (10 ms) long, too short
    for cond in ("idle", "busy"):
        assert set(s["ms_per_step"][cond]) == {"1", "2"}
        assert s["best_threads"][cond] in (1, 2)
        for k in ("1", "2"):
            assert math.isclose(s["ms_per_step"][cond][k], 1e3 * s["train_s"][cond][k] / 6)
    assert bench.main_from_args(parse(["--threads-sweep", "--sweep-shapes", "2x4x4x5",
                                       "--repeats", "1", "--sweep-threads", "1"])) == 0
    assert "auto rule" in capsys.readouterr().out


def test_sweep_parsers():
    assert parse_shape("psmnist") == ("psmnist", (16, 32, 128, 784))
    assert parse_shape("2x3x4x5") == ("2x3x4x5", (2, 3, 4, 5))
    for bad in ("2x3x4", "0x1x1x1", "big"):
        with pytest.raises(ValueError, match="PxNxBxT"):
            parse_shape(bad)
    assert parse_counts("2,1,2") == [1, 2]
    with pytest.raises(ValueError, match="--sweep-threads"):
        parse_counts("0")


def test_train_seconds_tiny(capsys):
    r = run_json(["--train-seconds", "0.3"], capsys)
    assert r["mode"] == "train-seconds" and r["train_steps"] >= 1
    assert r["wall_s"] >= 0.3 and r["samples_per_s"] > 0
    assert math.isfinite(r["loss_first"]) and math.isfinite(r["loss_last"])
    assert 0 <= r["train_accuracy_recent"] <= 1
    assert r["certified"] in (True, False)
    assert bench.main_from_args(parse([*TINY, "--train-seconds", "0.1"])) == 0
    assert "fixed-budget training" in capsys.readouterr().out


def test_synthetic_pool_is_labelled_by_its_teacher():
    inputs, labels = synthetic_pool(3, 50, 7, 10, seed=0, device=torch.device("cpu"))
    assert inputs.shape == (3, 50, 7, 1) and labels.shape == (3, 50)
    assert float(inputs.min()) >= 0 and float(inputs.max()) <= 1
    assert len(labels.unique()) >= 5  # several classes, not a constant label
    again = synthetic_pool(3, 50, 7, 10, seed=0, device=torch.device("cpu"))
    assert torch.equal(labels, again[1])


def test_cli_delegates_to_the_bench_package():
    assert dict(modules=16, units=32, batch=128, steps=784, repeats=3) == run.FULL
    ns = parse(["--quick", "--steps", "7"])
    assert run.resolve_shape(ns) == dict(modules=4, units=8, batch=4, steps=7, repeats=1)
    assert run.resolve_shape(parse([]))["steps"] == 784
