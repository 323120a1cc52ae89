"""Contraction bounds of a snapshot, in float64, from the tensors that run (DESIGN.md §2).

Everything here reads a :class:`~combonet.snapshot.Explicit` -- the running weights ``W_a``,
decay ``b``, coupling ``K`` and map matrix ``C`` / ``A_e`` in their run dtype -- converts them
exactly to float64 and bounds them in the snapshot's *candidate* metrics, which are verified,
never trusted. All matrices are first put in metric-normalised coordinates
(``X~ = R X R^{-1}``, ``R = metric^{1/2}``); for diagonal metrics in running coordinates
``R = I`` up to rounding.

Slope bound. For any real ``X`` and ``D = diag(d)``, ``0 <= d <= g``:
``lambda_max(sym(X D)) <= sigma(X) = g min(lambda_max(sym(|X|~)), ||X||_2)`` where ``|X|~`` has
entries ``|X_ij|`` off the diagonal and ``max(X_ii, 0)`` on it (Theorem 1's comparison argument,
Perron-Frobenius) -- and ``||X D|| <= g ||X||``.

One module, ``A = diag(alpha)``, ``b = 1 - alpha``, step map Jacobian ``J = diag(b) + W_a D``:

* continuous time, ``J_c = (-A + W_a D) / dt``: with ``X_w = A^{-1/2} W_a A^{-1/2}`` and
  ``mu = 1 - sigma(X_w)``, ``sym(J_c) <= -mu A / dt``, so the rate is ``mu / tau_max``;
* discrete time: ``J^T J = B^2 + 2 sym(B W_a D) + (W_a D)^T (W_a D)
  <= B^2 + A^{1/2} (2 sigma_d + kappa^2) A^{1/2}`` with ``sigma_d = sigma(B X_w)`` and
  ``kappa = g ||W_a A^{-1/2}||``, so ``rho^2 <= max_j (b_j^2 + alpha_j (2 sigma_d + kappa^2))``.
  For one time constant this is ``b^2 + 2 alpha b sigma(W) + alpha^2 k^2`` -- written without
  the cancellation of ``1 - 2 alpha mu + ...`` near ``alpha = 1``. Since
  ``J = B + A^{1/2} X_w D A^{1/2}``, also ``rho <= max_j (b_j + alpha_j g ||X_w||)`` (diagonal
  metrics; :meth:`LeafBound.rho`), the tighter bound when the units' time constants differ.

Theorem-3 modules (dense metric ``M``): ``M W D`` is diagonal and <= 0 for the exact product
``W_ref = -P1 Q P2``, so ``sigma <= g ||R (W - W_ref)|| ||R^{-1}||`` for the running ``W``, and
``||W_ref D||_M = ||Q^{1/2} P1 P2 D Q^{1/2}|| <= g lambda_max(Q) max(p1 p2)``.

Every entry of ``K`` is accounted for by exactly one system, the smallest that contains both of
its units: a module adds ``lambda_max(sym(A^{-1/2} K~ A^{-1/2}))`` of its own block to
``sigma`` (zero for the paper's couplings; a low-rank eq.-3 coupling has skew parts inside
modules), a combination bounds its own blocks, those between its children.
Combinations: feedback / unconstrained ``lam = min_i lam_i - max(0, lambda_max(sym(R K~ R^{-1}) /
dt))``; hierarchy: comparison matrix ``T_ii = -lam_i``, ``T_ij = ||R_i K_ij R_j^{-1}|| / dt``
(``i > j``) in the candidate weights ``c``: ``lam = -lambda_max(sym(C^{1/2} T C^{-1/2}))``.
Maps: cayley ``rho <= ||C~|| max_i rho_i``; euler the module bound with ``X = K + W_a D``:
``sigma_d <= max_i sigma_d,i + lambda_max(sym(A^{-1/2} B K~ A^{-1/2}))``,
``kappa <= max_i kappa_i + ||K~ A^{-1/2}||``. A hierarchy whose map is block lower triangular
(the Cayley ``C`` of a block-lower ``K`` is) also gets the discrete comparison rule: its
children's factors on the diagonal and the gains of its blocks below, in its weights ``c``
(:func:`_factor`); the smaller bound is kept. For ``N <= EXACT_MAX_N`` the factor is also
computed exactly at all ``2^N`` vertices of the slope box (the map's Jacobian is affine in
``D``, so its norm is largest at a vertex).

Rounding: the float64 evaluation of the factor ``rho_0`` is allowed
``ALLOWANCE_ULPS * N * eps * kappa * max(1, rho_0)`` (``kappa`` the condition number of a dense
top-level metric, 1 for a diagonal one), added to the factor (see :func:`allowance`); the
continuous-time rate carries no allowance.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections import OrderedDict
from dataclasses import dataclass, field

import torch

from .snapshot import Explicit, Node

EPS = float(torch.finfo(torch.float64).eps)
EXACT_MAX_N = 12
ALLOWANCE_ULPS = 256

__all__ = ["ALLOWANCE_ULPS", "EXACT_MAX_N", "ContinuousResult", "DiscreteResult", "allowance",
           "continuous_rate", "discrete_factor", "sigma"]


def f64(t: torch.Tensor) -> torch.Tensor:
    """An exact float64 CPU copy of a running tensor (float32 -> float64 is exact)."""
    return t.detach().to(device="cpu", dtype=torch.float64)


def norm2(x: torch.Tensor) -> float:
    """Largest singular value (0 for an empty matrix)."""
    if x.numel() == 0:
        return 0.0
    return float(torch.linalg.matrix_norm(x, ord=2))


def sym_max(x: torch.Tensor) -> float:
    """``lambda_max((X + X^T) / 2)``."""
    return float(torch.linalg.eigvalsh((x + x.T) / 2)[-1])


def sym_max_upper(x: torch.Tensor, slack: float) -> float:
    """An upper bound on ``lambda_max(sym(X))``: ``||sym(X)||_F`` when that is below ``slack``
    (e.g. an exactly skew ``X`` gives 0 without an eigen-decomposition), else the value."""
    s = (x + x.T) / 2
    frob = float(torch.linalg.matrix_norm(s))
    return frob if frob <= slack else float(torch.linalg.eigvalsh(s)[-1])


def norm2_near_orthogonal(c: torch.Tensor) -> float:
    """An upper bound on ``||C||_2``: ``sqrt(1 + ||C^T C - I||_F)`` (one matrix product, for the
    nearly orthogonal Cayley step of a skew coupling), or the exact value when that is not
    tight (deviation above 1e-4)."""
    eye = torch.eye(c.shape[0], dtype=c.dtype)
    dev = float(torch.linalg.matrix_norm(c.T @ c - eye))
    return math.sqrt(1.0 + dev) if dev <= 1e-4 else norm2(c)


def sigma(x: torch.Tensor, g: float) -> float:
    """Bound on ``max_D lambda_max(sym(X D))`` over slopes ``0 <= D <= g`` (module docstring)."""
    a = x.abs()
    a.diagonal().copy_(torch.clamp(torch.diagonal(x), min=0.0))
    return g * min(sym_max(a), norm2(x))


class Normaliser:
    """``R = M^{1/2}`` of a candidate metric (diagonal vector or dense block-diagonal
    matrix), with ``apply(X) = R X R^{-1}`` and the metric's condition number."""

    def __init__(self, metric: torch.Tensor) -> None:
        m = f64(metric)
        if not bool(torch.isfinite(m).all()):
            raise ValueError("the candidate metric has non-finite entries")
        self.diagonal = m.dim() == 1
        if self.diagonal:
            if not bool((m > 0).all()):
                raise ValueError("the candidate metric is not positive definite")
            self.r = m.sqrt()
            self.cond = float(m.max() / m.min())
        else:
            evals, evecs = torch.linalg.eigh((m + m.T) / 2)
            if not bool(evals[0] > 0):
                raise ValueError("the candidate metric is not positive definite")
            s = evals.sqrt()
            self.r = (evecs * s) @ evecs.T
            self.r_inv = (evecs / s) @ evecs.T
            self.cond = float(evals[-1] / evals[0])

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        if self.diagonal:
            return x * (self.r[:, None] / self.r[None, :])
        return self.r @ x @ self.r_inv

    def block(self, a: int, b: int) -> Normaliser:
        """The normaliser of the principal block ``[a:b]`` (exact for block-diagonal ``M``)."""
        out = Normaliser.__new__(Normaliser)
        out.diagonal = self.diagonal
        if self.diagonal:
            out.r = self.r[a:b]
            out.cond = float((out.r.max() / out.r.min()) ** 2)
        else:
            out.r, out.r_inv = self.r[a:b, a:b], self.r_inv[a:b, a:b]
            out.cond = self.cond
        return out

    def norms(self) -> tuple[float, float]:
        """``(||R||, ||R^{-1}||)``."""
        if self.diagonal:
            return float(self.r.max()), float(1 / self.r.min())
        return norm2(self.r), norm2(self.r_inv)


def block_norm(block: torch.Tensor, rows: Normaliser, cols: Normaliser) -> float:
    """``||R_i X R_j^{-1}||_2``: the norm of an off-diagonal block ``X`` from the metric of
    child ``j`` to that of child ``i``."""
    if rows.diagonal and cols.diagonal:
        return norm2(block * (rows.r[:, None] / cols.r[None, :]))
    ri = rows.r if not rows.diagonal else torch.diag(rows.r)
    rj_inv = cols.r_inv if not cols.diagonal else torch.diag(1 / cols.r)
    return norm2(ri @ block @ rj_inv)


@dataclass
class LeafBound:
    """One module in one metric: continuous ``mu``, discrete ``sigma_d`` and ``kappa``, and
    ``gain >= g ||X_w||`` (diagonal metrics; ``inf`` where not computed)."""

    mu: float
    sigma_d: float
    kappa: float
    gain: float = math.inf

    def rho(self, a: torch.Tensor, b: torch.Tensor) -> float:
        """``min(sqrt(max_j (b_j^2 + alpha_j (2 sigma_d + kappa^2))), max_j (b_j + alpha_j
        gain))``. The second bound holds because ``J = B + A^{1/2} X_w D A^{1/2}`` and, for
        unit ``u, v`` and ``b >= 0``, ``u^T J v <= sqrt(sum b u^2) sqrt(sum b v^2) + gain
        sqrt(sum alpha u^2) sqrt(sum alpha v^2) <= max_j (b_j + alpha_j gain)`` (Cauchy-Schwarz
        twice); it is the tighter one when the units' time constants differ."""
        sq = b**2 + a * (2 * self.sigma_d + self.kappa**2)
        mixed = math.sqrt(max(0.0, float(sq.max())))
        if math.isfinite(self.gain) and bool((b >= 0).all()):
            mixed = min(mixed, float((b + a * self.gain).max()))
        return mixed


#: leaf bounds are a pure function of exact float64 tensors: memoised by their content (a
#: Sparse Combo Net's fixed modules are then bounded once, however often it is certified)
_LEAF_MEMO: OrderedDict[bytes, LeafBound] = OrderedDict()
_LEAF_MEMO_SIZE = 4096


def _digest(node: Node, norm: Normaliser, *tensors: torch.Tensor) -> bytes:
    h = hashlib.blake2b(digest_size=32)
    h.update(f"{node.family}|{node.g!r}|{node.gain!r}|{norm.diagonal}".encode())
    for t in (*tensors, norm.r, *([] if norm.diagonal else [norm.r_inv])):
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().to(torch.float64).contiguous().numpy().tobytes())
    if node.reference is not None:
        h.update(f64(node.reference).contiguous().numpy().tobytes())
    return h.digest()


def leaf_bound(node: Node, wa: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
               norm: Normaliser) -> LeafBound:
    """Bounds of one module from its running ``W_a`` (float64) in the metric ``norm``
    (memoised on the exact content of everything it reads)."""
    key = _digest(node, norm, wa, a, b)
    hit = _LEAF_MEMO.get(key)
    if hit is not None:
        _LEAF_MEMO.move_to_end(key)
        return hit
    out = _leaf_bound(node, wa, a, b, norm)
    _LEAF_MEMO[key] = out
    if len(_LEAF_MEMO) > _LEAF_MEMO_SIZE:
        _LEAF_MEMO.popitem(last=False)
    return out


def _leaf_bound(node: Node, wa: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
                norm: Normaliser) -> LeafBound:
    g = node.g
    if node.family == "theorem3" and not norm.diagonal:
        a0, b0 = float(a[0]), float(b[0])
        if not bool((a == a0).all()):
            raise ValueError(f"{node.label}: a dense metric needs one time constant")
        w = wa / a0
        ri_norm = norm.norms()[1]
        general = g * norm2(norm.r @ w) * ri_norm
        sig = kap = general
        if node.reference is not None:
            pert = g * norm2(norm.r @ (w - f64(node.reference))) * ri_norm
            sig = min(sig, pert)
            if node.gain is not None:
                kap = min(kap, g * node.gain + pert)
        return LeafBound(1.0 - sig, b0 * sig, math.sqrt(a0) * kap)
    if not norm.diagonal:
        # any W in a dense metric: sym(R W D R^{-1}) <= ||R W|| ||D R^{-1}||
        a0, b0 = float(a[0]), float(b[0])
        w = wa / a0
        general = g * norm2(norm.r @ w) * norm.norms()[1]
        return LeafBound(1.0 - general, b0 * general, math.sqrt(a0) * general)
    wn = norm.apply(wa)
    ra = a.sqrt()
    xw = wn / ra[:, None] / ra[None, :]
    sig = sigma(xw, g)
    b0 = float(b[0])
    # sigma(b X) = b sigma(X) for one b >= 0 (both bounds are positively homogeneous)
    sig_d = b0 * sig if bool((b == b0).all()) and b0 >= 0 else sigma(b[:, None] * xw, g)
    return LeafBound(1.0 - sig, sig_d, g * norm2(wn / ra[None, :]), g * norm2(xw))


@dataclass
class NodeResult:
    """The continuous-time verdict of one system of the tree."""

    label: str
    kind: str
    rule: str
    rate: float
    failures: list[str] = field(default_factory=list)
    children: list[NodeResult] = field(default_factory=list)

    def flat(self) -> list[NodeResult]:
        return [self, *[x for c in self.children for x in c.flat()]]


@dataclass
class ContinuousResult:
    """Rate of the continuous-time system whose matrices are the snapshot's, and why not."""

    rate: float
    root: NodeResult
    failures: list[str]


def _running(snap: Explicit) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                       torch.Tensor | None]:
    """``(alpha, b, W_a, K)`` in float64; a low-rank ``K = X Y^T`` is formed from its running
    factors in float64."""
    k = None
    if snap.factors is not None:
        x, y = snap.factors
        k = f64(x) @ f64(y).T
    elif snap.coupling is not None:
        k = f64(snap.coupling)
    return f64(snap.alpha), f64(snap.decay), f64(snap.weight_matrix()), k


def _own(k: torch.Tensor, node: Node) -> torch.Tensor:
    """A combination's own coupling: its block of ``K`` without its children's blocks."""
    own = k[node.start:node.stop, node.start:node.stop].clone()
    for c in node.children:
        own[c.start - node.start:c.stop - node.start, c.start - node.start:c.stop - node.start] = 0
    return own


def _node_rate(node: Node, snap: Explicit, w: torch.Tensor, k: torch.Tensor | None,
               alpha: torch.Tensor, decay: torch.Tensor) -> NodeResult:
    sl = slice(node.start, node.stop)
    taus = snap.dt / alpha[sl]
    if node.kind == "leaf":
        return _leaf_rate(node, w[sl, sl], alpha[sl], decay[sl], taus,
                          None if k is None else k[sl, sl])
    kids = [_node_rate(c, snap, w, k, alpha, decay) for c in node.children]
    res = NodeResult(node.label, node.kind, node.rule, min(c.rate for c in kids), children=kids)
    own = _own(k, node) if k is not None else None
    if node.metric is None:
        res.failures.append(f"{node.label}: no constant metric")
        return res
    try:
        norm = Normaliser(node.metric)
    except ValueError as err:
        res.failures.append(f"{node.label}: {err}")
        res.rate = -math.inf
        return res
    if own is None or not bool(own.any()):
        return res
    if node.kind == "hierarchy":
        return _hierarchy_rate(node, res, own / snap.dt)
    # an eq.-3 coupling is skew: a Frobenius bound below 1e-9 of the rate avoids the N x N
    # eigen-decomposition (the exact value is computed whenever the bound is not that small)
    excess = sym_max_upper(norm.apply(own / snap.dt), 1e-9 * max(abs(res.rate), 1e-300))
    res.rate -= max(excess, 0.0)
    return res


def _leaf_rate(node: Node, w: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
               taus: torch.Tensor, k: torch.Tensor | None = None) -> NodeResult:
    res = NodeResult(node.label, node.kind, node.rule, -math.inf)
    if not bool(torch.isfinite(w).all()):
        res.failures.append(f"{node.label}: its weights are not finite")
        return res
    if node.family == "none":  # Theorem 2: state-dependent metric, W symmetric, g W < I
        asym = float((w - w.T).abs().max())
        if asym > 64 * EPS * max(float(w.abs().max()), 1e-300):
            res.failures.append(f"{node.label}: Theorem 2 needs a symmetric W "
                                f"(max |W - W^T| = {asym:.3g})")
        mu = 1.0 - node.g * max(sym_max(w / a[:, None]), 0.0)
    else:
        try:
            norm = Normaliser(node.metric)
            mu = leaf_bound(node, w, a, b, norm).mu
        except ValueError as err:
            res.failures.append(f"{node.label}: {err}")
            return res
        if k is not None and bool(k.any()):
            # a coupling inside the module (a low-rank eq.-3 coupling has such parts; they are
            # skew in the metric, so they cost ~0): sym(A^{-1/2} K~ A^{-1/2}) adds to sigma
            ra = a.sqrt()
            mu -= max(0.0, sym_max(norm.apply(k) / ra[:, None] / ra[None, :]))
    res.rate = mu / float(taus.max()) if mu > 0 else mu / float(taus.min())
    if not res.rate > 0:
        res.failures.append(f"{node.label}: {node.rule} does not hold for the running weights "
                            f"(rate bound {res.rate:.4g} <= 0)")
    return res


def _hierarchy_rate(node: Node, res: NodeResult, own: torch.Tensor) -> NodeResult:
    kids, children = res.children, node.children
    bad = [c for c in kids if not c.rate > 0]
    if bad:
        res.failures.append(f"{node.label}: every child of a Hierarchy must contract; "
                            f"{bad[0].label} does not (rate {bad[0].rate:.4g})")
        return res
    p = len(children)
    t = torch.zeros(p, p, dtype=torch.float64)
    for i, ci in enumerate(children):
        t[i, i] = -kids[i].rate
        ni = Normaliser(ci.metric)
        for j, cj in enumerate(children):
            blk = own[ci.start - node.start:ci.stop - node.start,
                      cj.start - node.start:cj.stop - node.start]
            if i == j or not bool(blk.any()):
                continue
            if j > i:
                res.failures.append(f"{node.label}: coupling from a later to an earlier child "
                                    f"({cj.label} -> {ci.label}) breaks the hierarchy")
                res.rate = -math.inf
                return res
            t[i, j] = block_norm(blk, ni, Normaliser(cj.metric))
    c = torch.tensor(node.weights, dtype=torch.float64)
    if c.numel() != p or not bool((c > 0).all()) or not bool(torch.isfinite(c).all()):
        res.failures.append(f"{node.label}: no valid metric weights")
        res.rate = -math.inf
        return res
    s = c.sqrt()
    res.rate = -sym_max(t * (s[:, None] / s[None, :]))
    if not res.rate > 0:
        res.failures.append(f"{node.label}: the hierarchy's comparison matrix gives rate "
                            f"{res.rate:.4g} <= 0 in its weights")
    return res


def continuous_rate(snap: Explicit) -> ContinuousResult:
    """The continuous-time rate of the snapshot's matrices, by the tree's rules."""
    alpha, decay, w, k = _running(snap)
    root = _node_rate(snap.tree, snap, w, k, alpha, decay)
    failures = [f for r in root.flat() for f in r.failures]
    return ContinuousResult(root.rate, root, failures)


def node_rates(tree: Node, root: NodeResult) -> dict[int, float]:
    """``id(node) -> continuous rate`` for every system of the tree with a positive rate."""
    out: dict[int, float] = {}
    stack = [(tree, root)]
    while stack:
        node, res = stack.pop()
        if math.isfinite(res.rate) and res.rate > 0 and not res.failures:
            out[id(node)] = res.rate
        stack.extend(zip(node.children, res.children, strict=False))
    return out


@dataclass
class DiscreteResult:
    """The step map's contraction factor in the snapshot's top-level candidate metric."""

    bound: float  # the analytic bound (before the allowance)
    exact: float | None  # the vertex maximum (N <= EXACT_MAX_N), before the allowance
    allowance: float
    coupling_norm: float | None  # ||C||_M (cayley) or ||K||_M (euler)
    skew_residual: float | None  # ||M K + K^T M|| / (||M|| ||K||) of the running K
    metric_condition_number: float
    leaf_factors: list[float]

    @property
    def factor(self) -> float:
        """The certified upper bound on the factor: best estimate plus the allowance."""
        best = self.bound if self.exact is None else min(self.bound, self.exact)
        return best + self.allowance


def allowance(n: int, cond: float, size: float) -> float:
    """Float64 evaluation error allowed for norms of ``n x n`` normalised matrices of size
    ``size``: ``ALLOWANCE_ULPS * n * eps * kappa * max(1, size)``, with ``kappa`` the condition
    number of a dense metric and 1 for a diagonal one (``R X R^{-1}`` is then an entrywise
    rescaling with relative error ``2 eps`` per entry, whatever the conditioning)."""
    return ALLOWANCE_ULPS * n * EPS * cond * max(1.0, size)


@dataclass
class _Map:
    """The running map in float64: ``alpha``, ``b``, ``W_a``, ``K``, and ``C`` or ``A_e``."""

    mode: str
    dt: float
    alpha: torch.Tensor
    decay: torch.Tensor
    w: torch.Tensor
    k: torch.Tensor | None
    matrix: torch.Tensor | None  # C (cayley, lowrank) or A_e (euler)

    @classmethod
    def of(cls, snap: Explicit) -> _Map:
        alpha, decay, w, k = _running(snap)
        mode = snap.mode
        matrix = None if mode == "none" else (
            f64(snap.kmat) if mode == "euler" else _map_matrix(snap))
        return cls(mode, snap.dt, alpha, decay, w, k, matrix)


def _module_factors(node: Node, run: _Map, norm: Normaliser
                    ) -> tuple[list[float], float, float]:
    """Per leaf of ``node``: the module map's factor in ``norm`` (``node``'s metric), and the
    worst ``sigma_d`` and ``kappa``."""
    factors, sig, kap = [], -math.inf, 0.0
    for leaf in node.leaves():
        sl = slice(leaf.start, leaf.stop)
        lb = leaf_bound(leaf, run.w[sl, sl], run.alpha[sl], run.decay[sl],
                        norm.block(leaf.start - node.start, leaf.stop - node.start))
        factors.append(lb.rho(run.alpha[sl], run.decay[sl]))
        sig, kap = max(sig, lb.sigma_d), max(kap, lb.kappa)
    return factors, sig, kap


def _generic_factor(node: Node, run: _Map, norm: Normaliser, rate: float | None
                    ) -> tuple[float, float | None]:
    """``(factor bound, coupling norm)`` of the map restricted to ``node``'s units (an
    autonomous map there: the whole network, or a child of a block-lower hierarchy map)."""
    sl = slice(node.start, node.stop)
    factors, worst_sig, worst_kap = _module_factors(node, run, norm)
    rho_mod = max(factors)
    if run.mode == "none":
        return rho_mod, None
    block = run.matrix[sl, sl]
    if run.mode in ("cayley", "lowrank"):
        cnorm = norm2_near_orthogonal(norm.apply(block))
        return cnorm * rho_mod, cnorm
    alpha, decay = run.alpha[sl], run.decay[sl]
    k_e = block - torch.diag(decay)  # the running A_e, read exactly (exact in float64)
    kt = norm.apply(k_e)
    ra = alpha.sqrt()
    sig = worst_sig + sym_max(decay[:, None] * kt / ra[:, None] / ra[None, :])
    a0, b0 = float(alpha[0]), float(decay[0])
    if rate is not None and bool((alpha == a0).all()) and run.k is not None \
            and torch.equal(k_e, run.k[sl, sl]):
        # one step fraction: sym(K + W_a D) <= (alpha - lam dt) I by the continuous
        # certificate of the same matrices, so sigma_d <= b (1 - lam dt / alpha)
        sig = min(sig, b0 * (1 - rate * run.dt / a0))
    kap = worst_kap + norm2(kt / ra[None, :])
    sq = decay**2 + alpha * (2 * sig + kap**2)
    return math.sqrt(max(0.0, float(sq.max()))), norm2(kt)


def _block_lower(node: Node, matrix: torch.Tensor) -> bool:
    """Whether the map is block lower triangular over ``node``'s children."""
    for i, ci in enumerate(node.children):
        for cj in node.children[i + 1:]:
            if bool(matrix[ci.start:ci.stop, cj.start:cj.stop].any()):
                return False
    return True


def _factor(node: Node, run: _Map, rates: dict[int, float]) -> tuple[float, float | None]:
    """The step factor of ``node``'s (autonomous) map in its candidate metric: the generic
    bound, and for a hierarchy whose map is block lower triangular (``C`` of a block-lower
    ``K`` is block lower) also the discrete comparison rule: with ``rho_i`` the children's
    factors and ``gamma_ij >= ||J_ij||`` (cayley: ``||C_ij|| max_D ||b + W_a D||_j``; euler:
    ``||K_ij||``), ``||J||_M <= ||C^{1/2} T C^{-1/2}||`` for ``T = [rho_i; gamma_ij]`` in the
    weights ``c`` of the metric ``blockdiag(c_i M_i)``."""
    norm = Normaliser(node.metric)
    generic, cnorm = _generic_factor(node, run, norm, rates.get(id(node)))
    if node.kind != "hierarchy" or run.mode == "none" or not _block_lower(node, run.matrix):
        return generic, cnorm
    kids = node.children
    p = len(kids)
    t = torch.zeros(p, p, dtype=torch.float64)
    norms = [Normaliser(c.metric) for c in kids]
    mods = [max(_module_factors(c, run, norms[i])[0]) for i, c in enumerate(kids)]
    for i, ci in enumerate(kids):
        t[i, i] = _factor(ci, run, rates)[0]
        for j, cj in enumerate(kids[:i]):
            blk = run.matrix[ci.start:ci.stop, cj.start:cj.stop]
            if not bool(blk.any()):
                continue
            gain = block_norm(blk, norms[i], norms[j])
            t[i, j] = gain * (mods[j] if run.mode in ("cayley", "lowrank") else 1.0)
    c = torch.tensor(node.weights, dtype=torch.float64)
    if c.numel() != p or not bool((c > 0).all()):
        return generic, cnorm
    sc = c.sqrt()
    return min(generic, norm2(t * (sc[:, None] / sc[None, :]))), cnorm


def discrete_factor(snap: Explicit, *, exact: bool = True,
                    rate: float | None = None,
                    rates: dict[int, float] | None = None) -> DiscreteResult:
    """Bound (and, for small N, the exact value) of ``||J||_M`` over all slope matrices for
    the snapshot's map; ``rate`` (or ``rates``, per node id) is the continuous rate of the
    same snapshot (it tightens the euler bound). Raises ``ValueError`` when the top metric is
    missing or invalid."""
    if snap.tree.metric is None:
        raise ValueError("no constant metric: the discrete-time map is not covered")
    run = _Map.of(snap)
    norm = Normaliser(snap.tree.metric)
    rates = dict(rates or {})
    if rate is not None:
        rates.setdefault(id(snap.tree), rate)
    factors = _module_factors(snap.tree, run, norm)[0]
    bound, cnorm = _factor(snap.tree, run, rates)
    skew = feedback_skew_residual(snap, run.k) if run.k is not None else None
    best = bound
    vertex = None
    if exact and snap.n <= EXACT_MAX_N:
        vertex = _vertex_max(snap, run.w, run.decay, norm)
        best = min(bound, vertex)
    kappa = 1.0 if norm.diagonal else norm.cond
    return DiscreteResult(bound, vertex, allowance(snap.n, kappa, best), cnorm, skew,
                          norm.cond, factors)


def feedback_skew_residual(snap: Explicit, k: torch.Tensor) -> float | None:
    """``max ||K~ + K~^T|| / ||K~||`` (Frobenius) over the eq.-3 nodes' own running couplings
    ``K~`` in their candidate metrics (0 for exactly skew couplings); None without any."""
    out = None
    stack = [snap.tree]
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        if node.kind != "feedback" or node.metric is None:
            continue
        kt = Normaliser(node.metric).apply(_own(k, node))
        size = float(torch.linalg.matrix_norm(kt))
        res = float(torch.linalg.matrix_norm(kt + kt.T)) / size if size > 0 else 0.0
        out = res if out is None else max(out, res)
    return out


def _map_matrix(snap: Explicit) -> torch.Tensor:
    """The cayley ``C`` the engine applies, in float64: the running ``C``, or
    ``I + X G Y^T`` formed exactly from the running factors."""
    if snap.mode == "lowrank":
        x, y = snap.factors
        eye = torch.eye(snap.n, dtype=torch.float64)
        return eye + f64(x) @ f64(snap.core) @ f64(y).T
    return f64(snap.kmat)


def _vertex_max(snap: Explicit, w: torch.Tensor, decay: torch.Tensor,
                norm: Normaliser) -> float:
    """``max ||R J(D) R^{-1}||`` over all ``2^N`` vertices ``D`` of the slope box."""
    n, g = snap.n, snap.tree.g
    verts = torch.tensor(list(itertools.product((0.0, g), repeat=n)), dtype=torch.float64)
    wd = w[None] * verts[:, None, :]
    if snap.mode == "euler":
        jac = f64(snap.kmat)[None] + wd
    else:
        jac = torch.diag(decay)[None] + wd
        if snap.mode in ("cayley", "lowrank"):
            jac = _map_matrix(snap)[None] @ jac
    if norm.diagonal:
        jac = jac * (norm.r[:, None] / norm.r[None, :])[None]
    else:
        jac = norm.r[None] @ jac @ norm.r_inv[None]
    return float(torch.linalg.matrix_norm(jac, ord=2).max())
