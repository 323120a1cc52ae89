"""Property tests of the combination primitives (paper Section 2: eq. 3, hierarchy, recursion).

Contraction claims are checked with autograd Jacobians of ``model.rhs`` and with
``J = (-I + W D + L) / tau`` at vertices of the slope box (see ``conftest.check_model_contracts``),
never with the certificate code.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.linalg as sla
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import combonet as cn
from conftest import (
    as_np,
    assert_contracts,
    build_leaf,
    build_tree,
    check_model_contracts,
    common_spec,
    contraction_excess,
    default_dtype,
    describe,
    examples,
    leaf_spec,
    slope_vertices,
    train_randomly,
    tree_spec,
)

pytestmark = pytest.mark.usefixtures("float64")

FAST = settings(max_examples=examples(20), deadline=None)
SLOW = settings(max_examples=examples(10), deadline=None)


def skew_residual(m: np.ndarray, lmat: np.ndarray) -> float:
    """``||M L + L^T M|| / (||M|| ||L||)`` (Frobenius)."""
    return np.linalg.norm(m @ lmat + lmat.T @ m) / (np.linalg.norm(m) * np.linalg.norm(lmat))


def offsets(sizes):
    return np.concatenate([[0], np.cumsum(sizes)])


# -- 1. nested combinations contract with the reported metric and rate -----------------------
@SLOW
@given(spec=tree_spec(), common=common_spec(), seed=st.integers(0, 2**16))
def test_nested_combination_contracts(spec, common, seed):
    model = build_tree(spec, common)
    lam = check_model_contracts(model, seed, n_states=3)
    assert lam > 0, describe(model)


@SLOW
@given(specs=st.lists(leaf_spec(), min_size=4, max_size=4), common=common_spec(trainable_tau=False),
       scales=st.lists(st.floats(0.1, 3.0), min_size=3, max_size=3),
       seed=st.integers(0, 2**16), gamma=st.floats(0.3, 0.999))
def test_feedback_of_hierarchy_and_feedback(specs, common, scales, seed, gamma):
    """``Feedback([Hierarchy([a, b]), Feedback([c, SVDModule])])`` (the brief's example)."""
    a, b, c = (build_leaf(s, common) for s in specs[:3])
    svd = cn.SVDModule(specs[3]["n"], gamma=gamma, seed=seed, **common)
    model = cn.Feedback([cn.Hierarchy([a, b], init_scale=scales[0], seed=seed),
                         cn.Feedback([c, svd], init_scale=scales[1], seed=seed + 1)],
                        init_scale=scales[2], seed=seed + 2)
    lam = check_model_contracts(model, seed)
    assert lam > 0
    # the feedback cannot be faster than its slowest child
    assert lam <= min(s.rate() for s in model.systems) * (1 + 1e-12)


@SLOW
@given(spec=tree_spec(max_leaves=3), common=common_spec(), seed=st.integers(0, 2**16))
def test_float32_models_contract_with_their_own_weights(spec, common, seed):
    """Models train in float32: the continuous rate the certificate claims for the float32
    model must hold for the float32 matrices the engine multiplies. In running coordinates
    ``y = s x`` (snapshot), ``dt J_y = -A + W_a D + K`` with ``W_a``, ``K`` read exactly into
    float64 and the metric ``M_y = S^{-1} M S^{-1}``; checked at the vertices of the slope box
    (a float32 autograd Jacobian would add its own rounding). ``model.rate()``, of the exact
    matrices, may exceed the claim by the rounding excess."""
    with default_dtype(torch.float32):
        model = build_tree(spec, common)
        cert = cn.certify(model, dt=0.1, dtype=torch.float32, max_dt=False)
        with torch.no_grad():
            snap = model.explicit(dt=0.1, method="cayley", dtype=torch.float32)
    assert snap.blocks.dtype == torch.float32
    assert cert.rate > 0, describe(model)
    blocks = as_np(snap.blocks)
    w_a = blocks[0] if blocks.shape[0] == 1 and blocks.shape[1] == model.n else \
        sla.block_diag(*blocks)
    k = snap.coupling_matrix()
    k = np.zeros_like(w_a) if k is None else as_np(k)
    alpha, s = as_np(snap.alpha), as_np(snap.scale)
    m_y = as_np(model.metric()) / s[:, None] / s[None, :]
    d = slope_vertices(model.n, model.g, np.random.default_rng(seed))
    jacs = (-np.diag(alpha)[None] + w_a[None] * d[:, None, :] + k[None]) / 0.1
    assert_contracts(jacs, m_y, cert.rate, "running dt J_y = -A + W_a D + K at a vertex")


# -- 2. still certified after optimiser steps ------------------------------------------------
@SLOW
@given(spec=tree_spec(max_leaves=3), common=common_spec(), seed=st.integers(0, 2**16))
def test_combination_still_contracts_after_training(spec, common, seed):
    model = build_tree(spec, common)
    moved = train_randomly(model, seed)
    if isinstance(spec, tuple) and bool(model.mask.any()):
        assert moved, "the coupling B must be trainable"
    for p in model.parameters():
        assert torch.isfinite(p).all()
    lam = check_model_contracts(model, seed + 1, n_states=3)
    assert lam > 0, describe(model)


# -- 3. feedback: M L + L^T M = 0, and the order of M and M^{-1} matters --------------------
@FAST
@given(specs=st.lists(leaf_spec(), min_size=2, max_size=4), common=common_spec(),
       init_scale=st.floats(0.1, 5.0), seed=st.integers(0, 2**16), use_mask=st.booleans(),
       train=st.booleans())
def test_feedback_coupling_is_skew_in_metric(specs, common, init_scale, seed, use_mask,
                                             train):
    systems = [build_leaf(s, common) for s in specs]
    p = len(systems)
    mask = np.random.default_rng(seed).random((p, p)) < 0.5 if use_mask else None
    model = cn.Feedback(systems, init_scale=init_scale, seed=seed, mask=mask)
    if train:
        train_randomly(model, seed)
    m = as_np(model.metric())
    lmat = as_np(model.coupling())
    b = as_np(model.masked_b())
    # eq. 3, computed here: L = B - Mbar^{-1} B^T Mbar with Mbar = M T^{-1} (= M for one tau)
    mbar = m / as_np(model.time_constants())[None, :]
    expected = b - np.linalg.solve(mbar, b.T @ mbar)
    scale = np.linalg.norm(b) * np.linalg.cond(mbar)
    assert np.abs(lmat - expected).max() <= 1e-12 * scale + 1e-300
    if np.linalg.norm(b) == 0:
        assert np.all(lmat == 0)
        return
    assert skew_residual(mbar, lmat) <= 1e-12, skew_residual(mbar, lmat)
    # the coupling lives off the diagonal blocks, and only where the (symmetrised) mask allows
    off = offsets(model.sizes)
    allowed = np.ones((p, p), bool) if mask is None else (mask | mask.T)
    for i in range(p):
        for j in range(p):
            blk = lmat[off[i]:off[i + 1], off[j]:off[j + 1]]
            if i == j or not allowed[i, j]:
                assert np.all(blk == 0), (i, j)


@FAST
@given(sizes=st.lists(st.integers(2, 6), min_size=2, max_size=4),
       init_scale=st.floats(0.3, 5.0), seed=st.integers(0, 2**16),
       e_scale=st.floats(0.5, 3.0))
def test_feedback_order_of_metric_matters(sizes, init_scale, seed, e_scale):
    """With non-diagonal (Theorem 3) metrics, the swapped ``B - M B^T M^{-1}`` is not skew."""
    systems = [cn.ProductModule(n, init_scale=e_scale, seed=seed + i)
               for i, n in enumerate(sizes)]
    model = cn.Feedback(systems, init_scale=init_scale, seed=seed)
    m = as_np(model.metric())
    assert np.abs(m - np.diag(np.diag(m))).max() > 1e-3 * np.abs(m).max(), "not non-diagonal"
    b = as_np(model.masked_b())
    lmat = as_np(model.coupling())
    assert skew_residual(m, lmat) <= 1e-12
    swapped = b - m @ b.T @ np.linalg.inv(m)
    assert skew_residual(m, swapped) > 1e-3, "the public-code bug would go unnoticed"
    # and the swapped coupling genuinely breaks the guarantee: at D = 0, J = (-I + L) / tau;
    # M^{1/2} L M^{-1/2} has zero trace, so a non-zero symmetric part has a positive eigenvalue
    # and the rate 1 / tau of the modules is lost
    val, _ = contraction_excess((-np.eye(model.n) + swapped) / model.tau, m, 0.0)
    assert val > -1 / model.tau + 1e-6


@FAST
@given(sizes=st.lists(st.integers(2, 5), min_size=4, max_size=4), seed=st.integers(0, 2**16),
       init_scale=st.floats(0.1, 3.0))
def test_nested_feedback_whole_coupling_is_skew(sizes, seed, init_scale):
    prods = [cn.ProductModule(n, seed=seed + i) for i, n in enumerate(sizes)]
    inner1 = cn.Feedback(prods[:2], init_scale=init_scale, seed=seed)
    inner2 = cn.Feedback(prods[2:], init_scale=init_scale, seed=seed + 1)
    model = cn.Feedback([inner1, inner2], init_scale=init_scale, seed=seed + 2)
    m = as_np(model.metric())
    assert np.allclose(m, sla.block_diag(*(as_np(s.metric()) for s in prods)))
    assert skew_residual(m, as_np(model.coupling())) <= 1e-12


# -- 4. hierarchy -----------------------------------------------------------------------------
@FAST
@given(specs=st.lists(leaf_spec(), min_size=2, max_size=4), common=common_spec(),
       init_scale=st.floats(0.1, 5.0), seed=st.integers(0, 2**16), use_mask=st.booleans(),
       train=st.booleans())
def test_hierarchy_structure_metric_and_rate(specs, common, init_scale, seed, use_mask, train):
    systems = [build_leaf(s, common) for s in specs]
    p = len(systems)
    mask = np.random.default_rng(seed).random((p, p)) < 0.6 if use_mask else None
    model = cn.Hierarchy(systems, init_scale=init_scale, seed=seed, mask=mask)
    if train:
        train_randomly(model, seed)
    lmat = as_np(model.coupling())
    off = offsets(model.sizes)
    for i in range(p):
        for j in range(p):
            blk = lmat[off[i]:off[i + 1], off[j]:off[j + 1]]
            if j >= i or (mask is not None and not mask[i, j]):
                assert np.all(blk == 0), f"block ({i}, {j}) of a hierarchy must be zero"
    c = as_np(model.metric_weights())
    assert c.shape == (p,) and np.all(c > 0)
    expected = sla.block_diag(*(ci * as_np(s.metric()) for ci, s in zip(c, systems, strict=True)))
    assert np.allclose(as_np(model.metric()), expected, rtol=1e-12, atol=0)
    lam = check_model_contracts(model, seed)
    assert 0 < lam <= min(s.rate() for s in systems) * (1 + 1e-12)


def test_hierarchy_without_coupling_keeps_slowest_rate():
    a = cn.ProductModule(3, seed=0, tau=2.0)
    b = cn.SVDModule(4, gamma=0.5, seed=1, tau=2.0)
    model = cn.Hierarchy([a, b], mask=np.zeros((2, 2)))
    assert np.all(as_np(model.coupling()) == 0)
    assert model.rate() == pytest.approx(min(a.rate(), b.rate()), rel=1e-12)


# -- 7. unconstrained coupling: honest rate, not certified when large ------------------------
@SLOW
@given(sizes=st.lists(st.integers(2, 5), min_size=2, max_size=3), seed=st.integers(0, 2**16),
       init_scale=st.floats(0.1, 20.0), product=st.booleans())
def test_unconstrained_rate_is_honest(sizes, seed, init_scale, product):
    systems = [cn.ProductModule(n, seed=seed + i) if product else
               cn.SVDModule(n, seed=seed + i, gamma=0.8) for i, n in enumerate(sizes)]
    model = cn.Unconstrained(systems, init_scale=init_scale, seed=seed)
    lam = float(model.rate())
    # whatever its sign, the reported rate is a valid bound (possibly an expansion rate)
    check_model_contracts(model, seed)
    cert = cn.certify(model, dt=0.1)
    assert cert.continuous_certified == (lam > 0)
    if lam <= 0:
        assert not cert.certified


@pytest.mark.parametrize("seed", range(5))
def test_unconstrained_large_coupling_not_certified(seed):
    systems = [cn.ProductModule(4, seed=seed), cn.ProductModule(4, seed=seed + 10)]
    model = cn.Unconstrained(systems, init_scale=10.0, seed=seed)
    cert = cn.certify(model, dt=0.1)
    assert not cert.continuous_certified and not cert.certified
    # independent evidence: at D = 0 the symmetric part of J in M is not <= 0
    m = as_np(model.metric())
    val, tol = contraction_excess(
        (-np.eye(8) + as_np(model.coupling())) / model.tau, m, 0.0)
    assert val > tol


@pytest.mark.parametrize("seed", range(3))
def test_hierarchy_over_non_contracting_child_is_not_certified(seed):
    """A hierarchy needs contracting children: over the unconstrained control it reports the
    child's non-positive rate, still runs (its metric weights fall back to 1, any positive
    weights are a valid candidate), and ``certify`` says which child fails."""
    bad = cn.Unconstrained([cn.ProductModule(4, seed=seed), cn.ProductModule(4, seed=seed + 10)],
                           init_scale=10.0, seed=seed)
    assert bad.rate() <= 0
    model = cn.Hierarchy([cn.ProductModule(3, seed=seed), bad], seed=seed)
    assert model.rate() <= 0
    with pytest.raises(cn.NotContractingError, match="every child of a Hierarchy must contract"):
        model.comparison()
    assert torch.equal(model.metric_weights(), torch.ones(2, dtype=torch.float64))
    out = model(torch.randn(2, 5, model.n), dt=0.1)
    assert torch.isfinite(out).all()
    cert = cn.certify(model, dt=0.1, method="cayley")
    assert not cert.continuous_certified and not cert.certified
    assert any("must contract" in f and "systems.1" in f for f in cert.failures), cert.failures
    assert cert.summary().splitlines()[-1].startswith("NOT CERTIFIED: ")


# -- 9. bad input -----------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [cn.Feedback, cn.Hierarchy, cn.Unconstrained])
def test_combination_argument_errors(cls):
    with pytest.raises(ValueError, match=r"one activation.*same activation"):
        cls([cn.ProductModule(3, activation="relu"), cn.ProductModule(3, activation="tanh")])
    with pytest.raises(ValueError, match=r"share g.*same g"):
        cls([cn.ProductModule(3), cn.ProductModule(3, g=2.0)])
    with pytest.raises(ValueError, match="non-empty list"):
        cls([])
    with pytest.raises(ValueError, match=r"mask must be 2x2.*or 5x5"):
        cls([cn.ProductModule(3), cn.ProductModule(2)], mask=np.ones((3, 3)))
    with pytest.raises(ValueError, match="init_scale"):
        cls([cn.ProductModule(3), cn.ProductModule(2)], init_scale=0.0)


# -- per-module time constants ---------------------------------------------------------------
@SLOW
@given(spec=tree_spec(max_leaves=3), common=common_spec(trainable_tau=False),
       seed=st.integers(0, 2**16),
       taus=st.lists(st.sampled_from([0.3, 1.0, 2.5, 10.0]), min_size=4, max_size=4))
def test_modules_with_different_time_constants_contract(spec, common, seed, taus):
    """``T dx/dt = -x + W phi(x) + L x`` with one tau per module contracts in
    ``blockdiag(P_i)`` (eq. 3 with ``Mbar = P T^{-1}``; docs/design.md): autograd Jacobians of
    ``rhs`` and ``T^{-1}(-I + W D + L)`` at slope vertices, with the model's own ``T``."""
    cycle = itertools.cycle(taus)

    def rebuild(s):
        if isinstance(s, dict):
            return build_leaf(s, {**common, "tau": next(cycle)})
        rule, children, init_scale, sd, _ = s
        cls = {"feedback": cn.Feedback, "hierarchy": cn.Hierarchy}[rule]
        return cls([rebuild(c) for c in children], init_scale=init_scale, seed=sd)

    model = rebuild(spec)
    leaves = model.leaves()
    want = np.concatenate([np.full(leaf.n, leaf.tau) for leaf in leaves])
    assert np.array_equal(as_np(model.time_constants()), want)
    assert model.tau == min(leaf.tau for leaf in leaves)
    lam = check_model_contracts(model, seed, n_states=2)
    assert lam > 0, describe(model)


@pytest.mark.parametrize("cls", [cn.Feedback, cn.Hierarchy, cn.Unconstrained])
def test_symmetric_module_cannot_be_combined(cls):
    sym = cn.SymmetricModule(3)
    other = cn.ProductModule(3, activation="tanh")
    with pytest.raises(ValueError, match=r"no constant metric.*Theorem 1, 3, 4 or 5"):
        model = cls([sym, other])
        model.metric()  # Unconstrained builds; asking for its metric must fail clearly


@pytest.mark.parametrize("seed", range(3))
def test_tampered_b_cannot_break_feedback(seed):
    """Through the public API, any ``B`` (even one written into the masked upper blocks and
    the diagonal blocks) gives a coupling that is skew in the metric: eq. 3 is structural."""
    systems = [cn.ProductModule(3, seed=seed), cn.TriangularModule(2, seed=seed),
               cn.SVDModule(3, seed=seed)]
    model = cn.Feedback(systems, seed=seed)
    with torch.no_grad():
        model.b.copy_(10 * torch.randn(8, 8, generator=torch.Generator().manual_seed(seed)))
    m = as_np(model.metric())
    lmat = as_np(model.coupling())
    assert np.abs(lmat).max() > 1
    assert skew_residual(m, lmat) <= 1e-12
    assert cn.certify(model, dt=0.01, method="cayley").continuous_certified
    check_model_contracts(model, seed)
