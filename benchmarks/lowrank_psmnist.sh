#!/usr/bin/env bash
# The accuracy cost of a low-rank coupling on permuted sequential MNIST (issue 12): the paper's
# 16x32 Sparse Combo Net (density 0.033, magnitude 3, dt 0.01, lr 0.03, batch 128) on a seeded
# subset (12,000 training images, 2,000 test), 3 epochs, dense eq.-3 coupling against ranks 8
# and 32, one thread each, then a table. Needs the MNIST files (see ../shared/data/README).
# Usage: bash benchmarks/lowrank_psmnist.sh MNIST_DIR [OUT_DIR]   (about 40 minutes on 2 cores)
set -euo pipefail
data="${1:?give the MNIST directory, e.g. ../shared/data/mnist}"
out="${2:-runs/lowrank-psmnist}"
mkdir -p "$out"
bin="${COMBONET:-combonet}"
for rank in none 8 32; do
  if [ ! -f "$out/rank-$rank/summary.json" ]; then
    "$bin" train --task psmnist --data-dir "$data" --limit-train 12000 --limit-test 2000 \
      -p 16 -n 32 --density 0.033 --magnitude 3 --dt 0.01 --lr 0.03 --batch-size 128 \
      --epochs 3 --threads 1 --quiet --coupling-rank "$rank" --out-dir "$out/rank-$rank"
  fi
done
python3 - "$out" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
print("| coupling | parameters | test acc. (best-val epoch) | best epoch | certified | wall |")
print("|---|---|---|---|---|---|")
for rank in ("none", "8", "32"):
    s = json.loads((out / f"rank-{rank}" / "summary.json").read_text())
    name = "dense (eq. 3)" if rank == "none" else f"rank {rank}"
    print(f"| {name} | {s['parameters']['total']:,} | {100 * s['best']['test_acc']:.1f} % | "
          f"{s['best_epoch']} | {s['certificate']['certified']} | {s['wall_time_s']:.0f} s |")
PY
