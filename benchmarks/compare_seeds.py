"""Summarise several ``combonet compare`` runs of one configuration at different seeds.

Each run directory holds the ``compare.json`` that ``combonet compare`` wrote; this prints,
per contender, the test accuracy at the best-validation epoch of every seed, their mean and
standard deviation, the mean wall time and its ratio to a reference contender (wall times are
comparable inside one run only, so the ratio is taken per run, then averaged). Run::

    for s in 0 1 2; do combonet compare --config configs/mnist1d.toml \\
        --baselines gru,lstm,gru:128 --set seed=$s --out-dir runs/compare-mnist1d-seed$s; done
    python benchmarks/compare_seeds.py runs/compare-mnist1d-seed* --reference gru-128 \\
        --json docs/data/compare-mnist1d-seeds.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path


def load(run: Path) -> dict:
    path = run / "compare.json"
    if not path.is_file():
        sys.exit(f"error: {path} does not exist: give directories written by combonet compare")
    data = json.loads(path.read_text())
    if "results" not in data:
        sys.exit(f"error: {path} has no results: finish the comparison (combonet compare "
                 "--resume) first")
    return data


def summarise(runs: list[dict], reference: str) -> list[dict]:
    """One row per contender: per-seed test accuracies, mean, sd, wall and wall ratio."""
    names = [r["name"] for r in runs[0]["results"]]
    rows = []
    for name in names:
        accs, walls, ratios, certified, params = [], [], [], [], None
        for run in runs:
            by_name = {r["name"]: r for r in run["results"]}
            if name not in by_name:
                sys.exit(f"error: contender {name!r} is missing from one run: compare runs of "
                         "the same configuration")
            r = by_name[name]
            accs.append(r["test_at_best_val"])
            walls.append(r["wall_s"])
            certified.append(r.get("certified"))
            params = r["parameters"]
            if reference in by_name:
                ratios.append(r["wall_s"] / by_name[reference]["wall_s"])
        rows.append({
            "contender": name, "model": r["model"], "parameters": params,
            "test_at_best_val": accs, "mean": statistics.fmean(accs),
            "sd": statistics.stdev(accs) if len(accs) > 1 else 0.0,
            "wall_s_mean": statistics.fmean(walls),
            "wall_ratio_to_reference": statistics.fmean(ratios) if ratios else None,
            "certified": certified})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="combonet compare --out-dir dirs")
    parser.add_argument("--reference", default="gru-128",
                        help="the contender wall-time ratios are taken against")
    parser.add_argument("--json", type=Path, default=None, help="write the rows here")
    ns = parser.parse_args()
    runs = [load(run) for run in ns.runs]
    rows = summarise(runs, ns.reference)
    print(f"| contender | parameters | test acc. per seed | mean ± sd | wall s (mean) | "
          f"wall / {ns.reference} |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        seeds = " / ".join(f"{100 * a:.1f}" for a in r["test_at_best_val"])
        ratio = r["wall_ratio_to_reference"]
        print(f"| {r['contender']} | {r['parameters']:,} | {seeds} | {100 * r['mean']:.1f} ± "
              f"{100 * r['sd']:.1f} % | {r['wall_s_mean']:.0f} | "
              f"{'-' if ratio is None else f'{ratio:.2f}x'} |")
    if ns.json:
        ns.json.write_text(json.dumps({
            "command": "python benchmarks/compare_seeds.py " + " ".join(map(str, ns.runs))
            + f" --reference {ns.reference}",
            "runs": [str(r) for r in ns.runs],
            "machine": [run.get("machine") for run in runs], "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
