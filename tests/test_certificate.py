"""Certificates (DESIGN.md §2): JSON round trip, and the discrete contraction factor checked
against an independent computation (vertex enumeration of the map's Jacobian, in numpy) and
against the measured one-step contraction of two simulated states."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.linalg as sla
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import combonet as cn
from conftest import as_np, build_tree, common_spec, describe, examples, slope_vertices, tree_spec

pytestmark = pytest.mark.usefixtures("float64")

FAST = settings(max_examples=examples(20), deadline=None)
SLOW = settings(max_examples=examples(10), deadline=None)


def unit_alphas(model, alpha: float) -> np.ndarray:
    """``dt / tau_i`` per unit for the step ``dt = alpha * model.tau`` (time constants may
    differ and be trained)."""
    return alpha * model.tau / as_np(model.time_constants())


def map_jacobians(model, d_rows: np.ndarray, alpha: float, method: str) -> np.ndarray:
    """Jacobians of the discrete map at slope vectors ``d_rows`` (V, N) -> (V, N, N), with
    ``A = diag(dt / tau)``: ``(I - A) + A W D`` then ``+ A L`` (euler) or ``C = (I - AL/2)^{-1}
    (I + AL/2)`` in front (cayley)."""
    n = model.n
    w = as_np(model.weight())
    lmat = model.coupling()
    lmat = np.zeros((n, n)) if lmat is None else as_np(lmat)
    eye = np.eye(n)
    a = unit_alphas(model, alpha)
    jac = np.diag(1 - a) + a[:, None] * w[None] * d_rows[:, None, :]
    if method == "euler":
        return jac + a[:, None] * lmat
    c = np.linalg.solve(eye - a[:, None] * lmat / 2, eye + a[:, None] * lmat / 2)
    return c[None] @ jac


def metric_norms(a: np.ndarray, m: np.ndarray) -> np.ndarray:
    """``||A||_M = ||R A R^{-1}||_2`` with ``M = R^T R``, batched."""
    r = sla.cholesky(m, lower=False)
    r_inv = sla.solve_triangular(r, np.eye(m.shape[0]), lower=False)
    return np.linalg.svd(r[None] @ a @ r_inv[None], compute_uv=False)[:, 0]


def metric_dist(a: np.ndarray, b: np.ndarray, m: np.ndarray) -> float:
    d = a - b
    return float(np.sqrt(d @ m @ d))


def one_step(model, x: np.ndarray, u: np.ndarray, dt: float, method: str) -> np.ndarray:
    out = cn.simulate(model, torch.as_tensor(u)[None, None], torch.as_tensor(x)[None],
                      dt=dt, method=method)
    return as_np(out[0, 1])


def one_step_numpy(model, x, u, alpha, method) -> np.ndarray:
    """The discrete map of DESIGN.md §1-2, written out independently of the engine."""
    n = model.n
    w = as_np(model.weight())
    lmat = model.coupling()
    lmat = np.zeros((n, n)) if lmat is None else as_np(lmat)
    phi = {"relu": lambda z: np.maximum(z, 0), "tanh": np.tanh}[model.activation.name]
    a = unit_alphas(model, alpha)
    z = (1 - a) * x + a * (w @ phi(x) + u)
    if method == "euler":
        return z + a * (lmat @ x)
    eye = np.eye(n)
    al = a[:, None] * lmat
    return np.linalg.solve(eye - al / 2, (eye + al / 2) @ z)


dts = st.sampled_from([0.01, 0.05, 0.1, 0.3, 1.0])
methods = st.sampled_from(["euler", "cayley"])


# -- 8. JSON round trip ----------------------------------------------------------------------
@FAST
@given(spec=tree_spec(max_leaves=3), common=common_spec(), frac=dts, method=methods)
def test_certificate_json_round_trip(spec, common, frac, method):
    model = build_tree(spec, common)
    cert = cn.certify(model, dt=frac * model.tau, method=method)
    back = cn.Certificate.from_dict(json.loads(cert.to_json()))
    assert back == cert
    assert back.certified == cert.certified and back.margin == cert.margin
    assert back.summary() == cert.summary()
    # the certificate reports the model's own metric and rate
    m = back.metric_matrix()
    assert np.allclose(m, as_np(model.metric()), rtol=1e-12, atol=0)
    assert back.rate == pytest.approx(float(model.rate()), rel=1e-12)
    assert back.metric_condition_number == pytest.approx(np.linalg.cond(m), rel=1e-6)
    assert back.alpha == pytest.approx(frac)
    if isinstance(model, cn.Feedback):
        assert back.coupling_skew_residual is not None and back.coupling_skew_residual <= 1e-12


def test_symmetric_module_certificate_round_trip():
    cert = cn.certify(cn.SymmetricModule(4, seed=0), dt=0.1)
    assert cert.continuous_certified and not cert.discrete_certified and not cert.certified
    assert cert.metric is None
    assert any("no constant metric" in note for note in cert.notes)
    assert cn.Certificate.from_dict(json.loads(cert.to_json())) == cert


# -- 8. the discrete factor bounds the actual one-step contraction ---------------------------
def _check_factor(model, cert, seed, alpha, method):
    m = as_np(model.metric())
    rng = np.random.default_rng(seed)
    rho = cert.discrete_factor
    assert rho is not None and rho > 0
    # (a) Jacobians of the map at all 2^N slope vertices (N <= 15), computed here: the map's
    # Jacobian is affine in D, so its largest M-norm is attained at one of them
    assert model.n <= 15
    verts = slope_vertices(model.n, model.g, rng, max_all=15)
    norms = metric_norms(map_jacobians(model, verts, alpha, method), m)
    assert norms.max() <= rho * (1 + 1e-9) + 1e-12, (norms.max(), rho, describe(model))
    if cert.discrete_exact:  # attained, up to the stated float64 allowance
        assert norms.max() == pytest.approx(rho, abs=cert.allowance + 1e-9 * rho), \
            "discrete_exact but not attained"
    # (b) two simulated states, one step, same input: distance shrinks by at most rho
    for _ in range(4):
        xa, xb = rng.normal(0, 2, (2, model.n))
        if rng.random() < 0.5:
            xb = xa + 1e-3 * rng.normal(size=model.n)
        u = rng.normal(0, 1, model.n)
        ya = one_step(model, xa, u, alpha * model.tau, method)
        yb = one_step(model, xb, u, alpha * model.tau, method)
        np.testing.assert_allclose(ya, one_step_numpy(model, xa, u, alpha, method),
                                   rtol=1e-10, atol=1e-10)
        ratio = metric_dist(ya, yb, m) / metric_dist(xa, xb, m)
        assert ratio <= rho * (1 + 1e-9), (ratio, rho, describe(model))


@SLOW
@given(spec=tree_spec(max_leaves=2), common=common_spec(), frac=dts, method=methods,
       seed=st.integers(0, 2**16))
def test_discrete_factor_small_models_exact(spec, common, frac, method, seed):
    model = build_tree(spec, common)
    if model.n > 12:
        return
    alpha = frac
    cert = cn.certify(model, dt=alpha * model.tau, method=method)
    assert cert.discrete_exact
    _check_factor(model, cert, seed, alpha, method)


@SLOW
@given(sizes=st.tuples(st.integers(4, 5), st.just(4), st.just(4)),
       common=common_spec(trainable_tau=False), frac=dts, method=methods,
       seed=st.integers(0, 2**16), init_scale=st.floats(0.1, 3.0), hierarchy=st.booleans())
def test_discrete_bound_larger_models(sizes, common, frac, method, seed, init_scale,
                                      hierarchy):
    """N = 12 (exact) and 13: for N > 12 the certificate only has its bound; check it against
    all ``2^N`` vertices computed here."""
    leaves = [cn.ProductModule(sizes[0], seed=seed, **common),
              cn.SVDModule(sizes[1], seed=seed + 1, gamma=0.9, **common),
              cn.TriangularModule(sizes[2], seed=seed + 2, **common)]
    rule = cn.Hierarchy if hierarchy else cn.Feedback
    model = rule(leaves, init_scale=init_scale, seed=seed)
    cert = cn.certify(model, dt=frac * model.tau, method=method)
    assert cert.discrete_exact == (model.n <= 12)
    _check_factor(model, cert, seed, frac, method)


# -- 7. too large a step: not covered, max_dt given and covered ------------------------------
@FAST
@given(spec=tree_spec(max_leaves=3), common=common_spec(), method=methods,
       seed=st.integers(0, 2**16), u=st.floats(0.01, 0.999))
def test_max_dt_is_covered(spec, common, method, seed, u):
    model = build_tree(spec, common)
    dt = model.tau  # alpha = 1, the largest step the engine accepts
    cert = cn.certify(model, dt=dt, method=method)
    assert cert.continuous_certified
    if cert.max_dt is not None:
        # the largest covered step is covered, as the certificate claims
        assert cn.certify(model, dt=cert.max_dt, method=method, max_dt=False).certified
        if method == "euler" and cert.discrete_exact:
            # the exact euler factor is a max of norms affine in dt (1 at dt = 0), so the
            # covered steps form an interval: every smaller step is covered too
            below = cn.certify(model, dt=u * cert.max_dt, method=method, max_dt=False)
            assert below.discrete_certified, below.summary()
        if dt <= cert.max_dt:
            assert cert.discrete_certified
    if not cert.discrete_certified:
        assert cert.summary().splitlines()[-1].startswith("NOT CERTIFIED: ")
        if cert.discrete_exact:
            # independent evidence that the map is not a contraction at this step
            verts = slope_vertices(model.n, model.g, np.random.default_rng(seed), max_all=12)
            norms = metric_norms(map_jacobians(model, verts, 1.0, method),
                                 as_np(model.metric()))
            assert norms.max() >= 1 - 1e-6 - cert.allowance
        if cert.max_dt is None:
            return
        assert 0 < cert.max_dt < dt
        assert any(f"{cert.max_dt:.6g}" in note for note in cert.notes)


@pytest.mark.parametrize("method", ["euler", "cayley"])
def test_large_dt_feedback_not_covered(method):
    """Strong eq. 3 feedback: certified in continuous time, but Euler expands along the skew
    coupling at dt = tau; the certificate says so and gives a step that works."""
    leaves = [cn.ProductModule(4, seed=0, init_scale=2.0), cn.SVDModule(4, seed=1),
              cn.TriangularModule(4, seed=2)]
    model = cn.Feedback(leaves, init_scale=8.0, seed=3)
    cert = cn.certify(model, dt=1.0, method=method)
    assert cert.continuous_certified
    verts = slope_vertices(model.n, model.g, np.random.default_rng(0), max_all=12)
    norms = metric_norms(map_jacobians(model, verts, 1.0, method), as_np(model.metric()))
    if method == "euler":
        assert norms.max() > 1  # computed here: the Euler map expands
        assert not cert.discrete_certified and not cert.certified
        assert cert.max_dt is not None and cert.max_dt < 1.0
        assert "dt <=" in " ".join(cert.notes)
        half = cn.certify(model, dt=cert.max_dt / 2, method=method)
        assert half.certified
    else:
        # the Cayley coupling step is an isometry in M: only the modules constrain dt
        lmat = as_np(model.coupling())
        c = np.linalg.solve(np.eye(12) - lmat / 2, np.eye(12) + lmat / 2)
        assert metric_norms(c[None], as_np(model.metric()))[0] == pytest.approx(1, abs=1e-9)
        assert (norms.max() < 1) == cert.discrete_certified


def test_summary_says_which_part_fails():
    """When the continuous-time rate fails, a discrete factor below 1 certifies nothing: the
    summary says so instead of "rho <= 0.97 -> NOT certified"; with rho >= 1 it says that."""
    def lines_of(seed: int) -> tuple[cn.Certificate, list[str]]:
        leaves = [cn.SVDModule(3, seed=seed), cn.SVDModule(3, seed=seed + 1)]
        cert = cn.certify(cn.Unconstrained(leaves, seed=seed), dt=0.1)
        return cert, cert.summary().splitlines()

    cert, lines = lines_of(0)
    assert cert.rate < 0 and cert.discrete_factor < 1 and not cert.certified
    assert lines[2] == f"continuous-time rate lam = {cert.rate:.4g} <= 0: NOT certified"
    rho = next(x for x in lines if x.startswith("step contraction factor"))
    assert rho.endswith(") < 1, but the discrete factor alone does not certify"), rho
    assert "NOT certified" not in rho and "holds" not in rho
    assert lines[-1] == f"NOT CERTIFIED: the continuous-time rate bound {cert.rate:.4g} is not " \
        "positive"
    cert, lines = lines_of(3)
    assert cert.rate < 0 and cert.discrete_factor >= 1
    rho = next(x for x in lines if x.startswith("step contraction factor"))
    assert rho.endswith(") >= 1 -> NOT certified"), rho
    cert, lines = lines_of(1)
    assert cert.certified
    assert lines[2] == f"continuous-time rate lam = {cert.rate:.4g} (holds)"
    assert next(x for x in lines if x.startswith("step contraction")).endswith(") -> holds")
    assert lines[-1] == "CERTIFIED"


# -- 9. bad input ----------------------------------------------------------------------------
def test_certify_argument_errors():
    model = cn.ProductModule(3, tau=0.5)
    with pytest.raises(ValueError, match=r'Invalid method "rk4".*euler'):
        cn.certify(model, dt=0.1, method="rk4")
    for dt, fix in ((0.0, "positive"), (-0.1, "positive"), (0.6, "lower dt"),
                    (float("nan"), "positive")):
        with pytest.raises(ValueError, match=rf"dt / tau must lie in \(0, 1\].*{fix}"):
            cn.certify(model, dt=dt)


# -- modules whose units have different time constants ------------------------------------
def _per_unit_module(n: int, spread: float, scale: float, seed: int) -> cn.SVDModule:
    """An SVD module with per-unit time constants spread over [1, 1 + spread] and its other
    free parameters moved by ``N(0, scale^2)`` (singular values and factors away from init)."""
    rng = np.random.default_rng(seed)
    tau = cn.TimeConstants(n, init=1.0 + spread / 2, lo=1.0, hi=1.0 + spread, per="unit")
    module = cn.SVDModule(n, seed=seed, tau=tau)
    with torch.no_grad():
        tau.theta.copy_(torch.as_tensor(rng.normal(0.0, 3.0, n)))
        for p in module.parameters():
            if p is not tau.theta:
                p.add_(scale * torch.as_tensor(rng.normal(0.0, 1.0, tuple(p.shape)),
                                               dtype=p.dtype))
    return module


@settings(max_examples=examples(25), deadline=None)
@given(n=st.integers(2, 7), spread=st.floats(0.5, 20.0), scale=st.floats(0.5, 3.0),
       dt=st.floats(0.05, 1.0), seed=st.integers(0, 2**16),
       dtype=st.sampled_from([torch.float32, torch.float64]))
def test_module_factor_bound_is_above_the_exact_factor_with_per_unit_taus(n, spread, scale,
                                                                          dt, seed, dtype):
    """The analytic factor bound (no vertex search) is never below the exact largest
    ``||diag(b) + W_a D||`` over the slope vertices, computed here in numpy from the running
    matrices in the snapshot's metric."""
    from combonet import bounds

    module = _per_unit_module(n, spread, scale, seed)
    with torch.no_grad():
        snap = module.explicit(dt=dt, method="cayley", dtype=dtype)
    bound = bounds.discrete_factor(snap, exact=False).bound
    wa, b = as_np(snap.weight_matrix()), as_np(snap.decay)
    r = np.sqrt(as_np(snap.tree.metric))
    exact = max(np.linalg.norm(r[:, None] * (np.diag(b) + wa * d[None, :]) / r[None, :], 2)
                for d in slope_vertices(n, module.g, np.random.default_rng(seed)))
    assert bound >= exact - 1e-12, (bound, exact)


def test_per_unit_taus_at_a_long_step_are_certified():
    """Different time constants per unit at a step near tau_min: the mixed bound
    ``sqrt(max_j (b_j^2 + alpha_j (2 sigma_d + kappa^2)))`` exceeds 1, the exact factor does
    not, and ``max_j (b_j + alpha_j g ||X_w||)`` certifies (a 32-unit module: no vertex
    search)."""
    from combonet import bounds

    module = _per_unit_module(32, 6.0, 0.0, 1)
    with torch.no_grad():
        snap = module.explicit(dt=0.966, method="cayley", dtype=torch.float32)
    leaf = bounds.leaf_bound(snap.tree, bounds.f64(snap.weight_matrix()),
                             bounds.f64(snap.alpha), bounds.f64(snap.decay),
                             bounds.Normaliser(snap.tree.metric))
    a, b = bounds.f64(snap.alpha), bounds.f64(snap.decay)
    mixed = float((b**2 + a * (2 * leaf.sigma_d + leaf.kappa**2)).max()) ** 0.5
    assert mixed >= 1.0 > leaf.rho(a, b)
    cert = cn.certify(module, dt=0.966)
    assert cert.certified and cert.discrete_factor < 1, cert.summary()
