"""What ``combonet bench`` runs side by side, all mapping (batch, steps, 1) inputs to logits.

* ``engine``  -- ``model(inputs)``: the :class:`~combonet.models.SequenceClassifier` itself.
* ``careful`` -- :class:`CarefulLoop`, the same model (same weights) as a careful user writes it
  in plain PyTorch: ``W = network.weight()``, ``L = network.coupling()`` and the Cayley matrix
  ``C = (I - a/2 L)^{-1} (I + a/2 L)`` built ONCE per forward pass, the input layer applied to
  all steps at once and its per-step views made once (``unbind``), a plain autograd loop
  ``x+ = C ((1 - a) x + a (W phi(x) + u))`` (cayley) or ``x+ = x + a (-x + W phi(x) + L x + u)``
  (euler), ``a = dt / tau``. The main reference.
* ``rebuild`` -- :class:`RebuildLoop`, the same model with ``W`` and ``L`` (eq. 3; and ``C``)
  rebuilt at EVERY step and the input layer applied per step: how the authors' public code
  runs it. Kept to show where the "17-22x" of earlier versions came from.
* ``gru`` / ``lstm`` -- ``torch.nn.GRU`` / ``nn.LSTM`` (one layer) plus a linear head, with the
  hidden size whose parameter count (:func:`combonet.models.count_parameters`, ``total``) is
  closest to the combo net's (:func:`matched_hidden`).

Only the public surface of the core is used (``weight()``, ``coupling()``, ``tau``,
``activation``, ``dt``, ``method``, ``encoder``, ``readout``), so the loops stay independent
of the engine they are compared with.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..models import (
    GRUClassifier,
    LSTMClassifier,
    SequenceClassifier,
    count_parameters,
    sparse_combo_net,
    svd_combo_net,
)

COMBO_MODELS = ("sparse-combo", "svd-combo")
#: gates of each torch cell (weights per gate: h*d + h*h, biases 2h)
GATES = {"gru": 3, "lstm": 4}


def build_combo(name: str, modules: int, units: int, *, density: float, magnitude: float,
                method: str, dt: float, seed: int, input_size: int = 1,
                num_classes: int = 10, coupling_rank: int | None = None) -> SequenceClassifier:
    """The benchmarked combo net: ``sparse_combo_net`` or ``svd_combo_net``
    (``coupling_rank`` is passed on to the builder only when given)."""
    kw = dict(input_size=input_size, num_classes=num_classes, dt=dt, method=method, seed=seed)
    if coupling_rank is not None:
        kw["coupling_rank"] = coupling_rank
    try:
        if name == "sparse-combo":
            return sparse_combo_net(modules, units, density=density, magnitude=magnitude, **kw)
        if name == "svd-combo":
            return svd_combo_net(modules, units, **kw)
    except TypeError as exc:
        if "coupling_rank" not in str(exc):
            raise
        raise ValueError("--coupling-rank: this build's model builders take no coupling_rank "
                         "option yet; leave --coupling-rank out") from None
    raise ValueError(f'Invalid model "{name}". Must be one of {list(COMBO_MODELS)}')


def cayley_matrix(lmat: torch.Tensor, alpha: float) -> torch.Tensor:
    """``C = (I - alpha/2 L)^{-1} (I + alpha/2 L)`` (one linear solve)."""
    eye = torch.eye(lmat.shape[0], dtype=lmat.dtype, device=lmat.device)
    return torch.linalg.solve(eye - alpha / 2 * lmat, eye + alpha / 2 * lmat)


def _parts(model: SequenceClassifier) -> tuple[nn.Module, float, object]:
    net = model.network
    return net, float(model.dt) / net.tau, net.activation.fn


class CarefulLoop(nn.Module):
    """``model`` (shared weights) as a careful user writes it (module docstring)."""

    def __init__(self, model: SequenceClassifier) -> None:
        super().__init__()
        self.model = model

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        model = self.model
        net, alpha, phi = _parts(model)
        wt = net.weight().T
        lmat = net.coupling()
        us = model.encoder(inputs.transpose(0, 1)).unbind(0)  # (batch, N) per step, once
        x = inputs.new_zeros(inputs.shape[0], net.n)
        if lmat is None:
            for u in us:
                x = (1 - alpha) * x + alpha * (phi(x) @ wt + u)
        elif model.method == "cayley":
            ct = cayley_matrix(lmat, alpha).T
            for u in us:
                x = ((1 - alpha) * x + alpha * (phi(x) @ wt + u)) @ ct
        else:
            lt = lmat.T
            for u in us:
                x = x + alpha * (-x + phi(x) @ wt + x @ lt + u)
        return model.readout(x)


class RebuildLoop(nn.Module):
    """``model`` (shared weights) with ``W``, ``L`` (and ``C``) rebuilt at every step and the
    input layer applied per step, as the authors' public code runs it (module docstring)."""

    def __init__(self, model: SequenceClassifier) -> None:
        super().__init__()
        self.model = model

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        model = self.model
        net, alpha, phi = _parts(model)
        x = inputs.new_zeros(inputs.shape[0], net.n)
        for t in range(inputs.shape[1]):
            w, lmat = net.weight(), net.coupling()
            u = model.encoder(inputs[:, t])
            if lmat is None:
                x = (1 - alpha) * x + alpha * (phi(x) @ w.T + u)
            elif model.method == "cayley":
                c = cayley_matrix(lmat, alpha)
                x = ((1 - alpha) * x + alpha * (phi(x) @ w.T + u)) @ c.T
            else:
                x = x + alpha * (-x + phi(x) @ w.T + x @ lmat.T + u)
        return model.readout(x)


def rnn_parameters(cell: str, hidden: int, input_size: int, num_classes: int) -> int:
    """Trainable parameters of a one-layer torch ``cell`` of ``hidden`` units plus a linear
    head: ``gates (h d + h^2 + 2 h) + (h + 1) c``."""
    g = GATES[cell]
    return g * (hidden * input_size + hidden * hidden + 2 * hidden) + (hidden + 1) * num_classes


def matched_hidden(cell: str, target: int, input_size: int, num_classes: int) -> int:
    """The hidden size whose parameter count (:func:`rnn_parameters`) is closest to
    ``target`` (the smaller on a tie)."""
    if cell not in GATES:
        raise ValueError(f'Invalid cell "{cell}". Must be one of {sorted(GATES)}')
    g = GATES[cell]
    # g h^2 + (g (d + 2) + c) h + c = target
    lin = g * (input_size + 2) + num_classes
    root = (-lin + math.sqrt(lin * lin + 4 * g * max(target - num_classes, 0))) / (2 * g)
    cands = {max(1, math.floor(root) + k) for k in (-1, 0, 1, 2)}
    return min(cands, key=lambda h: (abs(rnn_parameters(cell, h, input_size, num_classes)
                                         - target), h))


def matched_rnn(cell: str, target: int, input_size: int, num_classes: int) -> nn.Module:
    """``nn.GRU`` / ``nn.LSTM`` + linear head with about ``target`` parameters."""
    hidden = matched_hidden(cell, target, input_size, num_classes)
    cls = {"gru": GRUClassifier, "lstm": LSTMClassifier}[cell]
    return cls(input_size, hidden, num_classes)


def parameter_count(model: nn.Module) -> int:
    """Parameters counted the paper's way (``count_parameters(model)["total"]``)."""
    return int(count_parameters(model)["total"])
