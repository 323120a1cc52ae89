#!/usr/bin/env bash
# The accuracy cost of a low-rank coupling (issue 12): the demo's Sparse Combo Net (16x16 on
# permuted digits, 100 epochs) with the dense eq.-3 coupling and with ranks 2, 8 and 32, one
# thread each, then a table (test accuracy at the best-validation epoch, parameters, wall).
# Usage: bash benchmarks/lowrank_accuracy.sh [OUT_DIR]   (about 10-20 minutes on 2 cores)
set -euo pipefail
out="${1:-runs/lowrank-pdigits}"
mkdir -p "$out"
bin="${COMBONET:-combonet}"
for rank in none 2 8 32; do
  if [ ! -f "$out/rank-$rank/summary.json" ]; then
    "$bin" train --threads 1 --quiet --coupling-rank "$rank" --out-dir "$out/rank-$rank"
  fi
done
python3 - "$out" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
print("| coupling | parameters | test acc. (best-val epoch) | best epoch | certified | wall |")
print("|---|---|---|---|---|---|")
for rank in ("none", "2", "8", "32"):
    s = json.loads((out / f"rank-{rank}" / "summary.json").read_text())
    name = "dense (eq. 3)" if rank == "none" else f"rank {rank}"
    print(f"| {name} | {s['parameters']['total']:,} | {100 * s['best']['test_acc']:.1f} % | "
          f"{s['best_epoch']} | {s['certificate']['certified']} | {s['wall_time_s']:.0f} s |")
PY
