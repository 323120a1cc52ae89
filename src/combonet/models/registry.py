"""Command-line model names -> builders, and parameter counts in the paper's convention.

Every builder takes a configuration (any object with the attributes of
:class:`combonet.train.TrainConfig`: ``modules``, ``units``, ``density``, ``magnitude``,
``coupling_density``, ``init_scale``, ``dt``, ``method``, ``hidden``, ``seed``) plus the input
size and number of classes the data set dictates, and returns an ``nn.Module`` mapping
(batch, steps, features) to logits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from .._validate import choice
from ..combinations.base import Combination
from ..modules.sparse import TrainableSparseModule
from .baselines import (
    AntisymmetricRNN,
    GRUClassifier,
    LipschitzRNN,
    LSTMClassifier,
    VanillaRNNClassifier,
)
from .builders import combo_net, sparse_combo_net, svd_combo_net, unconstrained_combo_net
from .classifier import SequenceClassifier
from .perstep import CTRNN, PerStepModel, per_step_of

Builder = Callable[[Any, int, int], nn.Module]


def _combo_kw(cfg: Any, input_size: int, num_classes: int) -> dict[str, Any]:
    return dict(input_size=input_size, num_classes=num_classes, dt=cfg.dt, method=cfg.method,
                init_scale=cfg.init_scale, coupling_density=cfg.coupling_density, seed=cfg.seed,
                coupling_rank=cfg.coupling_rank, tau_train=cfg.tau_train, tau_max=cfg.tau_max,
                readout=cfg.readout)


def build_sparse_combo(cfg: Any, input_size: int, num_classes: int) -> nn.Module:
    """Sparse Combo Net ``modules x units`` (fixed Theorem-1 modules, eq.-3 feedback)."""
    return sparse_combo_net(cfg.modules, cfg.units, cfg.density, cfg.magnitude,
                            **_combo_kw(cfg, input_size, num_classes))


def build_svd_combo(cfg: Any, input_size: int, num_classes: int) -> nn.Module:
    """SVD Combo Net ``modules x units`` (trained Theorem-5 modules, eq.-3 feedback)."""
    return svd_combo_net(cfg.modules, cfg.units, **_combo_kw(cfg, input_size, num_classes))


def build_unconstrained_combo(cfg: Any, input_size: int, num_classes: int) -> nn.Module:
    """The Section 4.2.3 control: Sparse Combo Net modules with ``L = B`` unconstrained."""
    kw = _combo_kw(cfg, input_size, num_classes)
    kw.pop("coupling_rank")
    return unconstrained_combo_net(cfg.modules, cfg.units, cfg.density, cfg.magnitude, **kw)


def build_kind(kind: str, hybrid: bool = False) -> Builder:
    """A builder of ``combo_net(kind, ...)`` (beyond the paper: module kinds, hybrid)."""
    def build(cfg: Any, input_size: int, num_classes: int) -> nn.Module:
        return combo_net(kind, cfg.modules, cfg.units, density=cfg.density,
                         magnitude=cfg.magnitude, hybrid=hybrid,
                         **_combo_kw(cfg, input_size, num_classes))
    build.__doc__ = f"{kind} modules{' (hybrid)' if hybrid else ''}"
    return build


def build_lstm(cfg: Any, input_size: int, num_classes: int) -> nn.Module:
    """One-layer LSTM with ``hidden`` units."""
    return LSTMClassifier(input_size, cfg.hidden, num_classes)


def build_gru(cfg: Any, input_size: int, num_classes: int) -> nn.Module:
    """One-layer GRU with ``hidden`` units."""
    return GRUClassifier(input_size, cfg.hidden, num_classes)


def build_rnn(cfg: Any, input_size: int, num_classes: int) -> nn.Module:
    """One-layer tanh RNN with ``hidden`` units."""
    return VanillaRNNClassifier(input_size, cfg.hidden, num_classes)


def build_lipschitz(cfg: Any, input_size: int, num_classes: int) -> nn.Module:
    """Lipschitz RNN (Erichson et al. 2021) with its published defaults."""
    return LipschitzRNN(input_size, cfg.hidden, num_classes, seed=cfg.seed)


def build_antisymmetric(cfg: Any, input_size: int, num_classes: int) -> nn.Module:
    """Antisymmetric RNN (Chang et al. 2019) with its published defaults."""
    return AntisymmetricRNN(input_size, cfg.hidden, num_classes, seed=cfg.seed)


def areas_spec(cfg: Any) -> Any:
    """The :class:`~combonet.areas.AreasSpec` of ``cfg.areas`` (the areas file's content, as
    ``TrainConfig`` stores it), its ``seed`` offset by ``cfg.seed`` (so ``--seed`` draws new
    areas too; ``--seed 0`` builds exactly the file's network)."""
    import dataclasses
    import json

    from ..areas import parse_areas

    if cfg.areas is None:
        raise ValueError("model 'areas' needs an areas file: give --areas FILE (TOML, YAML or "
                         "JSON; docs/neuro.md)")
    text = cfg.areas
    spec = parse_areas(json.loads(text) if isinstance(text, str) else text, source="areas")
    return dataclasses.replace(spec, seed=spec.seed + int(cfg.seed))


def build_areas_model(cfg: Any, input_size: int, num_classes: int) -> nn.Module:
    """The certified network of areas of ``cfg.areas`` (:func:`combonet.areas.build_areas`),
    read out at every step: a :class:`~combonet.models.perstep.PerStepModel` whose input and
    output masks are the area map's; the map is kept as ``model.area_map``."""
    from ..areas import build_areas

    network, area_map = build_areas(areas_spec(cfg))
    model = PerStepModel(network, input_size, num_classes, dt=cfg.dt, method=cfg.method,
                         input_mask=area_map.input_mask(input_size),
                         output_mask=area_map.output_mask())
    model.area_map = area_map
    return model


def build_ctrnn(cfg: Any, input_size: int, num_classes: int) -> nn.Module:
    """NeuroGym's CTRNN baseline: ``hidden`` units, ``alpha = dt / ctrnn_tau`` with the task's
    step ``dt`` (100 ms for NeuroGym's tasks: ``ctrnn_tau = 100`` is the recipe's alpha = 1)."""
    from ..data.trials import trial_task

    dt = float(trial_task(cfg.task).dt)
    if not 0 < dt / cfg.ctrnn_tau <= 1:
        raise ValueError(f"ctrnn_tau={cfg.ctrnn_tau:g} ms is shorter than the task's step "
                         f"dt={dt:g} ms (alpha = dt / tau must lie in (0, 1]); give "
                         f"--ctrnn-tau >= {dt:g}")
    return CTRNN(input_size, num_classes, hidden_size=cfg.hidden, tau=cfg.ctrnn_tau, dt=dt)


# -- the registry ----------------------------------------------------------------------------
#: Settings every combo net reads; ``density`` and ``magnitude`` only the sparse ones.
COMBO_FLAGS = frozenset({"modules", "units", "init_scale", "coupling_density", "dt", "method",
                         "coupling_rank", "tau_train", "tau_max", "readout"})
SPARSE_FLAGS = COMBO_FLAGS | {"density", "magnitude"}
BASELINE_FLAGS = frozenset({"hidden"})
AREAS_FLAGS = frozenset({"areas", "dt", "method"})
CTRNN_FLAGS = frozenset({"hidden", "ctrnn_tau"})
#: Every model-specific setting (a setting outside this set applies to every model).
MODEL_FLAGS = SPARSE_FLAGS | BASELINE_FLAGS | AREAS_FLAGS | CTRNN_FLAGS
#: Kinds of task a model can learn: one label per sequence, or per-step targets of trials.
SEQUENCE, TRIALS = "sequence", "trials"
#: Draws of a Theorem-1 module before :class:`~combonet.SparseModule` gives up (its default).
SPARSE_TRIES = 1000
#: Refuse a sparse configuration when all the draws together pass with less than this chance.
HOPELESS = 1e-6


def theorem1_pass_bound(n: int, density: float, magnitude: float, g: float = 1.0) -> float:
    """An upper bound on the chance that one random sparse module passes Theorem 1.

    The module draws ``k = round(density n^2)`` off-diagonal positions uniformly without
    replacement, with entries ``U(-1, 1) * magnitude``. For the non-negative matrix ``g|W|``
    the spectral radius is at least the smallest row sum (Perron-Frobenius), so a draw passes
    (radius < 1) only if some row sum ``S`` is < 1. The indicators of one row are negatively
    associated (sampling without replacement), so the Chernoff bound of independent
    ``Bernoulli(q)`` positions holds: ``P(S < 1) <= e^t prod_j E[e^{-t X_j}]`` for every
    ``t > 0``, ``E[e^{-t X_j}] = 1 - q + q (1 - e^{-a t}) / (a t)`` with ``a = g magnitude``,
    ``q = k / (n (n - 1))``; a union bound over the ``n`` rows finishes it. The bound is
    rigorous, cheap (one scalar minimisation) and tiny exactly when the search is hopeless.
    """
    import math

    from scipy.optimize import minimize_scalar

    positions = n * (n - 1)
    if positions == 0:
        return 1.0
    k = min(positions, max(1, round(density * n * n)))
    q, a = k / positions, g * magnitude

    def log_bound(log_t: float) -> float:
        t = math.exp(log_t)
        s = a * t
        phi = -math.expm1(-s) / s if s > 1e-12 else 1.0
        return t + (n - 1) * math.log1p(-q + q * phi)

    best = minimize_scalar(log_bound, bounds=(-12.0, 12.0), method="bounded")
    return min(1.0, math.exp(min(0.0, math.log(n) + min(best.fun, log_bound(0.0)))))


def check_sparse_feasible(cfg: Any) -> None:
    """Refuse, before any sampling, a Theorem-1 search that cannot succeed (seconds to minutes
    of ``SparseModule`` draws otherwise end in the same refusal)."""
    n, density, magnitude = int(cfg.units), float(cfg.density), float(cfg.magnitude)
    bound = theorem1_pass_bound(n, density, magnitude)
    chance = min(1.0, SPARSE_TRIES * bound)
    if chance >= HOPELESS:
        return
    k = min(n * (n - 1), max(1, round(density * n * n)))
    per_row = k / n
    limit = 2.0 / per_row  # magnitude at which the mean row sum of |W| is 1
    raise ValueError(
        f"units={n}, density={density:g}, magnitude={magnitude:g} cannot satisfy Theorem 1 "
        f"(spectral_radius(g|W|) < 1): each row of |W| holds about {per_row:.3g} non-zeros "
        f"of mean size {magnitude / 2:g}, so the row sums (about {per_row * magnitude / 2:.3g})"
        f" and the radius, which is at least the smallest of them, are far above 1; the chance "
        f"that one of {SPARSE_TRIES} random draws passes is below {max(chance, 1e-300):.1e}. "
        f"Lower --magnitude (a mean row sum below 1 needs magnitude < {limit:.3g} at this "
        "density) or --density"
    )


@dataclass(frozen=True)
class ModelSpec:
    """A model the command line can train: its builder and what applies to it."""

    name: str
    builder: Builder
    description: str
    #: whether :func:`combonet.certify` gives it a contraction certificate
    certifiable: bool
    #: the model-specific settings it reads (the others of :data:`MODEL_FLAGS` do not apply)
    flags: frozenset[str]
    #: a cheap check of the settings, run before anything is built
    check: Callable[[Any], None] | None = None
    #: the kinds of task it learns (:data:`SEQUENCE`, :data:`TRIALS`); a combo net on a trial
    #: task is read out at every step (:func:`~combonet.models.perstep.per_step_of`)
    tasks: frozenset[str] = frozenset({SEQUENCE, TRIALS})


MODELS: dict[str, ModelSpec] = {s.name: s for s in (
    ModelSpec("sparse-combo", build_sparse_combo, "Sparse Combo Net (fixed sparse Theorem-1 "
              "modules, trained eq.-3 feedback)", True, SPARSE_FLAGS, check_sparse_feasible),
    ModelSpec("svd-combo", build_svd_combo, "SVD Combo Net (trained Theorem-5 modules, eq.-3 "
              "feedback)", True, COMBO_FLAGS),
    ModelSpec("unconstrained-combo", build_unconstrained_combo, "control: Sparse Combo Net "
              "modules with an unconstrained coupling L = B (Section 4.2.3)", True,
              SPARSE_FLAGS - {"coupling_rank"}, check_sparse_feasible),
    ModelSpec("trainable-sparse-combo", build_kind("trainable-sparse"), "trained sparse "
              "Theorem-1 modules (beyond the paper), eq.-3 feedback", True, SPARSE_FLAGS),
    ModelSpec("mixed-combo", build_kind("mixed"), "fixed sparse Theorem-1 and trained "
              "Theorem-5 modules alternating, eq.-3 feedback", True, SPARSE_FLAGS,
              check_sparse_feasible),
    ModelSpec("hybrid-combo", build_kind("svd", hybrid=True), "a fast Theorem-5 input module "
              "feeding (hierarchy) slower Theorem-5 memory modules coupled by eq. 3", True,
              COMBO_FLAGS),
    ModelSpec("areas", build_areas_model, "a certified network of areas from an areas file "
              "(--areas FILE; docs/neuro.md), read out at every step (trial tasks)", True,
              AREAS_FLAGS, tasks=frozenset({TRIALS})),
    ModelSpec("lstm", build_lstm, "one-layer LSTM", False, BASELINE_FLAGS,
              tasks=frozenset({SEQUENCE})),
    ModelSpec("gru", build_gru, "one-layer GRU", False, BASELINE_FLAGS,
              tasks=frozenset({SEQUENCE})),
    ModelSpec("rnn", build_rnn, "one-layer tanh RNN", False, BASELINE_FLAGS,
              tasks=frozenset({SEQUENCE})),
    ModelSpec("lipschitz", build_lipschitz, "Lipschitz RNN (Erichson et al. 2021)", False,
              BASELINE_FLAGS, tasks=frozenset({SEQUENCE})),
    ModelSpec("antisymmetric", build_antisymmetric, "Antisymmetric RNN (Chang et al. 2019)",
              False, BASELINE_FLAGS, tasks=frozenset({SEQUENCE})),
    ModelSpec("ctrnn", build_ctrnn, "NeuroGym's continuous-time RNN baseline (hidden units, "
              "alpha = dt / ctrnn_tau; trial tasks), no certificate", False, CTRNN_FLAGS,
              tasks=frozenset({TRIALS})),
)}
COMBO_MODELS = tuple(name for name, s in MODELS.items() if "modules" in s.flags)


def discrete_maps() -> tuple[str, ...]:
    """The discrete maps the engine runs (``--method`` choices)."""
    from .. import engine

    return tuple(engine.METHODS)


def default_map() -> str:
    """The engine's default discrete map (the one ``SequenceClassifier`` uses)."""
    from .. import engine

    return engine.DEFAULT_METHOD


def model_spec(name: str) -> ModelSpec:
    """``MODELS[name]`` with the common wording for a bad name."""
    choice("model", name, MODELS)
    return MODELS[name]


def task_kind(task: str) -> str:
    """:data:`TRIALS` for a trial task (per-step targets), else :data:`SEQUENCE`."""
    from ..data.registry import is_trial_task

    return TRIALS if is_trial_task(task) else SEQUENCE


def check_model(cfg: Any) -> None:
    """The model's cheap pre-checks (the kind of task it learns; e.g. a hopeless Theorem-1
    search), before building."""
    spec = model_spec(cfg.model)
    kind = task_kind(cfg.task)
    if kind not in spec.tasks:
        fits = [k for k, s in MODELS.items() if kind in s.tasks]
        what = ("trial tasks (per-step targets)" if kind == TRIALS
                else "sequence-classification tasks")
        raise ValueError(f"model '{spec.name}' cannot learn task '{cfg.task}': for "
                         f"{what} choose one of {fits}")
    if spec.check is not None:
        spec.check(cfg)


def build_model(cfg: Any, input_size: int, num_classes: int) -> nn.Module:
    """``MODELS[cfg.model].builder(cfg, input_size, num_classes)``, after the model's pre-check;
    on a trial task a combo net is read out at every step (a
    :class:`~combonet.models.perstep.PerStepModel` of the same network). A builder's refusal is
    re-raised naming the model and the settings it read."""
    spec = model_spec(cfg.model)
    check_model(cfg)
    try:
        model = spec.builder(cfg, input_size, num_classes)
        if isinstance(model, SequenceClassifier) and task_kind(cfg.task) == TRIALS:
            model = per_step_of(model, input_size, num_classes)
        return model
    except ValueError as err:
        if isinstance(err, ImportError):  # a missing optional extra says how to install it
            raise
        shown = [k for k in ("modules", "units", "density", "magnitude", "hidden")
                 if k in spec.flags]
        settings = ", ".join(f"{k}={getattr(cfg, k):g}" for k in shown)
        where = f" with {settings}" if settings else \
            (" from its areas file" if "areas" in spec.flags else "")
        text = str(err).rstrip(". ")
        if "Theorem 1" in text and "lower" not in text:
            text += "; lower --magnitude or --density"
        raise ValueError(f"cannot build {spec.name}{where}: {text}") from None


def is_combo(model: nn.Module) -> bool:
    """Whether ``model`` is a network of networks that :func:`combonet.certify` can check
    (a sequence classifier or a per-step model: ``model.network``, ``.dt``, ``.method``)."""
    return isinstance(model, (SequenceClassifier, PerStepModel))


def count_parameters(model: nn.Module) -> dict[str, Any]:
    """Trainable parameters, counted the way the paper counts them.

    ``stored`` is the number of trainable tensor entries. ``total`` leaves out entries that a
    fixed mask keeps at zero: an eq.-3 :class:`~combonet.Feedback` stores ``B`` as an ``N x N``
    tensor but only its block-lower pairs are free (``L_ij`` and ``L_ji`` both come from
    ``B_ij``, ``i > j``), so a ``p x n`` Sparse Combo Net with input size ``d`` and ``c`` classes
    has ``p (p - 1) / 2 n^2 + (d + 1) N + (N + 1) c`` parameters, ``N = p n``. For the paper's
    16x32 psMNIST network that is 122,880 + 1,024 + 5,130 = **129,034** (the paper: "130K");
    ``stored`` is 268,298. SVD modules are counted by their stored free parameters (the
    orthogonal factors' unconstrained ``n x n`` tensors), not by the manifold's dimension.
    """
    free: dict[int, int] = {}
    for mod in model.modules():
        if isinstance(mod, Combination) and mod.rank is None:
            free[id(mod.b)] = int((mod.mask != 0).sum())
        elif isinstance(mod, TrainableSparseModule):
            free[id(mod.raw)] = int((mod.mask != 0).sum())
    stored, total, parts = 0, 0, {}
    for name, par in model.named_parameters():
        if not par.requires_grad:
            continue
        count = free.get(id(par), par.numel())
        stored += par.numel()
        total += count
        top = name.split(".")[0]
        parts[top] = parts.get(top, 0) + count
    out: dict[str, Any] = {"total": total, "stored": stored, "by_part": parts}
    if free:
        out["note"] = ("coupling B counted over its free (block-lower, unmasked) entries; "
                       "'stored' includes the zeros of the N x N tensor")
    return out


__all__ = ["AREAS_FLAGS", "BASELINE_FLAGS", "COMBO_FLAGS", "COMBO_MODELS", "CTRNN_FLAGS",
           "MODELS", "MODEL_FLAGS", "SEQUENCE", "SPARSE_FLAGS", "TRIALS", "ModelSpec",
           "areas_spec", "build_areas_model", "build_ctrnn", "build_model", "check_model",
           "check_sparse_feasible", "count_parameters", "default_map", "discrete_maps",
           "is_combo", "model_spec", "task_kind", "theorem1_pass_bound"]
