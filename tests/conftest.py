"""Shared fixtures, hypothesis strategies and independent linear-algebra checks.

The checks here use numpy/scipy on matrices read from the model (``weight()``, ``coupling()``,
``metric()``, ``rate()``) or on autograd Jacobians of ``model.rhs``: they never call the
certificate code, so they test it rather than restate it.
"""

from __future__ import annotations

import contextlib
import itertools
import os

import numpy as np
import pytest
import scipy.linalg as sla
import torch
from hypothesis import strategies as st

EPS = np.finfo(np.float64).eps


def examples(n: int) -> int:
    """``max_examples`` for hypothesis: ``n`` (CI budget) times ``COMBONET_TEST_SCALE``
    (set it, e.g. to 20, for a long bug hunt)."""
    return n * int(os.environ.get("COMBONET_TEST_SCALE", "1"))


@pytest.fixture(scope="module")
def float64():
    """Build everything in float64; restore the previous default dtype afterwards.

    Also runs torch single-threaded: on 2 busy cores torch 2.13's intra-op threads make tiny
    ops such as ``torch.tril`` on a 5x5 matrix take milliseconds (measured: 300x slower)."""
    old, threads = torch.get_default_dtype(), torch.get_num_threads()
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    yield
    torch.set_default_dtype(old)
    torch.set_num_threads(threads)


@pytest.fixture
def one_thread():
    """Correctness only: one intra-op thread keeps tests fast on a busy machine (use with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype):
    """Temporarily build modules in ``dtype`` (e.g. float32, the dtype models train in)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


# -- independent checks --------------------------------------------------------------------
def as_np(t) -> np.ndarray:
    return t.detach().to(torch.float64).cpu().numpy() if isinstance(t, torch.Tensor) else \
        np.asarray(t, dtype=np.float64)


def cholesky_factors(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(R, R^{-1})`` with ``M = R^T R`` (upper-triangular Cholesky factor)."""
    r = sla.cholesky(m, lower=False)
    return r, sla.solve_triangular(r, np.eye(m.shape[0]), lower=False)


def contraction_excess(j: np.ndarray, m: np.ndarray, lam: float):
    """``(lambda_max(sym(R J R^{-1})) + lam, tol)`` for one ``J`` (N, N) or a batch (V, N, N),
    with ``M = R^T R``. Since ``R^{-T} (M J + J^T M) R^{-1} = 2 sym(R J R^{-1})``, the statement
    ``M J + J^T M <= -2 lam M`` holds iff the first value is <= 0. ``tol`` is a float64
    round-off allowance from the componentwise error bound of the product,
    ``|R| |J| |R^{-1}|`` (for a diagonal metric that is just ``|R J R^{-1}|``, so an
    ill-conditioned metric does not make the check vacuous)."""
    r, r_inv = cholesky_factors(m)
    jt = r @ j @ r_inv
    val = np.linalg.eigvalsh((jt + np.swapaxes(jt, -1, -2)) / 2)[..., -1] + lam
    size = np.linalg.norm(np.abs(r) @ np.abs(j) @ np.abs(r_inv), ord=2, axis=(-2, -1))
    tol = 1e3 * EPS * (size + abs(lam) + 1.0)
    return val, tol


def assert_contracts(j, m, lam, what=""):
    val, tol = contraction_excess(as_np(j), as_np(m), float(lam))
    bad = np.atleast_1d(val - tol)
    k = int(np.argmax(bad))
    assert bad[k] <= 0, (
        f"{what}: M J + J^T M + 2 lam M has eigenvalue {2 * np.atleast_1d(val)[k]:.3g} > 0 "
        f"(tol {np.atleast_1d(tol)[k]:.2g}, lam={lam:.4g}, case {k})"
    )


def slope_vertices(n: int, g: float, rng: np.random.Generator, max_all: int = 8,
                   n_random: int = 64) -> np.ndarray:
    """All ``2^n`` vertices of ``[0, g]^n`` for ``n <= max_all``, else random vertices."""
    if n <= max_all:
        return np.array(list(itertools.product((0.0, g), repeat=n)))
    return g * (rng.random((n_random, n)) < 0.5)


def autograd_jacobian(model, x: torch.Tensor) -> np.ndarray:
    return as_np(torch.autograd.functional.jacobian(lambda z: model.rhs(z), x))


def random_states(n: int, rng: np.random.Generator, k: int, scale: float = 2.0) -> list:
    """States away from ReLU kinks (autograd picks one side at exactly 0)."""
    out = []
    for _ in range(k):
        x = rng.normal(0, scale, n)
        x[np.abs(x) < 1e-6] = 1e-3
        out.append(torch.as_tensor(x, dtype=torch.float64))
    return out


def check_model_contracts(model, seed: int, n_states: int = 4):
    """``M J + J^T M <= -2 lam M`` with the autograd Jacobian at ``n_states`` random states and
    with ``J = T^{-1} (-I + W D + L)`` (float64 arithmetic on the model's own ``W``, ``L`` and
    time constants) at the vertices of the slope box."""
    import combonet  # noqa: F401  (import error shows here, not at collection)

    rng = np.random.default_rng(seed)
    lam = float(model.rate())
    m = as_np(model.metric())
    assert np.allclose(m, m.T, rtol=0, atol=1e-12 * np.abs(m).max()), "metric not symmetric"
    assert np.linalg.eigvalsh((m + m.T) / 2)[0] > 0, "metric not positive definite"
    if n_states:
        states = random_states(model.n, rng, n_states)
        jacs = np.stack([autograd_jacobian(model, x) for x in states])
        assert_contracts(jacs, m, lam, "autograd Jacobian at a random state")
    w = as_np(model.weight())
    lmat = model.coupling()
    lmat = np.zeros_like(w) if lmat is None else as_np(lmat)
    n, taus = w.shape[0], as_np(model.time_constants())
    d = slope_vertices(n, model.g, rng)
    jacs = (-np.eye(n)[None] + w[None] * d[:, None, :] + lmat[None]) / taus[None, :, None]
    assert_contracts(jacs, m, lam, "J = (-I + W D + L) / tau at a vertex D of [0, g]^N")
    return lam


# -- hypothesis strategies -----------------------------------------------------------------
LEAF_KINDS = ("sparse", "trainable_sparse", "product", "svd", "triangular")


@st.composite
def leaf_spec(draw, kinds=LEAF_KINDS, n_min=2, n_max=8):
    kind = draw(st.sampled_from(kinds))
    spec = {"kind": kind, "n": draw(st.integers(n_min, n_max)),
            "seed": draw(st.integers(0, 2**16))}
    if kind == "sparse":
        spec["density"] = draw(st.floats(0.05, 1.0))
        spec["magnitude"] = draw(st.floats(0.1, 2.0))
        spec["normalize"] = draw(st.booleans())
    elif kind == "trainable_sparse":
        spec["density"] = draw(st.floats(0.05, 1.0))
        spec["magnitude"] = draw(st.floats(0.1, 5.0))
        spec["gamma"] = draw(st.floats(0.3, 0.99))
    elif kind == "svd":
        spec["gamma"] = draw(st.floats(0.3, 0.999))
    else:  # product, triangular
        spec["init_scale"] = draw(st.floats(0.1, 3.0))
        if kind == "triangular":
            spec["gamma"] = draw(st.floats(0.1, 0.95))
    return spec


@st.composite
def common_spec(draw, trainable_tau: bool = True):
    """What every module of one network shares; ``time`` (when drawn) makes each module's
    time constants trainable in ``[tau, 20 tau]``, per module or per unit (diagonal metrics),
    started at random points of the range."""
    act = draw(st.sampled_from(["relu", "tanh"]))
    g = draw(st.sampled_from([None, 1.5]))
    tau = draw(st.sampled_from([1.0, 0.5, 2.0]))
    out = {"activation": act, "g": g, "tau": tau}
    if trainable_tau:
        time = draw(st.sampled_from([None, None, "module", "unit"]))
        if time is not None:
            out["time"] = (time, draw(st.integers(0, 2**16)))
    return out


def time_constants(n: int, common: dict, diagonal: bool, seed: int):
    """A TimeConstants for one module (per unit only where the metric is diagonal)."""
    import combonet as cn

    per, base = common["time"]
    lo = common["tau"]
    per = per if diagonal else "module"
    tc = cn.TimeConstants(n, init=3 * lo, lo=lo, hi=20 * lo, per=per)
    gen = torch.Generator().manual_seed(base + seed)
    with torch.no_grad():
        tc.theta.copy_(3 * torch.randn(tc.theta.shape, generator=gen))
    return tc


def build_leaf(spec: dict, common: dict):
    import combonet as cn

    kw = {k: v for k, v in common.items() if k != "time"}
    s = {k: v for k, v in spec.items() if k not in ("kind", "n")}
    n = spec["n"]
    kind = spec["kind"]
    if "time" in common:
        kw["tau"] = time_constants(n, common, kind != "product", spec["seed"])
    if kind == "sparse":
        try:
            return cn.SparseModule(n, max_tries=200, **s, **kw)
        except ValueError as err:  # an unlucky (density, magnitude): use a safe magnitude
            assert "density" in str(err) and "magnitude" in str(err), str(err)
            s["magnitude"] = 0.9 / ((kw["g"] or 1.0) * n)  # row sums of g|W| < 1
            return cn.SparseModule(n, **s, **kw)
    cls = {"trainable_sparse": cn.TrainableSparseModule, "product": cn.ProductModule,
           "svd": cn.SVDModule, "triangular": cn.TriangularModule}[kind]
    return cls(n, **s, **kw)


def tree_spec(kinds=LEAF_KINDS, max_leaves=4, rules=("feedback", "hierarchy")):
    """A leaf spec or ``(rule, [children], init_scale, seed, use_mask)``, nested."""
    def extend(children):
        return st.tuples(st.sampled_from(rules), st.lists(children, min_size=2, max_size=3),
                         st.floats(0.1, 3.0), st.integers(0, 2**16), st.booleans())
    return st.recursive(leaf_spec(kinds), extend, max_leaves=max_leaves)


def build_tree(spec, common: dict):
    import combonet as cn

    if isinstance(spec, dict):
        return build_leaf(spec, common)
    rule, children, init_scale, seed, use_mask = spec
    systems = [build_tree(c, common) for c in children]
    mask = None
    if use_mask:
        p = len(systems)
        mask = np.random.default_rng(seed).random((p, p)) < 0.6
    cls = {"feedback": cn.Feedback, "hierarchy": cn.Hierarchy}[rule]
    return cls(systems, init_scale=init_scale, seed=seed, mask=mask)


def train_randomly(model, seed: int, steps: int = 5, lr: float = 0.5) -> bool:
    """A few Adam steps with a large learning rate on a random loss (through the engine and
    through ``rhs``); returns whether any parameter moved."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        return False
    before = [p.detach().clone() for p in params]
    gen = torch.Generator().manual_seed(seed)
    drive = torch.randn(3, 6, model.n, generator=gen)
    target = torch.randn(3, 6, model.n, generator=gen)
    xs = 2 * torch.randn(5, model.n, generator=gen)
    probe = torch.randn(5, model.n, generator=gen)
    opt = torch.optim.Adam(params, lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss = (model(drive, dt=0.1) * target).sum() + (model.rhs(xs) * probe).sum()
        loss.backward()
        opt.step()
    return any(not torch.equal(b, p.detach()) for b, p in zip(before, params, strict=True))


def describe(model) -> str:
    return f"{type(model).__name__}(N={model.n}) conditions={model.conditions()}"
