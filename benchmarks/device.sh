#!/usr/bin/env bash
# The CUDA checks of combonet in one prepared run (issue 12, item 6):
#   1. the tests marked `cuda` (tests/test_cuda.py: the model and engine on CUDA against CPU,
#      the CUDA-graph careful loop, the bench and the training on CUDA),
#   2. `combonet bench --device cuda` (engine, careful loop, per-step rebuild, GRU, LSTM),
#   3. the same with the careful loop captured in CUDA graphs (`--cuda-graphs`; a separate
#      process, so that a failing capture cannot take step 2's numbers with it),
#   4. a fixed-budget training of the psMNIST-shaped 16x32 Sparse Combo Net (batch 128,
#      784 steps) on synthetic data (no data files are needed), then its certificate,
# and prints ONE summary (also written to OUT_DIR/summary.txt, with every step's JSON and log).
#
# Usage, from anywhere:   bash benchmarks/device.sh [OUT_DIR]     (default: $OUT or a temp dir)
# Environment: PYTHON (interpreter whose torch sees CUDA; default: the first of python3,
# python, .venv/bin/python that does), TRAIN_SECONDS (default 120), DEVICE_BUDGET_S (the
# whole run's wall-clock limit, default 420 = 7 minutes; every step runs under `timeout`
# with what is left of it).
# Without CUDA it says so and exits 0 within seconds. Exit status: 0 when every step that
# ran passed, 1 otherwise. The package runs from src/ (PYTHONPATH), nothing is installed.
set -u

cd "$(dirname "$0")/.." || exit 1
ROOT=$PWD
OUT_DIR=${1:-${OUT:-$(mktemp -d /tmp/combonet-device.XXXXXX)}}
mkdir -p "$OUT_DIR" || exit 1
BUDGET=${DEVICE_BUDGET_S:-420}
TRAIN_SECONDS=${TRAIN_SECONDS:-120}
START=$SECONDS
LOG=$OUT_DIR/log.txt
: > "$LOG"
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

say() { echo "[device.sh $(( SECONDS - START ))s] $*" | tee -a "$LOG"; }

# -- an interpreter whose torch sees a CUDA device ------------------------------------------
PY=""
for cand in ${PYTHON:-} python3 python "$ROOT/.venv/bin/python"; do
    command -v "$cand" > /dev/null 2>&1 || continue
    if timeout 60 "$cand" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 3)' \
        >> "$LOG" 2>&1; then
        PY=$cand
        break
    fi
done
if [ -z "$PY" ]; then
    say "no CUDA device visible to torch (tried: ${PYTHON:-} python3 python .venv/bin/python):" \
        "nothing to run on this machine"
    exit 0
fi

# -- each step under `timeout`, with what is left of the budget --------------------------------
left() { echo $(( BUDGET - (SECONDS - START) )); }
declare -A STATUS
step() {  # step NAME LIMIT_S STDOUT_FILE CMD...
    local name=$1 limit=$2 out=$3; shift 3
    local rest; rest=$(left)
    [ "$limit" -gt "$rest" ] && limit=$rest
    if [ "$limit" -lt 20 ]; then
        STATUS[$name]="skipped (budget spent)"; say "$name: skipped, budget spent"; return
    fi
    say "$name: start (limit ${limit}s): $*"
    local t0=$SECONDS
    timeout --kill-after=10 "$limit" "$@" > "$out" 2>> "$LOG"
    local rc=$?
    case $rc in
        0) STATUS[$name]="ok" ;;
        124|137) STATUS[$name]="TIMED OUT after ${limit}s" ;;
        *) STATUS[$name]="FAILED (exit $rc)" ;;
    esac
    say "$name: ${STATUS[$name]} in $(( SECONDS - t0 ))s"
}

{
    echo "date: $(date -u +%FT%TZ)"
    echo "python: $PY ($("$PY" -c 'import sys; print(sys.version.split()[0])'))"
    timeout 30 "$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda,
"device", torch.cuda.get_device_name(0))'
    timeout 20 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm \
        --format=csv,noheader 2>/dev/null || echo "nvidia-smi: not available"
    echo "cpus: $(nproc)"
    echo "git: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo 'not a git checkout')"
} > "$OUT_DIR/env.txt" 2>> "$LOG"
cat "$OUT_DIR/env.txt" >> "$LOG"

step tests 150 "$OUT_DIR/tests.txt" \
    "$PY" -m pytest -q -m cuda -p no:cacheprovider -rs tests/test_cuda.py
step bench 150 "$OUT_DIR/bench.json" \
    "$PY" -m combonet bench --device cuda --json
step graphs 100 "$OUT_DIR/graphs.json" \
    "$PY" -m combonet bench --device cuda --cuda-graphs --skip rebuild,gru,lstm --json
# the training's own budget: TRAIN_SECONDS, less if the run's budget is short (60 s kept for
# start-up, the final certificate and the summary)
train_s=$TRAIN_SECONDS
[ $(( $(left) - 60 )) -lt "$train_s" ] && train_s=$(( $(left) - 60 ))
if [ "$train_s" -ge 10 ]; then
    step train $(( train_s + 60 )) "$OUT_DIR/train.json" \
        "$PY" -m combonet bench --device cuda --train-seconds "$train_s" --json
else
    STATUS[train]="skipped (budget spent)"
fi

# -- one summary ------------------------------------------------------------------------------
STATUS_LINE=""
for name in tests bench graphs train; do
    STATUS_LINE+="$name: ${STATUS[$name]:-not run}; "
done
export STATUS_LINE OUT_DIR
timeout 60 "$PY" - > "$OUT_DIR/summary.txt" 2>> "$LOG" <<'PYEOF'
import json
import os
from pathlib import Path

from combonet.bench.budget import budget_report
from combonet.bench.run import report

out = Path(os.environ["OUT_DIR"])
print("== combonet device run (benchmarks/device.sh) ==")
print((out / "env.txt").read_text().strip())
print("steps:", os.environ["STATUS_LINE"].strip())


def load(name):
    try:
        return json.loads((out / name).read_text())
    except (OSError, ValueError):
        return None


tests = (out / "tests.txt").read_text().strip().splitlines() if (out / "tests.txt").exists() \
    else []
print("\n-- tests marked cuda --")
print(tests[-1] if tests else "no output")
for title, name, fmt in (("bench --device cuda", "bench.json", report),
                         ("bench --device cuda --cuda-graphs", "graphs.json", report),
                         ("fixed-budget training", "train.json", budget_report)):
    print(f"\n-- {title} --")
    r = load(name)
    if r is None:
        print("no result (see log.txt)")
    else:
        print(fmt(r, 1e-4) if fmt is report else fmt(r))
PYEOF
[ $? -eq 0 ] || echo "summary could not be written (see $LOG)" >> "$OUT_DIR/summary.txt"
cat "$OUT_DIR/summary.txt"
say "done in $(( SECONDS - START ))s; files in $OUT_DIR"
for name in tests bench graphs train; do
    [ "${STATUS[$name]:-}" = "ok" ] || exit 1
done
exit 0
