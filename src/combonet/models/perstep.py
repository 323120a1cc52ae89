"""Per-step outputs for cognitive tasks: a readout at every step, the masked per-step loss, and
NeuroGym's performance measure (the decision at the decision period is correct).

:class:`PerStepModel` is ``logits_t = R x_t + c`` for the network of networks
``tau dx/dt = -x + W phi(x) + L x + U s(t) + b`` (eq. 2); the network keeps its certificate
(``combonet.certify(model.network, dt=model.dt, method=model.method)``).
:class:`CTRNN` is NeuroGym's usual continuous-time RNN baseline (no certificate).

Both accept (batch, steps, features) inputs and return (batch, steps, actions) logits; the data
layer's :class:`~combonet.data.neurogym.Trials` supplies targets, masks and tasks.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .._validate import positive_int
from ..engine.maps import DEFAULT_METHOD, check_method
from ..modules import ContractingSystem

__all__ = [
    "CTRNN",
    "PerStepModel",
    "Performance",
    "decision_performance",
    "decisions",
    "evaluate_trials",
    "masked_cross_entropy",
    "pack_targets",
    "packed_accuracy",
    "packed_loss",
    "per_step_of",
]


def _check_inputs(inputs: Tensor, size: int) -> None:
    if inputs.dim() != 3 or inputs.shape[2] != size:
        raise ValueError(f"inputs must have shape (batch, steps, {size}), "
                         f"got {tuple(inputs.shape)}")


class PerStepModel(nn.Module):
    """Encoder -> any :class:`~combonet.ContractingSystem` -> linear readout at every step.

    ``input_mask`` ((N, input_size), 0/1) restricts which units receive which input channels and
    ``output_mask`` ((N,), 0/1) which units drive the readout (an area map's masks, see
    :mod:`combonet.areas`); both default to all ones. The network runs the map ``method`` with
    step ``dt`` through its public ``forward(drive, all_states=True)``.
    """

    def __init__(self, network: ContractingSystem, input_size: int, num_actions: int, *,
                 dt: float = 0.1, method: str = DEFAULT_METHOD,
                 input_mask: Tensor | None = None,
                 output_mask: Tensor | None = None) -> None:
        super().__init__()
        if not isinstance(network, ContractingSystem):
            raise ValueError(f"network must be a combonet module or combination, got {network!r}")
        check_method(method)
        alpha = float(dt) / network.tau
        if not 0 < alpha <= 1:
            raise ValueError(f"dt / tau must lie in (0, 1], got dt={dt}, tau={network.tau}")
        self.network = network
        self.input_size = positive_int("input_size", input_size)
        self.num_actions = positive_int("num_actions", num_actions)
        self.dt, self.method = float(dt), method
        n = network.n
        self.encoder = nn.Linear(input_size, n)
        self.readout = nn.Linear(n, num_actions)
        self.register_buffer("input_mask", self._mask("input_mask", input_mask, (n, input_size)))
        self.register_buffer("output_mask", self._mask("output_mask", output_mask, (n,)))
        with torch.no_grad():
            self.encoder.weight.mul_(self.input_mask)

    @staticmethod
    def _mask(name: str, mask: Tensor | None, shape: tuple[int, ...]) -> Tensor:
        if mask is None:
            return torch.ones(shape)
        mask = torch.as_tensor(mask, dtype=torch.get_default_dtype())
        if tuple(mask.shape) != shape:
            raise ValueError(f"{name} must have shape {shape}, got {tuple(mask.shape)}")
        return (mask != 0).to(torch.get_default_dtype())

    def drive(self, inputs: Tensor) -> Tensor:
        """``U s_t + b`` (batch, steps, N), with ``U`` masked to the declared input pathways."""
        _check_inputs(inputs, self.input_size)
        weight = self.encoder.weight * self.input_mask
        # step-major storage: the engine reads each step's drive from one contiguous block
        return F.linear(inputs.transpose(0, 1), weight, self.encoder.bias).transpose(0, 1)

    def states(self, inputs: Tensor, x0: Tensor | None = None) -> Tensor:
        """Hidden states (batch, steps, N) in the network's original coordinates."""
        return self.network(self.drive(inputs), x0, dt=self.dt, method=self.method,
                            all_states=True)

    def logits(self, states: Tensor) -> Tensor:
        """The readout of states (batch, steps, N): (batch, steps, actions)."""
        return self.readout(states * self.output_mask)

    def forward(self, inputs: Tensor) -> Tensor:
        return self.logits(self.states(inputs))


class CTRNN(nn.Module):
    """NeuroGym's continuous-time RNN baseline: ``h <- (1 - alpha) h + alpha relu(W_in x + W h
    + b)`` with ``alpha = dt / tau`` (NeuroGym's recipe: 256 units, tau = dt = 100 ms), linear
    readout at every step. No stability guarantee (no certificate)."""

    has_certificate = False

    def __init__(self, input_size: int, num_actions: int, hidden_size: int = 256, *,
                 tau: float = 100.0, dt: float = 100.0) -> None:
        super().__init__()
        self.input_size = positive_int("input_size", input_size)
        self.num_actions = positive_int("num_actions", num_actions)
        self.hidden_size = positive_int("hidden_size", hidden_size)
        alpha = float(dt) / float(tau)
        if not 0 < alpha <= 1:
            raise ValueError(f"dt / tau must lie in (0, 1], got dt={dt}, tau={tau}")
        self.tau, self.dt, self.alpha = float(tau), float(dt), alpha
        self.input2h = nn.Linear(input_size, hidden_size)
        self.h2h = nn.Linear(hidden_size, hidden_size)
        self.readout = nn.Linear(hidden_size, num_actions)

    def states(self, inputs: Tensor, h0: Tensor | None = None) -> Tensor:
        """Hidden states (batch, steps, hidden)."""
        _check_inputs(inputs, self.input_size)
        drive = self.input2h(inputs)
        h = inputs.new_zeros(inputs.shape[0], self.hidden_size) if h0 is None else h0
        out = []
        for t in range(inputs.shape[1]):
            h = (1 - self.alpha) * h + self.alpha * torch.relu(drive[:, t] + self.h2h(h))
            out.append(h)
        return torch.stack(out, 1)

    def logits(self, states: Tensor) -> Tensor:
        return self.readout(states)

    def forward(self, inputs: Tensor) -> Tensor:
        return self.logits(self.states(inputs))


# -- loss and performance ----------------------------------------------------------------------
def masked_cross_entropy(logits: Tensor, targets: Tensor, weights: Tensor) -> Tensor:
    """``sum_bt w_bt CE(logits_bt, targets_bt) / sum_bt w_bt`` over (batch, steps).

    ``weights`` is a bool mask or non-negative weights, e.g. ``trials.mask`` (scored steps
    only) or ``trials.loss_weights()``.
    """
    if logits.dim() != 3 or tuple(targets.shape) != tuple(logits.shape[:2]):
        raise ValueError(f"logits (batch, steps, actions) and targets (batch, steps) must agree, "
                         f"got {tuple(logits.shape)} and {tuple(targets.shape)}")
    if tuple(weights.shape) != tuple(targets.shape):
        raise ValueError(f"weights must have shape {tuple(targets.shape)}, "
                         f"got {tuple(weights.shape)}")
    w = weights.to(logits.dtype)
    total = w.sum()
    if total <= 0:
        raise ValueError("weights select no step: nothing to train on")
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                         reduction="none").reshape(targets.shape)
    return (ce * w).sum() / total


def decisions(logits: Tensor, trials: Any) -> Tensor:
    """(batch,) the model's action (argmax) at the last scored step of each trial."""
    if not bool(trials.mask.any(1).all()):
        empty = (~trials.mask.any(1)).nonzero().flatten().tolist()
        raise ValueError(f"trials {empty[:5]} have no scored (mask) step; every trial needs "
                         "a decision period")
    step = trials.decision_step.to(logits.device)
    last = logits.gather(1, step[:, None, None].expand(-1, 1, logits.shape[2]))[:, 0]
    return last.argmax(-1)


@dataclass
class Performance:
    """NeuroGym's performance: fraction of trials whose decision is correct, overall and per
    task (``per_task[name]``, with ``counts[name]`` trials each)."""

    accuracy: float
    per_task: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    trials: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"accuracy": self.accuracy, "per_task": dict(self.per_task),
                "counts": dict(self.counts), "trials": self.trials}


def _correct(logits: Tensor, trials: Any, require_fixation: bool) -> Tensor:
    ok = decisions(logits, trials).cpu() == trials.choice.cpu()
    if require_fixation:
        # Yang et al. (2019)'s stricter rule: also hold fixation (action 0) at every step
        # before the decision period where the target is fixation
        actions = logits.argmax(-1).cpu()
        first = torch.where(trials.mask, torch.arange(trials.steps).expand_as(trials.mask),
                            trials.steps).min(1).values
        before = torch.arange(trials.steps)[None, :] < first[:, None]
        fixate = before & (trials.targets.cpu() == 0)
        ok = ok & ~((actions != 0) & fixate).any(1)
    return ok


def decision_performance(logits: Tensor, trials: Any, *,
                         require_fixation: bool = False) -> Performance:
    """The fraction of trials whose action at the last scored step equals the target there
    (as NeuroGym's supervised examples score it), overall and per task."""
    ok = _correct(logits, trials, require_fixation)
    return _summarise([ok], [trials.task.cpu()], trials.task_names)


def _summarise(oks: list[Tensor], tasks: list[Tensor], names: tuple[str, ...]) -> Performance:
    ok, task = torch.cat(oks).float(), torch.cat(tasks)
    per_task, counts = {}, {}
    for k, name in enumerate(names):
        sel = task == k
        if sel.any():
            per_task[name] = float(ok[sel].mean())
            counts[name] = int(sel.sum())
    return Performance(float(ok.mean()) if ok.numel() else float("nan"), per_task, counts,
                       int(ok.numel()))


@torch.no_grad()
def evaluate_trials(model: nn.Module, trials: Any, *, batch_size: int = 256,
                    other_weight: float = 0.2, require_fixation: bool = False
                    ) -> tuple[float, Performance]:
    """Mean masked per-step loss (weights ``trials.loss_weights(other_weight)``) and
    :class:`Performance` of ``model`` on ``trials``, in batches."""
    was_training = model.training
    model.eval()
    try:
        oks, tasks, loss_sum, weight_sum = [], [], 0.0, 0.0
        batches: Iterable[Any] = trials.batches(batch_size)
        for batch in batches:
            logits = model(batch.inputs)
            w = batch.loss_weights(other_weight)
            loss_sum += float(masked_cross_entropy(logits, batch.targets, w)) * float(w.sum())
            weight_sum += float(w.sum())
            oks.append(_correct(logits, batch, require_fixation))
            tasks.append(batch.task.cpu())
    finally:
        model.train(was_training)
    return loss_sum / weight_sum, _summarise(oks, tasks, trials.task_names)


# -- the training loop's view: targets packed into one tensor -----------------------------------
#: Channels of packed targets (``pack_targets``): target action, loss weight, scored step.
TARGET, WEIGHT, SCORED = 0, 1, 2


def pack_targets(trials: Any, other_weight: float = 0.2) -> Tensor:
    """(batch, steps, 3) float32: the target action, the loss weight
    (``trials.loss_weights(other_weight)``) and the scored-step mask of every step, so that a
    generic loop can carry per-step targets as one "label" tensor per trial
    (:func:`packed_loss`, :func:`packed_accuracy`)."""
    return torch.stack([trials.targets.float(), trials.loss_weights(other_weight),
                        trials.mask.float()], -1)


def _check_packed(logits: Tensor, packed: Tensor) -> None:
    if packed.dim() != 3 or packed.shape[2] != 3 or tuple(packed.shape[:2]) != \
            tuple(logits.shape[:2]):
        raise ValueError(f"packed targets must have shape (batch, steps, 3) matching the logits "
                         f"{tuple(logits.shape)}, got {tuple(packed.shape)}")


def packed_loss(logits: Tensor, packed: Tensor) -> Tensor:
    """:func:`masked_cross_entropy` of logits (batch, steps, actions) against packed targets."""
    _check_packed(logits, packed)
    return masked_cross_entropy(logits, packed[..., TARGET].long(), packed[..., WEIGHT])


def packed_accuracy(logits: Tensor, packed: Tensor) -> tuple[float, float]:
    """``(correct, trials)``: NeuroGym's performance measure (the action at the last scored
    step equals the target there) on packed targets."""
    _check_packed(logits, packed)
    scored = packed[..., SCORED] > 0
    if not bool(scored.any(1).all()):
        raise ValueError("every trial needs a scored (decision) step")
    steps = torch.arange(scored.shape[1], device=scored.device).expand_as(scored)
    last = torch.where(scored, steps, -1).max(1).values
    pick = last[:, None]
    action = logits.gather(1, pick[:, :, None].expand(-1, 1, logits.shape[2]))[:, 0].argmax(-1)
    target = packed[..., TARGET].gather(1, pick)[:, 0].long()
    return float((action == target).sum()), float(len(target))


def per_step_of(classifier: Any, input_size: int, num_actions: int) -> PerStepModel:
    """The per-step model of a :class:`~combonet.models.SequenceClassifier`'s network (same
    network, step ``dt`` and map; its own encoder and a readout at every step; the
    classifier's per-unit input mask, if any, kept)."""
    network = classifier.network
    unit_mask = getattr(classifier, "input_mask", None)
    input_mask = None if unit_mask is None else \
        unit_mask.detach().float()[:, None].expand(network.n, input_size).clone()
    return PerStepModel(network, input_size, num_actions, dt=classifier.dt,
                        method=classifier.method, input_mask=input_mask)
