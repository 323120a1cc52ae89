"""``combonet experiment report``: (re)write the generated sections of ``docs/results.md``.

Each experiment's section lies between ``<!-- BEGIN GENERATED: NAME -->`` and
``<!-- END GENERATED: NAME -->`` and is rebuilt from ``docs/data/NAME-PRESET.json``; text
outside the markers (the hand-written discussion) is kept as it is. Sections missing from the
file are appended. The paper's numbers stay in their own column.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ._common import PCT_COLUMNS, fmt, table

ORDER = ["theorem7", "contraction", "control", "robustness", "repeatability", "size",
         "sparsity", "magnitude", "modularity", "sparse-coupling", "table"]

HEADER = """# Results: reproducing Section 4 of "RNNs of RNNs" and what stability buys

Every table below is generated from `docs/data/*.json` by `combonet experiment report`
(or by the experiment command itself); rerun a command to refresh its section. The paper's
numbers are quoted in a separate column and never enter ours.
"""

PCT_SUMMARY = {"mean", "min", "max"}


def _block(name: str) -> tuple[str, str]:
    return f"<!-- BEGIN GENERATED: {name} -->", f"<!-- END GENERATED: {name} -->"


def load_records(docs: Path, preset: str = "cpu") -> dict[str, dict[str, Any]]:
    """Every experiment record of ``preset`` in ``docs/data``, keyed ``NAME`` or
    ``NAME-VARIANT`` (e.g. ``control-psmnist`` for the cpu preset run with ``--data-dir``)."""
    out = {}
    for path in sorted((docs / "data").glob(f"*-{preset}*.json")):
        rec = json.loads(path.read_text())
        if rec.get("preset") != preset or "experiment" not in rec:
            continue
        key = rec["experiment"] + (f"-{rec['variant']}" if rec.get("variant") else "")
        out[key] = rec
    return out


def _cell(col: str, value: Any, summary: bool) -> str:
    if col in PCT_COLUMNS:
        return fmt(value, "pct")
    if summary and col in PCT_SUMMARY and isinstance(value, (int, float)):
        return f"{value:.2f}"
    if col == "var" and isinstance(value, (int, float)):
        return f"{value:.3g}"
    return fmt(value)


HEADINGS = {"test_acc": "test acc %", "val_acc": "val acc %", "mean": "mean test %",
            "min": "min %", "max": "max %", "var": "var (%²)", "n": "seeds",
            "rate": "cert. rate λ", "discrete_factor": "cert. ρ/step",
            "metric_condition_number": "κ(M)", "certified": "certified", "wall_s": "wall s",
            "params": "params", "accuracy": "accuracy %",
            "paper": "paper (quoted; psMNIST, GPU)"}


def markdown_table(rec: dict[str, Any]) -> str:
    """The record's summary (or rows) as a markdown table; the paper column last."""
    summary = bool(rec.get("summary"))
    rows = rec["summary"] if summary else rec["rows"]
    cols = list(rec["summary_columns"] if summary else rec["columns"])
    if "paper" in cols:
        cols.remove("paper")
        cols.append("paper")
    if summary:
        body = [[_cell(c, r.get(c), True) for c in cols] for r in rows]
    else:
        body = table(rows, cols)
    heads = [HEADINGS.get(c, c) for c in cols]
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(v.replace("|", "/") for v in b) + " |" for b in body]
    return "\n".join(lines)


def section(rec: dict[str, Any]) -> str:
    """One experiment's generated markdown."""
    name, preset = rec["experiment"], rec["preset"]
    stem = rec.get("stem") or f"{name}-{preset}"
    hw = rec.get("hardware", {})
    where = (f"{hw.get('cpu', '?')}, {hw.get('cores', '?')} cores"
             + (f", GPU {hw['gpu']}" if hw.get("gpu") else ", no GPU")
             + (f", load {hw['load_avg_1min_at_start']} at start"
                if hw.get("load_avg_1min_at_start") is not None else ""))
    wall = rec.get("wall_time_s") or 0.0
    seeds = ", ".join(str(s) for s in rec.get("seeds", [])) or "—"
    settings = rec.get("settings", {})
    keys = ("task", "model", "modules", "units", "density", "magnitude", "dt", "method", "lr",
            "batch_size", "epochs", "limit_train")
    compact = ", ".join(f"{k} {settings[k]}" for k in keys if settings.get(k) is not None)
    lines = [
        f"### `{name}`{' (' + rec['variant'] + ')' if rec.get('variant') else ''} — "
        f"{rec.get('title', '')} ({rec.get('section', '')})", "",
        f"- command: `{rec.get('command') or f'combonet experiment {name} --preset {preset}'}`",
        f"- seeds: {seeds}; hardware: {where}",
        f"- wall time: {wall / 60:.1f} min for this command"
        + (f"; the training runs behind it took {rec['train_wall_s'] / 60:.1f} min "
           "(runs shared with other experiments are trained once and reused)"
           if rec.get("train_wall_s") else "")
        + f" (finished {rec.get('finished', '?')})",
    ]
    if compact:
        lines.append(f"- base settings: {compact}")
    lines += ["", markdown_table(rec), ""]
    if rec.get("figure"):
        lines += [f"![{name}](figures/{rec['figure']})", ""]
    csv_name = rec.get("csv", f"{stem}.csv")
    lines.append(f"Raw results: [`data/{stem}.json`](data/{stem}.json), "
                 f"[`data/{csv_name}`](data/{csv_name}).")
    for note in rec.get("notes", []):
        lines.append(f"- {note}")
    return "\n".join(lines).rstrip() + "\n"


def write_report(docs: Path, preset: str = "cpu", path: Path | None = None) -> Path:
    """Rebuild every generated section of ``docs/results.md`` from ``docs/data``."""
    path = path or docs / "results.md"
    text = path.read_text() if path.is_file() else HEADER
    records = load_records(docs, preset)
    names = [k for n in ORDER for k in sorted(records) if k == n or k.startswith(n + "-")]
    names += sorted(set(records) - set(names))
    for name in names:
        begin, end = _block(name)
        block = f"{begin}\n{section(records[name])}{end}"
        pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
        if pattern.search(text):
            text = pattern.sub(lambda _m, b=block: b, text)
        else:
            text = text.rstrip() + "\n\n" + block + "\n"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text if text.endswith("\n") else text + "\n")
    tmp.replace(path)
    return path
