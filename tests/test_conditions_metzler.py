"""Tests of ``combonet.conditions.metzler``: the one implementation of the Metzler maths
(Theorems 1 and 4, the Hierarchy weights) and its float64 range (issue 10, item 6).

Every metric is re-checked independently in mpmath (exact products of float64 numbers, 60+
digits): ``-(P A + A^T P + 2 mu' P)`` must have positive LDL^T pivots, and the closed form
itself is recomputed by exact-arithmetic substitution. mpmath ships with torch (via sympy).
"""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from combonet import conditions as C
from combonet.conditions import metzler as MZ

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
EPS = float(np.finfo(np.float64).eps)
seeds = st.integers(0, 2**32 - 1)


# -- independent computations (mpmath) ------------------------------------------------------
def mp_positive_definite(rows: list[list[mpmath.mpf]]) -> bool:
    """All LDL^T pivots > 0 (plain elimination in the current mpmath precision)."""
    a = [list(r) for r in rows]
    n = len(a)
    for k in range(n):
        if not a[k][k] > 0:
            return False
        for i in range(k + 1, n):
            f = a[i][k] / a[k][k]
            if f:
                for j in range(k + 1, n):
                    a[i][j] -= f * a[k][j]
    return True


def mp_certifies(A: np.ndarray, p: np.ndarray, mu: float, dps: int = 60) -> bool:
    """``P A + A^T P <= -2 mu P`` strictly, ``P = diag(p)``, decided in mpmath."""
    n = A.shape[0]
    with mpmath.workdps(dps):
        a = [[mpmath.mpf(float(x)) for x in row] for row in A]
        q = [mpmath.mpf(float(x)) for x in p]
        m = mpmath.mpf(mu)
        rows = [[-(q[i] * a[i][j] + q[j] * a[j][i]) - (2 * m * q[i] if i == j else 0)
                 for j in range(n)] for i in range(n)]
        return mp_positive_definite(rows)


def mp_closed_form_log_kappa(A: np.ndarray) -> tuple[float, list[float]]:
    """``(log(max p / min p), p / min p)`` for ``p = w / v``, ``A v = -1``, ``A^T w = -1``,
    triangular ``A``, by exact-arithmetic substitution (all terms positive)."""
    n = A.shape[0]
    lower = not np.any(np.triu(A, 1))

    def solve(M: np.ndarray, low: bool) -> list[mpmath.mpf]:
        x = [mpmath.mpf(0)] * n
        order = range(n) if low else range(n - 1, -1, -1)
        for i in order:
            js = range(i) if low else range(i + 1, n)
            tot = 1 + mpmath.fsum(mpmath.mpf(float(M[i, j])) * x[j] for j in js)
            x[i] = tot / -mpmath.mpf(float(M[i, i]))
        return x

    with mpmath.workdps(50):
        v = solve(A, lower)
        w = solve(A.T, not lower)
        p = [wi / vi for wi, vi in zip(w, v, strict=True)]
        return float(mpmath.log(max(p) / min(p))), [float(x / min(p)) for x in p]


@st.composite
def triangular_metzler(draw, max_n: int = 32, top: float = 6.0):
    """Triangular Hurwitz Metzler matrices, ``n <= max_n``, off-diagonal entries up to
    ``10^top``, lower or upper, in three regimes: random density with entries over 4 decades
    and diagonal in ``-[1e-3, 1e3]``; dense and weakly damped (diagonal down to ``-1e-6``); and
    chains (one sub-diagonal), whose closed-form metric crosses the float64 limit near
    ``n = 30``. Sizes and ranges come from the drawn seed, uniformly: hypothesis' own draws
    favour small, simple values and would rarely reach the float64 limits."""
    rng = np.random.default_rng(draw(seeds))
    regime = int(rng.integers(3))
    n = int(rng.integers(1 if regime == 0 else 8, max_n + 1))
    if regime == 2:
        A = np.diag(10.0 ** rng.uniform(top - 3.0, top, n - 1), -1)
        np.fill_diagonal(A, -(10.0 ** rng.uniform(-3.0, 0.0, n)))
    else:
        density = float(rng.choice([0.03, 0.1, 0.3, 1.0] if regime == 0 else [0.3, 1.0]))
        hi = float(rng.uniform(-3.0 if regime == 0 else 3.0, top))
        off = 10.0 ** rng.uniform(hi - 4.0, hi, (n, n)) * (rng.random((n, n)) < density)
        A = np.tril(off, -1)
        low = rng.uniform(-3.0, 0.0) if regime == 0 else rng.uniform(-6.0, -1.0)
        np.fill_diagonal(A, -(10.0 ** rng.uniform(low, 3.0 if regime == 0 else low + 3.0, n)))
    return A.T.copy() if rng.random() < 0.5 else A


# -- item 6: a representable metric whenever the closed form is representable ----------------
@FAST
@given(A=triangular_metzler())
def test_triangular_metric_finite_and_verified_or_range_error(A):
    """Entries up to 1e6, sizes up to 32: the closed-form metric comes back finite, positive and
    verified in exact arithmetic whenever its condition number fits in float64, and otherwise a
    MetricRangeError says so (never "not Hurwitz": these matrices are Hurwitz)."""
    log_kappa, p_exact = mp_closed_form_log_kappa(A)
    limit = math.log(MZ.KAPPA_MAX)
    if log_kappa > limit * (1 + 1e-9):
        event("closed form beyond float64")
        with pytest.raises(MZ.MetricRangeError, match="beyond float64"):
            MZ.closed_form_metric(A)
        return
    event("representable, kappa < 1e100" if log_kappa < 230 else "representable, kappa > 1e100")
    p = MZ.closed_form_metric(A)
    assert isinstance(p, np.ndarray) and p.dtype == np.float64
    assert np.all(np.isfinite(p)) and np.all(p > 0) and p.min() == 1.0
    np.testing.assert_allclose(p, p_exact, rtol=1e-9)
    mu = MZ.rate_in_diagonal_metric(A, p)
    s = np.sqrt(p)
    allowance = 64 * A.shape[0] * EPS * float(np.linalg.norm(A * (s[:, None] / s[None, :])))
    assert mu > 0
    assert mp_certifies(A, p, mu * (1 - 1e-7) - allowance)
    # the torch path (modules, Hierarchy) returns the same metric
    pt = MZ.closed_form_metric(torch.from_numpy(A))
    assert pt.dtype == torch.float64
    np.testing.assert_array_equal(pt.numpy(), p)


@pytest.mark.parametrize("scale", [1e4, 1e6])
def test_large_triangular_comparison_matrix_regression(scale):
    """tril(U(0, 1) * scale, -1) - I, n = 8: the LU solve used before reported "comparison
    matrix is not Hurwitz" for both scales (closed-form kappa 3e51 and 3e79)."""
    gen = torch.Generator().manual_seed(0)
    A = torch.tril(torch.rand(8, 8, generator=gen, dtype=torch.float64) * scale, -1) \
        - torch.eye(8, dtype=torch.float64)
    p = MZ.closed_form_metric(A)
    assert bool(torch.isfinite(p).all()) and float(p.min()) == 1.0
    An, pn = A.numpy(), p.numpy()
    assert mp_certifies(An, pn, 0.0)
    np.testing.assert_allclose(pn, mp_closed_form_log_kappa(An)[1], rtol=1e-9)


def test_triangular_module_like_matrix_at_large_parameters():
    """The comparison matrix of a TriangularModule with its lower part scaled by 1000
    (diagonal -(1 - gamma) with gamma = 0.5, n = 16): finite metric, verified."""
    rng = np.random.default_rng(0)
    n = 16
    W = np.tril(rng.normal(size=(n, n)) * 0.5 / n**0.5 * 1000, -1) + np.diag(np.full(n, -0.19))
    A = C.comparison_matrix(W, 1.0)
    p = MZ.closed_form_metric(A)
    assert mp_certifies(A, p, 0.0)


def test_no_representable_metric_is_said_so():
    """A 32-chain with links 1e6 and diagonal -1 (TriangularModule-like): the closed form has
    kappa 1e372 and every diagonal metric needs kappa > (1e12 / 4)^31 = 1e353 (2x2 minors along
    the chain), so no float64 metric exists and the error says exactly that."""
    A = np.diag(np.full(31, 1e6), -1) - np.eye(32)
    assert mp_closed_form_log_kappa(A)[0] / math.log(10) == pytest.approx(372.0, abs=0.01)
    with pytest.raises(MZ.MetricRangeError, match=r"about 1e372.*no diagonal metric is "
                                                  r"representable.*above 1e353"):
        MZ.closed_form_metric(torch.from_numpy(A))


def test_log_path_needed_and_exact():
    """v = -A^{-1} 1 leaves the normal range (v_1 = 1e-308 < 2.2e-308) while the metric is
    well conditioned: the logarithmic substitution returns it."""
    A = np.array([[-1e308, 0.0], [1.0, -1.0]])
    p = MZ.closed_form_metric(A)
    np.testing.assert_allclose(p, mp_closed_form_log_kappa(A)[1], rtol=1e-12)
    assert mp_certifies(A, p, 0.0)


def test_range_error_messages_say_whether_any_metric_exists():
    """A = [[-1, 0], [a, -1]]: closed form kappa (1 + a)^2, every diagonal metric needs
    kappa > a^2 / 4 (the 2x2 minor)."""
    with pytest.raises(MZ.MetricRangeError, match="better-conditioned diagonal metric may"):
        MZ.closed_form_metric(np.array([[-1.0, 0.0], [1e154, -1.0]]))
    # ... and indeed one exists: kappa 3e307 < 2^1022, checked in exact arithmetic
    assert mp_certifies(np.array([[-1.0, 0.0], [1e154, -1.0]]), np.array([3e307, 1.0]), 0.0)
    with pytest.raises(MZ.MetricRangeError, match="no diagonal metric is representable"):
        MZ.closed_form_metric(np.array([[-1.0, 0.0], [1e160, -1.0]]))
    with pytest.raises(MZ.MetricRangeError, match="none is representable"):
        MZ.closed_form_metric(np.array([[-1.0, 0.0], [math.inf, -1.0]]))
    assert issubclass(MZ.MetricRangeError, ValueError)


@settings(max_examples=30, deadline=None)
@given(la=st.floats(-5, 100, allow_subnormal=False), ld1=st.floats(-50, 50, allow_subnormal=False),
       ld2=st.floats(-50, 50, allow_subnormal=False))
def test_kappa_lower_bound_is_tight_for_two_by_two(la, ld1, ld2):
    """The bound behind the error message: for A = [[-d1, 0], [a, -d2]], P = diag(k, 1) works
    iff k > a^2 / (4 d1 d2); checked on both sides in exact arithmetic."""
    a, d1, d2 = 10.0**la, 10.0**ld1, 10.0**ld2
    A = np.array([[-d1, 0.0], [a, -d2]])
    bound = MZ._log_kappa_lower_bound(torch.from_numpy(A))
    k_star = a * a / (4 * d1 * d2)
    assert bound == pytest.approx(max(math.log(k_star), 0.0), abs=1e-9)
    assert mp_certifies(A, np.array([k_star * (1 + 1e-6), 1.0]), 0.0)
    assert not mp_certifies(A, np.array([k_star * (1 - 1e-6), 1.0]), 0.0)


# -- errors ---------------------------------------------------------------------------------
def test_closed_form_metric_errors():
    with pytest.raises(MZ.NotHurwitzError, match=r"A\[1,1\] = 0 >= 0"):
        MZ.closed_form_metric(np.array([[-1.0, 0.0], [5.0, 0.0]]))
    with pytest.raises(MZ.NotHurwitzError, match="not Hurwitz"):
        MZ.closed_form_metric(np.array([[-1.0, 2.0], [2.0, -1.0]]))  # eigenvalue 1
    with pytest.raises(ValueError, match=r"must be Metzler.*A\[0,1\] = -1"):
        MZ.closed_form_metric(np.array([[-1.0, -1.0], [0.0, -1.0]]))
    with pytest.raises(ValueError, match="NaN"):
        MZ.closed_form_metric(torch.tensor([[-1.0, math.nan], [0.0, -1.0]]))
    with pytest.raises(ValueError, match="A must be finite"):
        MZ.closed_form_metric(np.array([[-1.0, np.inf], [1.0, -1.0]]))
    with pytest.raises(ValueError, match=r"square 2-D matrix.*\(2, 3\)"):
        MZ.closed_form_metric(torch.zeros(2, 3))
    assert issubclass(MZ.NotHurwitzError, ValueError)


def test_general_metzler_matrix_matches_definition():
    rng = np.random.default_rng(1)
    A = rng.random((6, 6)) * 0.3
    np.fill_diagonal(A, -2.0)
    p = MZ.closed_form_metric(A)
    v = -np.linalg.solve(A, np.ones(6))
    w = -np.linalg.solve(A.T, np.ones(6))
    np.testing.assert_allclose(p, (w / v) / (w / v).min(), rtol=1e-12)
    assert mp_certifies(A, p, 0.0)


# -- differentiability (the modules and the Hierarchy weights train through it) --------------
def test_closed_form_metric_gradcheck():
    """Finite differences against autograd, perturbing only the entries that keep ``A``
    triangular Metzler (the strict lower part and the diagonal), and a dense Metzler ``A``."""
    gen = torch.Generator().manual_seed(3)
    n = 5
    rows, cols = torch.tril_indices(n, n, -1)

    def metric(lower_entries, diag, upper):
        a = torch.zeros(n, n, dtype=torch.float64)
        a = a.index_put((rows, cols), lower_entries) + torch.diag(diag)
        return MZ.closed_form_metric(a.T if upper else a)

    for upper in (False, True):
        vals = (0.1 + 3 * torch.rand(rows.numel(), generator=gen, dtype=torch.float64))
        diag = -(0.5 + torch.rand(n, generator=gen, dtype=torch.float64))
        assert torch.autograd.gradcheck(lambda x, d, u=upper: metric(x, d, u),
                                        (vals.requires_grad_(True), diag.requires_grad_(True)))
    dense = 0.05 + 0.2 * torch.rand(4, 4, generator=gen, dtype=torch.float64)
    dense = dense - torch.diag(torch.diagonal(dense)) - torch.eye(4, dtype=torch.float64)
    assert torch.autograd.gradcheck(MZ.closed_form_metric, (dense.requires_grad_(True),))


def test_log_substitution_matches_solve_and_gradcheck():
    gen = torch.Generator().manual_seed(4)
    A = torch.tril(torch.rand(6, 6, generator=gen, dtype=torch.float64) * 4, -1) \
        - torch.diag(0.2 + torch.rand(6, generator=gen, dtype=torch.float64))
    minus_one = -torch.ones(6, 1, dtype=torch.float64)
    for t, upper in ((A, False), (A.T, True)):
        x = torch.linalg.solve_triangular(t, minus_one, upper=upper)[:, 0]
        torch.testing.assert_close(MZ._log_substitution(t, upper).exp(), x, rtol=1e-12, atol=0)
        assert torch.autograd.gradcheck(lambda m, u=upper: MZ._log_substitution(m, u),
                                        (t.clone().requires_grad_(True),))


def test_rate_and_comparison_are_differentiable_tensors():
    w = torch.tensor([[0.1, -0.4], [0.3, -0.2]], dtype=torch.float64, requires_grad=True)
    a = MZ.comparison_matrix(w, 2.0)
    assert isinstance(a, torch.Tensor) and a.requires_grad and a.dtype == torch.float64
    torch.testing.assert_close(a.detach(), torch.tensor([[-0.8, 0.8], [0.6, -1.0]],
                                                        dtype=torch.float64))
    rate = MZ.rate_in_diagonal_metric(a, MZ.closed_form_metric(a))
    assert rate.ndim == 0 and rate.requires_grad
    rate.backward()
    assert w.grad is not None and bool(torch.isfinite(w.grad).all())


# -- rate, spectral radius, comparison matrix: against independent numpy ----------------------
@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 8), seed=seeds)
def test_rate_in_diagonal_metric_against_numpy(n, seed):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(n, n))
    p = np.exp(rng.normal(0, 2, n))
    P = np.diag(p)
    L = np.linalg.cholesky(P)
    Li = np.linalg.inv(L)
    K = Li @ (P @ A + A.T @ P) @ Li.T
    expected = -np.linalg.eigvalsh((K + K.T) / 2)[-1] / 2
    assert MZ.rate_in_diagonal_metric(A, p) == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert C.rate_in_metric(A, p) == MZ.rate_in_diagonal_metric(A, p)


def test_rate_in_diagonal_metric_beyond_float64_is_minus_inf():
    A = np.array([[-1.0, 1e300], [0.0, -1.0]])
    assert MZ.rate_in_diagonal_metric(A, np.array([1e300, 1.0])) == -math.inf
    with pytest.raises(ValueError, match="p \\(diagonal metric\\) must be a vector of 2"):
        MZ.rate_in_diagonal_metric(A, np.array([1.0, 0.0]))


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 8), seed=seeds, k=st.integers(-300, 300), g=st.sampled_from([0.5, 2.0]))
def test_theorem1_radius_against_numpy_at_any_scale(n, seed, k, g):
    rng = np.random.default_rng(seed)
    W0 = rng.normal(size=(n, n)) * (rng.random((n, n)) < 0.7)
    A0 = np.abs(W0)
    np.fill_diagonal(A0, np.maximum(np.diag(W0), 0.0))
    expected = float(np.max(np.abs(np.linalg.eigvals(A0)))) * g  # of |W0|, then scaled
    got = MZ.theorem1_radius(W0 * 10.0**k, g)
    # eigenvalues of (nearly) defective |W0| are only accurate to ~eps ||W0||
    slack = 1e-12 * n * max(float(np.max(A0)), 1e-300) * g * 10.0**k
    assert got == pytest.approx(expected * 10.0**k, rel=1e-8, abs=slack)
    assert MZ.theorem1_radius(torch.from_numpy(W0 * 10.0**k), g) == got
    assert MZ.spectral_radius(A0) == pytest.approx(expected / g, rel=1e-10)


def test_spectral_radius_edge_cases():
    assert MZ.spectral_radius(np.zeros((3, 3))) == 0.0
    assert math.isnan(MZ.spectral_radius(np.array([[math.nan]])))
    assert MZ.spectral_radius(torch.tensor([[math.inf, 0.0], [0.0, 1.0]])) == math.inf
    assert MZ.theorem1_radius(np.array([[-math.inf, 0.0], [0.0, 0.5]])) == 0.5  # clipped
    assert MZ.theorem1_radius(np.array([[0.0, 1e-20], [1e-20, 0.0]])) == pytest.approx(1e-20)
    assert MZ.spectral_radius(np.array([[1e308, 1e308], [1e308, 1e308]])) == math.inf


def test_comparison_matrix_numpy_in_numpy_out():
    out = C.comparison_matrix([[-3.0, 2.0], [-1.0, 0.5]], 2.0)
    assert isinstance(out, np.ndarray) and out.dtype == np.float64
    assert np.array_equal(out, [[-1.0, 4.0], [2.0, 0.0]])
    with pytest.raises(ValueError, match="W must be finite"):
        C.comparison_matrix([[np.nan]])


def test_one_implementation_behind_every_name():
    """The modules, the package and conditions.metzler use the same objects."""
    from combonet.combinations import hierarchy
    from combonet.modules import sparse, triangular

    assert sparse.theorem1_radius is MZ.theorem1_radius
    assert triangular.closed_form_metric is MZ.closed_form_metric
    assert triangular.comparison_matrix is MZ.comparison_matrix
    assert hierarchy.closed_form_metric is MZ.closed_form_metric
    assert C.comparison_matrix is MZ.comparison_matrix
    assert C.check_theorem1 is MZ.check_theorem1 and C.check_theorem4 is MZ.check_theorem4
