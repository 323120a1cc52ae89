"""Sequence classifiers: input layer -> network of networks -> linear readout (Section 4)."""

from __future__ import annotations

import torch
from torch import nn

from .._validate import positive_int
from ..engine.discretise import check_method, step_fraction
from ..modules.base import ContractingSystem

READOUTS = ("last", "mean")


class SequenceClassifier(nn.Module):
    """``logits = R x_T + c`` for ``tau dx/dt = -x + W phi(x) + L x + U s(t) + b`` (eq. 2).

    The input projection ``U s + b`` of all steps is one matrix product; the recurrence runs in
    the engine with step ``dt`` and map ``method``; ``readout="mean"`` averages all states.
    """

    def __init__(self, network: ContractingSystem, input_size: int, num_classes: int, *,
                 dt: float = 0.1, method: str = "cayley", readout: str = "last") -> None:
        super().__init__()
        if not isinstance(network, ContractingSystem):
            raise ValueError(f"network must be a combonet module or combination, got {network!r}")
        self.network = network
        self.input_size = positive_int("input_size", input_size)
        self.num_classes = positive_int("num_classes", num_classes)
        self.method = check_method(method)
        step_fraction(dt, network.tau)
        self.dt = float(dt)
        if readout not in READOUTS:
            raise ValueError(f'Invalid readout "{readout}". Must be one of {list(READOUTS)}')
        self.readout_mode = readout
        self.encoder = nn.Linear(input_size, network.n)
        self.readout = nn.Linear(network.n, num_classes)

    def states(self, inputs: torch.Tensor, all_states: bool = False) -> torch.Tensor:
        """Hidden states for ``inputs`` (batch, steps, input_size)."""
        if inputs.dim() != 3 or inputs.shape[2] != self.input_size:
            raise ValueError(
                f"inputs must have shape (batch, steps, {self.input_size}), "
                f"got {tuple(inputs.shape)}"
            )
        # Step-major storage: (batch, steps, N) view of a (steps, batch, N) tensor, so that the
        # engine reads each step's drive from one contiguous block.
        drive = self.encoder(inputs.transpose(0, 1)).transpose(0, 1)
        return self.network(drive, dt=self.dt, method=self.method, all_states=all_states)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.readout_mode == "mean":
            return self.readout(self.states(inputs, all_states=True).mean(1))
        return self.readout(self.states(inputs))
