"""Property tests of the single modules (paper eq. 1, Theorems 1-5).

Every contraction claim ``M J + J^T M <= -2 lam M`` is checked with the autograd Jacobian of
``model.rhs`` at random states and with ``J = (-I + W D) / tau`` at the vertices of the slope box
``D in [0, g]^n``, independently of ``combonet.certificate``.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import combonet as cn
from combonet import conditions
from conftest import (
    LEAF_KINDS,
    as_np,
    assert_contracts,
    autograd_jacobian,
    build_leaf,
    check_model_contracts,
    common_spec,
    describe,
    examples,
    leaf_spec,
    random_states,
    slope_vertices,
    train_randomly,
)

pytestmark = pytest.mark.usefixtures("float64")

FAST = settings(max_examples=examples(25), deadline=None)
SLOW = settings(max_examples=examples(12), deadline=None)


def spectral_radius(a: np.ndarray) -> float:
    return float(np.abs(np.linalg.eigvals(a)).max())


def theorem1_radius(w: np.ndarray, g: float) -> float:
    """``rho(g|W|)`` with ``|W|_ii := 0`` where ``W_ii <= 0`` (computed here, not imported)."""
    a = g * np.abs(w)
    np.fill_diagonal(a, g * np.clip(np.diag(w), 0, None))
    return spectral_radius(a)


# -- 1. contraction of every constant-metric module ----------------------------------------
@FAST
@given(spec=leaf_spec(), common=common_spec(), seed=st.integers(0, 2**16))
def test_leaf_contracts_at_states_and_vertices(spec, common, seed):
    model = build_leaf(spec, common)
    assert model.weight().dtype == torch.float64
    lam = check_model_contracts(model, seed)
    assert lam > 0, describe(model)


@SLOW
@given(spec=leaf_spec(), common=common_spec(), seed=st.integers(0, 2**16))
def test_leaf_still_contracts_after_training(spec, common, seed):
    model = build_leaf(spec, common)
    moved = train_randomly(model, seed)
    assert moved or spec["kind"] == "sparse", "trainable module did not change"
    for p in model.parameters():
        assert torch.isfinite(p).all()
    lam = check_model_contracts(model, seed + 1)
    assert lam > 0, describe(model)


def test_sparse_module_has_no_trainable_weight():
    model = cn.SparseModule(6, density=0.3, seed=0)
    assert not [p for p in model.parameters() if p.requires_grad]


# -- Theorem 2: state-dependent metric D(x) = diag(phi'(x)) ----------------------------------
@FAST
@given(n=st.integers(2, 8), seed=st.integers(0, 2**16), gamma=st.floats(0.1, 0.99),
       init_scale=st.floats(0.05, 3.0), tau=st.sampled_from([0.5, 1.0, 2.0]),
       g=st.sampled_from([None, 1.5]), train=st.booleans())
def test_symmetric_module_pointwise_contraction(n, seed, gamma, init_scale, tau, g, train):
    model = cn.SymmetricModule(n, gamma=gamma, init_scale=init_scale, tau=tau, g=g,
                               activation="tanh", seed=seed)
    if train:
        assert train_randomly(model, seed)
    w = as_np(model.weight())
    assert np.allclose(w, w.T, atol=1e-14), "Theorem 2 needs W = W^T"
    assert model.g * np.linalg.eigvalsh(w)[-1] < 1, "Theorem 2 needs g W < I"
    lam = float(model.rate())
    assert lam > 0
    with pytest.raises(cn.NoConstantMetricError):
        model.metric()
    for x in random_states(n, np.random.default_rng(seed), 5, scale=1.5):
        d = np.diag(1 - np.tanh(x.numpy()) ** 2)  # phi' > 0
        assert_contracts(autograd_jacobian(model, x), d, lam, "D(x) metric")


# -- structure each parameterisation promises ----------------------------------------------
@FAST
@given(n=st.integers(2, 8), seed=st.integers(0, 2**16), init_scale=st.floats(0.1, 3.0),
       gamma=st.floats(0.1, 0.95), g=st.sampled_from([None, 1.5]))
def test_triangular_structure(n, seed, init_scale, gamma, g):
    model = cn.TriangularModule(n, init_scale=init_scale, gamma=gamma, g=g, seed=seed)
    w = as_np(model.weight())
    assert np.all(np.triu(w, 1) == 0), "W must be lower triangular"
    assert np.all(model.g * np.diag(w) - 1 < 0), "g W - I must be Hurwitz"
    m = as_np(model.metric())
    assert np.all(m == np.diag(np.diag(m))), "Theorem 4 gives a diagonal metric"


@FAST
@given(n=st.integers(2, 8), seed=st.integers(0, 2**16), gamma=st.floats(0.3, 0.999),
       g=st.sampled_from([None, 1.5]), train=st.booleans())
def test_svd_structure(n, seed, gamma, g, train):
    model = cn.SVDModule(n, gamma=gamma, g=g, seed=seed)
    if train:
        train_randomly(model, seed)
    w = as_np(model.weight())
    p = as_np(model.metric())
    assert np.all(p == np.diag(np.diag(p)))
    # Theorem 5: g^2 W^T P W - P < 0
    lhs = model.g**2 * w.T @ p @ w - p
    s = np.sqrt(np.diag(p))
    assert np.linalg.eigvalsh(lhs / s[:, None] / s[None, :])[-1] < 0
    # singular values of P^{1/2} W P^{-1/2} are < 1/g
    assert np.linalg.norm(s[:, None] * w / s[None, :], 2) * model.g < 1


@FAST
@given(n=st.integers(2, 8), seed=st.integers(0, 2**16), init_scale=st.floats(0.1, 3.0))
def test_product_metric_is_inverse_of_p1_q_p1(n, seed, init_scale):
    model = cn.ProductModule(n, init_scale=init_scale, seed=seed)
    train_randomly(model, seed)
    m = as_np(model.metric())
    mi = as_np(model.metric_inverse())
    assert np.allclose(m @ mi, np.eye(n), atol=1e-9 * np.linalg.cond(m))
    # M W is diagonal and non-positive (the proof of Theorem 3)
    mw = m @ as_np(model.weight())
    off = mw - np.diag(np.diag(mw))
    assert np.abs(off).max() <= 1e-9 * np.linalg.cond(m) * np.abs(mw).max()
    assert np.all(np.diag(mw) < 0)


# -- 6. the checkers of combonet.conditions agree with the parameterisations ---------------
@SLOW
@given(spec=leaf_spec(), common=common_spec(), train=st.booleans(), seed=st.integers(0, 99))
def test_checkers_accept_parameterised_weights(spec, common, train, seed):
    model = build_leaf(spec, common)
    if train:
        train_randomly(model, seed)
    w = model.weight().detach()
    g, tau = model.g, model.tau
    kind = spec["kind"]
    check = {"sparse": conditions.check_theorem1, "trainable_sparse": conditions.check_theorem1,
             "product": conditions.check_theorem3, "svd": conditions.check_theorem5,
             "triangular": conditions.check_theorem4}[kind]
    res = check(w, g, tau)
    assert res.holds, f"{kind}: {res.message}"
    assert res.margin > 0
    if kind in ("sparse", "trainable_sparse"):
        assert theorem1_radius(as_np(w), g) < 1  # computed here
    # the checker's metric and rate are themselves a certificate: check it at slope vertices
    assert res.metric is not None and res.rate is not None and res.rate > 0
    m = np.asarray(res.metric, dtype=np.float64)
    n = w.shape[0]
    d = slope_vertices(n, g, np.random.default_rng(seed))
    jacs = (-np.eye(n)[None] + as_np(w)[None] * d[:, None, :]) / tau
    assert_contracts(jacs, m, float(res.rate), f"{kind} checker metric and rate")


@FAST
@given(n=st.integers(2, 8), seed=st.integers(0, 2**16), gamma=st.floats(0.1, 0.99),
       init_scale=st.floats(0.05, 3.0), g=st.sampled_from([None, 1.5]))
def test_checker_accepts_symmetric_module(n, seed, gamma, init_scale, g):
    model = cn.SymmetricModule(n, gamma=gamma, init_scale=init_scale, g=g, seed=seed)
    res = conditions.check_theorem2(model.weight().detach(), model.g, model.tau)
    assert res.holds, res.message
    assert res.metric is None  # Theorem 2 gives no constant metric
    assert res.rate == pytest.approx(model.rate(), rel=1e-9)


def test_checkers_reject_violations():
    # Theorem 7's counterexample: not symmetric, rho(g|W|) = 2, rho(W) = 2
    w7 = np.array([[0.0, -2.0], [2.0, 0.0]])
    assert not conditions.check_theorem1(w7, 1.0).holds
    assert not conditions.check_theorem2(w7, 1.0).holds
    assert not conditions.check_theorem5(w7, 1.0).holds
    assert not conditions.check_theorem4(np.array([[1.5, 0.0], [0.3, 0.2]]), 1.0).holds
    assert not conditions.check_theorem2(np.eye(3) * 1.2, 1.0).holds
    # -S W is negative definite for every positive diagonal S: no W = -P1 Q P2 factorisation
    assert not conditions.check_theorem3(np.eye(3), 1.0).holds


# -- 7. perturbed weights are rejected ------------------------------------------------------
@FAST
@given(n=st.integers(2, 8), density=st.floats(0.1, 1.0), magnitude=st.floats(0.1, 1.0),
       seed=st.integers(0, 2**16), factor=st.floats(1.0, 8.0))
def test_sparse_weight_argument_is_checked(n, density, magnitude, seed, factor):
    try:
        base = cn.SparseModule(n, density=density, magnitude=magnitude, seed=seed,
                               max_tries=50)
    except ValueError:
        return
    w = as_np(base.weight()) * factor
    rho = theorem1_radius(w, base.g)
    if rho >= 1:
        with pytest.raises(ValueError, match=r"Theorem 1.*scale it down|sparser"):
            cn.SparseModule(n, weight=torch.as_tensor(w))
    elif rho < 1 - 1e-9:
        model = cn.SparseModule(n, weight=torch.as_tensor(w), normalize=False)
        assert np.allclose(as_np(model.weight()), w)
        check_model_contracts(model, seed)


def test_sparse_weight_scaled_by_five_is_rejected():
    rng = np.random.default_rng(0)
    w = rng.uniform(-1, 1, (6, 6))
    np.fill_diagonal(w, 0)
    w *= 0.5 / theorem1_radius(w, 1.0)  # rho = 0.5: accepted
    model = cn.SparseModule(6, weight=w)
    assert model.rate() > 0
    with pytest.raises(ValueError, match="spectral_radius"):
        cn.SparseModule(6, weight=5 * w)


# -- buffers are never trusted (issue 10) ---------------------------------------------------
def stored_metric_network(dtype: torch.dtype = torch.float32) -> cn.Feedback:
    """A Feedback whose second child keeps its Theorem-1 metric in the buffer ``_p``."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        sparse = cn.SparseModule(6, density=0.3, magnitude=1.5, seed=1, normalize=False,
                                 best_metric=True)
        return cn.Feedback([cn.SVDModule(3, seed=0), sparse], seed=0)
    finally:
        torch.set_default_dtype(old)


BAD_METRICS = {
    "zero": ([1, 0, 1, 1, 1, 1], r"has entries <= 0 \(smallest 0\)"),
    "negative": ([1, 1, -2, 1, 1, 1], r"has entries <= 0 \(smallest -2\)"),
    "nan": ([1, 1, 1, float("nan"), 1, 1], "has non-finite entries"),
    "inf": ([1, 1, 1, 1, float("inf"), 1], "has non-finite entries"),
    "spread": ([1e300, 1e-300, 1, 1, 1, 1],
               r"spans 1e-300 \.\.\. 1e\+300, a condition number beyond float64"),
}


@pytest.mark.parametrize("bad", sorted(BAD_METRICS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_stored_metric_buffer_is_checked_at_every_use(bad, dtype):
    """An edited ``_p`` (non-positive, non-finite, or spanning more than float64) used to make
    the forward pass silently non-finite and the certificate blame "its running weights"."""
    values, defect = BAD_METRICS[bad]
    net = stored_metric_network(dtype)
    sparse = net.systems[1]
    drive = torch.randn(2, 3, net.n, dtype=dtype)
    assert torch.isfinite(net(drive, dt=0.1)).all() and cn.certify(net, dt=0.1).certified
    with torch.no_grad():
        sparse._p.copy_(torch.tensor(values, dtype=torch.float64))
    where = r"^systems\.1 SparseModule\(n=6\): buffer _p \(its stored metric\) "
    for run in (lambda: net(drive, dt=0.1), lambda: net.explicit(dt=0.1), net.rate,
                lambda: cn.simulate(net, drive, dt=0.1)):
        with pytest.raises(ValueError, match=where + defect) as info:
            run()
        assert "\n" not in str(info.value) and "refused" in str(info.value)
    with pytest.raises(ValueError, match=r"^SparseModule\(n=6\): buffer _p .*" + defect):
        sparse.metric()  # the module alone, outside any tree
    cert = cn.certify(net, dt=0.1)  # never raises
    assert not cert.certified and not cert.continuous_certified
    assert len(cert.failures) == 1
    assert cert.failures[0].startswith("systems.1 SparseModule(n=6): buffer _p")
    assert "not finite" not in cert.failures[0]
    assert cert.summary().splitlines()[-1] == f"NOT CERTIFIED: {cert.failures[0]}"


@pytest.mark.parametrize("bad", sorted(BAD_METRICS))
def test_loaded_stored_metric_is_refused(bad):
    values, defect = BAD_METRICS[bad]
    sd = stored_metric_network().state_dict()
    sd["systems.1._p"] = torch.tensor(values, dtype=torch.float64)
    fresh = stored_metric_network()
    before = fresh.systems[1]._p.clone()
    with pytest.raises(ValueError, match=r"^the loaded systems\.1\._p of SparseModule\(n=6\) "
                       r"\(its stored metric\) " + defect):
        fresh.load_state_dict(sd)
    assert torch.equal(fresh.systems[1]._p, before)
    good = stored_metric_network().state_dict()
    fresh.load_state_dict(good)  # a valid metric loads
    assert cn.certify(fresh, dt=0.1).certified


def test_stored_metric_too_spread_for_float32_is_named():
    """A positive, finite metric that the float32 running weights cannot represent: the
    certificate says so instead of "its running weights are not finite"."""
    net = stored_metric_network(torch.float32)
    with torch.no_grad():
        net.systems[1]._p.copy_(torch.tensor([1e150, 1e-150] * 3, dtype=torch.float64))
    cert = cn.certify(net, dt=0.1)
    assert not cert.certified
    assert cert.failures[0].startswith(
        "systems.1 SparseModule(n=6): its running weights are not finite in float32 although "
        "W is: its metric (condition number 1e+300) is too spread"), cert.failures


def test_mask_buffers_are_checked_at_every_use_and_on_load():
    """The 0/1 masks (a combination's coupling mask, a trainable sparse module's pattern) are
    refused when edited to other values, in place or in a loaded state dict."""
    def build():
        return cn.Feedback([cn.TrainableSparseModule(4, density=0.5, seed=0),
                            cn.SVDModule(3, seed=1)], seed=0)

    for key in ("mask", "systems.0.mask"):
        for value in (0.5, float("nan"), 2.0):
            net = build()
            buf = dict(net.named_buffers())[key]
            with torch.no_grad():
                buf.view(-1)[buf.view(-1).nonzero()[0]] = value
            label = "model Feedback(sizes=[4, 3])" if key == "mask" else \
                "systems.0 TrainableSparseModule(n=4)"
            with pytest.raises(ValueError, match=rf"^{re.escape(label)}: buffer mask .* is not a "
                               "0/1 pattern"):
                net(torch.randn(1, 2, 7), dt=0.1)
            cert = cn.certify(net, dt=0.1)
            assert not cert.certified and cert.failures[0].startswith(f"{label}: buffer mask")
            sd = net.state_dict()
            with pytest.raises(ValueError, match=rf"^the loaded {re.escape(key)} of"):
                build().load_state_dict(sd)


# -- 9. bad input ---------------------------------------------------------------------------
def test_non_square_weight():
    with pytest.raises(ValueError, match="square"):
        cn.SparseModule(3, weight=np.zeros((3, 2)))


def test_weight_of_wrong_size():
    with pytest.raises(ValueError, match=r"4x4.*n=4"):
        cn.SparseModule(4, weight=np.zeros((3, 3)))


@pytest.mark.parametrize("density", [0, -0.1, 1.5])
@pytest.mark.parametrize("cls", [cn.SparseModule, cn.TrainableSparseModule])
def test_density_outside_unit_interval(cls, density):
    with pytest.raises(ValueError, match=r"density must lie in \(0\.0, 1\.0\]"):
        cls(4, density=density)


@pytest.mark.parametrize("kind", (*LEAF_KINDS, "symmetric"))
def test_bad_g_tau_activation(kind):
    cls = {"sparse": cn.SparseModule, "trainable_sparse": cn.TrainableSparseModule,
           "product": cn.ProductModule, "svd": cn.SVDModule, "triangular": cn.TriangularModule,
           "symmetric": cn.SymmetricModule}[kind]
    for g in (0, -1.0):
        with pytest.raises(ValueError, match=r"g must be a finite number > 0"):
            cls(4, g=g)
    act = "tanh"
    with pytest.raises(ValueError, match=r"below the slope bound of tanh.*pass g >= 1"):
        cls(4, g=0.5, activation=act)
    for tau in (0, -2.0):
        with pytest.raises(ValueError, match=r"tau must be a finite number > 0"):
            cls(4, tau=tau)
    with pytest.raises(ValueError, match=r'Unknown activation "sigmoid".*relu'):
        cls(4, activation="sigmoid")
    with pytest.raises(ValueError, match=r"n must be an integer >= 1"):
        cls(0)


def test_impossible_density_and_magnitude():
    with pytest.raises(ValueError, match=r"density=1\.0 and magnitude=50.*lower magnitude"):
        cn.SparseModule(6, density=1.0, magnitude=50, max_tries=20, seed=0)
