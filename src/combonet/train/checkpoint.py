"""Checkpoint files: atomic writes, safe loading (``weights_only=True``) and content checks.

A checkpoint holds only tensors and plain Python containers/scalars: model, optimizer and
scheduler state, the epoch, the best validation metrics, the metric history, the RNG states
(torch, numpy, python ``random``, converted to tensors/lists) and the config fingerprint.
Where the files live, their names and their SHA-256 manifest are :mod:`.rundir`'s job.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import random
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

FORMAT = 2

#: Entries every file of each kind must hold (``load`` refuses a file without them).
REQUIRED = {
    "checkpoint": ("format", "epoch", "fingerprint", "config", "model", "optimizer",
                   "scheduler", "best", "history", "rng"),
    "weights": ("format", "epoch", "fingerprint", "config", "model"),
}


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable, corrupt or from a different configuration."""


# -- writing --------------------------------------------------------------------------------
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


def current_umask() -> int:
    """The process umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def tmp_prefix(name: str) -> str:
    """Temp files of ``name`` are ``.NAME.XXXX.tmp`` (so a crash's leftovers are recognisable)."""
    return f".{name}."


def _write_file(path: Path, fh: BinaryIO, data: bytes) -> None:
    """The one place bytes reach the disk (``path`` is the destination; tests simulate a full
    disk here)."""
    fh.write(data)


def atomic_write_bytes(path: str | Path, data: bytes | Callable[[BinaryIO], Any]) -> None:
    """Write ``data`` (bytes, or ``write(fileobj)``) to a temp file in ``path``'s folder, fsync,
    then ``os.replace``: a reader sees the old or the new file, never half of one. The file gets
    the mode a plain ``open`` would give (``0666 & ~umask``); on any error, including a full
    disk or Ctrl-C, the temp file is removed and the old file is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=tmp_prefix(path.name), suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as fh:
            if isinstance(data, (bytes, bytearray, memoryview)):
                _write_file(path, fh, bytes(data))
            else:
                data(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` written atomically."""
    atomic_write_bytes(path, to_bytes(obj))


def to_bytes(obj: Any) -> bytes:
    """``torch.save(obj)`` as bytes (hashed before they are written)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


# -- RNG state ------------------------------------------------------------------------------
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


# -- reading --------------------------------------------------------------------------------
def load_bytes(data: bytes, path: str | Path, kind: str = "checkpoint") -> dict[str, Any]:
    """Unpickle ``data`` (the verified contents of ``path``, :func:`unpickle`) and check it
    holds what a ``kind`` file must."""
    return check_contents(unpickle(data, path), path, kind)


def unpickle(data: bytes, path: str | Path) -> Any:
    """``torch.load`` of ``data`` with ``weights_only=True``. Torch's own message is never
    passed on: it suggests ``weights_only=False``, the one thing never to do with a file that
    fails here."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"{path} holds objects other than tensors and plain containers, so it is not a "
            "combonet checkpoint; combonet only loads tensors and never runs code from a "
            "file: delete it or restore it from a copy you trust") from None
    except Exception as err:
        raise CheckpointError(f"{path} is not a readable torch file ({type(err).__name__}: it "
                              "is corrupt or truncated)") from None


def check_contents(obj: Any, path: str | Path, kind: str) -> dict[str, Any]:
    """``obj`` if it is a ``kind`` file of this format with finite tensors, else one error."""
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} is not a combonet checkpoint: it holds a "
                              f"{type(obj).__name__}, not a dict")
    fmt = obj.get("format")
    if fmt != FORMAT:
        raise CheckpointError(f"{path} is not a combonet checkpoint of format {FORMAT} "
                              f"(its format is {fmt!r})")
    missing = [k for k in REQUIRED[kind] if k not in obj]
    if missing:
        raise CheckpointError(f"{path} is incomplete: it has no {', '.join(map(repr, missing))}"
                              " entry")
    if not isinstance(obj["model"], dict) or not all(
            isinstance(t, torch.Tensor) for t in obj["model"].values()):
        raise CheckpointError(f"{path}: 'model' must be a dict of tensors (a state_dict)")
    if not isinstance(obj["epoch"], int) or obj["epoch"] < 0:
        raise CheckpointError(f"{path}: 'epoch' must be an integer >= 0, got {obj['epoch']!r}")
    bad = first_non_finite(obj)
    if bad is not None:
        raise CheckpointError(f"{path} holds NaN or inf values (in {bad}); it is not a usable "
                              "checkpoint")
    return obj


def _tensors(obj: Any, prefix: str) -> Iterator[tuple[str, torch.Tensor]]:
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, dict):
        for k, val in obj.items():
            yield from _tensors(val, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, val in enumerate(obj):
            yield from _tensors(val, f"{prefix}[{i}]")


def first_non_finite(obj: dict[str, Any]) -> str | None:
    """Name of the first floating tensor of the model or optimizer state with NaN/inf."""
    for part in ("model", "optimizer"):
        for name, t in _tensors(obj.get(part), part):
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                return name
    return None


__all__ = ["FORMAT", "REQUIRED", "CheckpointError", "atomic_save", "atomic_write_bytes",
           "atomic_write_json", "atomic_write_text", "check_contents", "current_umask",
           "first_non_finite", "load_bytes", "rng_state", "set_rng_state", "tmp_prefix",
           "to_bytes", "unpickle"]
