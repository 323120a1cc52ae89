"""The fast engine (``engine.run``) against autograd and against ``engine.run_reference``.

Snapshots are built here from raw tensors that require grad (any ``W_a``, ``K``-derived map
matrix and decay ``b``), so every gradient of the hand-written backward is checked, per map.
"""

from __future__ import annotations

import itertools

import pytest
import torch

import combonet.engine as engine
from combonet.activations import get_activation
from combonet.engine import METHODS, run, run_reference
from combonet.models import sparse_combo_net
from combonet.snapshot import Explicit, Node

pytestmark = pytest.mark.usefixtures("one_thread")


MODES = ("cayley", "euler", "none")
CASES = list(itertools.product(MODES, (True, False), (True, False), (True, False)))
CASE_IDS = [f"{m}-{'blocks' if b else 'dense'}-{'all' if a else 'last'}-"
            f"{'vec' if v else 'uniform'}" for m, b, a, v in CASES]


def snapshot(blocks: torch.Tensor, kmat: torch.Tensor | None, decay: torch.Tensor, mode: str,
             act: str, use_blocks: bool = True) -> Explicit:
    """A snapshot of the given running tensors (running coordinates = original)."""
    n = blocks.shape[0] * blocks.shape[1]
    w = blocks if use_blocks else torch.block_diag(*blocks.unbind(0))[None]
    tree = Node("leaf", "test", "", 0, n, (), torch.ones(n, dtype=torch.float64), 1.0,
                "diagonal")
    method = None if mode == "none" else mode
    return Explicit(method, 0.1, get_activation(act), 1 - decay.detach(), decay, w, None,
                    kmat if mode != "none" else None, torch.ones(n, dtype=blocks.dtype), True,
                    tree)


def small_problem(seed: int, p: int = 2, n: int = 3, bsz: int = 2, steps: int = 4,
                  vector_decay: bool = True):
    """float64 leaves ``(blocks, kmat, decay, drive, x0)`` that require grad."""
    gen = torch.Generator().manual_seed(seed)
    nu = p * n

    def rnd(*shape, scale=1.0):
        t = torch.randn(*shape, generator=gen, dtype=torch.float64) * scale
        return t.requires_grad_()

    blocks = rnd(p, n, n, scale=0.3)
    kmat = rnd(nu, nu, scale=0.3)
    if vector_decay:
        decay = (0.5 + 0.4 * torch.rand(nu, generator=gen, dtype=torch.float64)).requires_grad_()
    else:
        decay = torch.full((nu,), 0.7, dtype=torch.float64)
    drive = torch.randn(bsz, steps, nu, generator=gen, dtype=torch.float64).requires_grad_()
    return blocks, kmat, decay, drive, rnd(bsz, nu)


def runner(fn, mode: str, use_blocks: bool, act: str, all_states: bool):
    def f(blocks, kmat, decay, drive, x0):
        snap = snapshot(blocks, kmat, decay, mode, act, use_blocks)
        return fn(snap, drive, x0, all_states=all_states)
    return f


def leaves_of(mode, blocks, kmat, decay, drive, x0):
    out = [blocks, drive, x0]
    if mode != "none":
        out.append(kmat)
    if decay.requires_grad and mode != "euler":
        out.append(decay)
    return out


@pytest.mark.parametrize("mode,use_blocks,all_states,vec", CASES, ids=CASE_IDS)
def test_gradcheck_tanh(mode, use_blocks, all_states, vec):
    blocks, kmat, decay, drive, x0 = small_problem(1, vector_decay=vec)
    f = runner(run, mode, use_blocks, "tanh", all_states)
    assert torch.autograd.gradcheck(f, (blocks, kmat, decay, drive, x0))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("use_blocks", [True, False])
def test_gradcheck_relu_away_from_kink(mode, use_blocks):
    blocks, kmat, decay, drive, x0 = small_problem(3)
    f = runner(run, mode, use_blocks, "relu", True)
    with torch.no_grad():  # finite differences must not cross phi's kink at 0
        states = f(blocks, kmat, decay, drive, x0)
    assert float(torch.cat([x0.detach(), states.flatten(0, 1)]).abs().min()) > 1e-3
    assert torch.autograd.gradcheck(f, (blocks, kmat, decay, drive, x0))


@pytest.mark.parametrize("mode,use_blocks,all_states,vec", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("act", ["relu", "softplus"])
def test_matches_reference_float64(mode, use_blocks, all_states, vec, act):
    blocks, kmat, decay, drive, x0 = small_problem(5, p=3, n=4, bsz=3, steps=7,
                                                   vector_decay=vec)
    args = (blocks, kmat, decay, drive, x0)
    got = runner(run, mode, use_blocks, act, all_states)(*args)
    want = runner(run_reference, mode, use_blocks, act, all_states)(*args)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    probe = torch.randn_like(want)
    leaves = leaves_of(mode, *args)
    g_got = torch.autograd.grad((got * probe).sum(), leaves)
    g_want = torch.autograd.grad((want * probe).sum(), leaves)
    for a, b in zip(g_got, g_want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-11)


def test_partial_gradients_and_retain_graph():
    """Only some inputs need grad; a retained graph gives the same gradients twice."""
    base = small_problem(7, steps=6)
    for needs in [(False, True, False, False, False), (True, False, False, False, False),
                  (False, False, True, False, False), (False, False, False, True, True),
                  (False, False, False, False, True)]:
        ts = [t.detach().requires_grad_(r) for t, r in zip(base, needs, strict=True)]
        for mode in MODES:
            out = runner(run, mode, True, "tanh", False)(*ts)
            want = runner(run_reference, mode, True, "tanh", False)(*ts)
            wanted = [t for t in leaves_of(mode, *ts) if t.requires_grad]
            if not wanted:
                continue
            first = torch.autograd.grad(out.sum(), wanted, retain_graph=True)
            second = torch.autograd.grad(out.sum(), wanted)
            ref = torch.autograd.grad(want.sum(), wanted)
            for a, b, c in zip(first, second, ref, strict=True):
                torch.testing.assert_close(a, b, rtol=0, atol=0)
                torch.testing.assert_close(a, c, rtol=1e-11, atol=1e-11)


def test_no_grad_path_and_last_state():
    args = small_problem(9, steps=5)
    for mode in MODES:
        with torch.no_grad():
            all_ng = runner(run, mode, True, "relu", True)(*args)
            last_ng = runner(run, mode, True, "relu", False)(*args)
        all_g = runner(run, mode, True, "relu", True)(*args)
        assert all_g.requires_grad and not all_ng.requires_grad
        torch.testing.assert_close(all_ng, all_g.detach(), rtol=0, atol=0)
        torch.testing.assert_close(last_ng, all_ng[:, -1], rtol=0, atol=0)


def test_one_step_and_default_x0():
    blocks, kmat, decay, drive, _ = small_problem(11, steps=1)
    for mode in MODES:
        got = runner(run, mode, True, "relu", True)(blocks, kmat, decay, drive, None)
        want = runner(run_reference, mode, True, "relu", True)(blocks, kmat, decay, drive, None)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_validation_errors():
    blocks, kmat, decay, drive, x0 = small_problem(0)
    f = runner(run, "euler", True, "relu", True)
    with pytest.raises(ValueError, match=r"drive must have shape \(batch, steps, 6\), got"):
        f(blocks, kmat, decay, drive[0], x0)
    with pytest.raises(ValueError, match="x0 must have shape"):
        f(blocks, kmat, decay, drive, x0[:1])
    with pytest.raises(ValueError, match="at least one time step"):
        f(blocks, kmat, decay, drive[:, :0], x0)
    with pytest.raises(ValueError, match=r"dtype torch.float32 but the model runs in"):
        f(blocks, kmat, decay, drive.float(), x0)


def test_flushes_denormals_on_cpu():
    args = small_problem(0)
    with torch.no_grad():
        runner(run, "euler", True, "relu", False)(*args)
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
        snap = model.snapshot()
        drive = snap.prepare_drive(model.encoder(inputs))
        states = fn(snap, drive, None, all_states=readout == "mean")
        states = snap.from_running(states)
        logits = model.readout(states.mean(1) if readout == "mean" else states)
        loss = torch.nn.functional.cross_entropy(logits, labels)
        return [logits.detach(), *torch.autograd.grad(loss, params)]

    got, want = step(run), step(run_reference)
    for a, b in zip(got, want, strict=True):
        assert _rel(a, b) <= 1e-4
    logits = model(inputs)  # the model's own forward goes through the same engine
    assert _rel(logits.detach(), want[0]) <= 1e-5


def test_unequal_blocks_use_dense_fallback():
    """Modules of different sizes: one dense ``W_a`` block runs."""
    from combonet import Feedback, SparseModule

    torch.manual_seed(0)
    net = Feedback([SparseModule(3, 0.3, seed=1), SparseModule(5, 0.3, seed=2)], seed=3)
    snap = net.explicit(dt=0.2, method="cayley")
    assert snap.blocks.shape == (1, 8, 8)
    drive = torch.randn(4, 9, 8, requires_grad=True)
    for method in METHODS:
        snap = net.explicit(dt=0.2, method=method)
        got = run(snap, drive, None)
        want = run_reference(snap, drive, None)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        g1 = torch.autograd.grad(got.sum(), [net.b, drive], retain_graph=True)
        g2 = torch.autograd.grad(want.sum(), [net.b, drive])
        for a, b in zip(g1, g2, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
