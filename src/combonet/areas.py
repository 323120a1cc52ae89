"""Areas as a declarative graph, built into a certified network of networks (Section 2).

A spec (a TOML or YAML file, a dict, or :class:`AreasSpec`) names *areas* (units, module type,
time constant, module options; or sub-areas, recursively), *pathways* between them and which
areas receive which input channels and drive the output. :func:`build_areas` composes the
public constructors:

1. areas joined by ``feedback`` pathways (eq. 3) form groups, each one :class:`~combonet.Feedback`
   whose unit-level ``mask`` allows only the declared pathways (``M L + L^T M = 0`` for any
   masked ``B``, so every group keeps the rate of its slowest member);
2. the groups are ordered by the ``hierarchical`` (one-way) pathways into a
   :class:`~combonet.Hierarchy` whose mask again allows only the declared blocks. A cycle of
   one-way pathways has no guarantee, and is refused.

Areas with sub-areas are built the same way one level down, so areas can be combinations of
combinations. The result is the network plus an :class:`AreaMap` (unit slices per area, the
pathways and where their blocks live, input and output masks) that models and analyses use.

File layout (TOML; YAML is the same mapping)::

    name = "sensory-association-motor"     # optional
    tau = 1.0                              # default time constant of every area
    activation = "relu"
    seed = 0                               # seeds every module and coupling
    init_scale = 1.0                       # default initial scale of couplings B

    [areas.sensory]
    units = 32
    module = "sparse"                      # sparse | svd | product | triangular | trainable-sparse
    options = { density = 0.1, magnitude = 1.0 }   # keyword options of the module class
    inputs = "all"                         # input channels: "all", 3, "0:17", ["0", "33:"]

    [areas.motor]
    units = 16
    module = "svd"
    output = true                          # the readout reads these units

    [[pathways]]
    from = "sensory"
    to = "motor"
    kind = "hierarchical"                  # or "feedback" (eq. 3, both directions)
    density = 0.5                          # fraction of unit pairs connected (1 = dense)
    # rank = 4                             # low-rank: feedback groups only (see below)

Time constants: each area may set its own ``tau`` (the core's per-module time constants; eq. 3
becomes ``L = B - Mbar^{-1} B^T Mbar`` with ``Mbar = P T^{-1}``, still skew, docs/design.md).

Low-rank pathways (``rank = r``): the core offers one low-rank coupling, a ``Feedback`` whose
``B = U V^T`` (``N x r`` factors) spans *all* units of its members and cannot be masked. So a
feedback group with a low-rank pathway is built as ``Feedback(members, rank=r)`` and must be
exactly what that is: every pathway of the group low-rank with the same ``r``, dense, between
whole areas (no dotted sub-areas), and every pair of the group's areas joined (for two areas:
one pathway). ``L`` then has rank ``<= 2 r`` and every area pair communicates through the one
shared ``r``-dimensional subspace. ``Hierarchy`` has no low-rank coupling, so a
``hierarchical`` pathway with ``rank`` is refused.
"""

from __future__ import annotations

import inspect
import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .combinations import Feedback, Hierarchy
from .modules import (
    ContractingSystem,
    ProductModule,
    SparseModule,
    SVDModule,
    TrainableSparseModule,
    TriangularModule,
)

__all__ = [
    "MODULE_TYPES",
    "PATHWAY_KINDS",
    "AreaInfo",
    "AreaMap",
    "AreaSpec",
    "AreasSpec",
    "PathwayInfo",
    "PathwaySpec",
    "build_areas",
    "combination_at",
    "load_areas",
    "module_areas",
    "parse_areas",
]

MODULE_TYPES: dict[str, type[ContractingSystem]] = {
    "sparse": SparseModule,
    "svd": SVDModule,
    "product": ProductModule,
    "triangular": TriangularModule,
    "trainable-sparse": TrainableSparseModule,
}
PATHWAY_KINDS = ("feedback", "hierarchical")
#: keywords the spec sets itself (not module ``options``)
_RESERVED_OPTIONS = ("n", "tau", "activation")

_TOP_KEYS = ("name", "tau", "activation", "seed", "init_scale", "areas", "pathways")
_AREA_KEYS = ("name", "units", "module", "tau", "options", "inputs", "output", "areas",
              "pathways", "init_scale")
_PATHWAY_KEYS = ("from", "to", "source", "target", "kind", "density", "rank", "init_scale")


# -- the spec ----------------------------------------------------------------------------------
@dataclass
class PathwaySpec:
    """A pathway ``source -> target``. ``feedback`` (eq. 3) couples both directions with
    ``L = B - M^{-1} B^T M``; ``hierarchical`` is one-way. ``density`` < 1 keeps that fraction
    of unit pairs (seeded); ``rank`` makes a feedback group one low-rank ``Feedback`` (module
    docstring: the group's pathways must then all be dense, of that rank, and join every
    pair of its areas)."""

    source: str
    target: str
    kind: str = "feedback"
    density: float = 1.0
    rank: int | None = None
    init_scale: float | None = None  # None: the enclosing level's init_scale

    @property
    def label(self) -> str:
        arrow = "<->" if self.kind == "feedback" else "->"
        return f"{self.source} {arrow} {self.target}"


@dataclass
class AreaSpec:
    """One area: a module (``units``, ``module``, ``options``) or a combination of sub-areas
    (``areas`` and ``pathways``). ``tau`` defaults to the network's; ``inputs`` selects input
    channels; ``output`` marks areas that drive the readout."""

    name: str
    units: int | None = None
    module: str = "sparse"
    tau: float | None = None
    options: dict[str, Any] = field(default_factory=dict)
    inputs: Any = None  # None, "all", an int, "a:b", or a list of those
    output: bool = False
    areas: list[AreaSpec] = field(default_factory=list)
    pathways: list[PathwaySpec] = field(default_factory=list)
    init_scale: float | None = None  # couplings inside a nested area

    @property
    def nested(self) -> bool:
        return bool(self.areas)


@dataclass
class AreasSpec:
    """A whole network of areas (the top level of a spec file)."""

    areas: list[AreaSpec]
    pathways: list[PathwaySpec] = field(default_factory=list)
    tau: float = 1.0
    activation: str = "relu"
    seed: int = 0
    init_scale: float = 1.0
    name: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The file layout (JSON/YAML-serialisable; ``parse_areas`` reads it back)."""
        out: dict[str, Any] = {"name": self.name, "tau": self.tau,
                               "activation": self.activation, "seed": self.seed,
                               "init_scale": self.init_scale}
        out["areas"] = {a.name: _area_dict(a) for a in self.areas}
        out["pathways"] = [_pathway_dict(p) for p in self.pathways]
        return out


def _area_dict(a: AreaSpec) -> dict[str, Any]:
    d: dict[str, Any] = {}
    if a.nested:
        d["areas"] = {s.name: _area_dict(s) for s in a.areas}
        d["pathways"] = [_pathway_dict(p) for p in a.pathways]
        if a.init_scale is not None:
            d["init_scale"] = a.init_scale
    else:
        d.update(units=a.units, module=a.module, options=dict(a.options))
    if a.tau is not None:
        d["tau"] = a.tau
    if a.inputs is not None:
        d["inputs"] = a.inputs
    if a.output:
        d["output"] = True
    return d


def _pathway_dict(p: PathwaySpec) -> dict[str, Any]:
    d: dict[str, Any] = {"from": p.source, "to": p.target, "kind": p.kind,
                         "density": p.density}
    if p.rank is not None:
        d["rank"] = p.rank
    if p.init_scale is not None:
        d["init_scale"] = p.init_scale
    return d


# -- parsing -----------------------------------------------------------------------------------
class _Where:
    """Prefix of error messages: the file and the place in it."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, message: str) -> ValueError:
        prefix = f"{self.source}: " if self.source else ""
        return ValueError(f"{prefix}{where}{': ' if where else ''}{message}")


def _check_keys(d: Any, allowed: Sequence[str], where: str, err: _Where) -> None:
    if not isinstance(d, Mapping):
        raise err.fail(where, f"must be a table/mapping, got {type(d).__name__}")
    unknown = [k for k in d if k not in allowed]
    if unknown:
        raise err.fail(where, f"unknown key(s) {unknown}; allowed keys are {list(allowed)}")


def _number(value: Any, name: str, where: str, err: _Where, *, positive: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise err.fail(where, f"{name} must be a finite number, got {value!r}")
    if positive and value <= 0:
        raise err.fail(where, f"{name} must be > 0, got {value!r}")
    return float(value)


def _integer(value: Any, name: str, where: str, err: _Where, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise err.fail(where, f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _name(value: Any, where: str, err: _Where) -> str:
    if not isinstance(value, str) or not value or "." in value or value.strip() != value:
        raise err.fail(where, f"area names must be non-empty strings without dots or spaces "
                              f"at the ends, got {value!r}")
    return value


def _selectors(value: Any, where: str, err: _Where) -> Any:
    """Validate input channel selectors (resolved against the input size later)."""
    if value is None:
        return None
    items = value if isinstance(value, list) else [value]
    for item in items:
        if isinstance(item, bool) or not (isinstance(item, (int, str))):
            raise err.fail(where, f'inputs must be "all", a channel index, "a:b" or a list of '
                                  f"those, got {value!r}")
        if isinstance(item, str) and item != "all":
            parts = item.split(":")
            ok = len(parts) in (1, 2) and all(p.strip() == "" or p.strip().isdigit()
                                             for p in parts) and any(p.strip() for p in parts)
            if not ok:
                raise err.fail(where, f'invalid input selector {item!r}; use "all", an index '
                                      f'like "3", or a range like "0:17" or "33:"')
        if isinstance(item, int) and item < 0:
            raise err.fail(where, f"input channel indices must be >= 0, got {item}")
    return value


def _parse_pathway(d: Any, where: str, err: _Where) -> PathwaySpec:
    _check_keys(d, _PATHWAY_KEYS, where, err)
    source = d.get("from", d.get("source"))
    target = d.get("to", d.get("target"))
    if not isinstance(source, str) or not isinstance(target, str):
        raise err.fail(where, f"a pathway needs 'from' and 'to' area names, got {dict(d)}")
    kind = d.get("kind", "feedback")
    if kind not in PATHWAY_KINDS:
        raise err.fail(where, f'Invalid kind "{kind}". Must be one of {list(PATHWAY_KINDS)}')
    density = _number(d.get("density", 1.0), "density", where, err)
    if density > 1:
        raise err.fail(where, f"density must lie in (0, 1], got {density}")
    rank = d.get("rank")
    if rank is not None:
        rank = _integer(rank, "rank", where, err)
    scale = d.get("init_scale")
    if scale is not None:
        scale = _number(scale, "init_scale", where, err)
    return PathwaySpec(source, target, kind, density, rank, scale)


def _area_items(value: Any, where: str, err: _Where) -> list[tuple[str, Any]]:
    """Areas as a table keyed by name, or a list of tables with ``name``."""
    if isinstance(value, Mapping):
        return [(_name(k, where, err), v) for k, v in value.items()]
    if isinstance(value, list):
        out = []
        for i, v in enumerate(value):
            if not isinstance(v, Mapping) or "name" not in v:
                raise err.fail(f"{where}[{i}]", "each area in a list needs a 'name'")
            out.append((_name(v["name"], where, err), v))
        return out
    raise err.fail(where, f"areas must be a table of areas or a list, got {type(value).__name__}")


def _parse_area(name: str, d: Any, where: str, err: _Where) -> AreaSpec:
    _check_keys(d, _AREA_KEYS, where, err)
    tau = d.get("tau")
    if tau is not None:
        tau = _number(tau, "tau", where, err)
    inputs = _selectors(d.get("inputs"), where, err)
    output = d.get("output", False)
    if not isinstance(output, bool):
        raise err.fail(where, f"output must be true or false, got {output!r}")
    if "areas" in d:
        for key in ("units", "module", "options"):
            if key in d:
                raise err.fail(where, f"an area with sub-areas takes no '{key}' (its sub-areas "
                                      "have their own)")
        subs = _parse_areas_list(d["areas"], f"{where}.areas", err)
        paths = _parse_pathways(d.get("pathways", []), f"{where}.pathways", err)
        scale = d.get("init_scale")
        if scale is not None:
            scale = _number(scale, "init_scale", where, err)
        return AreaSpec(name, tau=tau, inputs=inputs, output=output, areas=subs,
                        pathways=paths, init_scale=scale)
    if "pathways" in d or "init_scale" in d:
        raise err.fail(where, "pathways and init_scale belong to areas with sub-areas")
    if "units" not in d:
        raise err.fail(where, "an area needs 'units' (or sub-'areas')")
    units = _integer(d["units"], "units", where, err)
    module = d.get("module", "sparse")
    if module not in MODULE_TYPES:
        raise err.fail(where, f'Invalid module "{module}". Must be one of {list(MODULE_TYPES)}')
    options = d.get("options", {})
    if not isinstance(options, Mapping):
        raise err.fail(where, f"options must be a table, got {options!r}")
    _check_options(module, dict(options), where, err)
    return AreaSpec(name, units, module, tau, dict(options), inputs, output)


def _check_options(module: str, options: dict[str, Any], where: str, err: _Where) -> None:
    params = inspect.signature(MODULE_TYPES[module].__init__).parameters
    allowed = [p for p in params if p not in ("self", *_RESERVED_OPTIONS)
               and params[p].kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                      inspect.Parameter.KEYWORD_ONLY)]
    for key in options:
        if key in _RESERVED_OPTIONS:
            field_name = {"n": "units"}.get(key, key)
            raise err.fail(where, f"option '{key}' is set by the area's '{field_name}' "
                                  f"field{' (network-wide)' if key == 'activation' else ''}, "
                                  "not in options")
        if key not in allowed:
            raise err.fail(where, f"unknown option '{key}' for module {module}; allowed "
                                  f"options are {allowed}")


def _parse_areas_list(value: Any, where: str, err: _Where) -> list[AreaSpec]:
    items = _area_items(value, where, err)
    if not items:
        raise err.fail(where, "needs at least one area")
    names = [n for n, _ in items]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise err.fail(where, f"area names must be unique, got {dup} more than once")
    return [_parse_area(n, v, f"{where}.{n}", err) for n, v in items]


def _parse_pathways(value: Any, where: str, err: _Where) -> list[PathwaySpec]:
    if not isinstance(value, list):
        raise err.fail(where, f"pathways must be a list of tables, got {type(value).__name__}")
    return [_parse_pathway(v, f"{where}[{i}]", err) for i, v in enumerate(value)]


def parse_areas(data: Mapping[str, Any] | AreasSpec, source: str = "") -> AreasSpec:
    """An :class:`AreasSpec` from the file layout (a mapping); errors name ``source``."""
    if isinstance(data, AreasSpec):
        return data
    err = _Where(source)
    _check_keys(data, _TOP_KEYS, "", err)
    if "areas" not in data:
        raise err.fail("", "an areas file needs an 'areas' table")
    tau = _number(data.get("tau", 1.0), "tau", "", err)
    activation = data.get("activation", "relu")
    if not isinstance(activation, str):
        raise err.fail("", f"activation must be a name, got {activation!r}")
    seed = _integer(data.get("seed", 0), "seed", "", err, minimum=0)
    scale = _number(data.get("init_scale", 1.0), "init_scale", "", err)
    name = data.get("name", "")
    if not isinstance(name, str):
        raise err.fail("", f"name must be a string, got {name!r}")
    areas = _parse_areas_list(data["areas"], "areas", err)
    paths = _parse_pathways(data.get("pathways", []), "pathways", err)
    return AreasSpec(areas, paths, tau, activation, seed, scale, name)


def _syntax_errors() -> tuple[type[Exception], ...]:
    import json

    import yaml

    errors: list[type[Exception]] = [yaml.YAMLError, json.JSONDecodeError]
    try:
        import tomllib

        errors.append(tomllib.TOMLDecodeError)
    except ModuleNotFoundError:  # Python 3.10
        pass
    return tuple(errors)


_SYNTAX_ERRORS = _syntax_errors()


def _parse_text(text: str, suffix: str, path: Path) -> Any:
    if suffix == ".toml":
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            raise ValueError("reading TOML needs Python >= 3.11 (tomllib); use a YAML areas "
                             f"file instead of {path}") from None
        return tomllib.loads(text)
    if suffix == ".json":
        import json

        return json.loads(text)
    import yaml

    return yaml.safe_load(text)


def load_areas(path: str | Path) -> AreasSpec:
    """Read an areas file: ``.toml`` (tomllib), ``.yaml``/``.yml`` (``yaml.safe_load``) or
    ``.json``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"areas file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".yaml", ".yml", ".json"):
        raise ValueError(f"areas file {path} must end in .toml, .yaml, .yml or .json, "
                         f"got {suffix or 'no suffix'}")
    text = path.read_text()
    try:
        data = _parse_text(text, suffix, path)
    except _SYNTAX_ERRORS as err:
        raise ValueError(f"{path}: cannot be parsed ({' '.join(str(err).split())})") from None
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: must hold a table/mapping at the top, got "
                         f"{type(data).__name__}")
    return parse_areas(data, source=str(path))


# -- the area map ------------------------------------------------------------------------------
@dataclass
class AreaInfo:
    """An area's place in the built network (``start:stop`` in the state)."""

    name: str  # dotted path, e.g. "sensory" or "sensory.mod1"
    start: int
    stop: int
    module: str | None  # module type of a leaf area, None for an area with sub-areas
    tau: float
    inputs: Any
    output: bool
    children: tuple[str, ...] = ()
    seed: int | None = None

    @property
    def units(self) -> slice:
        return slice(self.start, self.stop)

    @property
    def n(self) -> int:
        return self.stop - self.start


@dataclass
class PathwayInfo:
    """A built pathway: its block lives in the combination at ``combination`` (indices into
    ``.systems`` from the root network), rows ``target`` units, columns ``source`` units, in
    that combination's local coordinates."""

    source: str
    target: str
    kind: str
    density: float
    combination: tuple[int, ...]
    rows: tuple[int, int]
    cols: tuple[int, int]
    offset: int = 0  # state index of the combination's first unit

    @property
    def label(self) -> str:
        arrow = "<->" if self.kind == "feedback" else "->"
        return f"{self.source} {arrow} {self.target}"


@dataclass
class AreaMap:
    """Unit slices per area, pathways, input and output areas of a built network."""

    n: int
    areas: dict[str, AreaInfo]
    pathways: list[PathwayInfo]
    name: str = ""

    def __getitem__(self, name: str) -> AreaInfo:
        if name not in self.areas:
            raise ValueError(f'Unknown area "{name}". Must be one of {list(self.areas)}')
        return self.areas[name]

    def units(self, name: str) -> slice:
        """The state slice of area ``name`` (dotted for sub-areas)."""
        return self[name].units

    @property
    def top_level(self) -> list[str]:
        return [a for a in self.areas if "." not in a]

    @property
    def leaves(self) -> list[str]:
        return [a for a, info in self.areas.items() if info.module is not None]

    @property
    def output_areas(self) -> list[str]:
        return [a for a, info in self.areas.items() if info.output]

    def pathway(self, a: str, b: str) -> PathwayInfo:
        """The pathway between areas ``a`` and ``b`` (either direction)."""
        for p in self.pathways:
            if {p.source, p.target} == {a, b}:
                return p
        labels = [p.label for p in self.pathways]
        raise ValueError(f"no pathway between {a} and {b}; the pathways are {labels}")

    def input_mask(self, input_size: int) -> torch.Tensor:
        """(N, input_size) 0/1: unit ``i`` receives channel ``c``. With no area declaring
        ``inputs``, every unit receives every channel."""
        declared = [info for info in self.areas.values() if info.inputs is not None]
        if not declared:
            return torch.ones(self.n, input_size)
        mask = torch.zeros(self.n, input_size)
        for info in declared:
            for c in _resolve_channels(info.inputs, input_size, info.name):
                mask[info.start:info.stop, c] = 1.0
        return mask

    def output_mask(self) -> torch.Tensor:
        """(N,) 0/1: the units that drive the readout (all when no area sets ``output``)."""
        outs = self.output_areas
        if not outs:
            return torch.ones(self.n)
        mask = torch.zeros(self.n)
        for name in outs:
            mask[self.units(name)] = 1.0
        return mask

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "name": self.name,
                "areas": {k: {**vars(v), "children": list(v.children)}
                          for k, v in self.areas.items()},
                "pathways": [{**vars(p), "combination": list(p.combination),
                              "rows": list(p.rows), "cols": list(p.cols)}
                             for p in self.pathways]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AreaMap:
        areas = {k: AreaInfo(**{**v, "children": tuple(v["children"])})
                 for k, v in d["areas"].items()}
        paths = [PathwayInfo(**{**p, "combination": tuple(p["combination"]),
                                "rows": tuple(p["rows"]), "cols": tuple(p["cols"])})
                 for p in d["pathways"]]
        return cls(int(d["n"]), areas, paths, d.get("name", ""))


def _resolve_channels(selectors: Any, size: int, area: str) -> list[int]:
    items = selectors if isinstance(selectors, list) else [selectors]
    out: set[int] = set()
    for item in items:
        if item == "all":
            out.update(range(size))
            continue
        if isinstance(item, int) or ":" not in item:
            lo, hi = int(item), int(item) + 1
        else:
            a, b = item.split(":")
            lo = int(a) if a.strip() else 0
            hi = int(b) if b.strip() else size
        if not 0 <= lo < hi <= size:
            raise ValueError(f"area {area}: input channels {item!r} are outside the task's "
                             f"{size} input channels (0..{size - 1})")
        out.update(range(lo, hi))
    return sorted(out)


def combination_at(network: ContractingSystem, path: Sequence[int]) -> ContractingSystem:
    """The (sub-)system at ``path`` (indices into ``.systems``) of ``network``."""
    node = network
    for i in path:
        node = node.systems[i]
    return node


# -- building ----------------------------------------------------------------------------------
def _derive_seed(seed: int, label: str) -> int:
    state = np.random.SeedSequence([seed, zlib.crc32(label.encode())]).generate_state(1)[0]
    return int(state) & 0x7FFFFFFF


class _Built:
    """A built level: the system, its areas and pathways in its own coordinates."""

    def __init__(self, system: ContractingSystem, areas: list[AreaInfo],
                 pathways: list[PathwayInfo]) -> None:
        self.system, self.areas, self.pathways = system, areas, pathways


def _shift(built: _Built, offset: int, prefix: tuple[int, ...], name: str | None
           ) -> tuple[list[AreaInfo], list[PathwayInfo]]:
    """Areas and pathways of a child placed at ``offset`` and combination path ``prefix``."""
    def rename(n: str) -> str:
        return n if name is None else f"{name}.{n}"

    areas = [AreaInfo(rename(a.name), a.start + offset, a.stop + offset, a.module, a.tau,
                      a.inputs, a.output, tuple(rename(c) for c in a.children), a.seed)
             for a in built.areas]
    paths = [PathwayInfo(rename(p.source), rename(p.target), p.kind, p.density,
                         prefix + p.combination, p.rows, p.cols, p.offset + offset)
             for p in built.pathways]
    return areas, paths


class _Level:
    """The children of one level, their pathways, feedback groups and hierarchical order."""

    def __init__(self, specs: list[AreaSpec], children: list[_Built], path: str) -> None:
        self.specs, self.children, self.path = specs, children, path
        self.where = f"{path}: " if path else ""
        self.names = [a.name for a in specs]
        self.local = {a.name: {info.name: info for info in b.areas}
                      for a, b in zip(specs, children, strict=True)}
        self.resolved: list[tuple[PathwaySpec, int, AreaInfo, int, AreaInfo]] = []

    def endpoint(self, ref: str, p: PathwaySpec) -> tuple[int, AreaInfo]:
        head = ref.split(".", 1)[0]
        if head not in self.names:
            raise ValueError(f"{self.where}pathway {p.label} names unknown area {ref!r}; the "
                             f"areas here are {self.names} (sub-areas as area.sub)")
        if ref not in self.local[head]:
            raise ValueError(f"{self.where}pathway {p.label} names unknown sub-area {ref!r}; "
                             f"known: {list(self.local[head])}")
        return self.names.index(head), self.local[head][ref]

    def resolve(self, pathways: list[PathwaySpec]) -> None:
        """Endpoints -> (child index, area info); one pathway per pair; low rank only on
        feedback pathways (``Hierarchy`` has no low-rank coupling)."""
        seen: dict[frozenset[int], str] = {}
        for p in pathways:
            if p.rank is not None and p.kind != "feedback":
                raise ValueError(f"{self.where}pathway {p.label}: a hierarchical pathway cannot "
                                 f"be low-rank (rank={p.rank}): the core's Hierarchy has no "
                                 "low-rank coupling, only Feedback(rank=r) has; make it "
                                 "feedback or remove 'rank'")
            (i, src), (j, dst) = self.endpoint(p.source, p), self.endpoint(p.target, p)
            if i == j:
                raise ValueError(f"{self.where}pathway {p.label} joins two parts of one area "
                                 f"({self.names[i]}); declare it among that area's own "
                                 "pathways")
            pair = frozenset((i, j))
            if pair in seen:
                raise ValueError(f"{self.where}pathways {seen[pair]} and {p.label} join the "
                                 "same two areas; declare one pathway per pair of areas")
            seen[pair] = p.label
            self.resolved.append((p, i, src, j, dst))

    def group(self) -> None:
        """Feedback groups, their hierarchical order and every child's place in the state."""
        self.groups = _feedback_groups(len(self.specs), [
            (i, j) for p, i, _, j, _ in self.resolved if p.kind == "feedback"])
        self.group_of = {m: g for g, members in enumerate(self.groups) for m in members}
        edges = []
        for p, i, _, j, _ in self.resolved:
            if p.kind != "hierarchical":
                continue
            if self.group_of[i] == self.group_of[j]:
                group = [self.names[m] for m in self.groups[self.group_of[i]]]
                raise ValueError(
                    f"{self.where}hierarchical pathway {p.label} joins areas that feedback "
                    f"pathways already put in one group {group}; a one-way pathway inside a "
                    "feedback group has no guarantee here: make it feedback")
            edges.append((self.group_of[i], self.group_of[j], p.label))
        self.order = _topological(len(self.groups), edges, self.where)
        # groups in hierarchical order, members in declaration order
        self.offsets: dict[int, int] = {}
        self.position: dict[int, tuple[int, int]] = {}
        self.group_start: list[int] = []
        cursor = 0
        for gi, g in enumerate(self.order):
            self.group_start.append(cursor)
            for mi, m in enumerate(self.groups[g]):
                self.offsets[m], self.position[m] = cursor, (gi, mi)
                cursor += self.children[m].system.n
        self.n = cursor

    def prefix(self, m: int) -> tuple[int, ...]:
        """Index path (in ``.systems``) of child ``m`` within this level's system."""
        gi, mi = self.position[m]
        single = len(self.groups[self.order[gi]]) == 1
        return ((gi,) if len(self.order) > 1 else ()) + (() if single else (mi,))

    def placed_children(self) -> tuple[list[AreaInfo], list[PathwayInfo]]:
        areas: list[AreaInfo] = []
        infos: list[PathwayInfo] = []
        for g in self.order:
            for m in self.groups[g]:
                a, ps = _shift(self.children[m], self.offsets[m], self.prefix(m), None)
                areas += a
                infos += ps
        return areas, infos


class _Builder:
    def __init__(self, spec: AreasSpec) -> None:
        self.spec = spec

    def leaf(self, area: AreaSpec, path: str, tau: float) -> _Built:
        cls = MODULE_TYPES[area.module]
        options = dict(area.options)
        seed = options.pop("seed", _derive_seed(self.spec.seed, f"area:{path}"))
        try:
            module = cls(area.units, tau=tau, activation=self.spec.activation, seed=seed,
                         **options)
        except (TypeError, ValueError) as err:
            raise ValueError(f"area {path} ({area.module}, {area.units} units): "
                             f"{' '.join(str(err).split())}") from None
        info = AreaInfo(area.name, 0, area.units, area.module, tau, area.inputs, area.output,
                        (), seed)
        return _Built(module, [info], [])

    def area(self, area: AreaSpec, path: str, tau: float) -> _Built:
        tau = area.tau if area.tau is not None else tau
        if not area.nested:
            return self.leaf(area, path, tau)
        scale = area.init_scale if area.init_scale is not None else self.spec.init_scale
        inner = self.level(area.areas, area.pathways, path, tau, scale)
        areas, paths = _shift(inner, 0, (), area.name)
        top = AreaInfo(area.name, 0, inner.system.n, None, tau, area.inputs, area.output,
                       tuple(f"{area.name}.{a.name}" for a in area.areas))
        return _Built(inner.system, [top, *areas], paths)

    def level(self, specs: list[AreaSpec], pathways: list[PathwaySpec], path: str,
              tau: float, scale: float) -> _Built:
        """One level: children built, grouped by feedback, ordered by hierarchy, composed."""
        children = [self.area(a, f"{path}.{a.name}" if path else a.name, tau) for a in specs]
        lv = _Level(specs, children, path)
        lv.resolve(pathways)
        lv.group()
        areas, infos = lv.placed_children()
        systems = []
        for gi in range(len(lv.order)):
            system, pinfos = self.feedback_group(lv, gi, scale)
            systems.append(system)
            infos += pinfos
        if len(systems) == 1:
            return _Built(systems[0], areas, infos)
        mask = torch.zeros(lv.n, lv.n)
        blocks = []
        for p, i, src, j, dst in lv.resolved:
            if p.kind != "hierarchical":
                continue
            rows = (lv.offsets[j] + dst.start, lv.offsets[j] + dst.stop)
            cols = (lv.offsets[i] + src.start, lv.offsets[i] + src.stop)
            mask[rows[0]:rows[1], cols[0]:cols[1]] = self.pattern(p, path, rows, cols)
            blocks.append((p, rows, cols))
            infos.append(PathwayInfo(p.source, p.target, "hierarchical", p.density, (),
                                     rows, cols))
        seed = _derive_seed(self.spec.seed, f"hierarchy:{path}")
        hier = Hierarchy(systems, init_scale=scale, mask=mask, seed=seed)
        self.rescale(hier, blocks, scale)
        return _Built(hier, areas, infos)

    def feedback_group(self, lv: _Level, gi: int, scale: float
                       ) -> tuple[ContractingSystem, list[PathwayInfo]]:
        """The ``gi``-th group in hierarchical order: its only member, or a ``Feedback`` whose
        mask allows exactly the group's feedback pathways."""
        g = lv.order[gi]
        members = lv.groups[g]
        if len(members) == 1:
            return lv.children[members[0]].system, []
        base = lv.group_start[gi]
        size = sum(lv.children[m].system.n for m in members)
        mask = torch.zeros(size, size)
        blocks, infos = [], []
        group = [r for r in lv.resolved if r[0].kind == "feedback" and lv.group_of[r[1]] == g]
        rank, rank_scale = self.low_rank(lv, members, group, scale)
        for p, i, src, j, dst in group:
            # the block below the diagonal (rows in the later member): eq. 3 sets both
            # directions from it
            (ri, ra), (ci, ca) = ((j, dst), (i, src)) if lv.position[j] > lv.position[i] \
                else ((i, src), (j, dst))
            rows = (lv.offsets[ri] + ra.start - base, lv.offsets[ri] + ra.stop - base)
            cols = (lv.offsets[ci] + ca.start - base, lv.offsets[ci] + ca.stop - base)
            mask[rows[0]:rows[1], cols[0]:cols[1]] = self.pattern(p, lv.path, rows, cols)
            blocks.append((p, rows, cols))
            infos.append(PathwayInfo(p.source, p.target, "feedback", p.density,
                                     (gi,) if len(lv.order) > 1 else (), rows, cols, base))
        seed = _derive_seed(self.spec.seed, f"feedback:{lv.path}:{gi}")
        systems = [lv.children[m].system for m in members]
        if rank is not None:  # one U V^T over the group: no mask, no per-block rescaling
            return Feedback(systems, init_scale=rank_scale, seed=seed, rank=rank), infos
        fb = Feedback(systems, init_scale=scale, mask=mask, seed=seed)
        self.rescale(fb, blocks, scale)
        return fb, infos

    @staticmethod
    def low_rank(lv: _Level, members: list[int], group: list, scale: float
                 ) -> tuple[int | None, float]:
        """``(r, init_scale)`` when the group's pathways are low-rank, else ``(None, scale)``.

        The core's only low-rank coupling is ``Feedback(rank=r)``: ``B = U V^T`` over all the
        group's units, unmasked (eq. 3 keeps its guarantee for any ``B``). A group is built
        that way only when it *is* that: every pathway low-rank with one ``r``, dense, between
        whole areas, every pair of areas joined; anything else is refused, saying why."""
        ranked = [p for p, *_ in group if p.rank is not None]
        if not ranked:
            return None, scale
        names = [lv.names[m] for m in members]
        why = (f"{lv.where}low-rank pathways in the feedback group {names}: the core's "
               "low-rank coupling is one Feedback(rank=r) whose B = U V^T spans every unit of "
               "the group and cannot be masked, so ")
        plain = [p.label for p, *_ in group if p.rank is None]
        if plain:
            raise ValueError(why + f"every pathway of the group must be low-rank (not "
                             f"{plain}); give them all 'rank' or none")
        ranks = sorted({p.rank for p in ranked})
        if len(ranks) > 1:
            raise ValueError(why + f"all its pathways share one rank, got ranks {ranks}; "
                             "give them the same 'rank'")
        sparse = [p.label for p in ranked if p.density < 1]
        if sparse:
            raise ValueError(why + f"a low-rank pathway is dense ({sparse} set density < 1); "
                             "remove 'density' or 'rank'")
        for p, i, src, j, dst in group:
            for k, info in ((i, src), (j, dst)):
                if info.n != lv.children[k].system.n:
                    raise ValueError(why + f"a low-rank pathway joins whole areas ({p.label} "
                                     f"names the sub-area {info.name} of {lv.names[k]}); "
                                     "join the areas themselves")
        joined = {frozenset((i, j)) for _, i, _, j, _ in group}
        missing = [f"{lv.names[a]} <-> {lv.names[b]}" for x, a in enumerate(members)
                   for b in members[x + 1:] if frozenset((a, b)) not in joined]
        if missing:
            raise ValueError(why + f"every pair of its areas communicates through the one "
                             f"subspace: declare the pathways {missing} with rank={ranks[0]}, "
                             "or make the group's pathways dense/sparse")
        scales = sorted({p.init_scale if p.init_scale is not None else scale for p in ranked})
        if len(scales) > 1:
            raise ValueError(why + f"one init_scale covers the group, got {scales}; give its "
                             "pathways the same init_scale")
        return ranks[0], scales[0]

    def pattern(self, p: PathwaySpec, path: str, rows: tuple[int, int],
                cols: tuple[int, int]) -> torch.Tensor:
        shape = (rows[1] - rows[0], cols[1] - cols[0])
        if p.density >= 1:
            return torch.ones(shape)
        rng = np.random.default_rng(_derive_seed(self.spec.seed, f"pathway:{path}:{p.label}"))
        return torch.as_tensor(rng.random(shape) < p.density, dtype=torch.float32)

    @staticmethod
    def rescale(combo: ContractingSystem, blocks: list, scale: float) -> None:
        """Per-pathway ``init_scale``: rescale that block of the initial ``B``."""
        with torch.no_grad():
            for p, rows, cols in blocks:
                if p.init_scale is not None and p.init_scale != scale:
                    combo.b[rows[0]:rows[1], cols[0]:cols[1]] *= p.init_scale / scale


def _feedback_groups(count: int, pairs: list[tuple[int, int]]) -> list[list[int]]:
    """Connected components of the feedback graph, ordered by their first member."""
    parent = list(range(count))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, j in pairs:
        parent[find(i)] = find(j)
    groups: dict[int, list[int]] = {}
    for m in range(count):
        groups.setdefault(find(m), []).append(m)
    return sorted(groups.values(), key=lambda g: g[0])


def _topological(count: int, edges: list[tuple[int, int, str]], where: str) -> list[int]:
    """Groups ordered so that every hierarchical pathway runs forward (Kahn's algorithm,
    ties broken by declaration order); a cycle is refused, naming it."""
    succ: dict[int, list[tuple[int, str]]] = {g: [] for g in range(count)}
    indeg = [0] * count
    for a, b, label in edges:
        succ[a].append((b, label))
        indeg[b] += 1
    order, ready = [], [g for g in range(count) if indeg[g] == 0]
    while ready:
        g = min(ready)
        ready.remove(g)
        order.append(g)
        for b, _ in succ[g]:
            indeg[b] -= 1
            if indeg[b] == 0:
                ready.append(b)
    if len(order) == count:
        return order
    cycle = _find_cycle(succ, [g for g in range(count) if g not in order])
    text = " ; ".join(cycle)
    raise ValueError(f"{where}hierarchical pathways form a cycle ({text}): a loop of one-way "
                     "pathways has no contraction guarantee; make one of them feedback")


def _find_cycle(succ: dict[int, list[tuple[int, str]]], nodes: list[int]) -> list[str]:
    remaining = set(nodes)
    start = nodes[0]
    seen: list[int] = [start]
    labels: list[str] = []
    node = start
    while True:
        nxt, label = next((b, lab) for b, lab in succ[node] if b in remaining)
        labels.append(label)
        if nxt in seen:
            return labels[seen.index(nxt):]
        seen.append(nxt)
        node = nxt


def module_areas(network: ContractingSystem, name: str = "") -> AreaMap:
    """An :class:`AreaMap` of a network built without an areas file (a ``p x n`` combo net):
    each leaf module is an area ``module0``, ``module1``, ... (state order); no pathways are
    declared (a combo net's coupling joins every pair of modules), every unit gets every input
    and drives the readout."""
    areas: dict[str, AreaInfo] = {}
    start = 0
    kinds = {cls: key for key, cls in MODULE_TYPES.items()}
    for i, leaf in enumerate(network.leaves()):
        areas[f"module{i}"] = AreaInfo(f"module{i}", start, start + leaf.n,
                                       kinds.get(type(leaf), type(leaf).__name__),
                                       float(leaf.tau), None, False)
        start += leaf.n
    if start != network.n:
        raise ValueError(f"internal error: the leaves of the network have {start} units, the "
                         f"network {network.n}")
    return AreaMap(network.n, areas, [], name or type(network).__name__)


def build_areas(spec: AreasSpec | Mapping[str, Any] | str | Path
                ) -> tuple[ContractingSystem, AreaMap]:
    """Build the certified network of a spec (an :class:`AreasSpec`, a mapping in the file
    layout, or a path to a TOML/YAML/JSON file) and its :class:`AreaMap`."""
    if isinstance(spec, (str, Path)):
        spec = load_areas(spec)
    spec = parse_areas(spec)
    built = _Builder(spec).level(spec.areas, spec.pathways, "", spec.tau, spec.init_scale)
    areas = {a.name: a for a in built.areas}
    return built.system, AreaMap(built.system.n, areas, built.pathways, spec.name)
