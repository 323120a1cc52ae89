"""Two-trajectory decay (DESIGN.md §2) and argument checks of ``simulate``.

The distances are recomputed here from the simulated trajectories and compared with the
envelope the certificate promises: ``exp(-lam t)`` for ``rk4`` (continuous time) and
``rho^k`` for the discrete maps the model runs.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg as sla
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import combonet as cn
from conftest import EPS, as_np, build_tree, common_spec, describe, examples, tree_spec

pytestmark = pytest.mark.usefixtures("float64")

SLOW = settings(max_examples=examples(10), deadline=None)


def metric_distances(xa: np.ndarray, xb: np.ndarray, m: np.ndarray) -> np.ndarray:
    d = xa - xb
    return np.sqrt(np.einsum("...i,ij,...j->...", d, m, d))


def jacobian_scale(model) -> float:
    """An upper bound on ``||J||`` in the metric norm: ``sqrt(cond M) (1 + g||W|| + ||L||)/tau``."""
    m = as_np(model.metric())
    w = as_np(model.weight())
    lmat = model.coupling()
    l_norm = 0.0 if lmat is None else np.linalg.norm(as_np(lmat), 2)
    k = 1 + model.g * np.linalg.norm(w, 2) + l_norm
    return math.sqrt(np.linalg.cond(m)) * k / model.tau


def _inputs(model, seed, batch=3, steps=60):
    gen = torch.Generator().manual_seed(seed)
    drive = torch.randn(batch, steps, model.n, generator=gen)
    xa = 3 * torch.randn(batch, model.n, generator=gen)
    xb = 3 * torch.randn(batch, model.n, generator=gen)
    return drive, xa, xb


# -- 5. continuous time: rk4 with a small step ----------------------------------------------
@SLOW
@given(spec=tree_spec(max_leaves=3), common=common_spec(), seed=st.integers(0, 2**16))
def test_two_trajectories_rk4(spec, common, seed):
    model = build_tree(spec, common)
    lam = float(model.rate())
    assert lam > 0
    # RK4's local error ~ (h ||J||)^5 / 120 must stay far below the check's rtol (1e-6)
    dt = min(0.02 / jacobian_scale(model), 0.05 * model.tau)
    drive, xa, xb = _inputs(model, seed, batch=2, steps=50)
    check = cn.two_trajectory_check(model, drive, xa, xb, dt=dt, method="rk4")
    # recompute independently from the trajectories (both in one batch)
    traj = as_np(cn.simulate(model, torch.cat([drive, drive]), torch.cat([xa, xb]), dt=dt,
                             method="rk4"))
    ta, tb = np.split(traj, 2)
    dist = metric_distances(ta, tb, as_np(model.metric()))
    np.testing.assert_allclose(check.distances, dist, rtol=1e-10)
    t = dt * np.arange(dist.shape[1])
    envelope = dist[:, :1] * np.exp(-lam * t)[None, :]
    worst = float((dist / envelope).max())
    assert worst <= 1 + 1e-6, f"{describe(model)}: distance exceeds exp(-lam t) by {worst}"
    assert check.holds
    # the same statement as a rate over the horizon T: log(d_T / d_0) / (-T) >= lam
    assert check.measured_rate >= lam - math.log1p(1e-6) / t[-1]


# -- 5. the discrete maps the model actually runs --------------------------------------------
@SLOW
@given(spec=tree_spec(max_leaves=3), common=common_spec(), seed=st.integers(0, 2**16),
       method=st.sampled_from(["euler", "cayley"]),
       frac=st.sampled_from([0.02, 0.1, 0.3, 1.0]))
def test_two_trajectories_discrete(spec, common, seed, method, frac):
    model = build_tree(spec, common)
    dt = frac * model.tau
    cert = cn.certify(model, dt=dt, method=method)
    if not cert.discrete_certified:
        assert cert.max_dt is None or cert.max_dt < dt
        if cert.max_dt is None:
            return
        dt = cert.max_dt / 2
        cert = cn.certify(model, dt=dt, method=method)
        assert cert.discrete_certified
    rho = cert.discrete_factor
    assert rho < 1
    drive, xa, xb = _inputs(model, seed, batch=2, steps=30)
    check = cn.two_trajectory_check(model, drive, xa, xb, dt=dt, method=method)
    assert check.holds
    traj = as_np(cn.simulate(model, torch.cat([drive, drive]), torch.cat([xa, xb]), dt=dt,
                             method=method))
    ta, tb = np.split(traj, 2)
    dist = metric_distances(ta, tb, as_np(model.metric()))
    # per step, not just overall: d[k+1] <= rho d[k], up to the round-off of the states
    # themselves (at alpha = 1 trajectories can merge to round-off level)
    m = as_np(model.metric())
    floor = 1e3 * EPS * max(np.abs(ta).max(), np.abs(tb).max()) * np.sqrt(np.abs(m).max())
    excess = dist[:, 1:] - rho * (1 + 1e-9) * dist[:, :-1]
    assert excess.max() <= floor, f"{describe(model)}: d[k+1] - rho d[k] = {excess.max()}"


@pytest.mark.parametrize("method", ["euler", "cayley"])
def test_feedback_simulation_matches_reference_maps(method):
    """The engine's maps written out in numpy (DESIGN.md §1-2), over a few steps."""
    a = cn.ProductModule(3, seed=0, activation="tanh")
    b = cn.SVDModule(2, seed=1, activation="tanh")
    model = cn.Feedback([a, b], init_scale=2.0, seed=2)
    drive, x0, _ = _inputs(model, 0, batch=1, steps=5)
    traj = as_np(cn.simulate(model, drive, x0, dt=0.2, method=method))[0]
    w, lmat, alpha = as_np(model.weight()), as_np(model.coupling()), 0.2
    x = as_np(x0)[0]
    eye = np.eye(model.n)
    cay = sla.solve(eye - alpha / 2 * lmat, eye + alpha / 2 * lmat)
    for k in range(5):
        z = (1 - alpha) * x + alpha * (w @ np.tanh(x) + as_np(drive)[0, k])
        x = z + alpha * lmat @ x if method == "euler" else cay @ z
        np.testing.assert_allclose(traj[k + 1], x, rtol=1e-12, atol=1e-12)


# -- 9. bad input ----------------------------------------------------------------------------
METHODS = ["euler", "cayley", "rk4"]


@pytest.fixture(scope="module")
def small_model(float64):
    return cn.Feedback([cn.ProductModule(3, seed=0), cn.ProductModule(2, seed=1)], seed=2)


@pytest.mark.parametrize("method", METHODS)
def test_simulate_x0_shape_mismatch(small_model, method):
    drive = torch.zeros(2, 4, 5)
    for x0 in (torch.zeros(2, 4), torch.zeros(3, 5), torch.zeros(5), torch.zeros(2, 6)):
        with pytest.raises(ValueError, match=r"x0 must have shape \(2, 5\)"):
            cn.simulate(small_model, drive, x0, dt=0.1, method=method)


@pytest.mark.parametrize("method", METHODS)
def test_simulate_drive_shape_mismatch(small_model, method):
    for drive in (torch.zeros(2, 4, 4), torch.zeros(4, 5), torch.zeros(2, 4, 6)):
        with pytest.raises(ValueError, match=r"\(batch, steps, 5\)"):
            cn.simulate(small_model, drive, dt=0.1, method=method)


@pytest.mark.parametrize("method", METHODS)
def test_simulate_dt_outside_unit_interval(small_model, method):
    drive = torch.zeros(1, 3, 5)
    for dt in (0.0, -0.1, 1.5, float("inf")):
        with pytest.raises(ValueError, match=r"dt / tau must lie in \(0, 1\]"):
            cn.simulate(small_model, drive, dt=dt, method=method)


def test_simulate_unknown_method(small_model):
    drive = torch.zeros(1, 3, 5)
    with pytest.raises(ValueError, match=r'Invalid method "rk45".*rk4'):
        cn.simulate(small_model, drive, method="rk45")
    with pytest.raises(ValueError, match=r'Invalid method "rk45"'):
        cn.two_trajectory_check(small_model, drive, torch.zeros(1, 5), torch.ones(1, 5),
                                method="rk45")
    with pytest.raises(ValueError, match=r'Invalid method "midpoint".*euler'):
        small_model(drive, method="midpoint")


def test_two_trajectory_check_needs_a_constant_metric():
    model = cn.SymmetricModule(3, seed=0)
    drive = torch.zeros(1, 3, 3)
    with pytest.raises(ValueError, match="no constant metric"):
        cn.two_trajectory_check(model, drive, torch.zeros(1, 3), torch.ones(1, 3))


def test_simulate_runs_the_model_dtype_and_rk4_the_inputs_dtype():
    """The discrete maps run in the model's dtype, the one ``certify`` certifies: inputs or
    ``x0`` of another floating dtype are refused (they used to build and run the map of their
    own dtype, which no certificate covered). ``rk4`` is the continuous-time reference, covered
    by no map certificate: it integrates in the inputs' dtype (float64 for a float32 model)."""
    model = cn.Feedback([cn.SVDModule(3, seed=0), cn.ProductModule(2, seed=1)], seed=2).float()
    drive, x0, _ = _inputs(model, 0, batch=2, steps=4)  # float64
    for method in ("euler", "cayley"):
        with pytest.raises(ValueError, match=r"^inputs has dtype torch.float64 but the model "
                           r"runs \(and is certified\) in torch.float32"):
            cn.simulate(model, drive, dt=0.1, method=method)
        with pytest.raises(ValueError, match=r"^x0 has dtype torch.float64"):
            cn.simulate(model, drive.float(), x0, dt=0.1, method=method)
        with pytest.raises(ValueError, match=r"^inputs has dtype torch.float64"):
            cn.two_trajectory_check(model, drive, x0, 2 * x0, dt=0.1, method=method)
        out = cn.simulate(model, drive.float(), x0.float(), dt=0.1, method=method)
        assert out.dtype == torch.float32
        ints = cn.simulate(model, torch.ones(2, 4, 5, dtype=torch.long), dt=0.1, method=method)
        same = cn.simulate(model, torch.ones(2, 4, 5, dtype=torch.float32), dt=0.1,
                           method=method)
        assert ints.dtype == torch.float32 and torch.equal(ints, same)
    ref = cn.simulate(model, drive, x0, dt=0.01, method="rk4")
    assert ref.dtype == torch.float64
    ref64 = cn.simulate(model.double(), drive, x0, dt=0.01, method="rk4")
    np.testing.assert_allclose(as_np(ref), as_np(ref64), rtol=1e-5, atol=1e-5)
