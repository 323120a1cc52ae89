"""Analyses: the certified fixed-point bound against long simulations, PCA, lesions that keep
certificates, reduced-rank regression, and the analyze command's entry point."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import combonet
from combonet import Feedback, Hierarchy, SparseModule, SVDModule, TriangularModule, Unconstrained
from combonet.analysis import (
    area_pca,
    communication,
    condition_inputs,
    coupling_rank,
    cut_pathway,
    fixed_points,
    lesion_area,
    lesion_study,
    model_fixed_points,
    plot_area_pca,
    plot_communication,
    plot_fixed_points,
    plot_lesions,
    reduced_rank_regression,
    residual_bound,
    rrr_cross_validated,
)
from combonet.analysis import cli as analyze
from combonet.analysis._common import condition_labels
from combonet.areas import build_areas
from combonet.data.neurogym import SyntheticTask
from combonet.models.perstep import PerStepModel


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def random_network(seed: int) -> Hierarchy:
    """Hierarchy([Feedback([sparse, svd]), triangular]) with randomised parameters."""
    torch.manual_seed(seed)
    fb = Feedback([SparseModule(4, 0.25, 1.0, seed=seed), SVDModule(3, seed=seed + 1)],
                  init_scale=1.5, seed=seed)
    net = Hierarchy([fb, TriangularModule(3, seed=seed + 2)], seed=seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return net.double()


def m_norm(v: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return torch.einsum("...i,ij,...j->...", v, m, v).sqrt()


SPEC = {
    "seed": 3,
    "areas": {
        "sensory": {"units": 4, "module": "sparse", "inputs": "all",
                    "options": {"density": 0.25, "magnitude": 1.0}},
        "association": {"units": 4, "module": "svd"},
        "motor": {"units": 3, "module": "svd", "output": True},
    },
    "pathways": [{"from": "sensory", "to": "association", "kind": "feedback"},
                 {"from": "association", "to": "motor", "kind": "hierarchical"}],
}


def area_model(seed: int = 0):
    torch.manual_seed(seed)
    task = SyntheticTask(2)
    net, amap = build_areas(SPEC)
    model = PerStepModel(net, task.features, task.num_actions, dt=0.2,
                         input_mask=amap.input_mask(task.features),
                         output_mask=amap.output_mask())
    with torch.no_grad():  # a non-trivial coupling and encoder
        net.systems[0].b.mul_(3.0)
        net.b.mul_(3.0)
        model.encoder.weight.mul_(3.0)
    return model, amap, task


# -- fixed points ------------------------------------------------------------------------------
@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 10_000), scale=st.floats(0.1, 3.0))
def test_fixed_point_bound_holds_against_a_long_simulation(seed, scale):
    net = random_network(seed)
    lam = net.rate()
    assert lam > 0
    gen = torch.Generator().manual_seed(seed)
    u = scale * torch.randn(1, net.n, generator=gen, dtype=torch.float64)
    m = net.metric().detach()
    # an independent long simulation: explicit Euler (its fixed points are exactly f(x) = 0)
    # with a step the Euler certificate covers, from 3 random starts
    h = min(0.05, 0.5 * combonet.certify(net, dt=0.01, method="euler").max_dt)
    with torch.no_grad():
        w, lmat, phi = net.weight(), net.coupling(), net.activation
        x = 3 * torch.randn(3, net.n, generator=gen, dtype=torch.float64)
        traj = [x]
        for step in range(60_000):
            x = x + h * (-x + phi(x) @ w.T + x @ lmat.T + u) / net.tau
            if step % 500 == 0:
                traj.append(x)
                if float(m_norm(net.rhs(x, u), m).max()) < 1e-11:
                    break
        ends = x
    res_end, tol, _ = residual_bound(net, ends, u.expand(3, -1))
    assert float(res_end.max()) < 1e-10  # converged
    x_star = ends[0]
    assert float(m_norm(ends - x_star, m).max()) < 1e-8  # one attractor for every start
    # the bound at points all over the state space, including along the trajectories
    points = torch.cat([x_star + r * torch.randn(20, net.n, generator=gen, dtype=torch.float64)
                        for r in (0.01, 1.0, 10.0)] + [t[0:1] for t in traj])
    dist = m_norm(points - x_star, m)
    _, bound, _ = residual_bound(net, points, u.expand(len(points), -1))
    slack = float(tol.max()) + 1e-12
    assert torch.all(dist <= bound * (1 + 1e-9) + slack), float((dist - bound).max())
    # the computed fixed point, its certified bound and the eigenvalues of the linearisation
    fps = fixed_points(net, u, dt=0.1)
    assert fps.certified and fps.rate == pytest.approx(lam)
    found = torch.as_tensor(fps.states[0])
    assert float(m_norm(found - x_star, m)) <= fps.bound[0] * (1 + 1e-9) + slack
    assert fps.bound[0] < 1e-9
    assert fps.eigenvalues.real.max() <= -lam + 1e-9


def test_no_certificate_no_bound():
    torch.manual_seed(0)
    net = Unconstrained([SVDModule(3, seed=0), SVDModule(3, seed=1)], init_scale=40.0,
                        seed=0).double()
    assert net.rate() <= 0
    fps = fixed_points(net, torch.zeros(1, 6, dtype=torch.float64), max_chunks=2)
    assert not fps.certified and np.isinf(fps.bound).all() and fps.notes


def test_condition_inputs_and_model_fixed_points(tmp_path):
    model, _, task = area_model()
    trials = task.sample(30, seed=1)
    labels, inputs = condition_inputs(trials, period="stimulus")
    assert len(labels) == len(set(labels)) == inputs.shape[0] <= 4
    first = labels[0]
    names = [f"{trials.task_names[int(k)]}/choice={int(c)}"
             for k, c in zip(trials.task, trials.choice, strict=True)]
    rows = [trials.inputs[i, slice(*trials.periods[i]["stimulus"])].mean(0)
            for i, n in enumerate(names) if n == first]
    assert torch.allclose(inputs[0], torch.stack(rows).mean(0), atol=1e-6)
    fps = model_fixed_points(model, inputs, labels)
    assert fps.certified and fps.states.shape == (len(labels), model.network.n)
    assert (fps.bound < 1e-8).all()
    plot_fixed_points(fps, tmp_path / "fp.png")
    assert (tmp_path / "fp.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="no trial has a period named"):
        condition_inputs(trials, period="nope")


# -- population trajectories -------------------------------------------------------------------
def test_area_pca_finds_the_condition_axis(tmp_path):
    model, amap, task = area_model()
    trials = task.sample(24, seed=2)
    gen = torch.Generator().manual_seed(0)
    direction = torch.tensor([1.0, 2.0, -1.0, 0.5]) / 2.5
    sign = (trials.choice.float() - 1.5) * 2
    t = torch.arange(trials.steps).float()
    states = 0.01 * torch.randn(len(trials), trials.steps, model.network.n, generator=gen)
    states[:, :, 4:8] += sign[:, None, None] * t[None, :, None] * direction
    result = area_pca(model, trials, amap, states=states, n_components=2)
    pc1 = torch.as_tensor(result.components["association"][0]).float()
    assert abs(float(pc1 @ direction / direction.norm())) > 0.99
    assert result.explained["association"][0] > 0.95
    assert set(result.trajectories) == {"sensory", "association", "motor"}
    labels = condition_labels(trials, "choice")
    first = result.conditions[0]
    shortest = min(int(n) for n, lab in zip(trials.lengths, labels, strict=True) if lab == first)
    assert result.trajectories["association"][first].shape == (shortest, 2)
    real = area_pca(model, trials, amap)  # from the model's own states
    assert all(0 < v.sum() <= 1 + 1e-9 for v in real.explained.values())
    plot_area_pca(real, tmp_path / "pca.png")
    assert (tmp_path / "pca.png").is_file()


# -- lesions -----------------------------------------------------------------------------------
def test_silencing_an_area_keeps_it_at_zero_and_the_model_certified():
    model, amap, task = area_model()
    before = model.network.coupling().detach().clone()
    lesioned = lesion_area(model, amap, "association")
    sl = amap.units("association")
    trials = task.sample(8, seed=0)
    with torch.no_grad():
        states = lesioned.states(trials.inputs)
        intact = model.states(trials.inputs)
    assert not states[:, :, sl].any()
    assert intact[:, :, sl].abs().sum() > 0  # the original model is untouched
    after = lesioned.network.coupling().detach()
    expected = before.clone()
    expected[sl, :] = 0
    expected[:, sl] = 0
    assert torch.allclose(after, expected, atol=1e-6)
    assert torch.allclose(model.network.coupling().detach(), before)
    cert = combonet.certify(lesioned.network, dt=lesioned.dt, method=lesioned.method)
    assert cert.certified, cert.summary()


def test_cutting_a_feedback_pathway_removes_both_directions_and_keeps_eq3():
    model, amap, _ = area_model()
    before = model.network.coupling().detach().clone()
    cut = cut_pathway(model, amap, "association", "sensory")
    s, a, m = (amap.units(k) for k in ("sensory", "association", "motor"))
    lmat = cut.network.coupling().detach()
    assert before[a, s].abs().sum() > 0 and before[s, a].abs().sum() > 0
    assert not lmat[a, s].any() and not lmat[s, a].any()
    assert torch.allclose(lmat[m, a], before[m, a])  # the other pathway is intact
    group = cut.network.systems[0]
    mm = group.metric().detach().numpy()
    own = group.coupling().detach().double().numpy()
    assert np.abs(mm @ own + own.T @ mm).max() < 1e-9  # eq. 3: skew in the metric
    assert combonet.certify(cut.network, dt=cut.dt, method=cut.method).certified
    with pytest.raises(ValueError, match="no pathway between sensory and motor"):
        cut_pathway(model, amap, "sensory", "motor")


def test_lesion_study_reports_every_lesion_with_its_certificate(tmp_path):
    model, amap, task = area_model()
    trials = task.sample(20, seed=3, balanced=True)
    report = lesion_study(model, amap, trials)
    assert [les.target for les in report.lesions] == [
        "sensory", "association", "motor", "sensory <-> association",
        "association -> motor"]
    assert report.baseline_certified and all(les.certified for les in report.lesions)
    change = report.change()
    assert set(change["motor"]) == set(trials.task_names)
    silenced = next(les for les in report.lesions if les.target == "motor")
    # motor alone drives the readout: silenced, the logits are the readout bias, one action
    # at every step, so exactly the trials whose answer is that action are correct
    action = int(model.readout.bias.argmax())
    expected = float((trials.choice == action).float().mean())
    assert silenced.performance.accuracy == pytest.approx(expected)
    json.dumps(report.to_dict())
    plot_lesions(report, tmp_path / "lesions.png")
    assert (tmp_path / "lesions.png").is_file()


# -- communication -----------------------------------------------------------------------------
def test_full_rank_rrr_is_least_squares_and_rank_is_respected():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 6))
    y = x @ rng.standard_normal((6, 4)) + 0.3 * rng.standard_normal((200, 4)) + 2.0
    b, c = reduced_rank_regression(x, y, 4, ridge=0.0)
    design = np.hstack([x, np.ones((200, 1))])
    coef = np.linalg.lstsq(design, y, rcond=None)[0]
    assert np.allclose(b, coef[:6], atol=1e-8) and np.allclose(c, coef[6], atol=1e-8)
    for r in (1, 2, 3):
        br, cr = reduced_rank_regression(x, y, r, ridge=0.0)
        assert np.linalg.matrix_rank(br, tol=1e-8) == r
        sse = ((y - x @ br - cr) ** 2).sum()
        for _ in range(50):  # nearby rank-r maps fit worse
            u, s, vt = np.linalg.svd(br + 0.05 * rng.standard_normal(br.shape))
            other = (u[:, :r] * s[:r]) @ vt[:r]
            assert ((y - x @ other - (y - x @ other).mean(0)) ** 2).sum() >= sse - 1e-9


def test_cross_validation_recovers_the_communication_rank():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((600, 8))
    a = np.linalg.qr(rng.standard_normal((8, 2)))[0]
    b = np.linalg.qr(rng.standard_normal((6, 2)))[0].T
    y = 2 * x @ a @ b + 0.5 * rng.standard_normal((600, 6))  # two equally strong dimensions
    cv = rrr_cross_validated(x, y, [1, 2, 3, 4, 6], groups=np.arange(600) // 20, folds=5)
    assert cv["optimal_rank"] == 2
    assert cv["r2_mean"][1] > cv["r2_mean"][0] + 0.1
    assert cv["full_r2"] == pytest.approx(cv["r2_mean"][-1], abs=1e-9)
    with pytest.raises(ValueError, match="folds must lie in"):
        rrr_cross_validated(x, y, [1], groups=np.zeros(600), folds=5)


def test_communication_between_areas_and_the_coupling_rank(tmp_path):
    model, amap, task = area_model()
    assert coupling_rank(model.network, amap, "sensory", "association") == 4
    assert coupling_rank(model.network, amap, "association", "motor") == 3
    assert coupling_rank(model.network, amap, "sensory", "motor") == 0
    cut = cut_pathway(model, amap, "sensory", "association")
    assert coupling_rank(cut.network, amap, "sensory", "association") == 0
    trials = task.sample(30, seed=4)
    res = communication(model, amap, trials, "association", "motor", folds=3)
    assert res.ranks == [1, 2, 3] and len(res.r2_mean) == 3
    assert res.coupling_rank == 3 and res.samples == int(trials.lengths.sum())
    assert res.r2_mean[-1] > 0.5  # motor is driven by association
    plot_communication([res], tmp_path / "comm.png")
    assert (tmp_path / "comm.png").is_file()


# -- the analyze command's entry point ---------------------------------------------------------
def test_analyze_main_from_args_on_saved_weights(tmp_path, capsys):
    areas = tmp_path / "areas.json"
    areas.write_text(json.dumps(SPEC))
    task = SyntheticTask(2)
    model, _ = analyze.build_model(areas, task, dt=0.2)
    weights = tmp_path / "model.pt"
    torch.save(model.state_dict(), weights)
    parser = argparse.ArgumentParser()
    analyze.add_arguments(parser)
    out = tmp_path / "out"
    argv = [str(tmp_path), "--areas", str(areas), "--task", "synthetic:2", "--trials", "24",
            "--dt", "0.2", "--out", str(out)]
    assert analyze.main_from_args(parser.parse_args(argv)) == 0
    for name in ("fixed-points.png", "pca.png", "lesions.png", "communication.png"):
        assert (out / name).stat().st_size > 1000
    report = json.loads((out / "analysis.json").read_text())
    assert report["fixed_points"]["certified"] and report["trials"] == 24
    assert all(les["certified"] for les in report["lesions"]["lesions"])
    assert "report:" in capsys.readouterr().out
    with pytest.raises(ValueError, match="already exist"):  # never overwrites
        analyze.main_from_args(parser.parse_args(argv))
    other = dict(SPEC, areas={**SPEC["areas"], "motor": {"units": 5, "module": "svd"}})
    (tmp_path / "other.json").write_text(json.dumps(other))
    bad = [str(weights), "--areas", str(tmp_path / "other.json"), "--task", "synthetic:2",
           "--out", str(tmp_path / "o2")]
    with pytest.raises(ValueError, match="does not match the model") as info:
        analyze.main_from_args(parser.parse_args(bad))
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match='Invalid analyses "pcb"'):
        analyze.main_from_args(parser.parse_args([*argv, "--analyses", "pcb"]))
    with pytest.raises(FileNotFoundError, match="no weights file"):
        analyze.main_from_args(parser.parse_args([str(tmp_path / "nope"), "--areas",
                                                  str(areas)]))
