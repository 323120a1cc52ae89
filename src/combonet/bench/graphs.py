"""``careful-graph``: the careful loop with its per-step recurrence captured in CUDA graphs.

On a GPU the per-step loop is launch-bound (a few small kernels per step). Here the whole
recurrence ``(W, K, drive) -> x_T`` of :class:`~.contenders.CarefulLoop` -- forward and
backward -- is captured once per input shape with ``torch.cuda.make_graphed_callables`` and
replayed; ``W``, ``L``, the Cayley matrix and the encoder run eagerly outside the graph, so
gradients reach the model's parameters as in the careful loop. CUDA only; the bench checks
its logits and gradients against the careful loop like every other contender.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..models import SequenceClassifier
from .contenders import cayley_matrix


def _recurrence(alpha: float, phi: Callable[[torch.Tensor], torch.Tensor], mode: str
                ) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """``(W, K, drive (steps, batch, N)) -> x_T``: the careful loop's recurrence, with
    ``K = C`` (cayley), ``L`` (euler) or unused (no coupling)."""

    def run(w: torch.Tensor, k: torch.Tensor, drive: torch.Tensor) -> torch.Tensor:
        wt, kt = w.T, k.T  # k is unused (allow_unused_input) without a coupling
        x = drive.new_zeros(drive.shape[1], drive.shape[2])
        for u in drive.unbind(0):
            if mode == "cayley":
                x = ((1 - alpha) * x + alpha * (phi(x) @ wt + u)) @ kt
            elif mode == "euler":
                x = x + alpha * (-x + phi(x) @ wt + x @ kt + u)
            else:
                x = (1 - alpha) * x + alpha * (phi(x) @ wt + u)
        return x

    return run


class GraphedCarefulLoop(nn.Module):
    """:class:`~.contenders.CarefulLoop` with its recurrence replayed from CUDA graphs
    (captured at the first call, once per input shape; module docstring)."""

    def __init__(self, model: SequenceClassifier) -> None:
        super().__init__()
        self.model = model
        self._graphed: dict[tuple[int, ...], Callable[..., torch.Tensor]] = {}

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if inputs.device.type != "cuda":
            raise ValueError(f"careful-graph needs CUDA inputs, got device {inputs.device}")
        model = self.model
        net = model.network
        alpha = float(model.dt) / net.tau
        w, lmat = net.weight(), net.coupling()
        if lmat is None:
            mode, k = "plain", torch.zeros_like(w)
        elif model.method == "cayley":
            mode, k = "cayley", cayley_matrix(lmat, alpha)
        else:
            mode, k = "euler", lmat
        drive = model.encoder(inputs.transpose(0, 1)).contiguous()  # (steps, batch, N)
        key = (*drive.shape, w.requires_grad, k.requires_grad, drive.requires_grad)
        if key not in self._graphed:
            sample = tuple(t.detach().clone().requires_grad_(t.requires_grad)
                           for t in (w, k, drive))
            fn = _recurrence(alpha, net.activation.fn, mode)
            self._graphed[key] = torch.cuda.make_graphed_callables(
                fn, sample, allow_unused_input=True)
        return model.readout(self._graphed[key](w, k, drive))
