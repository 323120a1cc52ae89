"""``TrainConfig``: every setting of a training run, from defaults, a YAML/TOML file and flags.

Precedence: dataclass defaults < the run directory's ``config.json`` (on ``--resume``) or the
source run's (``--init-from``) < ``--config FILE`` < command-line flags. Unknown keys are
refused with the list of valid keys; settings that do not apply to the chosen model,
optimizer or schedule are refused when a user gives them (:meth:`TrainConfig.not_applicable`)
and never enter the fingerprint.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import stat
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .. import _validate as v
from .._validate import file_kind
from ..engine.maps import DEFAULT_METHOD


@dataclass(frozen=True)
class Option:
    """One choice of a setting: what it is and which other settings apply only to it."""

    description: str
    flags: frozenset[str] = frozenset()


OPTIMIZERS: dict[str, Option] = {
    "adam": Option("Adam"),
    "sgd": Option("SGD with momentum", frozenset({"momentum"})),
    "rmsprop": Option("RMSprop with momentum", frozenset({"momentum"})),
}
SCHEDULES: dict[str, Option] = {
    "none": Option("constant learning rate"),
    "step": Option("multiply by lr_gamma every lr_step_size epochs",
                   frozenset({"lr_step_size", "lr_gamma"})),
    "cosine": Option("cosine decay to 0 over the epochs, so the result depends on epochs"),
}
DEVICES = ("auto", "cpu", "cuda")
EVAL_TEST = ("best", "every")
#: Settings only sequence-classification (image) tasks read, and only trial tasks read.
SEQUENCE_TASK_FLAGS = frozenset({"data_dir", "val_fraction", "limit_train", "limit_test",
                                 "permutation_seed", "readout"})
TRIAL_TASK_FLAGS = frozenset({"epoch_trials", "val_trials", "test_trials", "other_weight"})
OPTIMIZER_FLAGS = frozenset().union(*(o.flags for o in OPTIMIZERS.values()))
SCHEDULE_FLAGS = frozenset().union(*(o.flags for o in SCHEDULES.values()))

#: Settings that do not change what is computed (so a checkpoint stays compatible when they
#: change): everything else that applies enters :meth:`TrainConfig.fingerprint`. ``epochs``
#: is runtime only while the schedule does not depend on it (not for ``cosine``).
RUNTIME_FIELDS = frozenset({"data_dir", "epochs", "out_dir", "device", "threads",
                            "log_interval", "quiet", "certify_every", "eval_test"})
#: What ``--init-from`` keeps from the source run (the model and the data it was trained on).
INIT_FROM_FIELDS = ("task", "model", "seed", "permutation_seed", "val_fraction",
                    "limit_train", "limit_test")
#: A settings file larger than this is not a settings file.
MAX_CONFIG_BYTES = 1 << 20


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
    #: trial tasks: fresh training trials per epoch, fixed validation and test trials, and the
    #: loss weight of the unscored steps (Yang et al. 2019: 0.2)
    epoch_trials: int = 2048
    val_trials: int = 400
    test_trials: int = 1000
    other_weight: float = 0.2
    # model
    model: str = "sparse-combo"
    modules: int = 16
    units: int = 16
    density: float = 0.05
    magnitude: float = 3.0
    coupling_density: float | None = None
    init_scale: float = 1.0
    coupling_rank: int | None = None
    tau_train: str = "none"
    tau_max: float | None = None
    readout: str = "last"
    dt: float = 0.1
    method: str = DEFAULT_METHOD
    hidden: int = 128
    #: model "areas": the areas file's content (a path given here is read at once, so a run
    #: directory's config.json holds the network itself, not a path that may change)
    areas: str | None = None
    #: model "ctrnn": time constant in ms (alpha = task dt / ctrnn_tau; NeuroGym: 100)
    ctrnn_tau: float = 100.0
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
    threads: str = "auto"
    log_interval: int = 100
    certify_every: int = 1
    #: "best": the test split at new best-validation epochs and the last one (where it is
    #: reported); "every": every epoch (learning curves of test accuracy)
    eval_test: str = "best"
    quiet: bool = False
    # start from the final weights of a finished run (a new run: fresh optimiser and schedule)
    init_from: str | None = None

    def __post_init__(self) -> None:
        if self.areas is not None:
            self.areas = areas_content(self.areas)

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

    def not_applicable(self) -> dict[str, str]:
        """Settings that the chosen model, optimizer or schedule does not read, each with the
        reason (a user who sets one is told so; they never enter the fingerprint)."""
        from ..data.registry import TASKS, TRIAL_TASKS, is_trial_task
        from ..models.registry import MODEL_FLAGS, MODELS

        out: dict[str, str] = {}
        try:
            trial = is_trial_task(self.task)
        except ValueError:  # a bad task name is validate()'s to report
            trial = None
        if trial is not None:
            own = TRIAL_TASK_FLAGS if trial else SEQUENCE_TASK_FLAGS
            users = (f"sequence-classification tasks: {', '.join(TASKS)}" if trial
                     else f"trial tasks: {', '.join(TRIAL_TASKS)}")
            for name in sorted((SEQUENCE_TASK_FLAGS | TRIAL_TASK_FLAGS) - own):
                out[name] = f"does not apply to task '{self.task}' (only to {users})"
        groups = (("model", self.model, MODELS, MODEL_FLAGS),
                  ("optimizer", self.optimizer, OPTIMIZERS, OPTIMIZER_FLAGS),
                  ("schedule", self.schedule, SCHEDULES, SCHEDULE_FLAGS))
        for kind, chosen, registry, specific in groups:
            spec = registry.get(chosen)
            if spec is None:
                continue
            for name in sorted(specific - spec.flags):
                users = [k for k, o in registry.items() if name in o.flags]
                out[name] = (f"does not apply to {kind} '{chosen}' (only to "
                             f"{', '.join(users)})")
        return out

    def fingerprint_fields(self) -> dict[str, Any]:
        """The settings that define the model, the data and the optimisation: every setting
        that applies and is not runtime-only; ``epochs`` too under the cosine schedule."""
        skip = set(RUNTIME_FIELDS) | set(self.not_applicable())
        out = {k: val for k, val in self.to_dict().items() if k not in skip}
        if self.schedule == "cosine":
            out["epochs"] = self.epochs
        return out

    def fingerprint(self) -> str:
        """A short hash of :meth:`fingerprint_fields` (checkpoint compatibility)."""
        blob = json.dumps(self.fingerprint_fields(), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def differences(self, other: TrainConfig) -> list[str]:
        """Names of the fingerprint fields in which ``self`` and ``other`` differ."""
        a, b = self.fingerprint_fields(), other.fingerprint_fields()
        return [k for k in sorted(set(a) | set(b)) if a.get(k, _MISSING) != b.get(k, _MISSING)]

    # -- validation -----------------------------------------------------------------------
    def validate(self) -> TrainConfig:
        """Check every setting up front; raise :class:`ConfigError` naming the first bad one."""
        try:
            self._validate()
        except ConfigError:
            raise
        except ValueError as err:
            raise ConfigError(str(err)) from None
        return self

    def _validate(self) -> None:
        from ..data.registry import task_spec
        from ..models.registry import MODELS, check_model, discrete_maps

        task_spec(self.task)
        v.choice("model", self.model, MODELS)
        v.choice("method", self.method, discrete_maps())
        v.choice("optimizer", self.optimizer, OPTIMIZERS)
        v.choice("schedule", self.schedule, SCHEDULES)
        v.choice("device", self.device, DEVICES)
        for name in ("modules", "units", "hidden", "batch_size", "epochs", "lr_step_size",
                     "epoch_trials", "val_trials", "test_trials"):
            v.integer(name, getattr(self, name), 1)
        v.non_negative("other_weight", self.other_weight, hi=v.FLOAT32_MAX)
        v.positive("ctrnn_tau", self.ctrnn_tau, hi=v.FLOAT32_MAX)
        if self.model == "areas" and self.areas is None:
            raise ConfigError("model 'areas' needs an areas file: give --areas FILE (TOML, "
                              "YAML or JSON; docs/neuro.md)")
        for name in ("limit_train", "limit_test"):
            if getattr(self, name) is not None:
                v.integer(name, getattr(self, name), 1)
        v.threads("threads", self.threads)
        from ..models.builders import TAU_TRAIN
        from ..models.classifier import READOUTS

        v.choice("tau_train", self.tau_train, TAU_TRAIN)
        v.choice("eval_test", self.eval_test, EVAL_TEST)
        v.choice("readout", self.readout, READOUTS)
        if self.coupling_rank is not None:
            v.integer("coupling_rank", self.coupling_rank, 1)
        if self.tau_max is not None:
            v.positive("tau_max", self.tau_max, hi=v.FLOAT32_MAX)
            if not self.tau_max > 1.0:
                raise ConfigError(f"tau_max must be > 1 (the modules' smallest time constant "
                                  f"is tau = 1), got {self.tau_max!r}")
        if self.tau_train != "none" and self.tau_max is None:
            raise ConfigError(f"tau_train={self.tau_train!r} trains time constants in "
                              "[1, tau_max]: give --tau-max (e.g. 20)")
        v.seed("seed", self.seed)
        v.seed("permutation_seed", self.permutation_seed)
        for name in ("log_interval", "certify_every"):
            v.integer(name, getattr(self, name), 0)
        v.in_interval("density", self.density, 0, 1)
        if self.coupling_density is not None:
            v.in_interval("coupling_density", self.coupling_density, 0, 1)
        v.in_interval("val_fraction", self.val_fraction, 0, 1, hi_open=True,
                      hint="a validation split is needed to choose the best epoch")
        v.in_interval("dt", self.dt, 0, 1,
                      hint="dt / tau must lie in (0, 1] and the modules use tau = 1")
        v.in_interval("lr_gamma", self.lr_gamma, 0, 1)
        for name in ("magnitude", "init_scale", "lr"):  # they end up in float32 tensors
            v.positive(name, getattr(self, name), hi=v.FLOAT32_MAX)
        v.non_negative("weight_decay", self.weight_decay, hi=v.FLOAT32_MAX)
        v.non_negative("momentum", self.momentum, hi=1.0, hi_open=True)
        if self.grad_clip is not None:
            v.positive("grad_clip", self.grad_clip)
        if self.init_from is not None and not str(self.init_from).strip():
            raise ConfigError("init_from must be a run directory or none, got ''")
        check_model(self)  # e.g. a hopeless Theorem-1 search, refused before any sampling


_MISSING = object()


def areas_content(value: Any) -> str:
    """An areas spec -- a path to a TOML/YAML/JSON areas file, its content as JSON text
    (``{...}``), or a mapping -- as canonical JSON text of the parsed spec (declaration order
    kept: it decides the state layout). Raises :class:`ConfigError` in one line."""
    import json
    from collections.abc import Mapping

    from ..areas import load_areas, parse_areas

    try:
        if isinstance(value, Mapping):
            spec = parse_areas(value, source="areas")
        elif isinstance(value, (str, Path)) and str(value).lstrip().startswith("{"):
            try:
                data = json.loads(str(value))
            except json.JSONDecodeError as err:
                raise ConfigError(f"areas: the inline JSON spec cannot be parsed ({err})") \
                    from None
            spec = parse_areas(data, source="areas")
        elif isinstance(value, (str, Path)) and str(value).strip():
            spec = load_areas(value)
        else:
            raise ConfigError(f"areas must be an areas file (TOML, YAML or JSON) or none, got "
                              f"{value!r}")
    except ConfigError:
        raise
    except (ValueError, OSError) as err:
        raise ConfigError(" ".join(str(err).split())) from None
    return json.dumps(spec.to_dict())


def _coerce(name: str, value: Any, hint: Any, source: str) -> Any:
    """Convert a file/flag value to the field's type (``"1e-3"`` -> float, ``"none"`` -> None)."""
    args = typing.get_args(hint)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), hint) if args else hint
    if name == "areas" and isinstance(value, dict):
        return value  # an areas table inside a settings file (TrainConfig reads it)
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
            if name == "threads" and isinstance(value, int) and not isinstance(value, bool):
                return str(value)  # threads: "auto" or a count, from a file as a number
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


def read_text_file(path: str | Path, what: str, error: type[ValueError] = ValueError,
                   limit: int = MAX_CONFIG_BYTES) -> str:
    """The UTF-8 text of a small regular file, or one clear error (missing, not a regular
    file such as a FIFO or a device, too large, not UTF-8)."""
    path = Path(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        hint = " (a broken symbolic link)" if path.is_symlink() else ""
        raise error(f"{what} {path} does not exist{hint}") from None
    except OSError as err:
        raise error(f"cannot read {what} {path}: {err.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise error(f"{what} {path} is not a regular file ({file_kind(info.st_mode)})")
    if info.st_size > limit:
        raise error(f"{what} {path} has {info.st_size} bytes, more than the {limit} a "
                    f"{what} may have")
    try:
        with open(path, "rb") as fh:
            raw = fh.read(limit + 1)
    except OSError as err:
        raise error(f"cannot read {what} {path}: {err.strerror}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise error(f"{what} {path} is not UTF-8 text (byte 0x{raw[err.start]:02x} at offset "
                    f"{err.start}); save it as UTF-8") from None


def _yaml_loader() -> type:
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        pass

    def mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
        loader.flatten_mapping(node)
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=deep)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: let PyYAML report it
                break
            if first is not None:
                raise ConfigError(f"duplicate key {key!r} on lines {first} and "
                                  f"{key_node.start_mark.line + 1}; give each setting once")
            seen[key] = key_node.start_mark.line + 1
        return loader.construct_mapping(node, deep=deep)

    UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    return UniqueKeyLoader


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML (``.yaml``/``.yml``) or TOML (``.toml``) mapping of settings (safe loaders
    only; a key given twice is refused)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".yaml", ".yml"):
        if not path.exists():
            raise ConfigError(f"config file {path} does not exist")
        raise ConfigError(f"config file {path} must end in .yaml, .yml or .toml, got '{suffix}'")
    text = read_text_file(path, "config file", ConfigError)
    try:
        if suffix == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError:  # pragma: no cover - Python 3.10
                import tomli as tomllib  # type: ignore[no-redef]
            data = tomllib.loads(text)
        else:
            import yaml

            data = yaml.load(text, Loader=_yaml_loader())  # a SafeLoader subclass
    except ConfigError as err:
        raise ConfigError(f"config file {path}: {err}") from None
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


__all__ = ["DEVICES", "INIT_FROM_FIELDS", "OPTIMIZERS", "RUNTIME_FIELDS", "SCHEDULES",
           "SEQUENCE_TASK_FLAGS", "TRIAL_TASK_FLAGS", "ConfigError", "Option", "TrainConfig",
           "areas_content", "file_kind", "read_config_file", "read_text_file"]
