"""Shared machinery of the experiments: presets, one training run, results files, tables.

Every experiment of Section 4 is a grid of :func:`combonet.train.train` runs (no second
training loop) plus, for the stability experiments, simulations of the trained networks. An
experiment returns an :class:`ExperimentResult`; :func:`finish` writes ``results.json``,
``results.csv`` and the figure into ``--out`` (and copies them to ``docs/`` when asked) and
prints a short table.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._validate import choice

PRESETS = ("smoke", "cpu", "paper")

#: Settings that trained well in a short measured sweep (docs/results.md, "Setup"): permuted
#: sklearn digits (64 steps, the closest embedded analogue of psMNIST), dt = 0.1 (the
#: TrainConfig default dt = 0.5 forgets the start of the sequence: on MNIST-1D a linear readout
#: of the last state was at chance), lr = 3e-2, non-zero magnitude 3 at density 0.1.
CPU_BASE: dict[str, Any] = {
    "task": "pdigits", "model": "sparse-combo", "modules": 8, "units": 16, "density": 0.1,
    "magnitude": 3.0, "dt": 0.1, "method": "cayley", "lr": 3e-2, "batch_size": 64,
    "epochs": 20, "hidden": 64,
}
#: psMNIST on a subset, used by the cpu preset when ``--data-dir`` is given. dt = 0.01 keeps
#: the simulated time of a sequence (784 x 0.01 = 7.8) close to the embedded task's
#: (64 x 0.1 = 6.4): a contracting network forgets at its rate per unit *time*.
CPU_PSMNIST: dict[str, Any] = {"task": "psmnist", "limit_train": 2000, "limit_test": 1000,
                               "epochs": 4, "dt": 0.01}
#: A handful of optimisation steps on the embedded sklearn digits (seconds).
SMOKE_BASE: dict[str, Any] = {
    "task": "digits", "model": "sparse-combo", "modules": 2, "units": 4, "density": 0.25,
    "magnitude": 1.0, "dt": 0.1, "method": "cayley", "lr": 1e-2, "batch_size": 32,
    "epochs": 1, "limit_train": 80, "limit_test": 48, "val_fraction": 0.2, "hidden": 8,
}
#: The paper's setting (Section 4.2: psMNIST, 16x32, 3.3 % density, long training). Appendix D
#: (learning rate, dt, magnitude) is not part of our copy of the paper; the values below are
#: ours, untested at this scale (needs a GPU).
PAPER_BASE: dict[str, Any] = {
    "task": "psmnist", "model": "sparse-combo", "modules": 16, "units": 32, "density": 0.033,
    "magnitude": 3.0, "dt": 0.01, "method": "cayley", "lr": 1e-3, "batch_size": 64,
    "epochs": 150, "hidden": 128,
}


class ExperimentError(ValueError):
    """A problem with what the user asked for (printed in one line, exit status 2)."""


@dataclass
class Context:
    """What the command line fixed for one experiment run."""

    name: str
    preset: str
    out: Path
    data_dir: str | None = None
    seeds: list[int] | None = None
    docs: Path | None = None
    threads: int | None = 1
    epochs: int | None = None
    quiet: bool = False
    command: str = ""

    def __post_init__(self) -> None:
        try:
            choice("preset", self.preset, PRESETS)
        except ValueError as err:
            raise ExperimentError(str(err)) from None

    @property
    def variant(self) -> str:
        """``"psmnist"`` for the cpu preset with ``--data-dir`` (results get their own files,
        next to the embedded-task ones), else ``""``."""
        return "psmnist" if self.preset == "cpu" and self.data_dir is not None else ""

    @property
    def smoke(self) -> bool:
        return self.preset == "smoke"

    def pick(self, smoke: Any, cpu: Any, paper: Any) -> Any:
        """The value for this preset."""
        return {"smoke": smoke, "cpu": cpu, "paper": paper}[self.preset]

    def seed_list(self, default: Sequence[int]) -> list[int]:
        """``--seeds`` if given, else the experiment's default."""
        return list(self.seeds) if self.seeds else list(default)

    def base(self) -> dict[str, Any]:
        """The preset's training settings (task chosen by ``--data-dir`` for ``cpu``)."""
        if self.preset == "smoke":
            cfg = dict(SMOKE_BASE)
        elif self.preset == "paper":
            cfg = dict(PAPER_BASE)
        else:
            cfg = dict(CPU_BASE)
            if self.data_dir is not None:
                cfg.update(CPU_PSMNIST)
        if self.data_dir is not None:
            cfg["data_dir"] = self.data_dir
        if self.epochs is not None:
            cfg["epochs"] = self.epochs
        if self.threads is not None:
            cfg["threads"] = self.threads
        return cfg

    def say(self, *parts: Any) -> None:
        if not self.quiet:
            print(*parts, flush=True)


@dataclass
class ExperimentResult:
    """Rows (one per training run or measurement), the table columns and the figure."""

    name: str
    section: str
    title: str
    rows: list[dict[str, Any]]
    columns: list[str]
    summary: list[dict[str, Any]] = field(default_factory=list)
    summary_columns: list[str] = field(default_factory=list)
    plot: Callable[[ExperimentResult, Path], None] | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


# -- one training run ------------------------------------------------------------------------
CERT_KEYS = ("certified", "rate", "discrete_factor", "metric_condition_number", "max_dt",
             "discrete_exact")


def read_certificate(run_dir: Path) -> dict[str, Any]:
    """The certificate fields of a finished combo-net run (``certificate.json``), else ``{}``."""
    from ..train import RunDir

    cert = RunDir(run_dir).certificate_record()
    if cert is None:
        return {}
    out = {k: cert.get(k) for k in CERT_KEYS}
    out["margin"] = cert.get("margin")
    return out


def train_run(ctx: Context, label: str, settings: dict[str, Any], seed: int,
              **extra: Any) -> dict[str, Any]:
    """Run (or resume / reuse) one :func:`combonet.train.train` run; return its result row.

    The run lives in ``OUT/runs/`` :func:`run_name`: a finished (or diverged) run there is
    reused, an interrupted one continues from its checkpoint. ``train`` prints nothing.
    """
    from ..train import RunDir, TrainConfig, train

    cfg = TrainConfig.from_dict(dict(settings, seed=seed, quiet=True),
                                source=f"experiment {ctx.name}").validate()
    run_dir = ctx.out / "runs" / run_name(cfg)
    cfg.out_dir = str(run_dir)
    folder = RunDir(run_dir)
    t0 = time.time()
    summary = folder.summary() or {}
    done = (summary.get("status") in ("finished", "diverged")
            and summary.get("config", {}).get("epochs") == cfg.epochs)
    if done:
        status = summary["status"]
    else:
        result = train(cfg, resume=folder.has_checkpoint())
        status = result.status
        summary = result.summary or folder.summary() or {}
    wall = time.time() - t0
    best = summary.get("best") or {}
    final = summary.get("final") or {}
    params = summary.get("parameters") or {}
    row: dict[str, Any] = {
        "label": label, "model": cfg.model, "task": cfg.task, "modules": cfg.modules,
        "units": cfg.units, "density": cfg.density, "magnitude": cfg.magnitude,
        "coupling_density": cfg.coupling_density, "seed": seed, "epochs": cfg.epochs,
        "status": status,
        "params": params.get("total"),
        "best_epoch": summary.get("best_epoch"),
        "val_acc": best.get("val_acc"),
        "test_acc": best.get("test_acc"),
        "final_test_acc": final.get("test_acc"),
        "train_acc": final.get("train_acc"),
        "wall_s": round(float(summary.get("wall_time_s", wall)), 2),
        "run_dir": str(run_dir),
    }
    if cfg.model not in ("sparse-combo", "unconstrained-combo"):
        row["density"] = row["magnitude"] = None  # no fixed sparse modules in this model
    row.update(read_certificate(run_dir))
    row.update(extra)
    acc = row["test_acc"]
    ctx.say(f"  {label} seed {seed}: {status}{' (reused)' if done else ''}, test acc "
            f"{'n/a' if acc is None else f'{100 * acc:.2f}%'} ({row['wall_s']:.1f}s)")
    return row


def run_name(cfg: Any) -> str:
    """``MODEL-PxN-HASH-sSEED``: the hash covers every setting that changes the result
    (the config fingerprint plus the epochs, which set the learning-rate schedule), so
    experiments that need the same run share it."""
    import hashlib

    key = json.dumps(dict(cfg.fingerprint_fields(), epochs=cfg.epochs), sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    return f"{cfg.model}-{cfg.modules}x{cfg.units}-{digest}-s{cfg.seed}"


# -- aggregation -----------------------------------------------------------------------------
def aggregate(rows: Iterable[dict[str, Any]], keys: Sequence[str],
              value: str = "test_acc") -> list[dict[str, Any]]:
    """Group rows by ``keys``; mean/min/max/variance (in %, population variance) of ``value``
    over seeds, plus the mean of parameters, wall time and certificate fields."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(tuple(r.get(k) for k in keys), []).append(r)
    out = []
    for key, members in groups.items():
        vals = [100 * r[value] for r in members if _num(r.get(value))]
        rec: dict[str, Any] = dict(zip(keys, key, strict=True))
        rec["n"] = len(members)
        rec["seeds"] = [r["seed"] for r in members]
        rec["mean"] = float(np.mean(vals)) if vals else None
        rec["min"] = float(np.min(vals)) if vals else None
        rec["max"] = float(np.max(vals)) if vals else None
        rec["var"] = float(np.var(vals)) if len(vals) > 1 else None
        rec["diverged"] = sum(r.get("status") != "finished" for r in members)
        for k in ("magnitude", "params", "wall_s", "rate", "discrete_factor",
                  "metric_condition_number"):
            xs = [r[k] for r in members if _num(r.get(k))]
            rec[k] = float(np.mean(xs)) if xs else None
        certs = [r.get("certified") for r in members if r.get("certified") is not None]
        rec["certified"] = (all(certs) if certs else None)
        for k in ("paper",):
            if k in members[0]:
                rec[k] = members[0][k]
        out.append(rec)
    return out


def _num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


# -- output ----------------------------------------------------------------------------------
def hardware() -> dict[str, Any]:
    """Where the numbers came from (CPU model, cores, load at the start, torch threads)."""
    import torch

    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": model, "cores": os.cpu_count(), "gpu": gpu,
            "load_avg_1min_at_start": None if load is None else round(load, 2),
            "python": platform.python_version(), "torch": torch.__version__}


def fmt(value: Any, kind: str = "") -> str:
    """A table cell: percentages with 2 decimals, floats with 4 significant digits."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if kind == "pct" and _num(value):
        return f"{100 * value:.2f}"
    if isinstance(value, float) and value.is_integer() and abs(value) >= 1000:
        return f"{int(value):,}"
    if isinstance(value, int) and abs(value) >= 1000:
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


PCT_COLUMNS = {"test_acc", "val_acc", "final_test_acc", "train_acc", "accuracy"}


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> list[list[str]]:
    """Rows formatted as strings (accuracies in %)."""
    return [[fmt(r.get(c), "pct" if c in PCT_COLUMNS else "") for c in columns] for r in rows]


def text_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A fixed-width text table for the terminal."""
    body = table(rows, columns)
    widths = [max(len(c), *(len(b[i]) for b in body)) if body else len(c)
              for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(b, widths, strict=True)) for b in body]
    return "\n".join(lines)


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, np.integer)):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, Path):
        return str(x)
    return x


def write_csv(path: Path, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    """``rows`` as CSV with the union of their keys (``columns`` first)."""
    keys = list(columns) + sorted({k for r in rows for k in r} - set(columns))
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: _csv_cell(r.get(k)) for k in keys})


def _csv_cell(v: Any) -> Any:
    if isinstance(v, (list, dict)):
        return json.dumps(_jsonable(v))
    return v


def finish(ctx: Context, res: ExperimentResult, t0: float,
           hw: dict[str, Any]) -> dict[str, Any]:
    """Write ``results.json``, ``results.csv`` (and ``summary.csv``), the figure; copy them to
    ``docs/data`` and ``docs/figures`` when ``ctx.docs`` is set; print the table."""
    ctx.out.mkdir(parents=True, exist_ok=True)
    stem = f"{res.name}-{ctx.preset}" + (f"-{ctx.variant}" if ctx.variant else "")
    fig_path = ctx.out / f"{stem}.png"
    if res.plot is not None:
        import matplotlib

        matplotlib.use("Agg")
        res.plot(res, fig_path)
    record = {
        "experiment": res.name, "section": res.section, "title": res.title,
        "preset": ctx.preset, "variant": ctx.variant, "stem": stem, "command": ctx.command,
        "seeds": _seeds_of(res),
        "hardware": hw, "wall_time_s": round(time.time() - t0, 1),
        "train_wall_s": round(_train_wall(res.rows), 1),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        "settings": res.settings, "columns": res.columns, "rows": res.rows,
        "summary_columns": res.summary_columns, "summary": res.summary,
        "notes": res.notes, "extra": res.extra,
        "figure": fig_path.name if fig_path.is_file() else None,
        "csv": f"{stem}.csv",
    }
    record = _jsonable(record)
    json_path = ctx.out / f"{stem}.json"
    json_path.write_text(json.dumps(record, indent=1) + "\n")
    write_csv(ctx.out / f"{stem}.csv", res.rows, res.columns)
    if res.summary:
        write_csv(ctx.out / f"{stem}-summary.csv", res.summary, res.summary_columns)
    if ctx.docs is not None:
        (ctx.docs / "data").mkdir(parents=True, exist_ok=True)
        for suffix in (".json", ".csv", "-summary.csv"):
            src = ctx.out / f"{stem}{suffix}"
            if src.is_file():
                shutil.copyfile(src, ctx.docs / "data" / src.name)
        if fig_path.is_file():
            (ctx.docs / "figures").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(fig_path, ctx.docs / "figures" / fig_path.name)
    # the table is printed even with --quiet (which silences the per-run lines)
    print(f"\n{res.title} ({res.section}), preset {ctx.preset}, "
          f"{record['wall_time_s']:.0f}s")
    if res.summary:
        print(text_table(res.summary, res.summary_columns))
    else:
        print(text_table(res.rows, res.columns))
    print(f"results: {json_path} (+ .csv{', .png' if record['figure'] else ''})")
    for note in res.notes:
        print(f"note: {note}")
    return record


def _train_wall(rows: Sequence[dict[str, Any]]) -> float:
    """Training wall time of the distinct runs behind ``rows`` (a reused run counts with the
    time it took when it was trained)."""
    seen: dict[str, float] = {}
    for r in rows:
        if r.get("run_dir") and _num(r.get("wall_s")):
            seen[r["run_dir"]] = float(r["wall_s"])
    return sum(seen.values())


def _seeds_of(res: ExperimentResult) -> list[int]:
    return sorted({int(r["seed"]) for r in res.rows if r.get("seed") is not None})


def save_figure(fig: Any, path: Path) -> None:
    """Save a matplotlib figure (atomically) and close it."""
    import matplotlib.pyplot as plt

    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.tight_layout()
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def config_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings worth recording (drops runtime-only keys)."""
    drop = {"threads", "quiet", "out_dir"}
    return {k: v for k, v in settings.items() if k not in drop}


def as_dict(obj: Any) -> dict[str, Any]:
    """A dataclass as a dict (for records)."""
    return dataclasses.asdict(obj)


def stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
