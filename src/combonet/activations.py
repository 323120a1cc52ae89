"""Activations with a known slope bound ``0 <= phi' <= g`` (paper eq. 1)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

Fn = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Activation:
    """A monotone activation ``phi``, its derivative and its maximal slope ``g``."""

    name: str
    fn: Fn
    slope: Fn
    g: float
    #: phi(c x) = c phi(x) for c > 0 (ReLU): coordinates can be rescaled exactly
    positively_homogeneous: bool

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


def _relu_slope(x: torch.Tensor) -> torch.Tensor:
    return (x > 0).to(x.dtype)


def _tanh_slope(x: torch.Tensor) -> torch.Tensor:
    return 1 - torch.tanh(x) ** 2


def _softplus_slope(x: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(x)


ACTIVATIONS: dict[str, Activation] = {
    "relu": Activation("relu", torch.relu, _relu_slope, 1.0, True),
    "tanh": Activation("tanh", torch.tanh, _tanh_slope, 1.0, False),
    "softplus": Activation("softplus", torch.nn.functional.softplus, _softplus_slope, 1.0, False),
}


def get_activation(name: str | Activation) -> Activation:
    """Look up an activation by name (``relu``, ``tanh``, ``softplus``)."""
    if isinstance(name, Activation):
        return name
    if name not in ACTIVATIONS:
        raise ValueError(f'Unknown activation "{name}". Must be one of {sorted(ACTIVATIONS)}')
    return ACTIVATIONS[name]
