"""Soundness of certificates: what CERTIFIED claims holds for the map that runs (issue 10).

Every claim is checked against the engine itself (the public ``forward`` of the model, in the
model's dtype) or against matrices read from the snapshot the engine runs, with numpy; the
numbered regression tests are the cases found by an audit (a tampered checkpoint certified,
float32 maps that expanded while certified, ...).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import combonet as cn
from combonet.bounds import EXACT_MAX_N
from conftest import as_np, build_tree, common_spec, default_dtype, describe, examples, tree_spec

SLOW = settings(max_examples=examples(30), deadline=None)
FAST = settings(max_examples=examples(15), deadline=None)
METHODS = st.sampled_from(["cayley", "euler"])
DTYPES = st.sampled_from([torch.float32, torch.float64])


pytestmark = pytest.mark.usefixtures("one_thread")


def metric_dist(a: np.ndarray, b: np.ndarray, m: np.ndarray) -> np.ndarray:
    d = a - b
    return np.sqrt(np.maximum(np.einsum("...i,ij,...j->...", d, m, d), 0))


def scale_parameters(model, factor: float) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(factor)


def two_runs(model, dt: float, method: str, seed: int, steps: int = 40, batch: int = 6):
    """Two trajectories of the engine (the model's public forward, its own dtype) from
    independent initial states under one drive; (x0_a, xs_a, x0_b, xs_b, u) in numpy."""
    dtype = model.weight().dtype
    gen = torch.Generator().manual_seed(seed)
    u = torch.randn(batch, steps, model.n, generator=gen).to(dtype)
    x0a = torch.randn(batch, model.n, generator=gen).to(dtype)
    x0b = torch.randn(batch, model.n, generator=gen).to(dtype)
    with torch.no_grad():
        xa = model(u, x0a, dt=dt, method=method)
        xb = model(u, x0b, dt=dt, method=method)
    return (as_np(x0a), as_np(xa), as_np(x0b), as_np(xb), as_np(u))


def assert_contracts_as_certified(model, cert, seed: int) -> None:
    """Distances in the certificate's metric shrink by ``rho`` per step, over 1 and 40 steps,
    up to the floating-point rounding of the states themselves."""
    m = cert.metric_matrix()
    rho = cert.discrete_factor
    x0a, xa, x0b, xb, u = two_runs(model, cert.dt, cert.method, seed)
    d0 = metric_dist(x0a, x0b, m)
    d = metric_dist(xa, xb, m)  # (batch, steps)
    eps = float(torch.finfo(model.weight().dtype).eps)
    size = max(metric_dist(xa, 0 * xa, m).max(), metric_dist(xb, 0 * xb, m).max(),
               metric_dist(x0a, 0 * x0a, m).max(), cert.alpha * metric_dist(u, 0 * u, m).max())
    slack = 64 * model.n * eps * size
    assert np.all(d[:, 0] <= rho * d0 + slack), (
        f"one step expands: {np.max(d[:, 0] / d0):.6g} > rho={rho:.6g} ({describe(model)})")
    k = d.shape[1]
    assert np.all(d[:, -1] <= rho**k * d0 + k * slack), (
        f"{k} steps: {np.max(d[:, -1] / d0):.6g} > rho^{k}={rho**k:.6g} ({describe(model)})")


# -- the property: CERTIFIED holds for the map the engine runs ----------------------------
@SLOW
@given(spec=tree_spec(max_leaves=4), common=common_spec(), dtype=DTYPES,
       factor=st.sampled_from([1.0, 3.0, 10.0, 100.0]), method=METHODS,
       frac=st.sampled_from([0.05, 0.3, 1.0]), seed=st.integers(0, 2**16))
def test_running_map_respects_its_certificate(spec, common, dtype, factor, method, frac, seed):
    with default_dtype(dtype):
        model = build_tree(spec, common)
    scale_parameters(model, factor)
    cert = cn.certify(model, dt=frac * model.tau, method=method, max_dt=False)
    assert isinstance(cert, cn.Certificate)
    if cert.certified:
        assert_contracts_as_certified(model, cert, seed)
    else:
        assert cert.failures and cert.summary().splitlines()[-1].startswith("NOT CERTIFIED: ")


def vertex_factor(model, cert) -> float:
    """``max ||J(D)||_M`` over all slope vertices of the map that runs, computed here in numpy
    from the snapshot's running tensors (original coordinates, the certificate's metric)."""
    snap = model.explicit(dt=cert.dt, method=cert.method)
    w = as_np(snap.weight_matrix())
    b = as_np(snap.decay)
    s = as_np(snap.scale)
    n = model.n
    best = 0.0
    m = cert.metric_matrix()
    r = np.linalg.cholesky(m).T
    r_inv = np.linalg.inv(r)
    for bits in range(2**n):
        d = np.array([(bits >> i) & 1 for i in range(n)], dtype=float) * model.g
        jac = w * d[None, :]
        if snap.mode == "euler":
            jac = as_np(snap.kmat) + jac
        else:
            jac = np.diag(b) + jac
            if snap.mode == "cayley":
                jac = as_np(snap.kmat) @ jac
        jx = jac * (1 / s)[:, None] * s[None, :]  # the same map in original coordinates
        best = max(best, np.linalg.norm(r @ jx @ r_inv, 2))
    return best


@FAST
@given(spec=tree_spec(max_leaves=2), common=common_spec(), dtype=DTYPES, method=METHODS,
       frac=st.sampled_from([0.1, 0.5, 0.9, 1.0 - 3e-9, 1.0]))
def test_factor_is_never_below_the_true_factor(spec, common, dtype, method, frac):
    with default_dtype(dtype):
        model = build_tree(spec, common)
    if model.n > 10:
        return
    cert = cn.certify(model, dt=frac * model.tau, method=method, max_dt=False)
    if cert.discrete_factor is None:
        return
    true = vertex_factor(model, cert)
    assert cert.discrete_factor >= true * (1 - 1e-12), (cert.discrete_factor, true)
    if cert.discrete_exact:
        assert cert.discrete_factor <= true + 2 * cert.allowance + 1e-12 * true


@FAST
@given(spec=tree_spec(max_leaves=3), common=common_spec(), method=METHODS,
       seed=st.integers(0, 2**16))
def test_max_dt_is_consistent_with_the_verdict(spec, common, method, seed):
    """(4) ``certify(model, dt=cert.max_dt)`` is certified, and above it the verdict flips."""
    model = build_tree(spec, common)
    cert = cn.certify(model, dt=0.5 * model.tau, method=method)
    if cert.max_dt is None:
        assert not cert.certified
        return
    assert 0 < cert.max_dt <= model.tau
    at = cn.certify(model, dt=cert.max_dt, method=method, max_dt=False)
    assert at.certified, at.summary()
    if cert.max_dt < model.tau:
        above = min(model.tau, cert.max_dt * 1.01)
        assert not cn.certify(model, dt=above, method=method, max_dt=False).certified
    if cert.certified:
        assert cert.max_dt >= 0.5 * model.tau


# -- the numbered cases ---------------------------------------------------------------------
def theorem1_radius(w: np.ndarray, g: float = 1.0) -> float:
    a = g * np.abs(w)
    np.fill_diagonal(a, g * np.clip(np.diag(w), 0, None))
    return float(np.abs(np.linalg.eigvals(a)).max())


def sparse_network(seed: int = 0) -> cn.Feedback:
    """Three Theorem-1 modules whose radius lies in (0.55, 0.95): x2 breaks Theorem 1."""
    mods = []
    for i in range(3):
        for tries in range(200):
            m = cn.SparseModule(6, density=0.3, magnitude=1.5, seed=seed * 1000 + i * 200 + tries,
                                normalize=False, best_metric=True)
            if 0.55 < theorem1_radius(as_np(m.weight())) < 0.95:
                mods.append(m)
                break
    assert len(mods) == 3
    return cn.Feedback(mods, seed=seed)


@pytest.mark.parametrize("factor", [2.0, 5.0])
def test_1_loaded_tampered_weight_is_not_certified(factor):
    net = sparse_network()
    assert cn.certify(net, dt=0.1).certified
    sd = net.state_dict()
    sd["systems.1._w"] = sd["systems.1._w"] * factor
    assert theorem1_radius(as_np(sd["systems.1._w"])) > 1  # computed here: Theorem 1 fails
    other = sparse_network()
    other.load_state_dict(sd)
    cert = cn.certify(other, dt=0.1)
    assert not cert.certified and not cert.continuous_certified
    assert "systems.1" in cert.failures[0] and "Theorem 1" in cert.failures[0], cert.failures
    text = cert.summary()
    assert "(certified)" not in text and "(holds)" not in text.splitlines()[2]
    assert text.splitlines()[-1].startswith("NOT CERTIFIED: ")


def test_1_in_place_edit_and_nan_weights_change_the_certificate():
    net = sparse_network()
    with torch.no_grad():
        net.systems[2]._w.mul_(2.0)
    cert = cn.certify(net, dt=0.1)
    assert not cert.certified and "systems.2" in cert.failures[0]
    with torch.no_grad():
        net.systems[2]._w.fill_(float("nan"))
    cert = cn.certify(net, dt=0.1)  # never raises
    assert not cert.certified and "not finite" in cert.failures[0]


def test_2_loaded_mask_that_opens_upper_blocks_is_refused():
    h = cn.Hierarchy([cn.ProductModule(7, seed=0), cn.SVDModule(7, seed=1)], seed=0)
    sd = h.state_dict()
    sd["mask"] = torch.ones_like(sd["mask"])
    sd["b"] = torch.randn(14, 14, generator=torch.Generator().manual_seed(0))
    fresh = cn.Hierarchy([cn.ProductModule(7, seed=0), cn.SVDModule(7, seed=1)], seed=0)
    with pytest.raises(ValueError, match="not a 0/1 subset of the blocks the rule allows"):
        fresh.load_state_dict(sd)


def test_2_in_place_mask_edit_cannot_open_upper_blocks():
    """The allowed pattern is structural: with the buffer edited to all ones and a random B,
    the running coupling is still block-lower and the certificate matches the map: the
    measured one-step ratio of two trajectories stays below the certified factor."""
    torch.set_default_dtype(torch.float64)
    try:
        h = cn.Hierarchy([cn.ProductModule(7, seed=0), cn.SVDModule(7, seed=1)], seed=0)
    finally:
        torch.set_default_dtype(torch.float32)
    with torch.no_grad():
        h.mask.fill_(1.0)
        h.b.copy_(torch.randn(14, 14, generator=torch.Generator().manual_seed(0),
                              dtype=torch.float64))
    lmat = as_np(h.coupling())
    assert np.all(lmat[:7, 7:] == 0) and np.all(lmat[:7, :7] == 0)
    for seed, dt in enumerate((0.001, 0.01, 0.2)):
        cert = cn.certify(h, dt=dt, method="cayley", max_dt=False)
        assert cert.continuous_certified
        if cert.certified:
            assert_contracts_as_certified(h, cert, seed=seed)


def case3_network(activation: str = "relu") -> cn.Feedback:
    """Two SVD modules with a metric of condition number 3.7e15 (issue 10, case 3)."""
    a = cn.SVDModule(4, seed=4, activation=activation)
    b = cn.SVDModule(4, seed=14, activation=activation)
    with torch.no_grad():
        a.log_phi.copy_(torch.tensor([0.15, 5.79, -8.15, 1.58]))
        b.log_phi.copy_(torch.tensor([-6.06, 6.16, -0.22, 9.77]))
    return cn.Feedback([a, b], seed=0)


def test_3_float32_ill_conditioned_feedback_contracts_as_certified():
    net = case3_network()
    assert net.weight().dtype == torch.float32
    cert = cn.certify(net, dt=0.1, method="cayley")
    assert cert.metric_condition_number > 1e15
    assert cert.running_metric_condition_number < 1 + 1e-6
    assert cert.certified
    assert abs(cert.coupling_norm - 1) < 1e-4  # ||C_run||_M: orthogonal to float32 rounding
    assert_contracts_as_certified(net, cert, seed=0)
    gen = torch.Generator().manual_seed(3)
    s = torch.exp(-torch.cat([m.log_phi for m in net.systems]).detach())
    check = cn.two_trajectory_check(net, torch.randn(16, 40, 8, generator=gen),
                                    torch.randn(16, 8, generator=gen) * s,
                                    torch.randn(16, 8, generator=gen) * s, dt=0.1,
                                    method="cayley", rtol=1e-4)
    assert check.holds


def test_3_inputs_of_another_dtype_never_run_an_uncertified_map():
    """Case 3 with tanh in float64 is CERTIFIED, but its float32 map is not (it expands a pair
    of states by ~1.5 in one step). Float32 inputs used to build and run that float32 map
    silently; now ``forward``, ``simulate`` and ``two_trajectory_check`` refuse them with one
    line, and what runs is the map that is certified."""
    net = case3_network("tanh").double()
    cert = cn.certify(net, dt=0.1)
    assert cert.certified and cert.dtype == "float64"
    assert not cn.certify(net, dt=0.1, dtype=torch.float32, max_dt=False).certified
    gen = torch.Generator().manual_seed(0)
    u32, xa32, xb32 = (torch.randn(*shape, generator=gen) for shape in
                       ((4, 3, 8), (4, 8), (4, 8)))
    u64, xa64, xb64 = (t.double() for t in (u32, xa32, xb32))
    calls = {
        "drive": [lambda: net(u32, dt=0.1), lambda: net(u32, xa64, dt=0.1)],
        "x0": [lambda: net(u64, xa32, dt=0.1)],
        "inputs": [lambda: cn.simulate(net, u32, dt=0.1),
                   lambda: cn.two_trajectory_check(net, u32, xa32, xb32, dt=0.1)],
    }
    for name, fns in calls.items():
        for fn in fns:
            with pytest.raises(ValueError) as info:
                fn()
            text = str(info.value)
            assert "\n" not in text
            assert text.startswith(f"{name} has dtype torch.float32 but the model runs (and is "
                                   "certified) in torch.float64: cast the inputs"), text
            assert "model.to(torch.float32)" in text
    with pytest.raises(ValueError, match=r"x0 has dtype torch.float32 but the model runs"):
        cn.simulate(net, u64, xa32, dt=0.1)
    with pytest.raises(ValueError, match=r"drive has dtype torch.float64 but .* torch.float32"):
        case3_network("tanh")(u64, dt=0.1)
    # the float64 inputs run the certified float64 map: every pair contracts by rho
    assert_contracts_as_certified(net, cert, seed=0)
    check = cn.two_trajectory_check(net, u64, xa64, xb64, dt=0.1)
    assert check.holds
    # integer inputs carry no dtype of their own: converted to the model's
    assert net(torch.ones(1, 2, 8, dtype=torch.long), dt=0.1).dtype == torch.float64
    # the engine itself runs a snapshot only with a drive and x0 of the snapshot's dtype
    snap = net.explicit(dt=0.1)
    with pytest.raises(ValueError, match=r"^drive has dtype torch.float32 but the model runs"):
        cn.engine.run(snap, u32)
    with pytest.raises(ValueError, match=r"^x0 has dtype torch.float32 but the model runs"):
        cn.engine.run(snap, u64, xa32)


def test_3_running_coupling_step_is_orthogonal_across_conditioning():
    """``||C_run||_M - 1`` of the float32 Cayley step stays at float32 round-off for metric
    condition numbers 1 ... 1e15 (the table in docs/design.md comes from this measurement)."""
    for spread in (0.0, 2.0, 5.0, 8.6):  # condition numbers 1 ... ~1e15
        mods = [cn.SVDModule(8, seed=i) for i in range(2)]
        gen = torch.Generator().manual_seed(5)
        with torch.no_grad():
            for m in mods:
                m.log_phi.copy_(spread * (2 * torch.rand(8, generator=gen) - 1))
        net = cn.Feedback(mods, seed=1, init_scale=2.0)
        cert = cn.certify(net, dt=0.1, method="cayley", max_dt=False)
        assert cert.coupling_norm - 1 < 1e-4, (spread, cert.metric_condition_number)
        assert cert.certified, cert.summary()


def test_4_issue_example_max_dt_is_covered():
    torch.set_default_dtype(torch.float64)
    try:
        net = cn.Feedback([cn.SVDModule(8, seed=0), cn.SVDModule(8, seed=1)], init_scale=3.0,
                          seed=2)
    finally:
        torch.set_default_dtype(torch.float32)
    cert = cn.certify(net, dt=0.1, method="euler")
    assert cert.max_dt is not None
    assert cn.certify(net, dt=cert.max_dt, method="euler").certified


def test_5_no_cancellation_near_alpha_one():
    torch.set_default_dtype(torch.float64)
    try:
        mod = cn.TrainableSparseModule(1, seed=0)
    finally:
        torch.set_default_dtype(torch.float32)
    assert float(mod.weight().detach().abs().max()) == 0.0  # W = 0: the factor is exactly 1 - alpha
    dt = 1 - 3e-9
    cert = cn.certify(mod, dt=dt)
    true = 1 - dt
    assert cert.discrete_factor >= true * (1 - 1e-6)
    assert cert.discrete_factor <= true * (1 + 1e-6) + cert.allowance


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_6_certify_is_total_on_random_models(dtype):
    """1,000 random small models (parameters scaled up to 1e6, some NaN): ``certify`` always
    returns a Certificate, with reasons whenever it is not certified."""
    rng = np.random.default_rng(0)
    kinds = [lambda n, s: cn.ProductModule(n, seed=s), lambda n, s: cn.SVDModule(n, seed=s),
             lambda n, s: cn.TriangularModule(n, seed=s),
             lambda n, s: cn.TrainableSparseModule(n, density=0.5, seed=s),
             lambda n, s: cn.SparseModule(n, density=0.3, seed=s)]
    count = examples(500)
    with default_dtype(dtype):
        for i in range(count):
            leaves = [kinds[rng.integers(len(kinds))](int(rng.integers(1, 4)), i * 7 + j)
                      for j in range(int(rng.integers(1, 4)))]
            rule = [cn.Feedback, cn.Hierarchy, cn.Unconstrained][rng.integers(3)]
            model = leaves[0] if len(leaves) == 1 else rule(leaves, seed=i)
            scale_parameters(model, float(10 ** rng.uniform(0, 6)))
            if rng.random() < 0.05:
                with torch.no_grad():
                    next(iter(model.parameters())).view(-1)[0] = float("nan")
            cert = cn.certify(model, dt=float(rng.choice([0.01, 0.3, 1.0])) * model.tau,
                              method=str(rng.choice(["cayley", "euler"])), max_dt=False)
            assert isinstance(cert, cn.Certificate)
            assert cert.certified or cert.failures, cert.summary()


def test_7_skew_residual_is_of_the_running_coupling():
    net = case3_network()
    cert = cn.certify(net, dt=0.1, method="cayley")
    snap = net.explicit(dt=0.1, method="cayley")
    k = as_np(snap.coupling)
    assert np.array_equal(k, -k.T)  # exactly skew in float32: running coordinates
    assert cert.coupling_skew_residual == 0.0
    dense = cn.Feedback([cn.ProductModule(4, seed=0), cn.ProductModule(4, seed=1)], seed=0)
    cert = cn.certify(dense, dt=0.1)
    snap = dense.explicit(dt=0.1)
    k = as_np(snap.coupling)
    m = np.array(cert.metric) / np.outer(as_np(snap.scale), as_np(snap.scale))
    r = np.linalg.cholesky(m).T
    kt = r @ k @ np.linalg.inv(r)
    want = np.linalg.norm(kt + kt.T) / np.linalg.norm(kt)
    assert cert.coupling_skew_residual == pytest.approx(want, rel=1e-6, abs=1e-9)
    assert 0 < cert.coupling_skew_residual < 1e-5


def sigma_bound(x: np.ndarray, g: float) -> float:
    """``g min(lambda_max(sym(|X|~)), ||X||)``: Theorem 1's comparison bound, in numpy."""
    a = np.abs(x)
    np.fill_diagonal(a, np.clip(np.diag(x), 0, None))
    return g * min(np.linalg.eigvalsh((a + a.T) / 2)[-1], np.linalg.norm(x, 2))


def test_7_skew_excess_of_the_running_coupling_is_subtracted():
    """tanh networks run in original coordinates, where the float32 eq.-3 coupling of the
    case-3 metric (condition number 3.7e15) is far from skew in the metric: the symmetric
    part of ``R K R^{-1} / dt`` costs more than the modules' rate. Recomputed here in numpy from
    the snapshot's float32 matrices; without the subtraction the certificate said
    "continuous-time rate 0.5005 (holds)"."""
    net = case3_network("tanh")
    assert net.weight().dtype == torch.float32
    dt = 0.1
    cert = cn.certify(net, dt=dt, method="cayley")
    snap = net.explicit(dt=dt, method="cayley")
    assert not snap.normalised and np.all(as_np(snap.scale) == 1)  # original coordinates
    p = np.exp(2 * np.concatenate([as_np(m.log_phi) for m in net.systems]))  # Theorem 5
    np.testing.assert_allclose(cert.metric, p, rtol=1e-12)
    r = np.sqrt(p)
    normalise = r[:, None] / r[None, :]
    kt = as_np(snap.coupling) * normalise  # R K R^{-1} of the float32 K = A L that runs
    residual = np.linalg.norm(kt + kt.T) / np.linalg.norm(kt)
    assert cert.coupling_skew_residual == pytest.approx(residual, rel=1e-6)
    excess = np.linalg.eigvalsh((kt + kt.T) / 2)[-1] / dt
    # each module's rate: mu / tau with mu = 1 - sigma(A^{-1/2} R W_a R^{-1} A^{-1/2}) and
    # tau = dt / alpha of the running (float32) alpha
    alpha = as_np(snap.alpha)
    ra = np.sqrt(alpha)
    xw = as_np(snap.weight_matrix()) * normalise / ra[:, None] / ra[None, :]
    rates = [(1 - sigma_bound(xw[a:b, a:b], net.g)) * alpha[a:b].min() / dt
             for a, b in ((0, 4), (4, 8))]
    assert [m["rate"] for m in cert.modules] == pytest.approx(rates, rel=1e-9)
    assert min(rates) > 0.5 and excess > min(rates)  # the excess costs the whole rate
    assert cert.rate == pytest.approx(min(rates) - excess, rel=1e-6)
    assert cert.rate <= 0 and not cert.continuous_certified and not cert.certified
    lines = cert.summary().splitlines()
    assert f"rate lam = {cert.rate:.4g} <= 0: NOT certified" in lines[2], lines
    assert lines[-1].startswith("NOT CERTIFIED: the continuous-time rate bound")


def test_7_product_module_float32_rate_accounts_for_rounding():
    """The float32 product ``-P1 Q P2`` is not exactly of that form: the certificate's rate is
    below ``1 / tau`` by what rounding costs, and holds for the float32 ``W`` at every vertex
    (checked here in float64 numpy)."""
    mod = cn.ProductModule(6, seed=3, init_scale=2.0)
    cert = cn.certify(mod, dt=0.1)
    assert cert.rate < 1.0
    w = as_np(mod.weight())
    m = as_np(mod.metric())
    r = np.linalg.cholesky(m).T
    r_inv = np.linalg.inv(r)
    for bits in range(2**6):
        d = np.array([(bits >> i) & 1 for i in range(6)], dtype=float)
        jt = r @ (-np.eye(6) + w * d[None, :]) @ r_inv
        assert np.linalg.eigvalsh((jt + jt.T) / 2)[-1] <= -cert.rate + 1e-9


def test_certificate_is_keyword_only_and_round_trips():
    cert = cn.certify(case3_network(), dt=0.1)
    with pytest.raises(TypeError):
        cn.Certificate(["x"], "cayley", 0.1, "float32", 1.0, 0.1, 0.5, True)  # type: ignore
    back = cn.Certificate.from_dict(json.loads(cert.to_json()))
    assert back == cert and back.summary() == cert.summary()


def test_certify_accepts_a_classifier():
    from combonet.models import sparse_combo_net

    model = sparse_combo_net(2, 8, density=0.2, dt=0.2, method="euler")
    cert = cn.certify(model)
    assert (cert.dt, cert.method) == (0.2, "euler")
    with pytest.raises(ValueError, match="certify needs a combonet module"):
        cn.certify(torch.nn.Linear(2, 2))
    assert math.isfinite(cert.discrete_factor)
    assert EXACT_MAX_N == 12


@pytest.mark.parametrize("scale", [1e3, 1e4])
def test_6_triangular_metric_at_large_parameters(scale):
    """``TriangularModule``'s comparison matrix is Hurwitz by construction; at large parameters
    its metric is still found (triangular solve, log scale), a Feedback over it still runs and
    ``certify`` answers (the LU solve used to say "not Hurwitz" and the forward pass raised).
    At 1e4 the eq.-3 coupling itself (metric ratios ~1e48) overflows float32: the float32 model
    gives non-finite states and is NOT CERTIFIED for that reason; in float64 it runs."""
    tri = cn.TriangularModule(16, seed=1)
    with torch.no_grad():
        tri.lower.mul_(scale)
    p = as_np(tri.metric_diagonal())
    assert np.all(np.isfinite(p)) and np.all(p > 0)
    net = cn.Feedback([tri, cn.SVDModule(4, seed=2)], seed=3)
    out = net(torch.randn(2, 5, net.n), dt=0.1)
    cert = cn.certify(net, dt=0.1, max_dt=False)
    assert cert.certified or cert.failures
    if scale == 1e3:
        assert torch.isfinite(out).all()
    else:
        assert not torch.isfinite(out).all()
        assert "not finite" in cert.failures[0]
    net64 = net.double()
    assert torch.isfinite(net64(torch.randn(2, 5, net.n, dtype=torch.float64), dt=0.1)).all()
    assert cn.certify(net64, dt=0.1, max_dt=False).continuous_certified
