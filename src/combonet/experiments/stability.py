"""What stability buys, shown rather than claimed: ``contraction``, ``theorem7``, ``robustness``.

* ``contraction``: a trained Sparse Combo Net run from many initial states under one input
  sequence; the metric distance between trajectories against the certified factor (Section
  2 / DESIGN.md §3), next to the unconstrained control trained with the same budget.
* ``theorem7``: the counterexample ``W = [[0, -c], [c, 0]]`` (Section 3, Theorem 7): the LMI
  verdict from :func:`combonet.conditions.theorem7_counterexample` and a simulation of the
  2-unit ReLU system under an input designed to switch its slope pattern.
* ``robustness``: test accuracy when the hidden state is perturbed at step ``T/2`` or the
  input is noisy, eq.-3 feedback vs unconstrained coupling (Section 4.2.3's control).
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._common import Context, ExperimentResult, config_settings, save_figure, train_run

CONTROL_LABELS = {"sparse-combo": "feedback (eq. 3)", "unconstrained-combo": "unconstrained L = B"}


# -- shared: the two models of the control -------------------------------------------------------
def _train_pair(ctx: Context, seeds: list[int]) -> list[dict[str, Any]]:
    """The eq.-3 Sparse Combo Net and its ``L = B`` control with the same budget (the same
    runs as ``combonet experiment control``, so a shared ``--out`` reuses them)."""
    base = ctx.base()
    rows = []
    for model, label in CONTROL_LABELS.items():
        for seed in seeds:
            rows.append(train_run(ctx, label, dict(base, model=model), seed))
    return rows


def load_trained(run_dir: str | Path) -> tuple[Any, Any, dict[str, Any]]:
    """The final weights of a run (those ``certificate.json`` is about), verified, its data
    splits (same permutation) and its ``config.json`` record."""
    from ..train import RunDir
    from ..train.loop import load_data

    run = RunDir(run_dir).load_model("final")
    splits = load_data(run.config, permutation=run.record["data"].get("permutation"))
    return run.model, splits, run.record


# -- contraction ---------------------------------------------------------------------------------
def contraction(ctx: Context) -> ExperimentResult:
    """Trajectories of a trained network from many initial states under one input converge
    at least as fast as certified (eq. 3 feedback); the ``L = B`` control for comparison."""
    from ..certificate import certify
    from ..simulate import metric_distance, simulate, two_trajectory_check

    seeds = ctx.seed_list([0])[:1]
    runs = _train_pair(ctx, seeds)
    n_seq = ctx.pick(2, 10, 10)
    n_init = ctx.pick(4, 16, 32)
    rows, curves = [], {}
    for run in runs:
        if run["status"] != "finished":
            rows.append({"label": run["label"], "model": run["model"], "seed": run["seed"],
                         "status": run["status"]})
            continue
        model, splits, _ = load_trained(run["run_dir"])
        model = copy.deepcopy(model).double()
        net = model.network
        gen = torch.Generator().manual_seed(1234)
        seq = splits.test.inputs[:n_seq].to(torch.float64)
        inputs = seq.reshape(1, -1, seq.shape[-1])  # n_seq test sequences back to back
        with torch.no_grad():
            drive = model.encoder(inputs)
            steps = drive.shape[1]
            ref = simulate(net, drive, None, dt=model.dt, method=model.method)
            scale = float(ref[0, 1:].pow(2).mean().sqrt())
            sizes = scale * torch.logspace(-1, 1, n_init, dtype=torch.float64)
            x0 = torch.randn(n_init, net.n, generator=gen, dtype=torch.float64)
            x0 = x0 / x0.norm(dim=1, keepdim=True) * sizes[:, None] * math.sqrt(net.n)
            traj = simulate(net, drive.expand(n_init, -1, -1), x0, dt=model.dt,
                            method=model.method)
            m = net.metric().to(torch.float64)
            dist = metric_distance(traj, ref.expand(n_init, -1, -1), m).numpy()
        cert = certify(net, dt=model.dt, method=model.method)
        check = two_trajectory_check(net, drive.expand(n_init, -1, -1), x0,
                                     torch.zeros_like(x0), dt=model.dt, method=model.method)
        fitted, worst_step = _measured_factor(dist)
        curves[run["label"]] = {"dist": dist, "cert": cert.discrete_factor, "dt": model.dt}
        rows.append({
            "label": run["label"], "model": run["model"], "seed": run["seed"],
            "status": run["status"], "test_acc": run["final_test_acc"],
            "certified": cert.certified, "rate": cert.rate,
            "discrete_factor": cert.discrete_factor, "discrete_exact": cert.discrete_exact,
            "metric_condition_number": cert.metric_condition_number,
            "measured_factor": fitted, "worst_step_ratio": worst_step,
            "measured_rate": -math.log(fitted) / model.dt if 0 < fitted < math.inf else None,
            "final_over_initial": float(np.max(dist[:, -1] / dist[:, 0])),
            "envelope_holds": check.holds if cert.certified else None,
            "steps": steps, "initial_states": n_init, "dt": model.dt, "method": model.method,
            "run_dir": run["run_dir"], "wall_s": run["wall_s"],
        })
    cols = ["label", "certified", "rate", "discrete_factor", "measured_factor",
            "worst_step_ratio", "measured_rate", "final_over_initial", "envelope_holds",
            "metric_condition_number", "test_acc"]
    notes = [f"{n_init} initial states with norms 0.1x..10x the typical state norm, "
             f"{n_seq} test sequences back to back ({n_seq * splits.test.inputs.shape[1]} "
             "steps); distance in the network's metric M to the trajectory from x0 = 0; "
             "float64 copy of the trained float32 weights.",
             "measured_factor: per-step factor fitted to log distance (worst trajectory); "
             "worst_step_ratio: largest one-step ratio d[k+1]/d[k] seen; the certificate "
             "promises both <= discrete_factor for the eq.-3 network."]
    return ExperimentResult(
        "contraction", "Sections 2-3, DESIGN.md §3", "Measured vs certified contraction",
        rows, cols, plot=lambda r, p: _plot_contraction(curves, p),
        settings=dict(config_settings(ctx.base()), sequences=n_seq, initial_states=n_init),
        notes=notes)


def _measured_factor(dist: np.ndarray) -> tuple[float, float]:
    """Worst (largest) fitted per-step factor over trajectories and the largest one-step ratio,
    both using only steps where the distance is above 1e-12 of its start (float64 floor)."""
    factors, steps = [], []
    for d in dist:
        ok = d > max(d[0], 1e-300) * 1e-12
        k = np.flatnonzero(ok)
        if len(k) < 3:
            continue
        slope = np.polyfit(k, np.log(d[k]), 1)[0]
        factors.append(math.exp(slope))
        seg = d[: k[-1] + 1]
        steps.append(float(np.max(seg[1:] / seg[:-1])))
    if not factors:
        return math.nan, math.nan
    return float(np.max(factors)), float(np.max(steps))


def _plot_contraction(curves: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, max(1, len(curves)), figsize=(5.5 * max(1, len(curves)), 4),
                             squeeze=False)
    for ax, (label, c) in zip(axes[0], curves.items(), strict=False):
        dist = c["dist"]
        t = np.arange(dist.shape[1]) * c["dt"]
        for d in dist:
            ax.semilogy(t, np.maximum(d / d[0], 1e-17), color="C3" if "unc" in label else "C0",
                        alpha=0.4, lw=0.8)
        if c["cert"] is not None and c["cert"] < 1:
            ax.semilogy(t, c["cert"] ** np.arange(len(t)), "k--", lw=1.5,
                        label=f"certified rho^k, rho={c['cert']:.4f}")
            ax.legend(fontsize=8)
        ax.set(xlabel="time (steps x dt)", ylabel="||x(t) - x_ref(t)||_M / initial",
               title=label)
        ax.grid(alpha=0.3)
    save_figure(fig, path)


# -- robustness ----------------------------------------------------------------------------------
def perturbed_logits(model: Any, inputs: torch.Tensor, k: int, noise: torch.Tensor | None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and last state when ``noise`` is added to the state after ``k`` steps: the
    network runs in two halves with the engine (the classifier's drive, step and map)."""
    if model.readout_mode != "last":
        raise ValueError("the mid-sequence perturbation needs a last-state readout")
    net = model.network
    drive = model.encoder(inputs)
    mid = net(drive[:, :k], None, dt=model.dt, method=model.method, all_states=False)
    if noise is not None:
        mid = mid + noise
    last = net(drive[:, k:], mid, dt=model.dt, method=model.method, all_states=False)
    return model.readout(last), last


def robustness(ctx: Context) -> ExperimentResult:
    """Accuracy under a state perturbation at ``T/2`` and under input noise, eq.-3 feedback
    vs the unconstrained ``L = B`` control with the same training budget (Section 4.2.3)."""
    seeds = ctx.seed_list(ctx.pick([0], [0, 1], [0]))
    runs = _train_pair(ctx, seeds)
    state_sigmas = ctx.pick([0.0, 1.0], [0.0, 0.25, 0.5, 1.0, 2.0, 4.0],
                            [0.0, 0.25, 0.5, 1.0, 2.0, 4.0])
    input_sigmas = ctx.pick([0.0, 0.5], [0.0, 0.1, 0.25, 0.5, 1.0], [0.0, 0.1, 0.25, 0.5, 1.0])
    draws = ctx.pick(1, 3, 3)
    rows = []
    for run in runs:
        if run["status"] != "finished":
            rows.append({"label": run["label"], "seed": run["seed"], "status": run["status"]})
            continue
        model, splits, _ = load_trained(run["run_dir"])
        x, y = splits.test.inputs, splits.test.labels
        k = x.shape[1] // 2
        common = {"label": run["label"], "model": run["model"], "seed": run["seed"],
                  "certified": run.get("certified"), "rate": run.get("rate"),
                  "run_dir": run["run_dir"], "wall_s": run["wall_s"]}
        with torch.no_grad():
            _clean_logits, clean_last = perturbed_logits(model, x, k, None)
            mid = model.network(model.encoder(x)[:, :k], None, dt=model.dt,
                                method=model.method, all_states=False)
            scale = float(mid.pow(2).mean().sqrt())  # RMS state entry at T/2
            for sigma in state_sigmas:
                accs, ratios = [], []
                for d in range(draws):
                    gen = torch.Generator().manual_seed(1000 * d + 7)
                    noise = sigma * scale * torch.randn(mid.shape, generator=gen)
                    logits, last = perturbed_logits(model, x, k, noise if sigma else None)
                    accs.append(float((logits.argmax(1) == y).float().mean()))
                    if sigma:
                        ratios.append(float(((last - clean_last).norm(dim=1)
                                             / noise.norm(dim=1)).median()))
                rows.append(dict(common, kind=f"state at step {k}", sigma=sigma,
                                 noise_abs=sigma * scale, accuracy=float(np.mean(accs)),
                                 acc_std=float(np.std(accs)),
                                 recovery=float(np.median(ratios)) if ratios else None))
            for sigma in input_sigmas:
                accs = []
                for d in range(draws):
                    gen = torch.Generator().manual_seed(2000 * d + 11)
                    noisy = x + sigma * torch.randn(x.shape, generator=gen)
                    accs.append(float((model(noisy).argmax(1) == y).float().mean()))
                rows.append(dict(common, kind="input", sigma=sigma, noise_abs=sigma,
                                 accuracy=float(np.mean(accs)), acc_std=float(np.std(accs)),
                                 recovery=None))
    cols = ["label", "seed", "kind", "sigma", "accuracy", "acc_std", "recovery", "certified"]
    notes = ["state noise: N(0, (sigma * s)^2) per unit at step T/2, s = RMS state entry of "
             "that model at T/2 on the test set; input noise: N(0, sigma^2) added to the "
             "standardised inputs at every step.",
             "recovery: median over test sequences of ||x_T(perturbed) - x_T(clean)|| / "
             "||noise||, i.e. how much of the kick is left at the end of the sequence."]
    summary = _robust_summary(rows)
    return ExperimentResult(
        "robustness", "4.2.3 (control), Section 2", "Robustness to state and input noise",
        rows, cols, summary, ["label", "kind", "sigma", "n", "accuracy", "recovery"],
        plot=_plot_robustness,
        settings=dict(config_settings(ctx.base()), state_sigmas=state_sigmas,
                      input_sigmas=input_sigmas, draws=draws, seeds=seeds), notes=notes)


def _robust_summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        if "kind" in r:
            groups.setdefault((r["label"], r["kind"], r["sigma"]), []).append(r)
    out = []
    for (label, kind, sigma), members in groups.items():
        rec = [m["recovery"] for m in members if m.get("recovery") is not None]
        out.append({"label": label, "kind": kind, "sigma": sigma, "n": len(members),
                    "accuracy": float(np.mean([m["accuracy"] for m in members])),
                    "recovery": float(np.mean(rec)) if rec else None})
    return out


def _plot_robustness(res: ExperimentResult, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    kinds = list(dict.fromkeys(r["kind"] for r in res.summary))
    for ax, kind in zip(axes, kinds, strict=False):
        for i, label in enumerate(dict.fromkeys(r["label"] for r in res.summary)):
            pts = [(r["sigma"], 100 * r["accuracy"]) for r in res.summary
                   if r["kind"] == kind and r["label"] == label]
            ax.plot(*zip(*pts, strict=True), marker="o", color=f"C{3 * i}", label=label)
        ax.set(xlabel="noise sigma (relative)", ylabel="test accuracy (%)",
               title=f"noise on the {kind}")
        ax.grid(alpha=0.3)
        ax.legend()
    save_figure(fig, path)


# -- Theorem 7 -----------------------------------------------------------------------------------
def switching_growth(c: float, dwell: np.ndarray | None = None) -> tuple[float, float]:
    """Largest growth rate (per unit time) of ``dx = J(t) dx`` when ``J`` alternates between
    the slope vertices ``D = diag(1, 0)`` and ``diag(0, 1)`` of Theorem 7's ``W`` (g = 1,
    tau = 1) with equal dwell ``T``; returns ``(rate, T)``. Positive rate: two nearby
    trajectories that see this slope pattern separate exponentially."""
    dwell = np.linspace(0.02, 4.0, 400) if dwell is None else np.asarray(dwell, float)
    # J_a = -I + W diag(1, 0) = [[-1, 0], [c, -1]] (x1 > 0 > x2), J_b = -I + W diag(0, 1) =
    # [[-1, -c], [0, -1]] (x2 > 0 > x1): both are -I plus a nilpotent part, so
    # e^{J_b T} e^{J_a T} = e^{-2T} [[1 - (cT)^2, -cT], [cT, 1]] exactly.
    a = c * dwell
    tr = np.exp(-2 * dwell) * (2 - a**2)
    det = np.exp(-4 * dwell)
    disc = np.sqrt((tr**2 - 4 * det).astype(complex))
    rho = np.maximum(np.abs((tr + disc) / 2), np.abs((tr - disc) / 2))
    rates = np.log(rho) / (2 * dwell)
    k = int(np.argmax(rates))
    return float(rates[k]), float(dwell[k])


def designed_input(c: float, dwell: float, amp: float = 1.0, sharp: float = 20.0):
    """``(x_star, u)``: a reference path ``x*(t) = amp tanh(sharp sin(pi t / dwell)) (1, -1)``
    that alternates between the orthants ``x1 > 0 > x2`` and ``x2 > 0 > x1`` every ``dwell``,
    and the input ``u = x*' + x* - W relu(x*)`` that makes it a solution of eq. 1."""
    w_mat = np.array([[0.0, -c], [c, 0.0]])
    om = math.pi / dwell
    e = np.array([1.0, -1.0])

    def x_star(t: float) -> np.ndarray:
        return amp * math.tanh(sharp * math.sin(om * t)) * e

    def u(t: float) -> np.ndarray:
        s = sharp * math.sin(om * t)
        xd = amp * sharp * om * math.cos(om * t) / math.cosh(s) ** 2 * e
        xs = amp * math.tanh(s) * e
        return xd + xs - w_mat @ np.maximum(xs, 0.0)

    return x_star, u


def simulate_2unit(c: float, u: Any, x0: np.ndarray, t_end: float, h: float) -> np.ndarray:
    """RK4 (float64) of ``dx/dt = -x + W relu(x) + u(t)`` for a batch of initial states;
    states every step, shape (steps + 1, batch, 2)."""
    w_t = np.array([[0.0, -c], [c, 0.0]]).T
    x = np.array(x0, dtype=np.float64)

    def f(z: np.ndarray, t: float) -> np.ndarray:
        return -z + np.maximum(z, 0.0) @ w_t + u(t)

    out = [x.copy()]
    for i in range(round(t_end / h)):
        t = i * h
        k1 = f(x, t)
        k2 = f(x + h / 2 * k1, t + h / 2)
        k3 = f(x + h / 2 * k2, t + h / 2)
        k4 = f(x + h * k3, t + h)
        x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        out.append(x.copy())
    return np.stack(out)


def theorem7(ctx: Context) -> ExperimentResult:
    """Theorem 7: ``g W_sym - I < 0`` holds for ``W = [[0, -c], [c, 0]]`` yet no constant
    metric exists for ``c >= 2``; and what a simulation of the 2-unit ReLU system shows."""
    from ..conditions import theorem7_counterexample

    cs = ctx.pick([1.0, 4.0], [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0],
                  [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0])
    t_end, h = ctx.pick((4.0, 0.005), (30.0, 0.002), (30.0, 0.002))
    rows, sims = [], {}
    offsets = np.array([[1e-3, 1e-3], [-1e-3, 2e-3], [2.0, 1.0], [-3.0, -3.0], [0.5, 3.0]])
    for c in cs:
        t7 = theorem7_counterexample(c)
        growth, dwell = switching_growth(c)
        x_star, u = designed_input(c, dwell)
        traj = simulate_2unit(c, u, x_star(0.0)[None] + offsets, t_end, h)
        t = np.arange(traj.shape[0]) * h
        exact = np.stack([x_star(ti) for ti in t])  # the designed solution, in closed form
        dist = np.linalg.norm(traj - exact[:, None], axis=2)  # (steps + 1, 5)
        k_fit = round(min(t_end, 6.0) / h)
        near = dist[: k_fit + 1, :2].mean(1)
        slope = float(np.polyfit(t[: k_fit + 1], np.log(np.maximum(near, 1e-300)), 1)[0])
        sims[c] = {"t": t, "dist": dist, "traj": traj, "exact": exact}
        rows.append({
            "c": c, "sym_condition_holds": t7.sym_condition_holds, "sym_margin": t7.sym_margin,
            "lmi_feasible": t7.lmi_feasible, "certified_infeasible": t7.certified_infeasible,
            "best_constant_rate": t7.best_constant_rate, "solver_status": t7.solver_status,
            "switching_growth": growth, "dwell": dwell, "fitted_separation_rate": slope,
            "near_final_distance": float(dist[-1, :2].max()),
            "far_final_distance": float(dist[-1, 2:].max()),
            "converged": bool(dist[-1].max() < 1e-3 * dist[0].max()),
            "message": t7.message,
        })
    cols = ["c", "sym_condition_holds", "lmi_feasible", "certified_infeasible",
            "best_constant_rate", "switching_growth", "dwell", "fitted_separation_rate",
            "near_final_distance", "far_final_distance", "converged"]
    notes = [
        "LMI columns: conditions.theorem7_counterexample (SCS, float64-verified; the dual "
        "certificate proves infeasibility for c > 2). best_constant_rate = max(0, 1 - c/2).",
        "switching_growth: largest exponent (1/time) of the variational equation when the ReLU "
        "slope pattern alternates diag(1,0) / diag(0,1) with equal dwell T (scan of T); "
        "positive from c ~ 3, negative below.",
        f"simulation: RK4, h = {h}, t = 0..{t_end:g}, float64; the input u = x*' + x* - "
        "W relu(x*) makes x*(t) = tanh(20 sin(pi t / T)) (1, -1) (switching orthant every T) an "
        "exact solution; 5 trajectories start 1e-3 (2) and O(1) (3) away from x*(0); "
        "distances are to the closed-form x*(t). fitted_separation_rate: slope of log "
        "distance of the two nearby starts over the first 6 time units; converged: all 5 "
        "below 1e-3 of the largest initial distance at the end.",
    ]
    return ExperimentResult(
        "theorem7", "Theorem 7 (Section 3)", "Theorem 7: no constant metric, and simulation",
        rows, cols, plot=lambda r, p: _plot_theorem7(r, sims, p),
        settings={"c": cs, "t_end": t_end, "h": h, "amp": 1.0, "sharp": 20.0}, notes=notes)


def _plot_theorem7(res: ExperimentResult, sims: dict[float, dict[str, Any]], path: Path
                   ) -> None:
    import matplotlib.pyplot as plt

    fig, (ax_g, ax_d, ax_p) = plt.subplots(1, 3, figsize=(15, 4.2))
    cs = [r["c"] for r in res.rows]
    ax_g.plot(cs, [r["switching_growth"] for r in res.rows], "o-",
              label="switching growth (variational)")
    ax_g.plot(cs, [r["fitted_separation_rate"] for r in res.rows], "s--",
              label="fitted separation rate (simulation)")
    ax_g.plot(cs, [-r["best_constant_rate"] for r in res.rows], "^:",
              label="-(best constant-metric rate)")
    ax_g.axhline(0, color="k", lw=0.8)
    ax_g.axvline(2, color="C3", lw=0.8, ls="--", label="c = 2: no constant metric beyond")
    ax_g.set(xlabel="c", ylabel="rate (1/time)", title="W = [[0,-c],[c,0]], g W_sym - I = -I")
    ax_g.legend(fontsize=7)
    ax_g.grid(alpha=0.3)
    show = [c for c in cs if c in (2.0, 5.0)] or cs[-1:]
    for c in show:
        s = sims[c]
        ax_d.semilogy(s["t"], np.maximum(s["dist"][:, :2].mean(1), 1e-17), label=f"c = {c:g}")
    ax_d.set(xlabel="t", ylabel="mean distance of the 2 nearby starts to x*(t)",
             title="same input, starts 1e-3 apart")
    ax_d.legend()
    ax_d.grid(alpha=0.3)
    c = max(cs)
    s = sims[c]
    tail = len(s["t"]) // 2
    for j in range(s["traj"].shape[1]):
        ax_p.plot(s["traj"][tail:, j, 0], s["traj"][tail:, j, 1], lw=0.7, alpha=0.8)
    ax_p.plot(s["exact"][tail:, 0], s["exact"][tail:, 1], "k--", lw=1.5,
              label="x*(t), an exact solution")
    ax_p.legend(fontsize=8)
    ax_p.set(xlabel="x1", ylabel="x2", title=f"c = {c:g}: second half of 5 trajectories")
    ax_p.grid(alpha=0.3)
    save_figure(fig, path)
