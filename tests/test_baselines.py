"""Baselines (LSTM, GRU, tanh RNN, Lipschitz RNN, antisymmetric RNN) and the model registry."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from combonet.models import (
    COMBO_MODELS,
    MODELS,
    AntisymmetricRNN,
    GRUClassifier,
    LipschitzRNN,
    LSTMClassifier,
    VanillaRNNClassifier,
    build_model,
    count_parameters,
    is_combo,
    sparse_combo_net,
    svd_combo_net,
)
from combonet.models.registry import SEQUENCE
from combonet.train import TrainConfig

BASELINES = [LSTMClassifier, GRUClassifier, VanillaRNNClassifier, LipschitzRNN, AntisymmetricRNN]


@pytest.mark.parametrize("cls", BASELINES)
def test_forward_shape_and_gradient(cls):
    torch.manual_seed(0)
    model = cls(3, 12, 5)
    x = torch.randn(4, 7, 3)
    out = model(x)
    assert out.shape == (4, 5)
    out.sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("cls", BASELINES)
def test_bad_input_shape_is_refused(cls):
    model = cls(3, 6, 2)
    with pytest.raises(ValueError, match=r"\(batch, steps, 3\)"):
        model(torch.randn(4, 7, 2))


def test_readout_uses_last_state_only():
    """logits = R h_T + c; perturbing the last input changes them, a longer prefix too."""
    torch.manual_seed(0)
    gru = GRUClassifier(1, 8, 3)
    x = torch.randn(2, 6, 1)
    torch.testing.assert_close(gru(x), gru.readout(gru.rnn(x)[0][:, -1]))
    for model in (gru, LipschitzRNN(1, 8, 3), AntisymmetricRNN(1, 8, 3)):
        base = model(x)
        y = x.clone()
        y[:, -1] += 1.0
        assert not torch.allclose(model(y), base)
        assert not torch.allclose(model(torch.cat([torch.ones(2, 1, 1), x], 1)), base)


def _expected_rnn_params(kind: str, d: int, h: int, c: int) -> int:
    gates = {"lstm": 4, "gru": 3, "rnn": 1}[kind]
    return gates * (h * d + h * h + 2 * h) + h * c + c


@pytest.mark.parametrize("cls,kind", [(LSTMClassifier, "lstm"), (GRUClassifier, "gru"),
                                      (VanillaRNNClassifier, "rnn")])
def test_torch_rnn_parameter_counts(cls, kind):
    model = cls(1, 128, 10)
    assert count_parameters(model)["total"] == _expected_rnn_params(kind, 1, 128, 10)


def test_lstm_128_matches_table1_size():
    # Table 1 quotes 68K parameters for the LSTM of Chang et al. (128 units, pixel input).
    assert count_parameters(LSTMClassifier(1, 128, 10))["total"] == 68_362


def test_lipschitz_parameters_and_structure():
    h = 256
    model = LipschitzRNN(1, h, 10, beta=0.75, gamma_a=0.001, gamma_w=0.002)
    # 2 h^2 (M_A, M_W) + 2 h (U, b) + (h + 1) 10: 134,154, Table 1's "134K".
    assert count_parameters(model)["total"] == 2 * h * h + 2 * h + (h + 1) * 10 == 134_154
    a, w = model.matrices()
    m_a, m_w = model.m_a.detach(), model.m_w.detach()
    eye = torch.eye(h)
    sym = (a + a.T) / 2
    skew = (a - a.T) / 2
    torch.testing.assert_close(sym, 0.25 * (m_a + m_a.T) - 0.001 * eye)
    torch.testing.assert_close(skew, 0.75 * (m_a - m_a.T))
    torch.testing.assert_close((w + w.T) / 2, 0.25 * (m_w + m_w.T) - 0.002 * eye)


def test_lipschitz_step_is_euler_of_the_published_ode():
    torch.manual_seed(1)
    model = LipschitzRNN(2, 5, 3, eps=0.03)
    x = torch.randn(4, 1, 2)
    a, w = model.matrices()
    u = model.encoder(x[:, 0])
    h1 = 0.03 * torch.tanh(u)  # h0 = 0
    torch.testing.assert_close(model(x), model.readout(h1))
    x2 = torch.randn(4, 2, 2)
    h1 = 0.03 * torch.tanh(model.encoder(x2[:, 0]))
    h2 = h1 + 0.03 * (h1 @ a.T + torch.tanh(h1 @ w.T + model.encoder(x2[:, 1])))
    torch.testing.assert_close(model(x2), model.readout(h2))


def test_antisymmetric_matrix_and_step():
    torch.manual_seed(2)
    model = AntisymmetricRNN(2, 6, 3, eps=0.1, gamma=0.05)
    m = model.matrix()
    torch.testing.assert_close(m + m.T, -0.1 * torch.eye(6))
    x = torch.randn(3, 2, 2)
    h1 = 0.1 * torch.tanh(model.encoder(x[:, 0]))
    h2 = h1 + 0.1 * torch.tanh(h1 @ m.T + model.encoder(x[:, 1]))
    torch.testing.assert_close(model(x), model.readout(h2))


def test_bad_hyperparameters():
    with pytest.raises(ValueError, match="beta"):
        LipschitzRNN(1, 4, 2, beta=1.5)
    with pytest.raises(ValueError, match="eps"):
        AntisymmetricRNN(1, 4, 2, eps=0.0)
    with pytest.raises(ValueError, match="hidden"):
        GRUClassifier(1, 0, 2)


# -- registry ---------------------------------------------------------------------------------
def test_registry_names():
    assert set(MODELS) == {"sparse-combo", "svd-combo", "unconstrained-combo",
                           "trainable-sparse-combo", "mixed-combo", "hybrid-combo", "lstm",
                           "gru", "rnn", "lipschitz", "antisymmetric", "areas", "ctrnn"}
    assert set(COMBO_MODELS) <= set(MODELS)


@pytest.mark.parametrize("name", sorted(k for k, s in MODELS.items() if SEQUENCE in s.tasks))
def test_every_registered_model_builds_and_runs(name):
    """Every model of sequence classification (the trial-task models ``areas`` and ``ctrnn``
    are built and run in tests/test_neuro_cli.py and tests/test_areas.py)."""
    cfg = TrainConfig(model=name, modules=2, units=4, density=0.3, magnitude=1.0,
                      hidden=6, dt=0.2)
    torch.manual_seed(0)
    model = build_model(cfg, input_size=3, num_classes=4)
    assert model(torch.randn(2, 5, 3)).shape == (2, 4)
    assert is_combo(model) == (name in COMBO_MODELS)


def test_unknown_model_name():
    with pytest.raises(ValueError, match="Invalid model"):
        build_model(SimpleNamespace(model="transformer"), 1, 10)


def test_feedback_parameter_count_block_lower_only():
    p, n, d, c = 3, 4, 2, 5
    model = sparse_combo_net(p, n, 0.3, 1.0, input_size=d, num_classes=c)
    big_n = p * n
    counts = count_parameters(model)
    assert counts["total"] == p * (p - 1) // 2 * n * n + (d + 1) * big_n + (big_n + 1) * c
    assert counts["stored"] == big_n * big_n + (d + 1) * big_n + (big_n + 1) * c
    assert counts["by_part"]["network"] == p * (p - 1) // 2 * n * n
    assert "note" in counts


def test_paper_16x32_sparse_combo_net_has_about_130k_parameters():
    model = sparse_combo_net(16, 32, 0.033, 1.0, input_size=1, num_classes=10)
    counts = count_parameters(model)
    assert counts["total"] == 129_034  # the paper: "130K"
    assert counts["stored"] == 268_298


def test_coupling_density_reduces_count_and_svd_counts_all_module_parameters():
    dense = count_parameters(sparse_combo_net(4, 4, 0.3, input_size=1, num_classes=2))
    sparse = count_parameters(sparse_combo_net(4, 4, 0.3, input_size=1, num_classes=2,
                                               coupling_density=0.3, seed=3))
    assert sparse["total"] < dense["total"]
    svd = count_parameters(svd_combo_net(2, 4, input_size=1, num_classes=2))
    # 2 modules x (U, V: 16 + 16, sigma and phi: 4 + 4) + coupling 16 + encoder 16 + readout 18
    assert svd["total"] == 2 * (16 + 16 + 4 + 4) + 16 + 16 + 18
