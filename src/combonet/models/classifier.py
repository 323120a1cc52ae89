"""Sequence classifiers: input layer -> network of networks -> linear readout (Section 4)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .._validate import positive_int
from ..engine import run
from ..engine.maps import DEFAULT_METHOD, check_method, step_fraction
from ..modules.base import ContractingSystem
from ..snapshot import Explicit

READOUTS = ("last", "mean", "attention", "max")


class SequenceClassifier(nn.Module):
    """``logits = R x_T + c`` for ``T dx/dt = -x + W phi(x) + L x + U s(t) + b`` (eq. 2).

    One snapshot of the network per forward pass; the change to running coordinates
    ``y = S x`` and the step factor are folded into the input layer (``U_run = A S U``) and
    the readout (``R_run = R S^{-1}``), so the engine's drive is one matrix product over all
    steps. ``readout="mean"`` averages all states; ``"attention"`` reads
    ``sum_t w_t x_t`` with ``w = softmax_t(q . x_t)`` for a learned ``q`` (a learned
    combination of all states); ``"max"`` reads each unit's largest state over time (global
    max pooling in time, as a temporal convolutional network's readout). ``input_mask``
    (N booleans) restricts which units the input drives (the rows of ``U`` outside it are
    zero). The readouts act on the states only, so the certificate of the network is unchanged.
    """

    def __init__(self, network: ContractingSystem, input_size: int, num_classes: int, *,
                 dt: float = 0.1, method: str = DEFAULT_METHOD, readout: str = "last",
                 input_mask: Sequence[bool] | torch.Tensor | None = None) -> None:
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
        if readout == "attention":
            self.query = nn.Parameter(torch.zeros(network.n))
        mask = torch.ones(network.n) if input_mask is None else \
            torch.as_tensor(input_mask, dtype=torch.float32)
        if mask.shape != (network.n,):
            raise ValueError(f"input_mask must have {network.n} entries (one per unit), got "
                             f"shape {tuple(mask.shape)}")
        self.register_buffer("input_mask", mask.to(torch.get_default_dtype()),
                             persistent=False)
        self._held: Explicit | None = None

    def _check(self, inputs: torch.Tensor) -> None:
        if not isinstance(inputs, torch.Tensor) or inputs.dim() != 3 \
                or inputs.shape[2] != self.input_size:
            shape = tuple(inputs.shape) if isinstance(inputs, torch.Tensor) else type(inputs)
            raise ValueError(
                f"inputs must have shape (batch, steps, {self.input_size}), got {shape}"
            )

    def snapshot(self) -> Explicit:
        """The network's explicit matrices for this pass (see :mod:`combonet.snapshot`), built
        from the current tensors (inside :meth:`one_snapshot`: that block's one snapshot)."""
        if self._held is not None:
            return self._held
        w = self.encoder.weight
        return self.network.explicit(dt=self.dt, method=self.method, dtype=w.dtype,
                                     device=w.device)

    @contextlib.contextmanager
    def one_snapshot(self) -> Iterator[Explicit]:
        """Every pass inside the block runs one snapshot, built on entry (in the spirit of
        ``torch.nn.utils.parametrize.cached()``): for evaluation, where the weights do not
        change, it saves rebuilding ``W``, ``L`` and the Cayley matrix for every batch. The
        weights must not be changed inside the block."""
        if self._held is not None:
            raise RuntimeError("one_snapshot() blocks do not nest")
        self._held = self.snapshot()
        try:
            yield self._held
        finally:
            self._held = None

    def running_states(self, inputs: torch.Tensor, all_states: bool = False
                       ) -> tuple[torch.Tensor, Explicit]:
        """States in running coordinates and the snapshot that produced them."""
        self._check(inputs)
        snap = self.snapshot()
        scale = snap.drive_scale() * self.input_mask
        # Step-major storage: (batch, steps, N) view of a (steps, batch, N) tensor, so that the
        # engine reads each step's drive from one contiguous block.
        drive = F.linear(inputs.transpose(0, 1), self.encoder.weight * scale[:, None],
                         self.encoder.bias * scale).transpose(0, 1)
        return run(snap, drive, None, all_states=all_states), snap

    def states(self, inputs: torch.Tensor, all_states: bool = False) -> torch.Tensor:
        """Hidden states (original coordinates) for ``inputs`` (batch, steps, input_size)."""
        ys, snap = self.running_states(inputs, all_states)
        return snap.from_running(ys)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        mode = self.readout_mode
        ys, snap = self.running_states(inputs, all_states=mode != "last")
        if mode == "mean":
            feats = ys.mean(1)
        elif mode == "max":  # s > 0: max_t x_t = (max_t y_t) / s
            feats = ys.amax(1)
        elif mode == "attention":  # scores q . x_t = (q / s) . y_t
            w = torch.softmax(ys @ (self.query / snap.scale), dim=1)
            feats = (w[..., None] * ys).sum(1)
        else:
            feats = ys
        return F.linear(feats, self.readout.weight / snap.scale[None, :], self.readout.bias)
