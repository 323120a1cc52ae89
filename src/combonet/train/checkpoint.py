"""Atomic checkpoints that load with ``torch.load(..., weights_only=True)``.

A checkpoint holds only tensors and plain Python containers/scalars: model, optimizer and
scheduler state, the epoch, the best validation metrics, the metric history, the RNG states
(torch, numpy, python ``random``, converted to tensors/lists) and the config fingerprint.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import diff_fields

FORMAT = 1
CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable or from a different configuration."""


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, write: Any) -> None:
    """Call ``write(fileobj)`` on a temp file in ``path``'s folder, fsync, then ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` written atomically (a reader sees the old or the new file, never half)."""
    atomic_write_bytes(path, lambda fh: torch.save(obj, fh))


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, lambda fh: fh.write(text.encode()))


def atomic_write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def rng_state() -> dict[str, Any]:
    """torch, numpy and python RNG states as tensors and lists (``weights_only``-safe)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": {"version": int(version), "internal": list(internal), "gauss": gauss},
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    npst = state["numpy"]
    np.random.set_state((npst["kind"], npst["keys"].numpy().astype(np.uint32), npst["pos"],
                         npst["has_gauss"], npst["cached"]))
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss"]))


def load(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``) onto the CPU."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"cannot read checkpoint {path}: {first}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a combonet checkpoint (format {FORMAT})")
    return data


def check_compatible(data: dict[str, Any], config: dict[str, Any], fingerprint: str,
                     path: str | Path) -> None:
    """Refuse a checkpoint written by a different configuration, naming the fields."""
    if data.get("fingerprint") == fingerprint:
        return
    saved = data.get("config", {})
    diffs = diff_fields(saved, config)
    detail = ", ".join(f"{k}={saved.get(k)!r} (checkpoint) vs {config.get(k)!r} (now)"
                       for k in diffs) or "unknown fields"
    raise CheckpointError(
        f"checkpoint {path} was written by a different configuration: {detail}; "
        "use the same settings to resume, or a new --out-dir"
    )


__all__ = ["BEST", "CHECKPOINT", "FORMAT", "CheckpointError", "atomic_save",
           "atomic_write_bytes", "atomic_write_json", "atomic_write_text", "check_compatible",
           "load", "rng_state", "set_rng_state"]
