"""Search spaces of ``combonet tune``: a default per model family, or a user's YAML file.

A space maps :class:`~combonet.train.TrainConfig` settings to one range each::

    lr: {log: [1.0e-3, 0.1]}      # log-uniform float
    dt: {float: [0.05, 1.0]}      # uniform float
    units: {int: [16, 64]}        # uniform integer
    readout: {choice: [last, mean]}

A setting is drawn only where it applies (:meth:`TrainConfig.not_applicable`): the choices of
``model``, ``optimizer``, ``schedule`` and ``tau_train`` are drawn first, and ``tau_max`` only
when ``tau_train`` is not ``none``.
"""

from __future__ import annotations

import itertools
import math
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..train.config import RUNTIME_FIELDS, ConfigError, TrainConfig, read_config_file

#: The kinds of range a space entry may give.
KINDS = ("log", "float", "int", "choice")
#: Choices drawn before the rest: they decide which other settings apply.
GATES = ("model", "optimizer", "schedule", "tau_train")
#: Settings no trial may change, with the reason.
FIXED: dict[str, str] = {
    **{name: "is a runtime setting (set it in the base config)" for name in RUNTIME_FIELDS},
    **{name: "defines the data the trials are compared on (set it in the base config)"
       for name in ("task", "val_fraction", "limit_train", "limit_test", "permutation_seed")},
    "epochs": "is every trial's budget (set it in the base config)",
    "init_from": "cannot be tuned",
}


@dataclass(frozen=True)
class Param:
    """One tuned setting: ``kind`` in :data:`KINDS`, a range ``[low, high]`` or ``choices``."""

    name: str
    kind: str
    low: float = 0.0
    high: float = 0.0
    choices: tuple[Any, ...] = ()

    def spec(self) -> dict[str, list[Any]]:
        """The entry as written in a space file."""
        if self.kind == "choice":
            return {"choice": list(self.choices)}
        return {self.kind: [self.low, self.high]}

    def suggest(self, trial: Any) -> Any:
        """Draw the value from an Optuna trial."""
        if self.kind == "choice":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high))
        return trial.suggest_float(self.name, self.low, self.high, log=self.kind == "log")


Space = dict[str, Param]


def _vocabularies() -> dict[str, tuple[str, ...]]:
    from ..models.builders import TAU_TRAIN
    from ..models.classifier import READOUTS
    from ..models.registry import MODELS, discrete_maps
    from ..train.config import OPTIMIZERS, SCHEDULES

    return {"model": tuple(MODELS), "optimizer": tuple(OPTIMIZERS),
            "schedule": tuple(SCHEDULES), "tau_train": TAU_TRAIN, "readout": READOUTS,
            "method": discrete_maps()}


def _field_type(name: str) -> type:
    hint = typing.get_type_hints(TrainConfig)[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def _number(name: str, value: Any, where: str, integer: bool) -> float:
    """A finite number from a space file (YAML reads ``1e-3`` as text, so text is parsed)."""
    try:
        if isinstance(value, bool):
            raise ValueError
        x = float(value)
        if integer and not x.is_integer():
            raise ValueError
    except (TypeError, ValueError):
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"{name} in {where}: bounds must be {kind}, got {value!r}") from None
    if not math.isfinite(x):
        raise ConfigError(f"{name} in {where}: bounds must be finite, got {value!r}")
    return x


def parse_param(key: Any, entry: Any, where: str) -> Param:
    """One space entry ``NAME: {KIND: VALUES}``, checked; :class:`ConfigError` names the entry."""
    name = str(key).replace("-", "_")
    if name not in TrainConfig.field_names():
        tunable = [n for n in TrainConfig.field_names() if n not in FIXED]
        raise ConfigError(f"unknown setting {key!r} in {where}; tunable settings: "
                          f"{', '.join(tunable)}")
    if name in FIXED:
        raise ConfigError(f"{key} in {where} {FIXED[name]}; remove it from the space")
    example = f"e.g. {key}: {{log: [0.001, 0.1]}}"
    if not isinstance(entry, dict) or len(entry) != 1 or next(iter(entry)) not in KINDS:
        raise ConfigError(f"{key} in {where} must be a mapping of one of {', '.join(KINDS)} to "
                          f"its range ({example}), got {entry!r}")
    kind, values = next(iter(entry.items()))
    field = _field_type(name)
    if kind == "choice":
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{key} in {where}: choice needs a non-empty list, got {values!r}")
        choices = tuple(getattr(TrainConfig.from_dict({name: v}, source=where), name)
                        for v in values)
        if len(set(choices)) != len(choices):
            raise ConfigError(f"{key} in {where}: choices must differ, got {values!r}")
        vocab = _vocabularies().get(name)
        for c in choices:
            if vocab is not None and c not in vocab:
                raise ConfigError(f'Invalid {name} "{c}" in {where}. Must be one of '
                                  f"{list(vocab)}")
        return Param(name, kind, choices=choices)
    if field not in (int, float):
        raise ConfigError(f"{key} in {where} is not a number: use {{choice: [...]}}")
    if kind != "int" and field is int:
        raise ConfigError(f"{key} in {where} is an integer setting: use {{int: [low, high]}}")
    if not isinstance(values, list) or len(values) != 2:
        raise ConfigError(f"{key} in {where}: {kind} needs [low, high], got {values!r}")
    low, high = (_number(str(key), x, where, kind == "int") for x in values)
    if not low < high:
        raise ConfigError(f"{key} in {where}: low must be < high, got {values!r}")
    if kind == "log" and low <= 0:
        raise ConfigError(f"{key} in {where}: a log range needs low > 0, got {values!r}")
    if kind == "int":
        return Param(name, kind, int(low), int(high))
    return Param(name, kind, low, high)


def parse_space(data: dict[Any, Any], base: TrainConfig, where: str = "the space") -> Space:
    """A space from a mapping (a file's contents), checked against ``base``: every entry
    applies to some model the space can draw, and trained time constants get a ``tau_max``."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a mapping of settings to ranges, got "
                          f"{type(data).__name__}")
    if not data:
        raise ConfigError(f"{where} holds no settings to tune")
    space: Space = {}
    for key, entry in data.items():
        p = parse_param(key, entry, where)
        if p.name in space:
            raise ConfigError(f"{p.name} is given twice in {where}")
        space[p.name] = p
    _check_applicable(space, base, where)
    return space


def _gate_configs(space: Space, base: TrainConfig) -> list[TrainConfig]:
    """``base`` under every combination of the space's gate choices."""
    gates = [p for p in space.values() if p.name in GATES[:3]]
    out = []
    for combo in itertools.product(*(p.choices for p in gates)):
        values = {p.name: c for p, c in zip(gates, combo, strict=True)}
        out.append(TrainConfig.from_dict(values, base=base))
    return out


def _check_applicable(space: Space, base: TrainConfig, where: str) -> None:
    configs = _gate_configs(space, base)
    for name in space:
        reasons = [cfg.not_applicable().get(name) for cfg in configs]
        if all(reasons):
            raise ConfigError(f"{name} in {where} {reasons[0]}; remove it from the space")
    taus = space["tau_train"].choices if "tau_train" in space else (base.tau_train,)
    trained = [t for t in taus if t != "none"]
    if trained and "tau_max" not in space and base.tau_max is None:
        raise ConfigError(f"tau_train can be {trained[0]!r} in {where}, which needs tau_max: "
                          "add tau_max to the space (e.g. tau_max: {log: [2, 50]}) or to the "
                          "base config")


def read_space(path: str | Path, base: TrainConfig) -> Space:
    """The space in a YAML (or TOML) file, checked against ``base``."""
    try:
        data = read_config_file(path)
    except ConfigError as err:
        raise ConfigError(f"--space: {err}") from None
    return parse_space(data, base, where=f"space file {path}")


def default_space(base: TrainConfig) -> Space:
    """The default space of ``base.model``'s family.

    Combo nets: ``lr`` log [1e-3, 0.1], ``dt`` log [0.05, 1], ``init_scale`` log [0.1, 3],
    ``readout``, ``tau_train`` (``tau_max`` log [2, 50]); sparse ones also ``density`` and
    ``magnitude`` within a factor 2 of the base config's. Baselines: ``lr`` log [1e-4, 0.03].
    """
    from ..models.builders import TAU_TRAIN
    from ..models.classifier import READOUTS
    from ..models.registry import model_spec

    flags = model_spec(base.model).flags
    if "modules" not in flags:
        entries: list[Param] = [Param("lr", "log", 1e-4, 3e-2)]
    else:
        entries = [Param("lr", "log", 1e-3, 1e-1), Param("dt", "log", 0.05, 1.0),
                   Param("init_scale", "log", 0.1, 3.0),
                   Param("readout", "choice", choices=READOUTS),
                   Param("tau_train", "choice", choices=TAU_TRAIN),
                   Param("tau_max", "log", 2.0, 50.0)]
        if "density" in flags:
            entries += [Param("density", "float", base.density / 2, min(1.0, base.density * 2)),
                        Param("magnitude", "log", base.magnitude / 2, base.magnitude * 2)]
    skip = base.not_applicable()
    return {p.name: p for p in entries if p.name not in skip}


def space_to_dict(space: Space) -> dict[str, dict[str, list[Any]]]:
    """The space as a space file would give it (stored in ``tune.json``)."""
    return {name: p.spec() for name, p in space.items()}


def suggest(trial: Any, space: Space, base: TrainConfig) -> dict[str, Any]:
    """Draw the settings of one trial: the gates first, then what applies under them."""
    values: dict[str, Any] = {}
    order = [n for n in GATES if n in space] + [n for n in space if n not in GATES]
    for name in order:
        cfg = TrainConfig.from_dict(values, base=base)
        if name in cfg.not_applicable():
            continue
        if name == "tau_max" and cfg.tau_train == "none":
            continue
        values[name] = space[name].suggest(trial)
    return values


__all__ = ["FIXED", "GATES", "KINDS", "Param", "Space", "default_space", "parse_param",
           "parse_space", "read_space", "space_to_dict", "suggest"]
