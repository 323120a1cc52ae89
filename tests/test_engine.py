"""The fast engine (``engine.run``) against autograd and against ``engine.run_reference``."""

from __future__ import annotations

import itertools

import pytest
import torch

import combonet.engine as engine
from combonet.activations import get_activation
from combonet.engine import METHODS, run, run_reference
from combonet.models import sparse_combo_net
from combonet.modules.base import Dynamics


@pytest.fixture(autouse=True)
def one_thread():
    """Correctness only: one intra-op thread keeps these tests fast on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


CASES = list(itertools.product(METHODS, (True, False), (True, False), (True, False)))
CASE_IDS = [f"{m}-{'L' if c else 'noL'}-{'blocks' if b else 'dense'}-{'all' if a else 'last'}"
            for m, c, b, a in CASES]


def small_problem(coupled: bool, seed: int, p: int = 2, n: int = 3, bsz: int = 2,
                  steps: int = 4, shift: float = 0.0):
    """float64 leaves ``(blocks, L, drive, x0)`` that require grad."""
    gen = torch.Generator().manual_seed(seed)
    nu = p * n

    def rnd(*shape, scale=1.0):
        t = torch.randn(*shape, generator=gen, dtype=torch.float64) * scale
        return t.requires_grad_()

    blocks = rnd(p, n, n, scale=0.4)
    lmat = rnd(nu, nu, scale=0.4) if coupled else None
    drive = (torch.randn(bsz, steps, nu, generator=gen, dtype=torch.float64) + shift)
    x0 = rnd(bsz, nu)
    return blocks, lmat, drive.requires_grad_(), x0


def runner(fn, method: str, use_blocks: bool, act: str, all_states: bool, dt: float = 0.3):
    """``(blocks, L, drive, x0) -> states`` through ``fn`` (run or run_reference)."""
    def f(blocks, lmat, drive, x0):
        dyn = Dynamics(torch.block_diag(*blocks), blocks if use_blocks else None, lmat,
                       get_activation(act), 1.0)
        return fn(dyn, drive, x0, dt=dt, method=method, all_states=all_states)
    return f


@pytest.mark.parametrize("method,coupled,use_blocks,all_states", CASES, ids=CASE_IDS)
def test_gradcheck_tanh(method, coupled, use_blocks, all_states):
    blocks, lmat, drive, x0 = small_problem(coupled, seed=1)
    f = runner(run, method, use_blocks, "tanh", all_states)
    if coupled:
        assert torch.autograd.gradcheck(f, (blocks, lmat, drive, x0))
    else:
        assert torch.autograd.gradcheck(lambda b, d, x: f(b, None, d, x), (blocks, drive, x0))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("use_blocks", [True, False])
def test_gradcheck_relu_away_from_kink(method, use_blocks):
    blocks, lmat, drive, x0 = small_problem(True, seed=3)
    f = runner(run, method, use_blocks, "relu", True)
    with torch.no_grad():  # finite differences must not cross phi's kink at 0
        states = f(blocks, lmat, drive, x0)
    assert float(torch.cat([x0.detach(), states.flatten(0, 1)]).abs().min()) > 1e-3
    assert torch.autograd.gradcheck(f, (blocks, lmat, drive, x0))


@pytest.mark.parametrize("method,coupled,use_blocks,all_states", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("act", ["relu", "softplus"])
def test_matches_reference_float64(method, coupled, use_blocks, all_states, act):
    blocks, lmat, drive, x0 = small_problem(coupled, seed=5, p=3, n=4, bsz=3, steps=7)
    leaves = [t for t in (blocks, lmat, drive, x0) if t is not None]
    got = runner(run, method, use_blocks, act, all_states)(blocks, lmat, drive, x0)
    want = runner(run_reference, method, use_blocks, act, all_states)(blocks, lmat, drive, x0)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    probe = torch.randn_like(want)
    g_got = torch.autograd.grad((got * probe).sum(), leaves)
    g_want = torch.autograd.grad((want * probe).sum(), leaves)
    for a, b in zip(g_got, g_want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-11)


def test_partial_gradients_and_retain_graph():
    """Only some inputs need grad; a retained graph gives the same gradients twice."""
    blocks, lmat, drive, x0 = small_problem(True, seed=7, steps=6)
    for needs in [(False, True, False, False), (True, False, False, False),
                  (False, False, True, True), (False, False, False, True)]:
        pairs = zip((blocks, lmat, drive, x0), needs, strict=True)
        ts = [t.detach().requires_grad_(r) for t, r in pairs]
        for method in METHODS:
            out = runner(run, method, True, "tanh", False)(*ts)
            want = runner(run_reference, method, True, "tanh", False)(*ts)
            wanted = [t for t in ts if t.requires_grad]
            first = torch.autograd.grad(out.sum(), wanted, retain_graph=True)
            second = torch.autograd.grad(out.sum(), wanted)
            ref = torch.autograd.grad(want.sum(), wanted)
            for a, b, c in zip(first, second, ref, strict=True):
                torch.testing.assert_close(a, b, rtol=0, atol=0)
                torch.testing.assert_close(a, c, rtol=1e-11, atol=1e-11)


def test_no_grad_path_and_last_state():
    blocks, lmat, drive, x0 = small_problem(True, seed=9, steps=5)
    for method in METHODS:
        with torch.no_grad():
            all_ng = runner(run, method, True, "relu", True)(blocks, lmat, drive, x0)
            last_ng = runner(run, method, True, "relu", False)(blocks, lmat, drive, x0)
        all_g = runner(run, method, True, "relu", True)(blocks, lmat, drive, x0)
        assert all_g.requires_grad and not all_ng.requires_grad
        torch.testing.assert_close(all_ng, all_g.detach(), rtol=0, atol=0)
        torch.testing.assert_close(last_ng, all_ng[:, -1], rtol=0, atol=0)


def test_one_step_and_default_x0():
    blocks, lmat, drive, _ = small_problem(True, seed=11, steps=1)
    for method in METHODS:
        got = runner(run, method, True, "relu", True)(blocks, lmat, drive, None)
        want = runner(run_reference, method, True, "relu", True)(blocks, lmat, drive, None)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
        g1 = torch.autograd.grad(got.sum(), [blocks, lmat, drive])
        g2 = torch.autograd.grad(want.sum(), [blocks, lmat, drive])
        for a, b in zip(g1, g2, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-11)


def test_validation_errors_are_kept():
    blocks, lmat, drive, x0 = small_problem(True, seed=0)
    f = runner(run, "euler", True, "relu", True)
    with pytest.raises(ValueError, match="drive must have shape"):
        f(blocks, lmat, drive[0], x0)
    with pytest.raises(ValueError, match="x0 must have shape"):
        f(blocks, lmat, drive, x0[:1])
    with pytest.raises(ValueError, match="method"):
        runner(run, "rk4", True, "relu", True)(blocks, lmat, drive, x0)
    with pytest.raises(ValueError, match="dt / tau"):
        runner(run, "euler", True, "relu", True, dt=2.0)(blocks, lmat, drive, x0)


def test_flushes_denormals_on_cpu():
    blocks, lmat, drive, x0 = small_problem(False, seed=0)
    with torch.no_grad():
        runner(run, "euler", True, "relu", False)(blocks, lmat, drive, x0)
    assert engine.FLUSH_DENORMAL
    assert float(torch.tensor([1e-39], dtype=torch.float32) * 1.0) == 0.0


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("method,readout", [("cayley", "last"), ("euler", "mean")])
def test_full_size_model_matches_reference(method, readout):
    """The paper's 16 x 32 Sparse Combo Net, psMNIST length, float32: rel. error <= 1e-4."""
    torch.manual_seed(0)
    model = sparse_combo_net(16, 32, density=0.033, method=method, readout=readout, seed=1)
    gen = torch.Generator().manual_seed(2)
    inputs = torch.rand(8, 784, 1, generator=gen)
    labels = torch.randint(0, 10, (8,), generator=gen)
    params = [p for p in model.parameters() if p.requires_grad]

    def step(fn):
        drive = model.encoder(inputs)
        states = fn(model.network.dynamics(), drive, None, dt=model.dt, method=method,
                    all_states=readout == "mean")
        logits = model.readout(states.mean(1) if readout == "mean" else states)
        loss = torch.nn.functional.cross_entropy(logits, labels)
        return [logits.detach(), *torch.autograd.grad(loss, params)]

    got, want = step(run), step(run_reference)
    for a, b in zip(got, want, strict=True):
        assert _rel(a, b) <= 1e-4
    logits = model(inputs)  # the model's own forward goes through the same engine
    assert _rel(logits.detach(), want[0]) <= 1e-6


def test_unequal_blocks_use_dense_fallback():
    """Modules of different sizes: ``blocks`` is None and the dense W path runs."""
    from combonet import Feedback, SparseModule

    torch.manual_seed(0)
    net = Feedback([SparseModule(3, 0.3, seed=1), SparseModule(5, 0.3, seed=2)], seed=3)
    dyn = net.dynamics()
    assert dyn.blocks is None
    drive = torch.randn(4, 9, 8, requires_grad=True)
    for method in METHODS:
        got = run(dyn, drive, None, dt=0.2, method=method)
        want = run_reference(dyn, drive, None, dt=0.2, method=method)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        g1 = torch.autograd.grad(got.sum(), [net.b, drive], retain_graph=True)
        g2 = torch.autograd.grad(want.sum(), [net.b, drive], retain_graph=True)
        for a, b in zip(g1, g2, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
