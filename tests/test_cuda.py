"""The model, the engine and the bench on CUDA, against the same computation on CPU.

Marked ``cuda`` (``pytest -m cuda``); every test skips, with the reason, where torch sees no
CUDA device. ``benchmarks/device.sh`` runs them on a GPU machine.
"""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from combonet import bench, certify
from combonet.bench.contenders import CarefulLoop
from combonet.models import sparse_combo_net, svd_combo_net

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(),
                       reason="CUDA is not available (torch.cuda.is_available() is False)"),
]

CUDA = torch.device("cuda")


def _pair(builder, method: str):
    """The same model on CPU and on CUDA (identical weights)."""
    cpu = builder(method)
    gpu = builder(method).to(CUDA)
    gpu.load_state_dict(cpu.state_dict())
    return cpu, gpu


def _logits_and_grads(model, inputs, labels):
    params = [p for p in model.parameters() if p.requires_grad]
    logits = model(inputs)
    loss = torch.nn.functional.cross_entropy(logits, labels)
    grads = torch.autograd.grad(loss, params)
    return logits.detach().cpu(), [g.cpu() for g in grads]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


BUILDERS = {
    "sparse": lambda m: sparse_combo_net(4, 16, density=0.1, magnitude=3.0, method=m, seed=3),
    "svd": lambda m: svd_combo_net(3, 16, method=m, seed=3),
}


@pytest.mark.parametrize("method", ["cayley", "euler"])
@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_model_on_cuda_matches_cpu(kind, method):
    """Logits and gradients of a training step agree between CPU and CUDA (float32, 200
    steps; TF32 matmuls are off so both run IEEE float32)."""
    torch.backends.cuda.matmul.allow_tf32 = False
    cpu, gpu = _pair(BUILDERS[kind], method)
    gen = torch.Generator().manual_seed(0)
    inputs = torch.rand(8, 200, 1, generator=gen)
    labels = torch.randint(0, 10, (8,), generator=gen)
    want_out, want_grads = _logits_and_grads(cpu, inputs, labels)
    got_out, got_grads = _logits_and_grads(gpu, inputs.to(CUDA), labels.to(CUDA))
    assert _rel(got_out, want_out) < 1e-4
    for g, w in zip(got_grads, want_grads, strict=True):
        assert _rel(g, w) < 1e-3


def test_all_states_and_no_grad_path_on_cuda():
    """The network's forward with all states, under no_grad, agrees with CPU."""
    cpu, gpu = _pair(BUILDERS["sparse"], "cayley")
    drive = torch.randn(4, 50, cpu.network.n, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = cpu.network(drive, dt=0.1, method="cayley", all_states=True)
        got = gpu.network(drive.to(CUDA), dt=0.1, method="cayley", all_states=True)
    assert got.device.type == "cuda" and got.shape == want.shape
    assert _rel(got.cpu(), want) < 1e-4


def test_careful_loop_on_cuda_matches_engine_on_cuda():
    _, gpu = _pair(BUILDERS["sparse"], "cayley")
    inputs = torch.rand(8, 100, 1, device=CUDA)
    labels = torch.randint(0, 10, (8,), device=CUDA)
    out_e, grads_e = _logits_and_grads(gpu, inputs, labels)
    out_c, grads_c = _logits_and_grads(CarefulLoop(gpu), inputs, labels)
    assert _rel(out_e, out_c) < 1e-4
    for a, b in zip(grads_e, grads_c, strict=True):
        assert _rel(a, b) < 1e-3


def test_graphed_careful_loop_matches_careful_loop():
    """The CUDA-graph capture of the careful loop gives its logits and gradients, also on a
    replay with new inputs (the static buffers are refilled)."""
    from combonet.bench.graphs import GraphedCarefulLoop

    _, gpu = _pair(BUILDERS["sparse"], "cayley")
    graphed, careful = GraphedCarefulLoop(gpu), CarefulLoop(gpu)
    for seed in (0, 1):
        gen = torch.Generator(device=CUDA).manual_seed(seed)
        inputs = torch.rand(8, 60, 1, device=CUDA, generator=gen)
        labels = torch.randint(0, 10, (8,), device=CUDA, generator=gen)
        out_g, grads_g = _logits_and_grads(graphed, inputs, labels)
        out_c, grads_c = _logits_and_grads(careful, inputs, labels)
        assert _rel(out_g, out_c) < 1e-5
        for a, b in zip(grads_g, grads_c, strict=True):
            assert _rel(a, b) < 1e-5
    with torch.no_grad():
        assert _rel(graphed(inputs).cpu(), careful(inputs).cpu()) < 1e-5


def test_certificate_of_a_cuda_model_equals_cpu():
    cpu, gpu = _pair(BUILDERS["sparse"], "cayley")
    a = certify(cpu.network, dt=0.1, method="cayley")
    b = certify(gpu.network, dt=0.1, method="cayley")
    assert a.certified == b.certified
    assert abs(a.rate - b.rate) <= 1e-9 * max(1.0, abs(a.rate))


def _bench(argv: list[str], capsys) -> tuple[int, dict]:
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    status = bench.main_from_args(parser.parse_args([*argv, "--json"]))
    return status, json.loads(capsys.readouterr().out)


def test_bench_on_cuda_with_graphs(capsys):
    status, r = _bench(["--quick", "--device", "cuda", "--cuda-graphs"], capsys)
    assert status == 0, r["rel_err_vs_careful"]
    assert r["config"]["device"].startswith("cuda") and r["config"]["gpu"]
    assert r["failed"] == {}
    assert {"engine", "careful", "careful-graph", "rebuild", "gru", "lstm"} == \
        set(r["time_train_s"])
    assert all(v is not None and v >= 0 for v in r["peak_memory_mb"].values())


def test_train_budget_on_cuda(capsys):
    status, r = _bench(["--quick", "--device", "cuda", "--train-seconds", "1"], capsys)
    assert status == 0 and r["train_steps"] >= 1 and r["device"].startswith("cuda")
    assert r["certified"] in (True, False)
