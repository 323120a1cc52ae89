"""Trials as batches: the synthetic task always, real NeuroGym trials where the extra is there."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from combonet.data.neurogym import (
    EXTRA_HINT,
    MissingExtraError,
    SyntheticTask,
    Trials,
    collate,
    derive_seed,
    load_trial_task,
    require_neurogym,
)


# -- the format, on synthetic trials -----------------------------------------------------------
def test_synthetic_trials_have_the_documented_layout():
    task = SyntheticTask(3, num_choices=2, fixation=(2, 3), stimulus=(2, 5), decision=2)
    tr = task.sample(40, seed=5)
    assert tr.inputs.dtype == torch.float32 and tr.targets.dtype == torch.int64
    assert tr.inputs.shape == (40, tr.steps, 1 + 2 + 3) and tr.mask.dtype == torch.bool
    assert tr.steps == int(tr.lengths.max())
    assert len(set(tr.lengths.tolist())) > 1  # variable lengths -> padding is exercised
    for i in range(len(tr)):
        t = int(tr.lengths[i])
        a, b = tr.periods[i]["decision"]
        assert b == t
        # padding: nothing beyond the trial
        assert not tr.inputs[i, t:].any() and not tr.targets[i, t:].any()
        assert not tr.mask[i, t:].any()
        # the scored steps are exactly the decision period
        assert tr.mask[i].nonzero().flatten().tolist() == list(range(a, b))
        # fixate (0) before the decision, the answer during it; rule input = the task
        assert not tr.targets[i, :a].any()
        k = int(tr.task[i])
        stim, coh = tr.info[i]["stimulus"], tr.info[i]["coh"]
        answer = stim if k % 2 == 0 else (stim + 1) % 2
        assert (tr.targets[i, a:b] == answer + 1).all()
        assert int(tr.choice[i]) == answer + 1
        rule = tr.inputs[i, :t, 3:]
        assert (rule.argmax(1) == k).all() and (rule.sum(1) == 1).all()
        # the fixation input is on until the decision period
        assert (tr.inputs[i, :a, 0] == 1).all() and (tr.inputs[i, a:t, 0] == 0).all()
        # the stimulus favours the stimulus channel by coh on average
        s0, s1 = tr.periods[i]["stimulus"]
        means = tr.inputs[i, s0:s1, 1:3].mean(0)
        assert float(means[stim] - means[1 - stim]) == pytest.approx(coh, abs=0.35)


def test_same_seed_same_trials_other_seed_other_trials():
    task = SyntheticTask(2)
    a, b, c = task.sample(16, seed=3), task.sample(16, seed=3), task.sample(16, seed=4)
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
    assert a.info == b.info
    assert a.inputs.shape != c.inputs.shape or not torch.equal(a.inputs, c.inputs)


def test_splits_are_fixed_balanced_and_differ_from_the_training_stream():
    task = SyntheticTask(4)
    s1, s2 = task.splits(30, 20, 40, seed=1), task.splits(30, 20, 40, seed=1)
    for name in ("train", "val", "test"):
        assert torch.equal(getattr(s1, name).inputs, getattr(s2, name).inputs)
    assert (len(s1.train), len(s1.val), len(s1.test)) == (30, 20, 40)
    assert s1.val.task.bincount(minlength=4).tolist() == [5, 5, 5, 5]
    assert s1.test.task.bincount(minlength=4).tolist() == [10, 10, 10, 10]
    assert s1.meta["seed"] == 1 and s1.meta["name"] == "synthetic:4"
    first = next(task.batches(30, seed=1))
    again = next(task.batches(30, seed=1))
    assert torch.equal(first.inputs, again.inputs)
    assert not torch.equal(first.inputs[:, :5], s1.train.inputs[:, :5])
    stream = task.batches(8, seed=1)
    b1, b2 = next(stream), next(stream)
    assert not (b1.inputs.shape == b2.inputs.shape and torch.equal(b1.inputs, b2.inputs))


def test_derive_seed_separates_purposes_and_rejects_bad_seeds():
    seeds = {derive_seed(0, p) for p in ("train", "val", "test", "stream")}
    assert len(seeds) == 4 and all(0 <= s < 2**31 for s in seeds)
    assert derive_seed(7, "val") == derive_seed(7, "val")
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        derive_seed(-1, "train")


def test_loss_weights_index_and_batches():
    tr = SyntheticTask(2).sample(10, seed=0)
    w = tr.loss_weights(0.25)
    assert torch.equal(w[tr.mask], torch.ones(int(tr.mask.sum())))
    assert torch.all(w[tr.valid & ~tr.mask] == 0.25)
    assert torch.all(w[~tr.valid] == 0)
    assert torch.equal(tr.loss_weights(0.0) > 0, tr.mask)
    with pytest.raises(ValueError, match="other_weight"):
        tr.loss_weights(-1)
    sub = tr.index([3, 1])
    assert sub.steps == int(tr.lengths[[3, 1]].max())
    assert torch.equal(sub.inputs[0, :sub.steps], tr.inputs[3, :sub.steps])
    assert sub.info == [tr.info[3], tr.info[1]]
    seen = torch.cat([b.task for b in tr.batches(4)])
    assert torch.equal(seen, tr.task)
    shuffled = list(tr.batches(4, shuffle=True, seed=1))
    assert sum(len(b) for b in shuffled) == 10
    assert sorted(tr.condition("coh").tolist()) == sorted(d["coh"] for d in tr.info)
    with pytest.raises(ValueError, match='Invalid condition "nope"'):
        tr.condition("nope")


def test_collate_pads_at_the_end():
    task = SyntheticTask(1)
    stream = task._stream(0, False)
    raw = [next(stream) for _ in range(5)]
    tr = collate(raw, task.task_names, task.num_actions)
    for i, r in enumerate(raw):
        t = r.ob.shape[0]
        assert np.array_equal(tr.inputs[i, :t].numpy(), r.ob)
        assert int(tr.lengths[i]) == t
    with pytest.raises(ValueError, match="at least one trial"):
        collate([], task.task_names, task.num_actions)
    with pytest.raises(ValueError, match="targets must have shape"):
        Trials(tr.inputs, tr.targets[:, :1], tr.mask, tr.lengths, tr.task, ("a",), 3)


def test_task_names_and_argument_errors():
    assert load_trial_task("synthetic").num_tasks == 1
    assert load_trial_task("synthetic:3").num_tasks == 3
    with pytest.raises(ValueError, match="synthetic:K needs an integer"):
        load_trial_task("synthetic:x")
    with pytest.raises(ValueError, match="num_choices must be >= 2"):
        SyntheticTask(num_choices=1)
    with pytest.raises(ValueError, match="stimulus must be a range"):
        SyntheticTask(stimulus=(3, 1))


# -- the optional extra --------------------------------------------------------------------------
def test_missing_extra_is_one_line_saying_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "neurogym", None)  # import neurogym -> ImportError
    with pytest.raises(MissingExtraError) as info:
        require_neurogym()
    message = str(info.value)
    assert EXTRA_HINT in message and "\n" not in message
    assert isinstance(info.value, ValueError)  # the CLI's one-line error path catches it
    with pytest.raises(MissingExtraError, match=r"pip install 'combonet\[neuro\]'"):
        load_trial_task("neurogym:PerceptualDecisionMaking-v0")


# -- real NeuroGym trials (only where the extra is installed) ----------------------------------
def _independent_trial(env_id: str, seed: int):
    """A trial made by NeuroGym directly, seeded as NeuroGymTask seeds its first env."""
    import warnings

    import neurogym as ngym

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        env = ngym.make(env_id).unwrapped
        env.seed(derive_seed(seed, 0))
        env.new_trial()
    return env


def test_neurogym_single_task_trials_are_neurogym_trials():
    pytest.importorskip("neurogym")
    from combonet.data.neurogym import NeuroGymTask

    task = NeuroGymTask("PerceptualDecisionMaking-v0")
    tr = task.sample(6, seed=11)
    env = _independent_trial("PerceptualDecisionMaking-v0", 11)
    t = env.ob.shape[0]
    assert np.array_equal(tr.inputs[0, :t].numpy(), env.ob.astype(np.float32))
    assert np.array_equal(tr.targets[0, :t].numpy(), env.gt)
    a, b = env.start_ind["decision"], env.end_ind["decision"]
    assert tr.mask[0].nonzero().flatten().tolist() == list(range(a, b))
    assert int(tr.choice[0]) == int(env.gt[b - 1])
    assert tr.features == 3 and tr.num_actions == 3 and task.dt == 100
    again = task.sample(6, seed=11)
    assert torch.equal(tr.inputs, again.inputs) and torch.equal(tr.targets, again.targets)
    assert not torch.equal(task.sample(6, seed=12).inputs, tr.inputs)


def test_neurogym_yang19_multitask_appends_the_rule_input():
    pytest.importorskip("neurogym")
    from combonet.data.neurogym import NeuroGymTask

    task = NeuroGymTask("yang19")
    assert task.num_tasks == 20 and task.task_names[6] == "yang19.dm1-v0"
    tr = task.sample(40, seed=2, balanced=True)
    assert tr.task.bincount(minlength=20).tolist() == [2] * 20
    base = task.features - 20
    assert base == 33 and tr.num_actions == 17
    for i in range(len(tr)):
        t = int(tr.lengths[i])
        rule = tr.inputs[i, :t, base:]
        assert (rule[:, int(tr.task[i])] == 1).all() and (rule.sum(1) == 1).all()
        assert tr.mask[i, :t].any() and not tr.mask[i, t:].any()
    batch = next(task.batches(8, seed=0))
    assert batch.features == task.features
    assert torch.equal(batch.inputs, next(task.batches(8, seed=0)).inputs)
    single = NeuroGymTask("yang19.dm1-v0").sample(3, seed=0)
    assert single.features == 33 and single.task_names == ("yang19.dm1-v0",)


def test_neurogym_errors_are_one_line():
    pytest.importorskip("neurogym")
    from combonet.data.neurogym import NeuroGymTask

    cases = [("NoSuchTask-v0", 'Unknown NeuroGym environment "NoSuchTask-v0"'),
             ("ReachingDelayResponse-v0", "continuous action space"),
             ("Bandit-v0", "reinforcement-learning task"),
             ("DelayMatchCategory-v0", "pass decision_period=NAME")]
    for env_id, text in cases:
        with pytest.raises(ValueError, match=text) as info:
            NeuroGymTask(env_id)
        assert "\n" not in str(info.value)
    tr = NeuroGymTask("DelayMatchCategory-v0", decision_period="test").sample(2, seed=0)
    assert tr.mask.any(1).all()


# -- the training loop's view: fresh trials per epoch ------------------------------------------
def test_trial_data_for_the_loop_fresh_per_epoch_fixed_evaluation_sets():
    from combonet.data.trials import collate_trials, load_trial_data

    data = load_trial_data("synthetic:2", seed=4, epoch_trials=12, val_trials=6,
                           test_trials=8, other_weight=0.5)
    again = load_trial_data("synthetic:2", seed=4, epoch_trials=12, val_trials=6,
                            test_trials=8, other_weight=0.5)
    assert (data.features, data.num_classes, data.task_names) == (5, 3, ("pro0", "anti0"))
    assert (len(data.train), len(data.val), len(data.test)) == (12, 6, 8)
    assert data.meta["kind"] == "trials" and data.meta["num_classes"] == 3
    assert torch.equal(data.val.inputs, again.val.inputs)  # fixed, seeded
    assert not torch.equal(data.val.inputs[:, :4], data.test.inputs[:6, :4])
    assert data.val.trials.task.bincount().tolist() == [3, 3]  # balanced
    data.new_epoch(1)
    first = data.train.inputs.clone()
    data.new_epoch(2)
    assert not (first.shape == data.train.inputs.shape and torch.equal(first, data.train.inputs))
    again.new_epoch(2)
    assert torch.equal(again.train.inputs, data.train.inputs)  # a function of seed and epoch
    assert torch.equal(again.train.labels, data.train.labels)
    x, y = data.train[3]
    assert x.shape == (data.train.inputs.shape[1], 5) and y.shape[-1] == 3
    assert y[:, 1].max() == 1 and (y[:, 1][y[:, 2] == 0] <= 0.5).all()
    # a batch is trimmed to its last weighted step, nothing else changes
    items = [data.train[i] for i in range(4)]
    bx, by = collate_trials(items)
    keep = int(data.train.trials.lengths[:4].max())
    assert bx.shape == (4, keep, 5) and torch.equal(bx, data.train.inputs[:4, :keep])
    assert torch.equal(by, data.train.labels[:4, :keep])
