"""Per-step models, the masked per-step loss and NeuroGym's performance measure."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

import combonet
from combonet import Feedback, SVDModule
from combonet.data.neurogym import SyntheticTask
from combonet.models.perstep import (
    CTRNN,
    PerStepModel,
    decision_performance,
    decisions,
    evaluate_trials,
    masked_cross_entropy,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small_network(seed: int = 0):
    return Feedback([SVDModule(4, seed=seed), SVDModule(3, seed=seed + 1)], seed=seed)


def test_per_step_model_runs_the_network_and_reads_out_every_step():
    torch.manual_seed(0)
    net = small_network()
    model = PerStepModel(net, 5, 3, dt=0.2, method="cayley")
    x = torch.randn(2, 6, 5)
    logits = model(x)
    assert logits.shape == (2, 6, 3)
    drive = x @ model.encoder.weight.T + model.encoder.bias  # an independent U s + b
    states = combonet.simulate(net, drive, dt=0.2, method="cayley")[:, 1:]
    assert torch.allclose(model.states(x), states, atol=1e-6)
    assert torch.allclose(logits, states @ model.readout.weight.T + model.readout.bias,
                          atol=1e-5)


def test_input_and_output_masks_route_the_pathways():
    torch.manual_seed(1)
    net = small_network()
    in_mask = torch.zeros(7, 5)
    in_mask[:4, :2] = 1  # only units 0-3 see channels 0-1
    out_mask = torch.tensor([0, 0, 0, 0, 1, 1, 1.0])  # only the second module is read
    model = PerStepModel(net, 5, 3, input_mask=in_mask, output_mask=out_mask)
    x = torch.randn(1, 4, 5, requires_grad=True)
    drive = model.drive(x)
    grad = torch.autograd.grad(drive[0, 2].sum(), x, retain_graph=True)[0][0, 2]
    assert not grad[2:].any() and grad[:2].abs().sum() > 0
    units = torch.autograd.grad(drive[0, 2, 4:].sum(), x, retain_graph=False)
    assert not units[0].any()  # units 4-6 get no input at all (bias only)
    s = torch.randn(1, 3, 7, requires_grad=True)
    g = torch.autograd.grad(model.logits(s).sum(), s)[0]
    assert not g[..., :4].any() and g[..., 4:].abs().sum() > 0
    with pytest.raises(ValueError, match=r"input_mask must have shape \(7, 5\)"):
        PerStepModel(net, 5, 3, input_mask=torch.ones(7, 4))
    with pytest.raises(ValueError, match=r"inputs must have shape \(batch, steps, 5\)"):
        model(torch.zeros(1, 3, 4))
    with pytest.raises(ValueError, match="dt / tau must lie in"):
        PerStepModel(net, 5, 3, dt=2.0)


def test_ctrnn_is_neurogyms_recipe():
    model = CTRNN(4, 3)
    assert model.hidden_size == 256 and model.alpha == 1.0  # tau = dt = 100 ms
    torch.manual_seed(2)
    small = CTRNN(4, 3, hidden_size=6, tau=100.0, dt=20.0)
    x = torch.randn(2, 5, 4)
    h = torch.zeros(2, 6)
    w_in, b_in = small.input2h.weight, small.input2h.bias
    w, b = small.h2h.weight, small.h2h.bias
    expected = []
    for t in range(5):
        h = 0.8 * h + 0.2 * torch.relu(x[:, t] @ w_in.T + b_in + h @ w.T + b)
        expected.append(h)
    assert torch.allclose(small.states(x), torch.stack(expected, 1), atol=1e-6)
    assert small(x).shape == (2, 5, 3)
    with pytest.raises(ValueError, match="dt / tau"):
        CTRNN(4, 3, dt=200.0)


def test_masked_cross_entropy_is_the_weighted_mean_over_counted_steps():
    torch.manual_seed(3)
    logits = torch.randn(3, 5, 4)
    targets = torch.randint(0, 4, (3, 5))
    weights = torch.rand(3, 5) * (torch.rand(3, 5) > 0.3)
    per = torch.stack([torch.stack([F.cross_entropy(logits[b, t], targets[b, t])
                                    for t in range(5)]) for b in range(3)])
    expected = (per * weights).sum() / weights.sum()
    assert torch.allclose(masked_cross_entropy(logits, targets, weights), expected, atol=1e-6)
    mask = weights > 0
    changed = logits.clone()
    changed[~mask] = 100 * torch.randn(int((~mask).sum()), 4)
    assert torch.allclose(masked_cross_entropy(changed, targets, mask),
                          masked_cross_entropy(logits, targets, mask), atol=1e-6)
    with pytest.raises(ValueError, match="select no step"):
        masked_cross_entropy(logits, targets, torch.zeros(3, 5))


def test_decision_performance_counts_correct_decisions_per_task():
    task = SyntheticTask(2)
    tr = task.sample(12, seed=0, balanced=True)
    logits = torch.zeros(len(tr), tr.steps, tr.num_actions)
    logits[..., 0] = 1.0  # fixate everywhere
    correct = torch.tensor([i % 3 == 0 for i in range(len(tr))])
    for i in range(len(tr)):
        a, b = tr.periods[i]["decision"]
        choice = int(tr.choice[i]) if correct[i] else 3 - int(tr.choice[i])
        logits[i, a:b, choice] = 5.0
    assert torch.equal(decisions(logits, tr) == tr.choice, correct)
    perf = decision_performance(logits, tr)
    assert perf.accuracy == pytest.approx(float(correct.float().mean()))
    for k, name in enumerate(tr.task_names):
        sel = tr.task == k
        assert perf.per_task[name] == pytest.approx(float(correct[sel].float().mean()))
        assert perf.counts[name] == int(sel.sum())
    empty = tr.index(range(len(tr)))
    empty.mask[2] = False
    with pytest.raises(ValueError, match=r"trials \[2\] have no scored"):
        decisions(logits, empty)
    logits[0, 0, 1] = 10.0  # breaks fixation on trial 0 (correct at the decision)
    assert decision_performance(logits, tr).accuracy == perf.accuracy
    strict = decision_performance(logits, tr, require_fixation=True)
    assert strict.accuracy == pytest.approx(perf.accuracy - 1 / len(tr))


def test_a_certified_per_step_model_learns_the_synthetic_task():
    torch.manual_seed(0)
    task = SyntheticTask(2, noise=0.05, coherence=(1.0,))
    net = Feedback([SVDModule(8, seed=0), SVDModule(8, seed=1)], seed=0)
    model = PerStepModel(net, task.features, task.num_actions, dt=0.5)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    test = task.sample(64, seed=99, balanced=True)
    _, before = evaluate_trials(model, test)
    for batch, _ in zip(task.batches(32, seed=0), range(80), strict=False):
        loss = masked_cross_entropy(model(batch.inputs), batch.targets, batch.loss_weights())
        opt.zero_grad()
        loss.backward()
        opt.step()
    loss, after = evaluate_trials(model, test)
    assert after.accuracy >= 0.9 > before.accuracy, (before, after)
    assert set(after.per_task) == {"pro0", "anti0"}
    assert combonet.certify(model.network, dt=model.dt, method=model.method).certified


# -- the training loop's view: packed targets ---------------------------------------------------
def test_packed_loss_and_accuracy_are_the_masked_loss_and_neurogyms_measure():
    from combonet.models.perstep import pack_targets, packed_accuracy, packed_loss

    torch.manual_seed(3)
    tr = SyntheticTask(3).sample(24, seed=2)
    logits = torch.randn(len(tr), tr.steps, tr.num_actions)
    packed = pack_targets(tr, other_weight=0.3)
    assert packed.shape == (len(tr), tr.steps, 3)
    expected = masked_cross_entropy(logits, tr.targets, tr.loss_weights(0.3))
    assert torch.allclose(packed_loss(logits, packed), expected)
    correct, count = packed_accuracy(logits, packed)
    assert count == len(tr)
    assert correct / count == pytest.approx(decision_performance(logits, tr).accuracy)
    # a correct decision at the last scored step counts; the other steps do not
    logits = torch.zeros_like(logits)
    logits[torch.arange(len(tr)), tr.decision_step, tr.choice] = 1.0
    assert packed_accuracy(logits, packed) == (len(tr), len(tr))
    logits[0, tr.decision_step[0]] = 0.0
    logits[0, tr.decision_step[0], (int(tr.choice[0]) + 1) % tr.num_actions] = 1.0
    assert packed_accuracy(logits, packed) == (len(tr) - 1, len(tr))
    with pytest.raises(ValueError, match="packed targets must have shape"):
        packed_loss(logits, packed[:, :-1])
    packed[0, :, 2] = 0
    with pytest.raises(ValueError, match="every trial needs a scored"):
        packed_accuracy(logits, packed)


def test_a_combo_net_on_a_trial_task_is_read_out_at_every_step():
    from combonet.models import sparse_combo_net
    from combonet.models.builders import combo_net
    from combonet.models.perstep import per_step_of

    clf = sparse_combo_net(3, 4, 0.3, 1.0, input_size=5, num_classes=3, dt=0.2)
    model = per_step_of(clf, 5, 3)
    assert model.network is clf.network and model.dt == 0.2 and model.method == clf.method
    assert model(torch.randn(2, 7, 5)).shape == (2, 7, 3)
    hybrid = combo_net("svd", 3, 4, hybrid=True, input_size=5, num_classes=3)
    masked = per_step_of(hybrid, 5, 3)  # only the fast input module gets the input
    assert masked.input_mask[:4].all() and not masked.input_mask[4:].any()
