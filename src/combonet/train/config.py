"""``TrainConfig``: every setting of a training run, from defaults, a YAML/TOML file and flags.

Precedence: dataclass defaults < the run directory's ``config.json`` (on ``--resume``) <
``--config FILE`` < command-line flags. Unknown keys are refused with the list of valid keys.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

OPTIMIZERS = ("adam", "sgd", "rmsprop")
SCHEDULES = ("none", "step", "cosine")
DEVICES = ("auto", "cpu", "cuda")

#: Settings that do not change what is computed (so a checkpoint stays compatible when they
#: change): everything else enters :meth:`TrainConfig.fingerprint`.
RUNTIME_FIELDS = frozenset({"data_dir", "epochs", "out_dir", "device", "threads",
                            "log_interval", "quiet", "certify_every"})


class ConfigError(ValueError):
    """An invalid setting (the message names it, what is allowed and what came)."""


@dataclass
class TrainConfig:
    """One training run. The defaults are the ``combonet train`` demo: a certified 16x16 Sparse
    Combo Net (density 0.05, magnitude 3) on permuted sklearn digits (embedded, no download),
    about 90% test accuracy in 1-2 minutes on 2 CPU cores."""

    # data
    task: str = "pdigits"
    data_dir: str | None = None
    val_fraction: float = 0.1
    limit_train: int | None = None
    limit_test: int | None = None
    permutation_seed: int = 0
    # model
    model: str = "sparse-combo"
    modules: int = 16
    units: int = 16
    density: float = 0.05
    magnitude: float = 3.0
    coupling_density: float | None = None
    init_scale: float = 1.0
    dt: float = 0.1
    method: str = "cayley"
    hidden: int = 128
    # optimisation
    optimizer: str = "adam"
    lr: float = 0.05
    momentum: float = 0.9
    schedule: str = "cosine"
    lr_step_size: int = 30
    lr_gamma: float = 0.1
    weight_decay: float = 0.0
    grad_clip: float | None = 1.0
    batch_size: int = 64
    epochs: int = 100
    seed: int = 0
    # runtime
    device: str = "auto"
    out_dir: str | None = None
    threads: int | None = None
    log_interval: int = 100
    certify_every: int = 1
    quiet: bool = False

    # -- conversion -----------------------------------------------------------------------
    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, base: TrainConfig | None = None,
                  source: str = "config") -> TrainConfig:
        """``base`` (or the defaults) updated by ``data``; keys may use ``-`` or ``_``."""
        valid = cls.field_names()
        out = dataclasses.asdict(base) if base is not None else {}
        hints = typing.get_type_hints(cls)
        unknown = []
        for key, value in data.items():
            name = str(key).replace("-", "_")
            if name not in valid:
                unknown.append(str(key))
                continue
            out[name] = _coerce(name, value, hints[name], source)
        if unknown:
            raise ConfigError(
                f"unknown key(s) {unknown} in {source}; valid keys: {', '.join(valid)}"
            )
        return cls(**out)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def fingerprint_fields(self) -> dict[str, Any]:
        """The settings that define the model, the data and the optimisation."""
        return {k: v for k, v in self.to_dict().items() if k not in RUNTIME_FIELDS}

    def fingerprint(self) -> str:
        """A short hash of :meth:`fingerprint_fields` (checkpoint compatibility)."""
        blob = json.dumps(self.fingerprint_fields(), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    # -- validation -----------------------------------------------------------------------
    def validate(self) -> TrainConfig:
        """Check every setting up front; raise :class:`ConfigError` naming the first bad one."""
        from ..data import TASKS
        from ..engine.maps import METHODS
        from ..models.registry import MODELS

        _choice("task", self.task, TASKS)
        _choice("model", self.model, MODELS)
        _choice("method", self.method, METHODS)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("schedule", self.schedule, SCHEDULES)
        _choice("device", self.device, DEVICES)
        for name in ("modules", "units", "hidden", "batch_size", "epochs", "lr_step_size"):
            _int_at_least(name, getattr(self, name), 1)
        for name in ("limit_train", "limit_test", "threads"):
            if getattr(self, name) is not None:
                _int_at_least(name, getattr(self, name), 1)
        for name in ("seed", "permutation_seed", "log_interval", "certify_every"):
            _int_at_least(name, getattr(self, name), 0)
        _interval("density", self.density, 0.0, 1.0, "(0, 1]")
        if self.coupling_density is not None:
            _interval("coupling_density", self.coupling_density, 0.0, 1.0, "(0, 1]")
        _interval("val_fraction", self.val_fraction, 0.0, 1.0, "(0, 1)", hi_open=True,
                  hint="a validation split is needed to choose the best epoch")
        _interval("dt", self.dt, 0.0, 1.0, "(0, 1]",
                  hint="dt / tau must lie in (0, 1] and the modules use tau = 1")
        _interval("lr_gamma", self.lr_gamma, 0.0, 1.0, "(0, 1]")
        for name in ("magnitude", "init_scale", "lr"):
            _positive(name, getattr(self, name))
        for name in ("weight_decay", "momentum"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.grad_clip is not None:
            _positive("grad_clip", self.grad_clip)
        return self


def _coerce(name: str, value: Any, hint: Any, source: str) -> Any:
    """Convert a file/flag value to the field's type (``"1e-3"`` -> float, ``"none"`` -> None)."""
    args = typing.get_args(hint)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), hint) if args else hint
    if value is None or (optional and isinstance(value, str)
                         and value.strip().lower() in ("none", "null", "")):
        if optional:
            return None
        raise ConfigError(f"{name} cannot be empty in {source}")
    try:
        if base is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no",
                                                            "0"):
                return value.lower() in ("true", "yes", "1")
            raise ValueError
        if base is int:
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, float) and value.is_integer():
                return int(value)
            if isinstance(value, float):
                raise ValueError
            return int(value)
        if base is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if base is str:
            if not isinstance(value, (str, Path)):
                raise ValueError
            return str(value)
    except (TypeError, ValueError):
        kind = getattr(base, "__name__", str(base))
        raise ConfigError(
            f"{name} must be {'an' if kind == 'int' else 'a'} {kind}"
            f"{' or none' if optional else ''} in {source}, got {value!r}"
        ) from None
    return value


def _choice(name: str, value: str, allowed: Any) -> None:
    if value not in allowed:
        raise ConfigError(f'Invalid {name} "{value}". Must be one of {sorted(allowed)}')


def _int_at_least(name: str, value: Any, lo: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ConfigError(f"{name} must be an integer >= {lo}, got {value!r}")


def _positive(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")


def _interval(name: str, value: float, lo: float, hi: float, text: str, *,
              hi_open: bool = False, hint: str = "") -> None:
    ok = math.isfinite(value) and lo < value and (value < hi if hi_open else value <= hi)
    if not ok:
        extra = f" ({hint})" if hint else ""
        raise ConfigError(f"{name} must lie in {text}, got {value!r}{extra}")


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML (``.yaml``/``.yml``) or TOML (``.toml``) mapping of settings."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    text = path.read_text()
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError:  # pragma: no cover - Python 3.10
                import tomli as tomllib  # type: ignore[no-redef]
            data = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            raise ConfigError(
                f"config file {path} must end in .yaml, .yml or .toml, got '{suffix}'"
            )
    except ConfigError:
        raise
    except Exception as err:  # parse errors of either format
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"cannot parse config file {path}: {first}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of settings, got "
                          f"{type(data).__name__}")
    if isinstance(data.get("train"), dict) and len(data) == 1:
        data = data["train"]  # allow a [train] table / train: section
    return data


def diff_fields(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Names of fingerprint fields whose values differ between two config dicts."""
    keys = sorted((set(a) | set(b)) - RUNTIME_FIELDS)
    return [k for k in keys if a.get(k) != b.get(k)]


__all__ = ["DEVICES", "OPTIMIZERS", "RUNTIME_FIELDS", "SCHEDULES", "ConfigError", "TrainConfig",
           "diff_fields", "read_config_file"]
