"""The common interface of every contracting module and combination (paper eq. 1 and 2).

A system is ``T dx/dt = -x + W phi(x) + L x + u`` with ``T = diag(tau)`` (one time constant per
unit; a module has one). It states a constant metric ``P`` (``metric()``) and a rate
(``rate()``), both recomputed from the current tensors at every call, and turns its parameters
into one explicit snapshot per pass (``explicit()``): the matrices the engine multiplies and
the certificate certifies (:mod:`combonet.snapshot`).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .._validate import positive
from ..activations import Activation, get_activation
from ..engine import run
from ..engine.maps import DEFAULT_METHOD, cayley, cayley_core, check_method, step_fraction
from ..snapshot import Explicit, Node
from .time import TimeConstants


class NoConstantMetricError(ValueError):
    """Raised by ``metric()`` when a condition gives no constant metric (Theorem 2, 6, 7)."""


class NotContractingError(ValueError):
    """Raised when a combination rule needs contracting children and one has no positive rate
    (e.g. a :class:`~combonet.Hierarchy` over the unconstrained control)."""


_PASS: ContextVar[dict | None] = ContextVar("combonet_pass", default=None)


@contextmanager
def one_pass() -> Iterator[None]:
    """Scope of one snapshot: values derived from the current tensors (a hierarchy's metric
    weights, a child's rate) are computed once inside it and forgotten when it ends."""
    if _PASS.get() is not None:
        yield
        return
    token = _PASS.set({})
    try:
        yield
    finally:
        _PASS.reset(token)


def per_pass(key: tuple, compute: Callable[[], Any]) -> Any:
    """``compute()``, once per :func:`one_pass` scope (and per autograd mode)."""
    cache = _PASS.get()
    if cache is None:
        return compute()
    key = (*key, torch.is_grad_enabled())
    if key not in cache:
        cache[key] = compute()
    return cache[key]


@dataclass
class Build:
    """What every system needs to build its part of a snapshot (running coordinates)."""

    dtype: torch.dtype
    device: torch.device
    scale: torch.Tensor  # (N,) float64, detached: y = s x
    alpha: torch.Tensor  # (N,) float64 dt / tau (differentiable when tau is trained)
    alpha_run: torch.Tensor  # the same in the run dtype
    #: a power of two with ``scale * unit = diag(P)^{1/2}`` exactly: ``s`` is centred (its
    #: geometric mean ~1) so that it fits the run dtype, without any rounding
    unit: float = 1.0


def metric_defect(p: torch.Tensor) -> str | None:
    """Why a stored diagonal metric cannot be used, or None: its entries must be finite and
    positive, with a condition number ``max / min`` finite in float64."""
    if not p.is_floating_point():
        return f"is not a floating-point tensor ({p.dtype})"
    if p.numel() == 0:
        return None
    # one reduction and one transfer (aminmax propagates NaN)
    lo, hi = torch.stack(torch.aminmax(p.detach())).to(torch.float64).tolist()
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "has non-finite entries"
    if not lo > 0:
        return f"has entries <= 0 (smallest {lo:.3g}): a metric is positive"
    if not math.isfinite(hi / lo):
        return f"spans {lo:.3g} ... {hi:.3g}, a condition number beyond float64"
    return None


def mask_defect(m: torch.Tensor) -> str | None:
    """Why a stored 0/1 mask cannot be used, or None."""
    if not torch.equal(m, (m != 0).to(m.dtype)):  # NaN != 0 gives 1 != NaN: refused too
        return "is not a 0/1 pattern"
    return None


REFUSED = "it was edited or is corrupted, so it is refused (reload or rebuild the model)"


def refuse_loaded(module: Any, state_dict: dict, key: str, what: str,
                  defect_of: Any) -> None:
    """Refuse a loaded buffer ``state_dict[key]`` (``what`` it is) that ``defect_of`` finds
    wrong: a buffer is never trusted."""
    if key in state_dict:
        defect = defect_of(state_dict[key])
        if defect is not None:
            raise ValueError(f"the loaded {key} of {module.describe()} ({what}) {defect}; "
                             f"{REFUSED}")


class ContractingSystem(nn.Module, ABC):
    """A network ``T dx/dt = -x + W phi(x) + L x + u`` with a metric and a rate (eq. 2).

    Leaf modules (eq. 1) have ``L = 0``; combinations (Section 2) add a coupling ``L`` and are
    themselves contracting systems, so they nest to any depth.
    """

    n: int
    activation: Activation
    theorem: str = ""

    def _init_common(self, n: int, activation: str | Activation,
                     tau: float | TimeConstants | None, g: float | None = None) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n (number of units) must be an integer >= 1, got {n!r}")
        self.n = n
        self.time = None
        if isinstance(tau, TimeConstants):
            if tau.n != n:
                raise ValueError(f"TimeConstants for {tau.n} units given to a module of n={n}")
            if tau.per_unit and not (self.has_constant_metric and self.metric_is_diagonal()):
                raise ValueError(
                    f"per-unit time constants need a diagonal metric; {type(self).__name__} "
                    "has none: use TimeConstants(..., per='module')")
            self.time = tau
            self._tau = tau.lo
        elif tau is not None:
            self._tau = positive("tau", tau)
        act = get_activation(activation)
        if g is not None:
            g = positive("g", g)
            if g < act.g:
                raise ValueError(
                    f"g={g} is below the slope bound of {act.name} (g={act.g}); "
                    f"pass g >= {act.g} or leave g unset"
                )
            act = Activation(act.name, act.fn, act.slope, g, act.positively_homogeneous)
        self.activation = act

    @property
    def g(self) -> float:
        """Upper bound on the activation slope, ``0 <= phi' <= g``."""
        return self.activation.g

    @property
    def tau(self) -> float:
        """The smallest time constant any parameter value allows (it bounds the step:
        ``dt <= tau``); for trainable time constants the lower end of their range."""
        return self._tau

    def time_constants(self) -> torch.Tensor:
        """``tau`` of every unit, float64 (N,) (differentiable when trained)."""
        if self.time is not None:
            return self.time()
        return torch.full((self.n,), self._tau, dtype=torch.float64)

    def _reference(self) -> torch.Tensor:
        """A tensor that carries the model's dtype and device."""
        for t in self.parameters():
            return t
        for t in self.buffers():
            if t.is_floating_point():
                return t
        return torch.empty(0)

    def describe(self) -> str:
        """``Class(n=...)``: how certificates and errors name this system."""
        return f"{type(self).__name__}(n={self.n})"

    def _buffer_defects(self) -> list[str]:
        """What is wrong with this system's own buffers (not its children's), each phrase
        naming the buffer; empty when nothing is."""
        return []

    def buffer_defects(self) -> list[str]:
        """Every buffer of the tree that is not what it must be (a metric finite and positive,
        a mask 0/1), as ``"<path> <Class>(...): buffer <name> <defect>"``. Buffers are
        checked at every use (:meth:`explicit`) and on load, never trusted."""
        out = []
        for name, mod in self.named_modules():
            if isinstance(mod, ContractingSystem):
                out += [f"{name or 'model'} {mod.describe()}: {d}" for d in mod._buffer_defects()]
        return out

    def run_dtype(self) -> torch.dtype:
        """The dtype the system runs in -- and that :func:`combonet.certify` certifies by
        default: its parameters' (``model.to(dtype)`` changes it)."""
        ref = self._reference()
        return ref.dtype if ref.is_floating_point() else torch.get_default_dtype()

    def run_device(self) -> torch.device:
        """The device the system's matrices are built on: its parameters'."""
        return self._reference().device

    def as_run_input(self, t: Any, name: str) -> Any:
        """``t`` in the run dtype: integer inputs are converted, floating inputs of another
        dtype or device are refused (a float64 drive must not silently run the float64 map
        of a model certified in float32, nor the reverse); non-tensors pass through to the
        shape checks."""
        if not isinstance(t, torch.Tensor):
            return t
        dtype, device = self.run_dtype(), self.run_device()
        if t.dtype != dtype and (t.is_floating_point() or t.is_complex()):
            raise ValueError(
                f"{name} has dtype {t.dtype} but the model runs (and is certified) in {dtype}: "
                f"cast the inputs ({name}.to({dtype})), or convert the model "
                f"(model.to({t.dtype})) and certify that")
        if t.device != device:
            raise ValueError(f"{name} is on {t.device} but the model is on {device}: move "
                             f"one of them (model.to(device) or {name}.to(device))")
        return t.to(dtype)

    # -- the model (original coordinates) -----------------------------------------------
    @abstractmethod
    def weight(self) -> torch.Tensor:
        """The current block-diagonal recurrent weight ``W`` (N x N)."""

    def coupling(self) -> torch.Tensor | None:
        """The linear coupling ``L`` between modules (N x N), ``None`` for a single module."""
        return None

    def weight_blocks(self) -> list[torch.Tensor]:
        """The diagonal blocks of ``W``, one per leaf module, in state order."""
        return [self.weight()]

    def leaves(self) -> list[ContractingSystem]:
        """The leaf modules (eq. 1) in state order."""
        return [self]

    def rhs(self, x: torch.Tensor, u: torch.Tensor | None = None) -> torch.Tensor:
        """``f(x) = T^{-1} (-x + W phi(x) + L x + u)`` (eq. 2), batched over leading dims."""
        w = self.weight()
        out = -x + self.activation(x) @ w.T
        lmat = self.coupling()
        if lmat is not None:
            out = out + x @ lmat.T
        if u is not None:
            out = out + u
        return out / self.time_constants().to(out.dtype).to(out.device)

    # -- the guarantee (float64, from the current tensors) ------------------------------
    has_constant_metric: bool = True

    def metric_is_diagonal(self) -> bool:
        """Whether :meth:`metric` is always diagonal."""
        return False

    def metric_diagonal(self) -> torch.Tensor:
        """The diagonal of a diagonal metric (float64, differentiable)."""
        raise NotImplementedError(f"{type(self).__name__} has a dense metric")

    def metric(self) -> torch.Tensor:
        """Constant SPD metric ``P`` (float64, differentiable in the parameters) in which
        ``P J + J^T P <= -2 lam P`` for every admissible slope matrix."""
        return torch.diag(self.metric_diagonal())

    def metric_inverse(self) -> torch.Tensor:
        """``P^{-1}`` (float64)."""
        if self.metric_is_diagonal():
            return torch.diag(1.0 / self.metric_diagonal())
        return torch.linalg.inv(self.metric())

    def rate(self) -> float:
        """A lower bound ``lam`` on the contraction rate of the exact (float64) system:
        ``P J + J^T P <= -2 lam P``, recomputed from the current tensors at every call."""
        from ..bounds import continuous_rate

        def compute() -> float:
            with torch.no_grad():
                return continuous_rate(self.explicit(method=None, dtype=torch.float64)).rate

        return per_pass(("rate", id(self)), compute)

    def conditions(self) -> list[str]:
        """The paper's conditions (theorems / combination rules) this system relies on."""
        return [self.theorem]

    # -- one explicit snapshot per pass -------------------------------------------------
    def explicit(self, dt: float | None = None, method: str | None = DEFAULT_METHOD, *,
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None
                 ) -> Explicit:
        """Every matrix one pass multiplies, built from the current tensors (see
        :mod:`combonet.snapshot`). ``dt`` defaults to the smallest time constant;
        ``method=None`` builds no map matrices (rates only)."""
        with one_pass():
            return self._explicit(dt, method, dtype, device)

    def _explicit(self, dt: float | None, method: str | None, dtype: torch.dtype | None,
                  device: torch.device | str | None) -> Explicit:
        if method is not None:
            check_method(method)
        defects = self.buffer_defects()
        if defects:
            raise ValueError(f"{defects[0]}; {REFUSED}")
        dtype = dtype or self.run_dtype()
        device = torch.device(device) if device is not None else self.run_device()
        taus = self.time_constants().to(device)
        tau_min = float(taus.detach().min())
        dt = tau_min if dt is None else dt
        step_fraction(dt, tau_min)
        dt = float(dt)
        alpha = dt / taus
        if self.activation.positively_homogeneous and self.has_constant_metric:
            root = self._metric_diagonal_of_any().detach().to(device).sqrt()
        else:
            root = torch.ones(self.n, dtype=torch.float64, device=device)
        logs = torch.log2(root)
        unit = 2.0 ** round(float(logs.mean())) if bool(torch.isfinite(logs).all()) else 1.0
        ctx = Build(dtype, device, root / unit, alpha, alpha.to(dtype), unit)
        weights, k, tree = self._build(ctx, 0, "")
        blocks = self._stack([w * ctx.alpha_run[a:b, None] for (a, b), w in weights])
        decay = (1 - alpha).to(dtype)
        kmat = factors = core = None
        if k is not None and not isinstance(k, torch.Tensor):  # a low-rank coupling
            if method == "euler":
                k = k.dense()
            else:
                factors, k = (k.x, k.y), None
                if method == "cayley":
                    core = cayley_core(*factors)
        if k is not None and method == "cayley":
            kmat = cayley(k)
        elif k is not None and method == "euler":
            kmat = torch.diag(decay) + k
        return Explicit(method, dt, self.activation, ctx.alpha_run, decay, blocks, k, kmat,
                        ctx.scale.to(dtype), self.activation.positively_homogeneous
                        and self.has_constant_metric, tree, factors, core, ctx.unit)

    @staticmethod
    def _stack(blocks: list[torch.Tensor]) -> torch.Tensor:
        if len({b.shape[0] for b in blocks}) == 1:
            return torch.stack(blocks)
        return torch.block_diag(*blocks)[None]

    def _metric_diagonal_of_any(self) -> torch.Tensor:
        """``diag(P)`` whether ``P`` is diagonal or dense (float64)."""
        if self.metric_is_diagonal():
            return self.metric_diagonal()
        return torch.diagonal(self.metric())

    def _running_metric(self, scale: torch.Tensor) -> torch.Tensor | None:
        """This system's candidate metric in running coordinates (float64, detached), for the
        uncentred scale ``diag(P)^{1/2}`` (so that the top-level diagonal metric is exactly
        the identity)."""
        if not self.has_constant_metric:
            return None
        with torch.no_grad():
            s = scale.to(torch.float64)
            if self.metric_is_diagonal():  # (sqrt(p) / s)^2: exactly 1 where s = sqrt(p)
                return (self.metric_diagonal().detach().to(s.device).sqrt() / s) ** 2
            m = self.metric().detach().to(s.device)
            return m / s[:, None] / s[None, :]

    @abstractmethod
    def _build(self, ctx: Build, start: int, path: str
               ) -> tuple[list[tuple[tuple[int, int], torch.Tensor]], torch.Tensor | None,
                          Node]:
        """``([((start, stop), S W_i S^{-1})...], K over this system's units or None, Node)``
        in the run dtype (leaf weights not yet scaled by ``alpha``)."""

    def forward(self, drive: torch.Tensor, x0: torch.Tensor | None = None, *,
                dt: float = 0.1, method: str = DEFAULT_METHOD,
                all_states: bool = True) -> torch.Tensor:
        """Run the discretised dynamics under ``drive`` (batch, steps, N) from ``x0``; states
        in original coordinates (see :func:`combonet.engine.run`). The map runs in the
        model's dtype (:meth:`run_dtype`), the one ``certify`` certifies: ``drive`` and ``x0``
        of another floating dtype are refused (``ValueError``), never silently run."""
        drive, x0 = self.as_run_input(drive, "drive"), self.as_run_input(x0, "x0")
        snap = self.explicit(dt=dt, method=method)
        y0 = None if x0 is None else snap.to_running(x0)
        out = run(snap, snap.prepare_drive(drive), y0, all_states=all_states)
        return snap.from_running(out)


class ContractingModule(ContractingSystem):
    """A single RNN module (eq. 1): ``L = 0`` and one weight block.

    Diagonal-metric modules implement :meth:`normalised_weight` (``R W R^{-1}`` with
    ``P = R^2``, computed in the well-conditioned way their parameterisation allows); the
    running weight is ``S W S^{-1} = Q^{-1} (R W R^{-1}) Q`` with ``Q = R S^{-1}``, whose value
    is the identity when ``S = R`` (so no float rounding enters through ``P``) while its
    gradient is exactly that of ``S W S^{-1}``.
    """

    #: how the certificate bounds this module: "diagonal" (any W in a diagonal metric),
    #: "theorem3" (``W = -P1 Q P2``), or "none" (no constant metric)
    family: str = "diagonal"

    def module_metric_diagonal(self) -> torch.Tensor:
        """The diagonal metric ``M`` of the condition (one time constant), float64."""
        raise NotImplementedError(f"{type(self).__name__} has a dense metric")

    def metric_diagonal(self) -> torch.Tensor:
        """``M``, or ``M T`` with per-unit time constants (``P J = M (-I + W D)``)."""
        m = self.module_metric_diagonal()
        if self.time is not None and self.time.per_unit:
            return m * self.time_constants().to(m.device)
        return m

    def normalised_weight(self) -> torch.Tensor:
        """``R W R^{-1}`` with ``M = R^2`` (diagonal metrics only), in the parameters' dtype."""
        r = self.module_metric_diagonal().sqrt()
        w = self.weight()
        return (w.to(torch.float64) * (r[:, None] / r[None, :])).to(w.dtype)

    def running_weight(self, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """``S W S^{-1}`` in ``dtype`` for the running scale ``s`` (float64)."""
        if self.has_constant_metric and self.metric_is_diagonal():
            q = self.module_metric_diagonal().sqrt().to(scale.device) / scale
            core = self.normalised_weight().to(dtype)
            return core * (q[None, :] / q[:, None]).to(dtype)
        w = self.weight().to(dtype)
        return w * (scale[:, None] / scale[None, :]).to(dtype)

    def reference_weight(self, scale: torch.Tensor) -> torch.Tensor | None:
        """theorem3 modules: the exact product in running coordinates (float64)."""
        return None

    def reference_gain(self) -> float | None:
        """theorem3 modules: ``gamma`` with ``||W_ref D||_M <= g gamma`` for all slopes."""
        return None

    def _build(self, ctx: Build, start: int, path: str):
        stop = start + self.n
        s = ctx.scale[start:stop]
        w = self.running_weight(s, ctx.dtype)
        family = self.family if self.has_constant_metric else "none"
        ref = gain = None
        if family == "theorem3":
            with torch.no_grad():
                ref, gain = self.reference_weight(s), self.reference_gain()
        label = f"{path.rstrip('.') or 'model'} {self.describe()}"
        node = Node("leaf", label, self.theorem, start, stop, (),
                    self._running_metric(s * ctx.unit),
                    self.g, family, ref, gain=gain)
        return [((start, stop), w)], None, node

    def extra_repr(self) -> str:
        return f"n={self.n}, activation={self.activation.name}, g={self.g}, tau={self.tau}"


def frozen(t: torch.Tensor) -> torch.Tensor:
    """A detached float64 copy (for certificates and reporting)."""
    return t.detach().to(torch.float64).cpu()
