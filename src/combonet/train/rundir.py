"""``RunDir``: the one object that knows a run directory.

Files (only this module spells their names):

* ``config.json``      resolved config, fingerprint, data meta (incl. the permutation),
  parameter counts, and where the initial weights came from (``init_from``);
* ``checkpoint.pt``    the last completed epoch (epoch 0: the initial weights) with optimizer,
  scheduler and RNG states and the history;
* ``best.pt``          the weights of the epoch with the best validation accuracy;
* ``manifest.json``    SHA-256 and size of every checkpoint file;
* ``metrics.jsonl``    one JSON line per epoch;
* ``summary.json``, ``certificate.json`` (final weights), ``learning_curve.png``;
* ``.combonet.lock``   held (``filelock``) by the process training in the directory.

Integrity: a checkpoint is written as ``manifest.json`` first (the new digest as current, the
one on disk as previous), then the file itself, each atomically (temp file, fsync, rename). A
crash between the two leaves the old file, which still matches "previous"; so a file verifies
when it matches either. A file that matches neither, a file the manifest does not list and a
file with NaN/inf tensors are refused, naming the file; the config is checked before any
weights are loaded.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import secrets
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._validate import file_kind
from . import checkpoint as ckpt
from .checkpoint import CheckpointError
from .config import TrainConfig, read_text_file

CONFIG = "config.json"
CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"
MANIFEST = "manifest.json"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
CERTIFICATE = "certificate.json"
CURVE = "learning_curve.png"
LOCK = ".combonet.lock"
#: Every file a run writes.
FILES = (CONFIG, CHECKPOINT, BEST, MANIFEST, METRICS, SUMMARY, CERTIFICATE, CURVE, LOCK)
#: ``--weights`` names -> files.
WEIGHTS = {"best": BEST, "final": CHECKPOINT}
MANIFEST_FORMAT = 1
_JSON_LIMIT = 64 << 20


class RunDirError(ValueError):
    """A run directory cannot be used as asked (the message says why and what to do)."""


class RunDirWriteError(OSError):
    """Writing into a run directory failed (a full disk, ...); the previous file is kept."""


@dataclass
class LoadedModel:
    """A model rebuilt from a run: its config, ``config.json`` record, weights file contents."""

    config: TrainConfig
    record: dict[str, Any]
    model: Any
    checkpoint: dict[str, Any]
    path: Path

    @property
    def epoch(self) -> int:
        return int(self.checkpoint["epoch"])


def _json(text: str, path: Path) -> Any:
    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, val in pairs:
            if k in out:
                raise RunDirError(f"{path} holds the key {k!r} twice")
            out[k] = val
        return out

    try:
        return json.loads(text, object_pairs_hook=unique)
    except json.JSONDecodeError as err:
        raise RunDirError(f"{path} is not valid JSON (line {err.lineno}, column {err.colno}: "
                          f"{err.msg})") from None


def _dict(obj: Any, path: Path, what: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise RunDirError(f"{path} must hold a JSON object ({what}), got a "
                          f"{type(obj).__name__}")
    return obj


class RunDir:
    """A run directory: names, locking, verified checkpoints, and the records of a run."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock: Any = None
        self._on_disk: dict[str, dict[str, Any]] = {}  # manifest entries known to be on disk

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __str__(self) -> str:
        return str(self.path)

    def file(self, name: str) -> Path:
        return self.path / name

    @classmethod
    def unique(cls, root: str | Path, stem: str) -> RunDir:
        """A new, empty directory ``ROOT/STEM-YYYYmmdd-HHMMSS-XXXXXX`` (random suffix; created
        here, so two runs started in the same second never share one)."""
        root = Path(root)
        for _ in range(100):
            name = f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
            try:
                root.mkdir(parents=True, exist_ok=True)
                (root / name).mkdir()
            except FileExistsError:
                continue
            except OSError as err:
                raise RunDirError(f"cannot create a run directory in {root}: "
                                  f"{err.strerror}") from None
            return cls(root / name)
        raise RunDirError(f"cannot find a free run directory name in {root}")  # pragma: no cover

    # -- ownership ------------------------------------------------------------------------
    def is_run(self) -> bool:
        """Whether the directory holds (part of) a combonet run: a checkpoint or a manifest
        (a ``config.json`` alone may be the user's own file)."""
        return any(os.path.lexists(self.file(n)) for n in (CHECKPOINT, MANIFEST, BEST))

    def has_checkpoint(self) -> bool:
        return self.file(CHECKPOINT).is_file()

    def locked(self) -> bool:
        return self._lock is not None

    def _acquire(self) -> None:
        from filelock import FileLock, Timeout

        lock = FileLock(str(self.file(LOCK)), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise RunDirError(f"{self.path} is in use by another combonet process (it holds "
                              f"{self.file(LOCK)}); wait for it to finish or choose another "
                              "--out-dir") from None
        except OSError as err:
            raise RunDirError(f"cannot lock {self.path}: {err.strerror}") from None
        self._lock = lock

    def release(self) -> None:
        """Release the lock (if held)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _refuse_if_used(self) -> None:
        entries = sorted(e for e in os.listdir(self.path) if e != LOCK)
        if not entries:
            return
        if self.is_run():
            raise RunDirError(
                f"{self.path} already holds a run; pass --resume to continue it, --init-from "
                f"{self.path} to start a new run from its final weights, or choose another "
                "--out-dir")
        shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise RunDirError(f"{self.path} is not empty ({shown}) and is not a combonet run; "
                          "choose a new or empty --out-dir (nothing was changed)")

    def _check_is_dir(self) -> None:
        if self.path.exists() and not self.path.is_dir():
            raise RunDirError(f"--out-dir {self.path} is {self._kind()}, not a directory; "
                              "choose another --out-dir")

    def _kind(self) -> str:
        mode = os.stat(self.path).st_mode
        return "a file" if stat.S_ISREG(mode) else file_kind(mode)

    def claim_new(self) -> None:
        """Take the directory for a new run: it must be new or empty; the lock is held until
        :meth:`release`. Nothing is created when the directory is refused."""
        self._check_is_dir()
        if self.path.is_dir():
            if self.file(LOCK).exists():
                self._acquire()  # refuses a directory in use, before anything else
                self.release()
            self._refuse_if_used()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise RunDirError(f"cannot create run directory {self.path}: "
                              f"{err.strerror}") from None
        self._acquire()
        try:
            self._refuse_if_used()  # another process may have written in between
        except BaseException:
            self.release()
            raise

    def claim_existing(self) -> None:
        """Take an existing run to continue it (``--resume``): the lock, then remove the temp
        files a crash (``kill -9``, power loss) left behind."""
        if not self.path.exists():
            raise RunDirError(f"cannot resume: {self.path} does not exist")
        self._check_is_dir()
        self._acquire()
        try:
            if not self.file(CONFIG).is_file():
                raise RunDirError(f"cannot resume: {self.path} is not a run directory (no "
                                  f"{CONFIG})")
            if not self.file(CHECKPOINT).is_file():
                raise RunDirError(f"cannot resume: {self.file(CHECKPOINT)} does not exist; "
                                  "start a new run with another --out-dir")
            self.clean_orphans()
        except BaseException:
            self.release()
            raise

    def clean_orphans(self) -> list[str]:
        """Delete this run's leftover temp files (``.NAME.XXXX.tmp``); only under the lock."""
        if not self.locked():
            raise RunDirError("internal error: clean_orphans needs the lock")
        names = "|".join(re.escape(ckpt.tmp_prefix(n)) for n in FILES)
        pattern = re.compile(f"(?:{names}).+\\.tmp$")
        removed = []
        for entry in os.listdir(self.path):
            if pattern.match(entry):
                os.unlink(self.file(entry))
                removed.append(entry)
        return removed

    def abandon(self, created: bool) -> None:
        """Undo a new run that never reached its first checkpoint: remove the files it wrote
        (and the directory, when this run created it), then release the lock."""
        if not self.has_checkpoint():
            for name in (CONFIG, METRICS, MANIFEST):
                if self.file(name).exists():
                    self.file(name).unlink()
        self.release()
        if created and set(os.listdir(self.path)) <= {LOCK}:
            try:
                if self.file(LOCK).exists():
                    self.file(LOCK).unlink()
                self.path.rmdir()
            except OSError:  # pragma: no cover - another process got in
                pass

    # -- reading --------------------------------------------------------------------------
    def _read_json(self, name: str, what: str) -> Any:
        path = self.file(name)
        return _json(read_text_file(path, what, RunDirError, limit=_JSON_LIMIT), path)

    def record(self) -> dict[str, Any]:
        """``config.json``, checked: a JSON object with a ``config`` object and a ``data``
        object giving ``features`` and ``num_classes``."""
        path = self.file(CONFIG)
        if not self.path.is_dir():
            why = "not a directory" if self.path.exists() else "no such directory"
            raise RunDirError(f"{self.path} is not a run directory ({why})")
        if not path.exists():
            raise RunDirError(f"{self.path} is not a run directory (no {CONFIG})")
        rec = _dict(self._read_json(CONFIG, "run record"), path, "the run record")
        for key in ("config", "data"):
            if key not in rec:
                raise RunDirError(f"{path} has no {key!r} entry; it is not a combonet run "
                                  "record")
            _dict(rec[key], path, f"its {key!r} entry")
        for key in ("features", "num_classes"):
            value = rec["data"].get(key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise RunDirError(f"{path}: data.{key} must be an integer >= 1, got {value!r}")
        return rec

    def config(self, record: dict[str, Any] | None = None) -> TrainConfig:
        """The run's validated :class:`TrainConfig`."""
        rec = self.record() if record is None else record
        return TrainConfig.from_dict(rec["config"], source=str(self.file(CONFIG))).validate()

    def summary(self) -> dict[str, Any] | None:
        """``summary.json`` (None before the run ends)."""
        if not self.file(SUMMARY).exists():
            return None
        return _dict(self._read_json(SUMMARY, "run summary"), self.file(SUMMARY), "a summary")

    def status(self) -> str | None:
        """``finished``, ``stopped`` (a time budget ended it, ``combonet compare``), ``diverged``
        or None (running, interrupted or never started)."""
        s = self.summary()
        return None if s is None else s.get("status")

    def is_finished(self) -> bool:
        """Whether the run completed all its epochs."""
        s = self.summary()
        return (s is not None and s.get("status") == "finished"
                and s.get("epochs_completed") == s.get("epochs"))

    def certificate_record(self) -> dict[str, Any] | None:
        """``certificate.json`` as a dict (None for baselines and unfinished runs)."""
        if not self.file(CERTIFICATE).exists():
            return None
        return _dict(self._read_json(CERTIFICATE, "certificate"), self.file(CERTIFICATE),
                     "a certificate")

    def certificate(self) -> Any:
        """The saved :class:`~combonet.Certificate` of the final weights, or None."""
        rec = self.certificate_record()
        if rec is None:
            return None
        from ..certificate import Certificate

        return Certificate.from_dict(rec)

    def history(self) -> list[dict[str, Any]]:
        """The records of ``metrics.jsonl`` (a last line still being written is skipped)."""
        path = self.file(METRICS)
        if not path.exists():
            return []
        text = read_text_file(path, "metrics file", RunDirError, limit=_JSON_LIMIT)
        lines = text.split("\n")
        out = []
        for i, line in enumerate(lines[:-1], 1):  # the part after the last newline is partial
            if line.strip():
                out.append(_dict(_json(line, path), path, f"line {i}"))
        return out

    def manifest(self) -> dict[str, Any]:
        """``manifest.json``: ``{"format": 1, "files": {name: {"sha256", "bytes", "epoch",
        "previous"}}}``."""
        path = self.file(MANIFEST)
        if not path.exists():
            raise CheckpointError(f"{path} does not exist, so the checkpoints of {self.path} "
                                  "cannot be verified")
        man = _dict(self._read_json(MANIFEST, "manifest"), path, "the manifest")
        if man.get("format") != MANIFEST_FORMAT or not isinstance(man.get("files"), dict):
            raise CheckpointError(f"{path} is not a combonet manifest of format "
                                  f"{MANIFEST_FORMAT}")
        return man

    def verify(self, name: str) -> bytes:
        """The bytes of checkpoint file ``name`` if its size and SHA-256 match the manifest."""
        path = self.file(name)
        try:
            info = os.stat(path)
        except FileNotFoundError:
            raise CheckpointError(f"{path} does not exist") from None
        if not stat.S_ISREG(info.st_mode):
            raise CheckpointError(f"{path} is not a regular file ({file_kind(info.st_mode)})")
        entry = self.manifest()["files"].get(name)
        if not isinstance(entry, dict) or "sha256" not in entry:
            raise CheckpointError(f"{path} is not listed in {self.file(MANIFEST)}, so it "
                                  "cannot be verified")
        accepted = [entry] + ([entry["previous"]] if isinstance(entry.get("previous"), dict)
                              else [])
        if info.st_size not in [e.get("bytes") for e in accepted]:
            raise CheckpointError(f"{path} has {info.st_size} bytes but {MANIFEST} records "
                                  f"{entry.get('bytes')}: the file is truncated or was "
                                  "replaced")
        with open(path, "rb") as fh:
            data = fh.read(info.st_size + 1)
        digest = hashlib.sha256(data).hexdigest()
        match = next((e for e in accepted if e.get("sha256") == digest), None)
        if match is None:
            raise CheckpointError(f"{path} fails its SHA-256 check against {MANIFEST}: the "
                                  "file is corrupt or was replaced")
        self._on_disk[name] = {k: match.get(k) for k in ("sha256", "bytes", "epoch")}
        return data

    def verified_digest(self, name: str) -> str | None:
        """The SHA-256 of ``name`` as last verified or written by this object."""
        entry = self._on_disk.get(name)
        return None if entry is None else entry.get("sha256")

    def _matching_entry(self, name: str, man: dict[str, Any]) -> dict[str, Any] | None:
        """The manifest entry (current or previous) that the file on disk matches, if any: a
        file that matches neither (corrupt) is never blessed as "previous"."""
        entry = man["files"].get(name)
        if not isinstance(entry, dict):
            return None
        digest = _digest_of(self.file(name))
        for e in (entry, entry.get("previous")):
            if isinstance(e, dict) and e.get("sha256") == digest:
                return {k: e.get(k) for k in ("sha256", "bytes", "epoch")}
        return None

    def load_checkpoint(self, name: str = CHECKPOINT) -> dict[str, Any]:
        """A verified checkpoint file's contents (finite tensors, required entries)."""
        kind = "checkpoint" if name == CHECKPOINT else "weights"
        return ckpt.load_bytes(self.verify(name), self.file(name), kind)

    def load_model(self, weights: str = "best", *, data_dir: str | None = None
                   ) -> LoadedModel:
        """Rebuild the model of this run and load its ``best`` or ``final`` weights.

        Order: ``config.json`` is checked and the config validated; the weights file is
        verified (manifest) and loaded with ``weights_only=True``; its fingerprint must be
        the config's; the tensor shapes must match the rebuilt model; then they are loaded.
        """
        import torch

        from .._validate import choice
        from ..models.registry import build_model

        choice("weights", weights, WEIGHTS)
        rec = self.record()
        cfg = self.config(rec)
        if data_dir is not None:
            cfg.data_dir = data_dir
        name = WEIGHTS[weights]
        path = self.file(name)
        if not path.exists():
            why = ("no epoch has completed yet" if name == BEST else "the run never started")
            raise RunDirError(f"{path} does not exist ({why})")
        data = self.load_checkpoint(name)
        check_same_config(data, cfg, path, self.file(CONFIG))
        torch.manual_seed(cfg.seed)
        model = build_model(cfg, rec["data"]["features"], rec["data"]["num_classes"])
        load_state(model, data["model"], path)
        model.eval()
        return LoadedModel(cfg, rec, model, data, path)

    # -- writing --------------------------------------------------------------------------
    def write_bytes(self, name: str, data: bytes) -> None:
        """Write ``name`` atomically; a failed write (full disk, ...) keeps the old file."""
        path = self.file(name)
        existed = path.exists()
        try:
            ckpt.atomic_write_bytes(path, data)
        except OSError as err:
            code = errno.errorcode.get(err.errno or 0, "")
            why = err.strerror or str(err)
            kept = f"; the previous {name} is kept" if existed else ""
            raise RunDirWriteError(f"cannot write {path}: {why}{f' ({code})' if code else ''}"
                                   f"{kept}") from None

    def write_json(self, name: str, data: Any) -> None:
        self.write_bytes(name, (json.dumps(data, indent=2) + "\n").encode())

    def write_config(self, record: dict[str, Any]) -> None:
        self.write_json(CONFIG, record)

    def write_summary(self, summary: dict[str, Any]) -> None:
        self.write_json(SUMMARY, summary)

    def write_certificate(self, cert: dict[str, Any]) -> None:
        self.write_json(CERTIFICATE, cert)

    def write_metrics(self, history: list[dict[str, Any]]) -> None:
        """Rewrite ``metrics.jsonl`` from a history (at the start and on resume)."""
        self.write_bytes(METRICS, "".join(json.dumps(r) + "\n" for r in history).encode())

    def append_metrics(self, record: dict[str, Any]) -> None:
        """Append one epoch's line (rewritten from the checkpoint's history on resume)."""
        path = self.file(METRICS)
        try:
            with open(path, "a") as fh:
                fh.write(json.dumps(record) + "\n")
        except OSError as err:
            raise RunDirWriteError(f"cannot write {path}: {err.strerror or err}") from None

    def save_checkpoint(self, name: str, state: dict[str, Any]) -> str:
        """Write checkpoint ``name`` and its manifest entry (see the module docstring);
        returns the SHA-256."""
        data = ckpt.to_bytes(state)
        digest = hashlib.sha256(data).hexdigest()
        path = self.file(MANIFEST)
        man = self.manifest() if path.exists() else {"format": MANIFEST_FORMAT, "files": {}}
        entry: dict[str, Any] = {"sha256": digest, "bytes": len(data),
                                 "epoch": state.get("epoch")}
        previous = self._on_disk.get(name)
        if previous is None and self.file(name).exists():  # first save after a resume
            previous = self._matching_entry(name, man)
        if previous is not None:
            entry["previous"] = previous
        man["files"][name] = entry
        self.write_json(MANIFEST, man)
        self.write_bytes(name, data)
        self._on_disk[name] = {k: entry[k] for k in ("sha256", "bytes", "epoch")}
        return digest


def _digest_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def config_differences(data: dict[str, Any], cfg: TrainConfig, labels: tuple[str, str]
                       ) -> tuple[str, list[str]]:
    """``("lr=0.02 (A) vs 0.5 (B), ...", [names])``: the settings in which the config saved in
    checkpoint contents ``data`` differs from ``cfg`` (labels name the two sides)."""
    try:
        saved = TrainConfig.from_dict(data["config"], source="the checkpoint")
    except (ValueError, TypeError, KeyError, AttributeError):
        return "settings that cannot be read from the checkpoint", []
    diffs = saved.differences(cfg)
    detail = ", ".join(f"{k}={getattr(saved, k)!r} ({labels[0]}) vs {getattr(cfg, k)!r} "
                       f"({labels[1]})" for k in diffs)
    return detail or "settings of another combonet version", diffs


def check_same_config(data: dict[str, Any], cfg: TrainConfig, path: Path, against: Path
                      ) -> None:
    """Refuse weights whose fingerprint is not ``cfg``'s, naming the differing settings."""
    if data.get("fingerprint") == cfg.fingerprint():
        return
    detail, _ = config_differences(data, cfg, (path.name, against.name))
    raise CheckpointError(f"{path} was written by a different configuration than {against}: "
                          f"{detail}")


def load_state(model: Any, state: dict[str, Any], path: Path) -> None:
    """``model.load_state_dict(state)`` after checking names and shapes (one line, not
    torch's list of every mismatch)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    if missing or extra:
        what = (f"missing {missing[0]!r}" if missing else f"unexpected {extra[0]!r}")
        raise CheckpointError(f"{path} does not fit the model ({what}, "
                              f"{len(missing)} missing and {len(extra)} unexpected tensors)")
    for k, t in own.items():
        if tuple(state[k].shape) != tuple(t.shape):
            raise CheckpointError(f"{path} does not fit the model: {k} has shape "
                                  f"{tuple(state[k].shape)} in the file, "
                                  f"{tuple(t.shape)} in the model")
    model.load_state_dict(state)


__all__ = ["BEST", "CERTIFICATE", "CHECKPOINT", "CONFIG", "CURVE", "FILES", "LOCK", "MANIFEST",
           "METRICS", "SUMMARY", "WEIGHTS", "LoadedModel", "RunDir", "RunDirError",
           "RunDirWriteError", "check_same_config", "config_differences", "load_state"]
