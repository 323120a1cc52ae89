"""Low-rank (communication-subspace) eq.-3 coupling: ``B = U V^T``, ``C = I + X G Y^T``.

The factored Cayley step is checked against autograd (gradcheck), against the plain loop on
the same factors, and against the dense Cayley step of the same ``K`` formed here; the
guarantee against independent numpy computations and against the map the engine runs.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import combonet as cn
from combonet.activations import get_activation
from combonet.engine import run, run_reference
from combonet.engine.fast import LowRankRecurrence
from conftest import as_np, build_leaf, common_spec, default_dtype, examples, leaf_spec
from test_soundness import assert_contracts_as_certified

FAST = settings(max_examples=examples(15), deadline=None)


pytestmark = pytest.mark.usefixtures("one_thread")


def factors(seed: int, n: int = 6, k: int = 4, p: int = 2, bsz: int = 2, steps: int = 4):
    gen = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale).requires_grad_()

    blocks = rnd(p, n // p, n // p, scale=0.3)
    x, g, y = rnd(n, k, scale=0.3), rnd(k, k, scale=0.3), rnd(n, k, scale=0.3)
    decay = (0.6 + 0.3 * torch.rand(n, generator=gen, dtype=torch.float64)).requires_grad_()
    drive, x0 = rnd(bsz, steps, n), rnd(bsz, n)
    return drive, x0, blocks, x, g, y, decay


@pytest.mark.parametrize("all_states", [True, False])
@pytest.mark.parametrize("act", ["tanh", "softplus"])
def test_gradcheck_factored_cayley(all_states, act):
    drive, x0, blocks, x, g, y, decay = factors(1)
    phi = get_activation(act)

    def f(drive, x0, blocks, x, g, y, decay):
        return LowRankRecurrence.apply(drive, x0, blocks, x, g, y, decay, None, phi, all_states)

    assert torch.autograd.gradcheck(f, (drive, x0, blocks, x, g, y, decay))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_factored_step_equals_the_dense_cayley_step(dtype):
    """The engine's factored step and the plain loop over the same factors agree, and both are
    the dense Cayley step ``(I - K/2)^{-1}(I + K/2)`` of ``K = X Y^T`` (formed here)."""
    with default_dtype(dtype):
        net = cn.Feedback([cn.SVDModule(6, seed=i) for i in range(3)], seed=0, rank=2)
    snap = net.explicit(dt=0.2, method="cayley")
    assert snap.mode == "lowrank" and snap.kmat is None and snap.coupling is None
    x, y = (as_np(t) for t in snap.factors)
    k = x @ y.T
    eye = np.eye(net.n)
    dense = np.linalg.solve(eye - k / 2, eye + k / 2)
    np.testing.assert_allclose(as_np(snap.map_matrix()), dense, rtol=0,
                               atol=1e-5 if dtype == torch.float32 else 1e-12)
    drive = torch.randn(3, 12, net.n, dtype=dtype)
    got, want = run(snap, drive), run_reference(snap, drive)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(got, want, rtol=tol, atol=tol)
    params = list(net.parameters())
    g1 = torch.autograd.grad((run(net.explicit(dt=0.2), drive) ** 2).sum(), params)
    g2 = torch.autograd.grad((run_reference(net.explicit(dt=0.2), drive) ** 2).sum(), params)
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b, rtol=10 * tol, atol=10 * tol)


@pytest.mark.usefixtures("float64")
@FAST
@given(specs=st.lists(leaf_spec(kinds=("sparse", "svd", "trainable_sparse", "triangular",
                                         "product")), min_size=2, max_size=4),
       common=common_spec(), rank=st.integers(1, 4), init_scale=st.floats(0.1, 5.0),
       seed=st.integers(0, 2**16))
def test_low_rank_coupling_is_eq3(specs, common, rank, init_scale, seed):
    """``L = B - Mbar^{-1} B^T Mbar`` with ``B = U V^T`` of rank ``r``: ``Mbar L`` is skew
    (computed here in numpy) and ``rank(L) <= 2 r``."""
    model = cn.Feedback([build_leaf(s, common) for s in specs], seed=seed, rank=rank,
                        init_scale=init_scale)
    b = as_np(model.u) @ as_np(model.v).T
    np.testing.assert_allclose(as_np(model.masked_b()), b, rtol=1e-12, atol=1e-12)
    m = as_np(model.metric())
    mbar = m / as_np(model.time_constants())[None, :]
    lmat = as_np(model.coupling())
    expected = b - np.linalg.solve(mbar, b.T @ mbar)
    np.testing.assert_allclose(lmat, expected, rtol=1e-9, atol=1e-9 * np.abs(expected).max())
    sk = mbar @ lmat
    assert np.abs(sk + sk.T).max() <= 1e-9 * max(np.abs(sk).max(), 1e-300)
    assert np.linalg.matrix_rank(lmat, tol=1e-9 * np.abs(lmat).max()) <= 2 * rank


@FAST
@given(specs=st.lists(leaf_spec(kinds=("sparse", "svd", "trainable_sparse", "triangular")),
                      min_size=2, max_size=4),
       common=common_spec(), rank=st.integers(1, 3), dtype=st.sampled_from([torch.float32,
                                                                             torch.float64]),
       factor=st.sampled_from([1.0, 10.0]), seed=st.integers(0, 2**16))
def test_low_rank_map_respects_its_certificate(specs, common, rank, dtype, factor, seed):
    with default_dtype(dtype):
        model = cn.Feedback([build_leaf(s, common) for s in specs], seed=seed, rank=rank)
    with torch.no_grad():
        model.u.mul_(factor)
    cert = cn.certify(model, dt=0.5 * model.tau, method="cayley", max_dt=False)
    if cert.certified:
        assert_contracts_as_certified(model, cert, seed)
    else:
        assert cert.failures


def test_pathway_lesion_falls_back_to_the_dense_coupling():
    net = cn.Feedback([cn.SVDModule(4, seed=i) for i in range(3)], seed=0, rank=2)
    assert net.low_rank_active()
    with torch.no_grad():
        net.mask[8:, :4] = 0
        net.mask[:4, 8:] = 0
    assert not net.low_rank_active()
    snap = net.explicit(dt=0.1)
    assert snap.mode == "cayley" and snap.factors is None
    lmat = as_np(net.coupling())
    assert np.all(lmat[8:, :4] == 0) and np.all(lmat[:4, 8:] == 0)
    assert cn.certify(net, dt=0.1).certified


def test_low_rank_parameters_and_errors():
    from combonet.models import count_parameters, sparse_combo_net

    model = sparse_combo_net(4, 8, density=0.2, coupling_rank=3)
    assert model.network.rank == 3 and not hasattr(model.network, "b")
    counts = count_parameters(model)
    assert counts["by_part"]["network"] == 2 * 32 * 3
    with pytest.raises(ValueError, match="cannot also be masked"):
        cn.Feedback([cn.SVDModule(2), cn.SVDModule(2)], rank=1, mask=np.ones((2, 2)))
    with pytest.raises(ValueError, match="rank must be an integer >= 1"):
        cn.Feedback([cn.SVDModule(2), cn.SVDModule(2)], rank=0)
    with pytest.raises(ValueError, match="coupling_density and coupling_rank"):
        sparse_combo_net(4, 8, density=0.2, coupling_rank=2, coupling_density=0.5)
    with pytest.raises(ValueError, match="feedback coupling only"):
        sparse_combo_net(4, 8, density=0.2, coupling_rank=2, coupling="unconstrained")


@pytest.mark.parametrize("rank", [None, 2])
def test_evaluate_builds_one_snapshot_and_equals_per_batch_forwards(rank, monkeypatch):
    """``train.loop.evaluate`` (inference mode, one snapshot per call for all its batches)
    gives the loss and accuracy of plain per-batch forward passes, holds nothing afterwards,
    and the model trains afterwards (no inference tensor kept)."""
    from combonet.models import sparse_combo_net
    from combonet.train.loop import cross_entropy, evaluate

    model = sparse_combo_net(4, 6, density=0.3, coupling_rank=rank, seed=3)
    gen = torch.Generator().manual_seed(0)
    ds = torch.utils.data.TensorDataset(torch.rand(11, 7, 1, generator=gen),
                                        torch.randint(0, 10, (11,), generator=gen))
    ds.inputs, ds.labels = ds.tensors
    with torch.no_grad():
        logits = torch.cat([model(ds.inputs[i:i + 4]) for i in range(0, 11, 4)])
    want_loss = float(cross_entropy(logits, ds.labels))
    want_acc = float((logits.argmax(1) == ds.labels).float().mean())
    calls = []
    kind = type(model.network)
    real = kind.explicit
    monkeypatch.setattr(kind, "explicit",
                        lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    loss, acc = evaluate(model, ds, 4, torch.device("cpu"))
    assert len(calls) == 1  # three batches, one snapshot built
    assert loss == pytest.approx(want_loss, rel=1e-6) and acc == pytest.approx(want_acc)
    model.snapshot()
    assert len(calls) == 2  # after evaluate, every pass builds its own snapshot again
    with model.one_snapshot(), pytest.raises(RuntimeError, match="do not nest"), \
            model.one_snapshot():
        pass
    model.train()
    cross_entropy(model(ds.inputs), ds.labels).backward()
    assert all(p.grad is not None and bool(torch.isfinite(p.grad).all())
               for p in model.parameters() if p.requires_grad)
