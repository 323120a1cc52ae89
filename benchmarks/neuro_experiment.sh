#!/usr/bin/env bash
# Yang19 multitask (NeuroGym): a certified multi-area network (configs/areas/yang19-multitask.yaml)
# against NeuroGym's standard CTRNN baseline (256 units, tau = dt = 100 ms, Adam 1e-3, gradient
# clipping 1.0), the same training steps on the same fresh trials, in ONE process taking turns
# epoch by epoch (Trainer API), one torch thread each; then the analyses of the certified model.
#
# Needs the [neuro] extra: pip install 'combonet[neuro]'.  Run from the repository root:
#     bash benchmarks/neuro_experiment.sh                 # the run of docs/neuro.md
#     PYTHON=/path/to/venv/bin/python bash benchmarks/neuro_experiment.sh
#     PILOT=1 bash benchmarks/neuro_experiment.sh        # the pilot that chose dt and lr
# Settings (environment): EPOCHS (36), EPOCH_TRIALS (6400; / BATCH = steps per epoch),
# BATCH (64), AREAS_LR (0.01), AREAS_DT (0.3), SEED (0), OUT (runs/neuro-yang19),
# DOCS (docs: where data/ and figures/ get the results; empty = do not write them),
# ANALYZE_TRIALS (400), ANALYZE_BY (choice).
# An interrupted run continues where it stopped when started again with the same settings.
#
# PILOT=1 runs only the pilot that chose AREAS_DT and AREAS_LR (and checks the CTRNN recipe's
# learning rate): 400 steps of each setting on the same seeds, validation performance on 200
# validation trials (never the test set); results in $OUT/pilot.json.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
if [ "${PILOT:-0}" = 1 ]; then
    export OUT=${OUT:-runs/neuro-yang19-pilot}
    exec "$PYTHON" - <<'EOF'
import json, os, shutil, time
from pathlib import Path

from combonet.train.config import TrainConfig
from combonet.train.loop import Trainer

out = Path(os.environ["OUT"])
grid = [("areas", 1.0, 1e-3), ("areas", 1.0, 3e-3), ("areas", 1.0, 1e-2),
        ("areas", 0.3, 3e-3), ("areas", 0.3, 1e-2), ("areas", 0.1, 1e-2),
        ("ctrnn", None, 1e-3), ("ctrnn", None, 3e-3), ("ctrnn", None, 1e-2)]
rows = []
for model, dt, lr in grid:
    name = f"{model}-dt{dt}-lr{lr:g}" if dt else f"{model}-lr{lr:g}"
    shutil.rmtree(out / name, ignore_errors=True)
    extra = (dict(areas="configs/areas/yang19-multitask.yaml", dt=dt) if model == "areas"
             else dict(hidden=256, ctrnn_tau=100.0))
    cfg = TrainConfig(task="neurogym:yang19", model=model, lr=lr, epochs=1,
                      epoch_trials=400 * 64, batch_size=64, val_trials=200, test_trials=1,
                      schedule="none", grad_clip=1.0, threads="1", certify_every=0,
                      out_dir=str(out / name), **extra)
    t0 = time.time()
    trainer = Trainer(cfg)
    trainer.begin()
    rec = trainer.advance()
    res = trainer.finish("finished")
    trainer.close()
    cert = res.certificate["certified"] if res.certificate else None
    rows.append({"model": model, "dt": dt, "lr": lr, "steps": 400, "val": rec["val_acc"],
                 "val_loss": rec["val_loss"], "train_s": rec["time_train"],
                 "certified": cert, "wall_s": time.time() - t0})
    print(f"{name:24s} val {100 * rec['val_acc']:5.1f}%  loss {rec['val_loss']:.3f}  "
          f"train {rec['time_train']:.0f}s  certified {cert}", flush=True)
(out / "pilot.json").write_text(json.dumps(rows, indent=2))
EOF
fi
export EPOCHS=${EPOCHS:-36} EPOCH_TRIALS=${EPOCH_TRIALS:-6400} BATCH=${BATCH:-64}
export AREAS_LR=${AREAS_LR:-0.01} AREAS_DT=${AREAS_DT:-0.3} SEED=${SEED:-0}
export OUT=${OUT:-runs/neuro-yang19} DOCS=${DOCS-docs}
COMBONET=("$PYTHON" -m combonet)
mkdir -p "$OUT"

"$PYTHON" - <<'EOF'
import json, os, platform, subprocess, sys, time
from pathlib import Path

import torch

import combonet
from combonet.train.config import TrainConfig
from combonet.train.loop import Trainer, TrainingDiverged
from combonet.train.reporting import ConsoleReporter

env = os.environ
out = Path(env["OUT"])
common = dict(task="neurogym:yang19", epochs=int(env["EPOCHS"]),
              epoch_trials=int(env["EPOCH_TRIALS"]), batch_size=int(env["BATCH"]),
              val_trials=int(env.get("VAL_TRIALS", 400)),
              test_trials=int(env.get("TEST_TRIALS", 2000)), other_weight=0.2, optimizer="adam",
              schedule="none", grad_clip=1.0, seed=int(env["SEED"]), threads="1",
              certify_every=5, log_interval=0, eval_test="best")
configs = {
    "areas": TrainConfig(model="areas", areas="configs/areas/yang19-multitask.yaml",
                         dt=float(env["AREAS_DT"]), method="cayley", lr=float(env["AREAS_LR"]),
                         out_dir=str(out / "areas"), **common),
    "ctrnn": TrainConfig(model="ctrnn", hidden=256, ctrnn_tau=100.0, lr=1e-3,
                         out_dir=str(out / "ctrnn"), **common),
}
t_start = time.time()
trainers = {}
for name, cfg in configs.items():
    resume = (Path(cfg.out_dir) / "checkpoint.pt").exists()
    trainers[name] = Trainer(cfg, resume=resume,
                             reporter=ConsoleReporter(prog=f"[{name}]", log_interval=0))
    trainers[name].begin()
torch.set_num_threads(1)
steps_per_epoch = -(-common["epoch_trials"] // common["batch_size"])
ended = {}
while any(t.next_epoch() is not None and n not in ended for n, t in trainers.items()):
    for name, t in trainers.items():  # take turns: one epoch each
        if t.next_epoch() is not None and name not in ended:
            print(f"[{name}] ", end="", flush=True)
            try:
                t.advance()
            except TrainingDiverged as err:
                ended[name] = t.diverged(err)
results = {}
for name, t in trainers.items():
    res = ended.get(name) or t.finish("finished")
    t.reporter.end(res)
    t.close()
    results[name] = res
wall = time.time() - t_start

def lscpu_model() -> str:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(line.split(":", 1)[1].strip() for line in text.splitlines()
                    if line.startswith("Model name"))
    except Exception:
        return platform.processor() or "unknown"

import neurogym
data = {"command": "bash benchmarks/neuro_experiment.sh", "settings": {
            k: env[k] for k in ("EPOCHS", "EPOCH_TRIALS", "BATCH", "AREAS_LR", "AREAS_DT",
                                "SEED")},
        "steps": steps_per_epoch * common["epochs"], "wall_time_s": wall,
        "hardware": {"cpu": lscpu_model(), "cores": os.cpu_count(),
                     "torch_threads": torch.get_num_threads(),
                     "load_average_at_end": os.getloadavg()},
        "versions": {"combonet": combonet.__version__, "torch": torch.__version__,
                     "neurogym": neurogym.__version__, "python": platform.python_version()},
        "models": {}}
for name, res in results.items():
    hist = res.history
    final = hist[-1]
    train_s = sum(r["time_train"] for r in hist)
    data["models"][name] = {
        "run_dir": str(res.run_dir), "status": res.status,
        "config": configs[name].to_dict() | ({"areas": "configs/areas/yang19-multitask.yaml"}
                                             if name == "areas" else {}),
        "parameters": res.summary["parameters"]["total"],
        "final_epoch": final["epoch"], "test_performance": final["test_acc"],
        "test_per_task": final["test_per_task"], "val_performance": final["val_acc"],
        "best": res.summary["best"] and {k: res.summary["best"][k]
                                         for k in ("epoch", "val_acc", "test_acc")},
        "curve": [{"epoch": r["epoch"], "step": r["epoch"] * steps_per_epoch,
                   "val": r["val_acc"], "train_loss": r["train_loss"]} for r in hist],
        "time_train_s": train_s,
        "time_eval_s": sum(r["time_eval"] for r in hist),
        "time_certify_s": sum(r.get("time_certify", 0.0) for r in hist),
        "wall_time_s": res.summary["wall_time_s"],
        "certificate": res.summary["certificate"],
    }
(out / "experiment.json").write_text(json.dumps(data, indent=2))

from matplotlib.figure import Figure  # learning curves of both, by training step

fig = Figure(figsize=(5.5, 3.6))
ax = fig.subplots()
for name, label in (("areas", "certified areas"), ("ctrnn", "CTRNN baseline")):
    curve = data["models"][name]["curve"]
    ax.plot([r["step"] for r in curve], [100 * r["val"] for r in curve], marker=".",
            label=label)
ax.set(xlabel="training step (batch of 64 fresh trials)", ylabel="validation performance (%)",
       title="Yang19 (20 tasks), NeuroGym's performance measure")
ax.grid(alpha=0.3)
ax.legend()
fig.tight_layout()
fig.savefig(out / "curves.png", dpi=110)

a, c = data["models"]["areas"], data["models"]["ctrnn"]
print()
print(f"Yang19, {data['steps']} steps of batch {common['batch_size']} each, one process, "
      f"1 thread, {data['hardware']['cpu']}; total wall {wall / 60:.1f} min")
print(f"{'task':28s} {'areas (certified)':>18s} {'CTRNN':>8s}")
for task in a["test_per_task"]:
    print(f"{task:28s} {100 * a['test_per_task'][task]:17.1f}% "
          f"{100 * c['test_per_task'][task]:7.1f}%")
mean = f"mean ({common['test_trials']} test trials)"
print(f"{mean:28s} {100 * a['test_performance']:17.1f}% "
      f"{100 * c['test_performance']:7.1f}%")
print(f"{'parameters':28s} {a['parameters']:18,d} {c['parameters']:8,d}")
print(f"{'training time (s)':28s} {a['time_train_s']:18.0f} {c['time_train_s']:8.0f}")
cert = a["certificate"]
print(f"certificate of the areas model: certified={cert['certified']}, rate {cert['rate']:.4g}, "
      f"step factor {cert['discrete_factor']:.6f}")
EOF

"${COMBONET[@]}" certify "$OUT/areas" | tee "$OUT/certificate.txt"
rm -rf "$OUT/analysis"
start=$(date +%s)
"${COMBONET[@]}" analyze "$OUT/areas" --trials "${ANALYZE_TRIALS:-400}" \
    --by "${ANALYZE_BY:-choice}" --out "$OUT/analysis" --threads 1 | tee "$OUT/analysis.txt"
echo "analyze: $(( $(date +%s) - start )) s" | tee -a "$OUT/analysis.txt"

if [ -n "$DOCS" ]; then
    mkdir -p "$DOCS/data" "$DOCS/figures"
    cp "$OUT/experiment.json" "$DOCS/data/neuro-yang19.json"
    cp "$OUT/analysis/analysis.json" "$DOCS/data/neuro-yang19-analysis.json"
    for f in fixed-points pca lesions communication; do
        cp "$OUT/analysis/$f.png" "$DOCS/figures/neuro-yang19-$f.png"
    done
    cp "$OUT/curves.png" "$DOCS/figures/neuro-yang19-curves.png"
    echo "results copied to $DOCS/data/neuro-yang19*.json and $DOCS/figures/neuro-yang19-*.png"
fi
