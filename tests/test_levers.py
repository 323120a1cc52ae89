"""The model levers beyond the paper: trainable time constants, readouts, input masks, module
kinds and the hybrid input -> memory network, and the training options that go with them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import combonet as cn
from combonet.models.builders import combo_net, module_taus
from combonet.train import ConfigError, TrainConfig
from conftest import as_np, check_model_contracts

pytestmark = pytest.mark.usefixtures("one_thread")


def test_time_constants_stay_in_their_range_under_training():
    tc = cn.TimeConstants(6, init=2.0, lo=0.5, hi=8.0, per="unit")
    mod = cn.SVDModule(6, seed=0, tau=tc)
    assert mod.tau == 0.5
    opt = torch.optim.Adam(mod.parameters(), lr=1.0)
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        opt.zero_grad()
        out = mod(torch.randn(4, 10, 6, generator=gen), dt=0.5)
        (out**2).sum().backward()
        opt.step()
    taus = as_np(mod.time_constants())
    assert np.all(taus >= 0.5) and np.all(taus <= 8.0)
    assert not np.allclose(taus, 2.0)  # they did train
    assert cn.certify(mod, dt=0.5).continuous_certified


def test_time_constant_errors():
    with pytest.raises(ValueError, match="lo < hi"):
        cn.TimeConstants(3, init=1.0, lo=2.0, hi=1.0)
    with pytest.raises(ValueError, match="strictly inside"):
        cn.TimeConstants(3, init=5.0, lo=1.0, hi=2.0)
    with pytest.raises(ValueError, match='Invalid per "cell"'):
        cn.TimeConstants(3, per="cell")
    with pytest.raises(ValueError, match="per-unit time constants need a diagonal metric"):
        cn.ProductModule(3, tau=cn.TimeConstants(3, per="unit"))
    with pytest.raises(ValueError, match="TimeConstants for 4 units"):
        cn.SVDModule(3, tau=cn.TimeConstants(4))
    with pytest.raises(ValueError, match="need a range"):
        combo_net("svd", 2, 4, tau_train="module")


@pytest.mark.usefixtures("float64")
def test_per_unit_time_constants_contract_in_m_t():
    """``P = M T`` for a module with per-unit time constants (autograd Jacobians and slope
    vertices, computed independently in conftest)."""
    gen = torch.Generator().manual_seed(1)
    mods = []
    for i in range(3):
        tc = cn.TimeConstants(4, init=3.0, lo=1.0, hi=30.0, per="unit")
        with torch.no_grad():
            tc.theta.copy_(3 * torch.randn(4, generator=gen, dtype=torch.float64))
        mods.append(cn.SVDModule(4, seed=i, tau=tc) if i else
                    cn.TriangularModule(4, seed=i, tau=tc))
    net = cn.Feedback(mods, seed=0, init_scale=2.0)
    assert check_model_contracts(net, seed=0) > 0


def test_module_taus_are_log_spaced_inside_the_range():
    taus = module_taus(4, 1.0, 16.0)
    assert np.allclose(np.diff(np.log(taus)), np.log(16.0) / 4)
    assert min(taus) > 1.0 and max(taus) < 16.0
    assert module_taus(3, 2.0, None) == [2.0] * 3


@pytest.mark.parametrize("readout", ["last", "mean", "attention", "max"])
def test_readouts_leave_the_certificate_alone(readout):
    model = combo_net("svd", 3, 4, readout=readout, seed=0)
    x = torch.randn(5, 12, 1)
    logits = model(x)
    assert logits.shape == (5, 10)
    logits.sum().backward()
    if readout == "attention":  # the query is trained
        assert model.query.grad is not None
    ref = combo_net("svd", 3, 4, readout="last", seed=0)
    a, b = cn.certify(model), cn.certify(ref)
    assert a.certified and a.discrete_factor == b.discrete_factor


def test_attention_readout_is_a_weighted_mean_of_states():
    model = combo_net("svd", 2, 3, readout="attention", seed=1)
    with torch.no_grad():
        model.query.normal_()
    x = torch.randn(2, 7, 1)
    states = model.states(x, all_states=True)  # original coordinates
    w = torch.softmax(states @ model.query, dim=1)
    want = model.readout((w[..., None] * states).sum(1))
    torch.testing.assert_close(model(x), want, rtol=1e-5, atol=1e-6)


def test_max_readout_reads_each_units_largest_state():
    # per-unit time constants make the running scale s differ from 1 (metric M T)
    model = combo_net("svd", 3, 4, tau_max=10.0, tau_train="unit", readout="max", seed=2)
    with torch.no_grad():
        model.encoder.weight.normal_()
    snap = model.snapshot()
    assert not torch.allclose(snap.scale, torch.ones_like(snap.scale))
    x = torch.randn(3, 9, 1)
    states = model.states(x, all_states=True)  # original coordinates
    want = model.readout(states.max(dim=1).values)
    torch.testing.assert_close(model(x), want, rtol=1e-5, atol=1e-6)


def test_input_mask_drives_only_the_input_module():
    model = combo_net("svd", 3, 4, hybrid=True, tau_max=10.0, seed=0)
    assert torch.equal(model.input_mask, torch.tensor([1.0] * 4 + [0.0] * 8))
    with torch.no_grad():  # cut the input -> memory pathway: the memory then never moves
        model.network.b.zero_()
        ys, _ = model.running_states(torch.randn(2, 9, 1), all_states=True)
    assert torch.all(ys[..., 4:] == 0) and bool(ys[..., :4].abs().sum() > 0)
    with pytest.raises(ValueError, match="input_mask must have 12 entries"):
        cn.models.SequenceClassifier(model.network, 1, 10, input_mask=[True] * 3)


def test_hybrid_network_is_certified_by_the_discrete_hierarchy_rule():
    model = combo_net("svd", 4, 6, hybrid=True, tau_max=20.0, tau_train="module", seed=0,
                      init_scale=2.0)
    assert isinstance(model.network, cn.Hierarchy)
    cert = cn.certify(model)
    assert cert.coupling_norm > 1 + 1e-4  # the hierarchy's Cayley step is no isometry...
    assert cert.certified  # ...but the block-triangular rule covers the map


@pytest.mark.parametrize("kind", ["mixed", "trainable-sparse"])
def test_module_kinds(kind):
    model = combo_net(kind, 4, 6, density=0.3, magnitude=1.0, seed=0)
    leaves = model.network.leaves()
    if kind == "mixed":
        assert [type(m).__name__ for m in leaves] == ["SparseModule", "SVDModule"] * 2
    else:
        assert all(isinstance(m, cn.TrainableSparseModule) for m in leaves)
    assert cn.certify(model).certified


def test_config_options_are_validated():
    assert TrainConfig(threads="2").validate().threads == "2"
    cfg = TrainConfig.from_dict({"threads": 1, "tau_train": "unit", "tau_max": 10,
                                 "model": "svd-combo", "readout": "attention",
                                 "coupling_rank": 3})
    assert cfg.validate().threads == "1"
    for bad, match in [({"threads": "many"}, 'threads must be "auto"'),
                       ({"tau_train": "unit"}, "give --tau-max"),
                       ({"tau_max": 0.5}, "tau_max must be > 1"),
                       ({"readout": "first"}, "readout"),
                       ({"eval_test": "sometimes"}, "eval_test")]:
        with pytest.raises(ConfigError, match=match):
            TrainConfig.from_dict(bad).validate()
