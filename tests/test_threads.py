"""``combonet.threads``: the ``--threads auto`` rule and thread-count parsing (pure logic)."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from combonet import threads
from combonet.threads import WORK_PER_THREAD, apply_threads, resolve_threads
from conftest import examples


@pytest.mark.parametrize("setting, want", [(1, 1), (3, 3), ("2", 2), (" 4 ", 4), (16, 16)])
def test_a_number_is_used_as_given(setting, want):
    # whatever the model's size and the cores: an explicit count is the user's choice
    assert resolve_threads(setting, units=8, batch=1, cores=2) == want
    assert resolve_threads(setting, units=4096, batch=4096, cores=1) == want


@pytest.mark.parametrize("bad", [0, -1, "0", "two", "", "1.5", 1.5, True, [2]])
def test_bad_settings_are_refused(bad):
    with pytest.raises(ValueError, match=r'threads must be "auto" or an integer >= 1, got'):
        resolve_threads(bad, units=8, batch=1)


@pytest.mark.parametrize("name, kw", [("units", {"units": 0, "batch": 1}),
                                      ("batch", {"units": 8, "batch": -2}),
                                      ("cores", {"units": 8, "batch": 1, "cores": 0})])
def test_bad_shapes_are_refused(name, kw):
    with pytest.raises(ValueError, match=f"{name} must be an integer >= 1"):
        resolve_threads("auto", **kw)


def test_auto_and_none_are_the_rule():
    for setting in ("auto", "AUTO", None):
        assert resolve_threads(setting, units=512, batch=128, cores=8) == \
            resolve_threads("auto", units=512, batch=128, cores=8)


def test_rule_at_the_measured_shapes():
    """The shapes of the threads sweep (benchmarks/README.md): N = 256 at batch 64 (permuted
    digits 16x16, MNIST-1D 8x32) is too small to split; psMNIST's N = 512 at batch 128 uses
    both cores of a 2-core machine; the 4x8 net of the issue stays at 1 thread."""
    assert resolve_threads("auto", units=256, batch=64, cores=2) == 1
    assert resolve_threads("auto", units=512, batch=128, cores=2) == 2
    assert resolve_threads("auto", units=32, batch=128, cores=2) == 1


def test_rule_boundaries():
    # work = batch * N^2 multiply-adds; one more thread per WORK_PER_THREAD of it
    n = 256
    batch = WORK_PER_THREAD // (n * n)
    assert batch * n * n == WORK_PER_THREAD  # the constant is a multiple of 256^2
    assert resolve_threads("auto", units=n, batch=batch - 1, cores=64) == 1
    assert resolve_threads("auto", units=n, batch=2 * batch - 1, cores=64) == 1
    assert resolve_threads("auto", units=n, batch=2 * batch, cores=64) == 2
    assert resolve_threads("auto", units=n, batch=5 * batch, cores=64) == 5
    assert resolve_threads("auto", units=n, batch=5 * batch, cores=3) == 3
    assert resolve_threads("auto", units=n, batch=10**6, cores=1) == 1


@settings(max_examples=examples(40), deadline=None)
@given(units=st.integers(1, 4096), batch=st.integers(1, 4096), cores=st.integers(1, 256),
       grow=st.integers(1, 8))
def test_rule_is_bounded_and_monotone(units, batch, cores, grow):
    n = resolve_threads("auto", units=units, batch=batch, cores=cores)
    assert 1 <= n <= cores
    # more work never means fewer threads; more cores never fewer either
    assert resolve_threads("auto", units=units, batch=batch * grow, cores=cores) >= n
    assert resolve_threads("auto", units=units * grow, batch=batch, cores=cores) >= n
    assert resolve_threads("auto", units=units, batch=batch, cores=cores + grow) >= n
    # each thread gets at least WORK_PER_THREAD multiply-adds per step (unless it is the only one)
    assert n == 1 or threads.step_work(units, batch) >= n * WORK_PER_THREAD


@pytest.mark.parametrize("cores, busy, free", [(2, 0.0, 2), (2, 0.4, 2), (2, 0.5, 1),
                                               (2, 0.9, 1), (2, 1.6, 1), (2, 7.0, 1),
                                               (16, 3.2, 13), (16, 3.6, 12), (1, 0.0, 1)])
def test_free_cores(cores, busy, free):
    assert threads.free_cores(cores, busy) == free


@pytest.mark.parametrize("bad", [-0.1, float("nan")])
def test_free_cores_refuses_bad_load(bad):
    with pytest.raises(ValueError, match="busy must be a number >= 0"):
        threads.free_cores(2, bad)


def test_other_processes_take_cores_from_auto():
    """A competing process on one of two cores: auto falls back to one thread (measured:
    two threads then run 4x slower than one, benchmarks/README.md)."""
    big = dict(units=4096, batch=4096)
    assert resolve_threads("auto", **big, cores=2, busy=0.0) == 2
    assert resolve_threads("auto", **big, cores=2, busy=0.95) == 1
    assert resolve_threads("auto", **big, cores=16, busy=4.0) == 12
    assert resolve_threads(2, **big, cores=2, busy=2.0) == 2  # a number stays the user's


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="needs Linux /proc/stat")
def test_other_load_sees_a_spinning_process():
    import subprocess
    import sys
    import time

    spin = "import time\nt = time.time()\nwhile time.time() - t < 1.0: pass"
    with threads.OtherLoad() as load:
        subprocess.run([sys.executable, "-c", spin], check=True)
    assert load.cores is not None and 0.8 <= load.cores <= (os.cpu_count() or 1)
    assert load.share == pytest.approx(load.cores / (os.cpu_count() or 1))
    with threads.OtherLoad() as own:  # this process's own work is not "other"
        t = time.perf_counter()
        while time.perf_counter() - t < 0.5:
            pass
    assert own.cores is not None and own.cores < load.cores


def test_default_cores_are_this_process_s():
    if hasattr(os, "sched_getaffinity"):
        assert threads.available_cores() == len(os.sched_getaffinity(0))
    else:
        assert threads.available_cores() == (os.cpu_count() or 1)
    huge = resolve_threads("auto", units=4096, batch=4096)  # busy defaults to 0
    assert huge == threads.available_cores()


def test_apply_threads_sets_torch():
    old = torch.get_num_threads()
    try:
        assert apply_threads("1", units=512, batch=128) == 1
        assert torch.get_num_threads() == 1
        n = apply_threads("auto", units=4096, batch=4096, busy=0.0)
        assert n == threads.available_cores() and torch.get_num_threads() == n
        # measuring the load itself: some count between 1 and the cores, and it is set
        n = apply_threads("auto", units=4096, batch=4096)
        assert 1 <= n <= threads.available_cores() and torch.get_num_threads() == n
        assert apply_threads("auto", units=8, batch=1) == 1 == torch.get_num_threads()
    finally:
        torch.set_num_threads(old)


# -- the work of the step the engine runs ------------------------------------------------------
def test_step_work_is_half_the_coupling_flops():
    """The rule's work is the multiply-adds of the coupling's per-step products: half of the
    coupling FLOPs of combonet.bench.flops (checked against torch's FlopCounterMode on what the
    engine runs, tests/test_bench.py), dense and low-rank."""
    from combonet.bench.flops import recurrence_flops

    for units, batch, rank in [(512, 128, None), (512, 128, 16), (32, 4, 2), (256, 64, 8)]:
        coupling = (recurrence_flops(batch, 1, units, 1, rank=rank)
                    - recurrence_flops(batch, 1, units, 1, coupled=False))
        assert 2 * threads.step_work(units, batch, rank) == coupling


def test_low_rank_step_is_sized_by_its_own_work():
    """psMNIST's 16x32 net at batch 128: the dense step (32 Mi multiply-adds) uses both cores
    of an idle 2-core machine; with a rank-16 coupling the step is 4 Mi and runs on one."""
    assert resolve_threads("auto", units=512, batch=128, cores=2) == 2
    assert resolve_threads("auto", units=512, batch=128, cores=2, rank=None) == 2
    assert resolve_threads("auto", units=512, batch=128, cores=2, rank=16) == 1
    assert resolve_threads("auto", units=512, batch=128, cores=2, rank=64) == 1  # 16 Mi
    assert resolve_threads("auto", units=512, batch=128, cores=2, rank=128) == 2  # 32 Mi
    assert resolve_threads(2, units=512, batch=128, cores=2, rank=16) == 2  # a number wins
    old = torch.get_num_threads()
    try:
        assert apply_threads("auto", units=512, batch=128, cores=2, busy=0.0, rank=16) == 1
        assert torch.get_num_threads() == 1
        assert apply_threads("auto", units=512, batch=128, cores=2, busy=0.0) == 2
    finally:
        torch.set_num_threads(old)
    with pytest.raises(ValueError, match="rank must be an integer >= 1"):
        resolve_threads("auto", units=512, batch=128, rank=0)


def test_running_rank_is_the_step_the_engine_runs():
    """``running_rank``: the rank for the factored Cayley step, None where the engine runs a
    dense coupling (dense B, the Euler map, a lesioned low-rank coupling, no snapshot)."""
    from combonet.models import GRUClassifier, sparse_combo_net

    low = sparse_combo_net(4, 8, density=0.2, coupling_rank=3, seed=0)
    assert low.snapshot().mode == "lowrank" and threads.running_rank(low) == 3
    assert threads.running_rank(sparse_combo_net(4, 8, density=0.2, seed=0)) is None
    euler = sparse_combo_net(4, 8, density=0.2, coupling_rank=3, method="euler", seed=0)
    assert threads.running_rank(euler) is None
    with torch.no_grad():
        low.network.mask[:8, 8:16] = 0  # a pathway lesioned: the dense path runs
    assert threads.running_rank(low) is None
    assert threads.running_rank(GRUClassifier(1, 4, 10)) is None


def test_train_sizes_auto_threads_by_the_step_it_runs(tmp_path, monkeypatch):
    """``combonet train --threads auto`` passes the low-rank step's rank to the rule."""
    from combonet.train import TrainConfig
    from combonet.train.loop import Trainer

    seen = {}
    real = threads.apply_threads

    def spy(setting, **kw):
        seen.update(kw)
        return real(setting, **kw)

    monkeypatch.setattr(threads, "apply_threads", spy)
    cfg = TrainConfig(task="pdigits", limit_train=60, limit_test=20, modules=2, units=8,
                      density=0.2, magnitude=1.0, coupling_rank=2, epochs=1,
                      out_dir=str(tmp_path / "run"))
    trainer = Trainer(cfg)
    try:
        assert seen["rank"] == 2 and seen["units"] == 16
    finally:
        trainer.close()
