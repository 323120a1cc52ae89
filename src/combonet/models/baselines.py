"""Baselines of Table 1: LSTM, GRU, a tanh RNN, Lipschitz RNN and antisymmetric RNN.

Every baseline maps ``inputs`` (batch, steps, features) to logits with a linear readout of the
last hidden state, like :class:`~combonet.models.SequenceClassifier`. None of them carries a
contraction certificate.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .._validate import positive, positive_int

CELLS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


def _check_inputs(inputs: torch.Tensor, input_size: int) -> None:
    if inputs.dim() != 3 or inputs.shape[2] != input_size:
        raise ValueError(
            f"inputs must have shape (batch, steps, {input_size}), got {tuple(inputs.shape)}"
        )


class TorchRNNClassifier(nn.Module):
    """``torch.nn`` LSTM, GRU or tanh RNN (one layer) followed by ``logits = R h_T + c``."""

    def __init__(self, cell: str, input_size: int, hidden: int, num_classes: int) -> None:
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f'Invalid cell "{cell}". Must be one of {sorted(CELLS)}')
        self.cell = cell
        self.input_size = positive_int("input_size", input_size)
        self.hidden = positive_int("hidden", hidden)
        self.num_classes = positive_int("num_classes", num_classes)
        self.rnn = CELLS[cell](input_size, hidden, batch_first=True)
        self.readout = nn.Linear(hidden, num_classes)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        _check_inputs(inputs, self.input_size)
        out, _ = self.rnn(inputs)
        return self.readout(out[:, -1])


class LSTMClassifier(TorchRNNClassifier):
    """LSTM baseline (Hochreiter & Schmidhuber 1997; Table 1 quotes Chang et al. 2019)."""

    def __init__(self, input_size: int, hidden: int, num_classes: int) -> None:
        super().__init__("lstm", input_size, hidden, num_classes)


class GRUClassifier(TorchRNNClassifier):
    """GRU baseline (Cho et al. 2014)."""

    def __init__(self, input_size: int, hidden: int, num_classes: int) -> None:
        super().__init__("gru", input_size, hidden, num_classes)


class VanillaRNNClassifier(TorchRNNClassifier):
    """Elman RNN ``h_t = tanh(W h_{t-1} + U x_t + b)``."""

    def __init__(self, input_size: int, hidden: int, num_classes: int) -> None:
        super().__init__("rnn", input_size, hidden, num_classes)


def _gaussian(n: int, std: float, gen: torch.Generator | None) -> torch.Tensor:
    return torch.randn(n, n, generator=gen) * std


class LipschitzRNN(nn.Module):
    """Lipschitz RNN (Erichson et al., ICLR 2021), explicit Euler with step ``eps``::

        h[t+1] = h[t] + eps (A h[t] + tanh(W h[t] + U x[t] + b))
        A = (1 - beta)(M_A + M_A^T) + beta (M_A - M_A^T) - gamma_A I     (same for W, gamma_W)

    Defaults are the paper's for pixel MNIST (``beta = 0.75``, ``gamma_A = gamma_W = 0.001``,
    ``eps = 0.03``); ``M_A, M_W`` start ``N(0, (sigma / n)^2)`` as in the authors' code
    (``--init_std 32`` with 128 units), ``U`` and the readout Xavier-normal with zero bias.
    """

    def __init__(self, input_size: int, hidden: int, num_classes: int, *, beta: float = 0.75,
                 gamma_a: float = 0.001, gamma_w: float = 0.001, eps: float = 0.03,
                 sigma: float = 32.0, seed: int | None = None) -> None:
        super().__init__()
        self.input_size = positive_int("input_size", input_size)
        self.hidden = positive_int("hidden", hidden)
        self.num_classes = positive_int("num_classes", num_classes)
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"beta must lie in [0, 1], got {beta!r}")
        self.beta = float(beta)
        self.gamma_a = float(gamma_a)
        self.gamma_w = float(gamma_w)
        self.eps = positive("eps", eps)
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        std = positive("sigma", sigma) / hidden
        self.m_a = nn.Parameter(_gaussian(hidden, std, gen))
        self.m_w = nn.Parameter(_gaussian(hidden, std, gen))
        self.encoder = nn.Linear(input_size, hidden)
        self.readout = nn.Linear(hidden, num_classes)
        for lin in (self.encoder, self.readout):
            nn.init.xavier_normal_(lin.weight, generator=gen)
            nn.init.zeros_(lin.bias)

    def _structured(self, m: torch.Tensor, gamma: float) -> torch.Tensor:
        eye = torch.eye(self.hidden, dtype=m.dtype, device=m.device)
        return (1 - self.beta) * (m + m.T) + self.beta * (m - m.T) - gamma * eye

    def matrices(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(A, W)`` of the hidden-to-hidden dynamics."""
        return self._structured(self.m_a, self.gamma_a), self._structured(self.m_w, self.gamma_w)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        _check_inputs(inputs, self.input_size)
        a, w = self.matrices()
        drive = self.encoder(inputs)
        h = drive.new_zeros(inputs.shape[0], self.hidden)
        for k in range(inputs.shape[1]):
            h = h + self.eps * (h @ a.T + torch.tanh(h @ w.T + drive[:, k]))
        return self.readout(h)


class AntisymmetricRNN(nn.Module):
    """Antisymmetric RNN (Chang et al., ICLR 2019), ungated::

        h[t] = h[t-1] + eps tanh((W - W^T - gamma I) h[t-1] + V x[t] + b)

    ``W`` starts ``N(0, sigma^2 / n)``; defaults ``eps = 0.01``, ``gamma = 0.01`` (the paper's
    pixel-MNIST range).
    """

    def __init__(self, input_size: int, hidden: int, num_classes: int, *, eps: float = 0.01,
                 gamma: float = 0.01, sigma: float = 1.0, seed: int | None = None) -> None:
        super().__init__()
        self.input_size = positive_int("input_size", input_size)
        self.hidden = positive_int("hidden", hidden)
        self.num_classes = positive_int("num_classes", num_classes)
        self.eps = positive("eps", eps)
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma!r}")
        self.gamma = float(gamma)
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        self.w = nn.Parameter(_gaussian(hidden, positive("sigma", sigma) / math.sqrt(hidden),
                                        gen))
        self.encoder = nn.Linear(input_size, hidden)
        self.readout = nn.Linear(hidden, num_classes)

    def matrix(self) -> torch.Tensor:
        """``W - W^T - gamma I``."""
        eye = torch.eye(self.hidden, dtype=self.w.dtype, device=self.w.device)
        return self.w - self.w.T - self.gamma * eye

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        _check_inputs(inputs, self.input_size)
        m = self.matrix()
        drive = self.encoder(inputs)
        h = drive.new_zeros(inputs.shape[0], self.hidden)
        for k in range(inputs.shape[1]):
            h = h + self.eps * torch.tanh(h @ m.T + drive[:, k])
        return self.readout(h)


__all__ = ["AntisymmetricRNN", "GRUClassifier", "LSTMClassifier", "LipschitzRNN",
           "TorchRNNClassifier", "VanillaRNNClassifier"]
