"""Typed, frozen configuration dataclasses: dict/JSON/YAML in and out, with overrides.

Every config in the package is a frozen dataclass whose defaults come from the paper (or,
for the built-in cohort, from what is documented next to the field). ``to_dict`` and
``from_dict`` round-trip through plain JSON types so that the resolved configuration can be
saved next to every checkpoint and output and a run repeated from what it wrote.

Every numeric setting has a declared :class:`Range` (finite, sign, bounds): in the field's
metadata (``dataclasses.field(metadata=bounds(lo, hi))``, see :mod:`realdeal.presets` and the
commands' own settings classes) or, for config classes whose modules declare none, in
:data:`FIELD_RANGES`; options that set no config field have theirs in :data:`OPTION_RANGES`.
:func:`from_dict` (so ``--config`` files, presets with overrides and :func:`replace`) checks
values against them before a config is built, and the command line's number options parse
with :func:`number_arg` of the same declarations, so ``--lr nan`` and ``"lr": NaN`` in a
config file are refused alike, in one line naming the setting.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import numbers
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from realdeal.errors import ConfigError, InputError

T = TypeVar("T")


# --------------------------------------------------------------------------- declared ranges


@dataclasses.dataclass(frozen=True)
class Range:
    """The values a numeric setting may take: finite, within ``[lo, hi]`` (an end excluded with
    ``lo_open``/``hi_open``). Integer settings are whole numbers (by the field's type, or
    ``integer`` where there is no field). For a tuple setting the range holds per element."""

    lo: float
    hi: float
    lo_open: bool = False
    hi_open: bool = False
    integer: bool = False
    why: str = ""
    """What the bounds protect, said in the error (e.g. ``0 = off``)."""

    def describe(self) -> str:
        lo, hi = _num(self.lo), _num(self.hi)
        return f"{'(' if self.lo_open else '['}{lo}, {hi}{')' if self.hi_open else ']'}"

    def problem(self, value: Any, integer: bool | None = None) -> str | None:
        """Why ``value`` is outside the range (``None`` if it is inside)."""
        integer = self.integer if integer is None else integer
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return f"must be {'a whole number' if integer else 'a number'}, got {value!r}"
        if integer and not isinstance(value, numbers.Integral):
            if not (math.isfinite(value) and float(value).is_integer()):
                return f"must be a whole number, got {value!r}"
        v = int(value) if integer else float(value)
        if not integer and not math.isfinite(v):
            return f"must be a finite number in {self.describe()}, got {value!r}"
        low_bad = v <= self.lo if self.lo_open else v < self.lo
        high_bad = v >= self.hi if self.hi_open else v > self.hi
        if not (low_bad or high_bad):
            return None
        note = f" ({self.why})" if self.why else ""
        if not integer:
            return f"must be a finite number in {self.describe()}{note}, got {value!r}"
        if low_bad:
            word = "greater than" if self.lo_open else "at least"
            return f"must be {word} {_num(self.lo)}{note}, got {_num(value)}"
        word = "less than" if self.hi_open else "at most"
        return f"must be {word} {_num(self.hi)}{note}, got {_num(value)}"


def _num(v: Any) -> str:
    """A number as the user would write it (huge integers shortened)."""
    if isinstance(v, int):
        text = str(v)
        return text if len(text) <= 20 else f"{text[:6]}…({len(text)} digits)"
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e16:
        return str(int(v))
    return f"{v:g}" if isinstance(v, float) else repr(v)


def bounds(lo: float, hi: float, **kw: Any) -> dict[str, Range]:
    """Field metadata declaring a :class:`Range`: ``field(default=…, metadata=bounds(0, 1))``."""
    return {"range": Range(lo, hi, **kw)}


#: Shared ranges. Seeds: non-negative and below 2**32, so that NumPy's legacy seeding, torch's
#: generators and the per-sample seeds derived from them (``seed + i``, ``seed · 7777 + epoch``,
#: ``seed + 2**40``) all stay exact 64-bit integers.
SEED = Range(0, 2**32 - 1, integer=True, why="seeds are 0 … 2**32 − 1")
WORKERS = Range(1, 256, integer=True)
LOADER_WORKERS = Range(0, 256, integer=True, why="0 = load in the training process")
STEPS = Range(1, 10**9, integer=True)
SAMPLING_STEPS = Range(1, 100_000, integer=True)
UNIT = Range(0.0, 1.0)
VOXEL_MM = Range(0.0, 100.0, lo_open=True)
GRID = Range(4, 4096, integer=True)
WIDTH = Range(1, 8192, integer=True)
BATCH = Range(1, 65_536, integer=True)

#: Declared ranges of config classes whose own modules declare none, by ``module:Class``.
#: (Fields of :mod:`realdeal.presets` carry theirs in their metadata.)
FIELD_RANGES: dict[str, dict[str, Range]] = {
    "realdeal.models.autoencoder:AutoencoderConfig": {
        "in_channels": Range(1, 64),
        "channels": WIDTH,
        "bottleneck": WIDTH,
        "latent_channels": Range(1, 256),
        "negative_slope": UNIT,
    },
    "realdeal.models.unet:UNetConfig": {
        "in_channels": Range(1, 256),
        "out_channels": Range(1, 256),
        "channels": WIDTH,
        "num_res_blocks": Range(1, 16),
        "num_head_channels": Range(0, 8192, why="0 = no attention at that level"),
        "norm_num_groups": Range(1, 1024),
    },
    "realdeal.diffusion.schedule:ScheduleConfig": {
        "num_train_timesteps": Range(1, 100_000),
        "beta_start": Range(0.0, 1.0, lo_open=True, hi_open=True),
        "beta_end": Range(0.0, 1.0, lo_open=True, hi_open=True),
        "snr_scale": Range(1e-3, 1e4),
    },
    "realdeal.inference.masks:MaskConfig": {
        "p_full": UNIT,
        "p_half": UNIT,
        "p_slabs": UNIT,
        "faces": Range(0.0, 1e6),
        "thickness": Range(0.0, 0.5, lo_open=True),
    },
    "realdeal.data.cohort:CohortConfig": {
        "n_subjects": Range(1, 10_000),
        "first_subject": Range(0, 1_000_000),
        "spacing": Range(0.25, 8.0),
        "shape": Range(8, 2048),
        "seed": SEED,
        "rotate_deg": Range(0.0, 180.0),
        "scale": Range(0.0, 1.0, hi_open=True),
        "translate_mm": Range(0.0, 1000.0),
        "elastic_spacing_mm": Range(0.0, 1000.0, lo_open=True),
        "elastic_magnitude_mm": Range(0.0, 100.0),
        "coarse_elastic_spacing_mm": Range(0.0, 1000.0, why="0 = off"),
        "coarse_elastic_magnitude_mm": Range(0.0, 100.0),
        "ventricle_scale": Range(0.0, 10.0, lo_open=True),
        "ventricle_radius_mm": Range(0.0, 1000.0, lo_open=True),
        "bias_coeff": UNIT,
        "gamma": Range(0.0, 10.0, lo_open=True),
        "gain": Range(0.0, 10.0, lo_open=True),
        "noise_sigma_1mm": UNIT,
        "noise_jitter": UNIT,
        "workers": WORKERS,
    },
    "realdeal.data.dataset:PrepareConfig": {
        "shape": GRID,
        "spacing": VOXEL_MM,
        "low_percentile": Range(0.0, 100.0, hi_open=True),
        "high_percentile": Range(0.0, 100.0, lo_open=True),
        "voxels_per_subject": Range(1, 10**9),
        "foreground_threshold": UNIT,
        "window": GRID,
        "test_fraction": Range(0.0, 1.0, hi_open=True),
        "seed": SEED,
    },
    "realdeal.pipelines.refiner:RefineSettings": {
        "steps": SAMPLING_STEPS,
        "eta": Range(0.0, 1.0, why="DDIM η"),
        "strength": Range(0.0, 1.0, lo_open=True),
        "overlap": Range(0, 4096),
        "max_batch": Range(1, 4096),
        "batch_volumes": Range(1, 1024),
        "seed": SEED,
    },
    "realdeal.demo:DemoConfig": {
        "seed": SEED,
        "train_scale": Range(0.0, 1000.0, lo_open=True),
        "n_samples": Range(1, 10_000),
        "n_refined_samples": Range(1, 10_000),
        "sample_batch": Range(1, 4096),
        "sample_steps": SAMPLING_STEPS,
        "refine_steps": SAMPLING_STEPS,
        "refine_eta": Range(0.0, 1.0, why="DDIM η"),
        "max_batch": Range(1, 4096),
        "workers": WORKERS,
    },
    "realdeal.metrics.suite:PairedConfig": {
        "patch_size_2d": Range(8, 4096),
        "n_patches_2d": Range(1, 1_000_000),
        "min_brain_fraction": UNIT,
        "seed": SEED,
        "n_bootstrap": Range(0, 1_000_000, why="0 = no intervals"),
        "ci": Range(0.0, 1.0, lo_open=True, hi_open=True),
        "seam_window": Range(4, 4096),
    },
    "realdeal.metrics.suite:UnpairedConfig": {
        "patch_size_2d": Range(8, 4096),
        "n_patches_2d": Range(1, 1_000_000),
        "min_brain_fraction": UNIT,
        "foreground_threshold": Range(-1.0, 1.0),
        "ks": Range(1, 10_000),
        "seed": SEED,
        "n_bootstrap": Range(0, 1_000_000, why="0 = no intervals"),
        "ci": Range(0.0, 1.0, lo_open=True, hi_open=True),
    },
}

#: Ranges of command-line options that set no config field, by ``"command --option"``.
OPTION_RANGES: dict[str, Range] = {
    "evaluate --workers": WORKERS,
}


def _class_key(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def field_range(cls: type | str, name: str) -> Range | None:
    """The declared range of field ``name`` of config class ``cls`` (a class or its
    ``"module:Class"`` name: looked up without importing it), or ``None``. A class's field
    inherited from a base has the range the class or, failing that, the base declares."""
    if isinstance(cls, str):
        return FIELD_RANGES.get(cls, {}).get(name)
    if dataclasses.is_dataclass(cls):
        for f in dataclasses.fields(cls):
            if f.name == name and "range" in f.metadata:
                return f.metadata["range"]
    for klass in cls.__mro__:
        rng = FIELD_RANGES.get(_class_key(klass), {}).get(name)
        if rng is not None:
            return rng
    return None


def _is_integer_type(tp: Any) -> bool | None:
    """True for int (or tuples/optionals of int), False for float, None for anything else."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        return _is_integer_type(rest[0]) if len(rest) == 1 else None
    if origin is tuple:
        return _is_integer_type(args[0]) if args else None
    if tp is bool:
        return None
    return True if tp is int else False if tp is float else None


def numeric_fields(cls: type) -> dict[str, bool]:
    """``{field: is_integer}`` of every numeric field of config class ``cls`` (int, float,
    tuples and optionals of them): the fields that need a declared range."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        kind = _is_integer_type(hints[f.name])
        if kind is not None:
            out[f.name] = kind
    return out


def range_problems(cls: type, values: dict[str, Any]) -> list[str]:
    """``"field: problem"`` for each value in ``values`` outside its field's declared range."""
    ints = numeric_fields(cls)
    out = []
    for name, value in values.items():
        rng = field_range(cls, name) if name in ints else None
        if rng is None or value is None:
            continue
        for v in value if isinstance(value, (list, tuple)) else (value,):
            problem = rng.problem(v, ints[name])
            if problem:
                out.append(f"{name} {problem}")
                break
    return out


def check_ranges(obj: Any, where: str | None = None) -> None:
    """Refuse a config (and the configs nested in it) with a value outside its declared range:
    one :class:`~realdeal.errors.ConfigError` line naming the field."""
    cls = type(obj)
    where = where or cls.__name__
    values = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    problems = range_problems(cls, values)
    if problems:
        raise ConfigError(f"{where}.{problems[0]}")
    for name, value in values.items():
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            check_ranges(value, f"{where}.{name}")


class NumberArg:
    """``argparse`` type of a number option with a declared :class:`Range`: parses a whole
    number (``integer``) or a finite float and checks the range; anything else is argparse's
    one-line usage error naming the option (exit status 2)."""

    numeric = True

    def __init__(self, integer: bool, rng: Range):
        self.integer, self.range = integer, rng
        self.__name__ = "whole number" if integer else "number"

    def __call__(self, text: str) -> int | float:
        try:
            value: int | float = int(text) if self.integer else float(text)
        except ValueError:
            what = "a whole number" if self.integer else "a number"
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        problem = self.range.problem(value, self.integer)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return value

    def __repr__(self) -> str:
        return f"NumberArg({'int' if self.integer else 'float'}, {self.range.describe()})"


def number_arg(kind: type, rng: Range | None) -> NumberArg:
    """The ``type=`` of a number option of ``kind`` (int or float) in range ``rng``."""
    if rng is None:
        raise TypeError("a number option needs a declared range")
    return NumberArg(kind is int, rng)


def field_arg(kind: type, cls: str, name: str) -> NumberArg:
    """``type=`` of an option that sets field ``name`` of ``cls`` (``"module:Class"``)."""
    rng = field_range(cls, name)
    if rng is None:
        raise TypeError(f"{cls}.{name} has no declared range")
    return number_arg(kind, rng)


def option_arg(kind: type, option: str) -> NumberArg:
    """``type=`` of an option that sets no config field (:data:`OPTION_RANGES`)."""
    return number_arg(kind, OPTION_RANGES[option])


DEVICE_NAMES = "auto, cpu, cuda or cuda:N"
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def device_problem(name: Any) -> str | None:
    """Why ``name`` is not a device name this package accepts (``None`` if it is one)."""
    if isinstance(name, str) and _DEVICE.fullmatch(name):
        return None
    return f"unknown device {name!r}; use {DEVICE_NAMES}"


def device_arg(text: str) -> str:
    """``argparse`` type of ``--device``: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (whether
    that GPU exists is checked when the command starts)."""
    problem = device_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain JSON-serialisable dict of a (nested) config dataclass; tuples become lists."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {str(k): plain(x) for k, x in v.items()}
        if isinstance(v, Path):
            return str(v)
        return v

    return plain(cfg)


def _coerce(tp: Any, value: Any, where: str) -> Any:
    """Convert a JSON value to the annotated type ``tp`` (dataclass, tuple, optional, scalar)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        last_error: Exception | None = None
        for a in non_none:
            try:
                return _coerce(a, value, where)
            except (ConfigError, TypeError, ValueError) as e:
                last_error = e
        raise ConfigError(f"{where}: cannot read {value!r} as {tp}") from last_error
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, where) for v in value)
        if args and len(args) != len(value):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
        return (
            tuple(_coerce(a, v, where) for a, v in zip(args, value, strict=False))
            if args
            else tuple(value)
        )
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:  # YAML 1.1 leaves "1e-5" (no dot) a string
            return float(value)
        except ValueError:
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if tp is int and isinstance(value, bool):
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp in (int, str, bool) and not isinstance(value, tp):
        if tp is int and isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


def from_dict(cls: type[T], data: dict[str, Any], where: str | None = None) -> T:
    """Build config ``cls`` from a plain dict, checking field names and types."""
    where = where or cls.__name__
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {sorted(unknown)}; known: {sorted(names)}")
    kwargs = {k: _coerce(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    problems = range_problems(cls, kwargs)
    try:
        obj = cls(**kwargs)  # a class's own check (naming its flags) speaks first
    except (TypeError, ValueError, ArithmeticError) as e:  # e.g. a modulo by a zero width
        raise ConfigError(f"{where}.{problems[0]}" if problems else f"{where}: {e}") from e
    if problems:
        raise ConfigError(f"{where}.{problems[0]}")
    return obj


def replace(cfg: T, **overrides: Any) -> T:
    """Copy of ``cfg`` with fields overridden (values ``None`` are ignored, as unset CLI flags)."""
    changes = {k: v for k, v in overrides.items() if v is not None}
    return from_dict(type(cfg), {**to_dict(cfg), **to_dict(changes)}) if changes else cfg


def save_config(cfg: Any, path: str | Path) -> None:
    """Write a config as JSON or YAML (by extension), atomically."""
    from realdeal.utils.fs import write_text_atomic

    path = Path(path)
    data = {"kind": type(cfg).__name__, "config": to_dict(cfg)}
    if path.suffix in (".yaml", ".yml"):
        write_text_atomic(path, yaml.safe_dump(data, sort_keys=False))
    else:
        write_text_atomic(path, json.dumps(data, indent=2) + "\n")


# --------------------------------------------------------------------------- JSON records


def read_json(path: str | os.PathLike, what: str) -> Any:
    """The JSON value in ``path``; unreadable, not UTF-8 or not JSON: one InputError line."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise InputError(path, f"cannot read {what} ({e.strerror or e})") from e
    except UnicodeDecodeError as e:
        raise InputError(path, f"{what} is not UTF-8 text ({e.reason})") from e
    except json.JSONDecodeError as e:
        raise InputError(path, f"{what} is not valid JSON ({e.msg}, line {e.lineno})") from e


class JsonFields:
    """Typed access to a JSON object read from ``path``: each problem (a missing key, a value
    of the wrong type) is one :class:`~realdeal.errors.InputError` naming the file and key."""

    def __init__(self, path: Path, data: Any, where: str = ""):
        self.path, self.data, self.where = path, data, where
        if not isinstance(data, dict):
            raise InputError(path, f"{where or 'the file'} must be a JSON object")

    def get(self, key: str, kinds: type | tuple[type, ...], *, optional: bool = False) -> Any:
        """``data[key]`` if it is of ``kinds`` (``optional``: absent or null gives ``None``)."""
        name = self._name(key)
        if key not in self.data:
            if optional:
                return None
            raise InputError(self.path, f"has no {name!r}")
        value = self.data[key]
        if value is None and optional:
            return None
        bad_bool = isinstance(value, bool) and bool not in (
            kinds if isinstance(kinds, tuple) else (kinds,)
        )
        if bad_bool or not isinstance(value, kinds):
            names = " or ".join(
                k.__name__ for k in (kinds if isinstance(kinds, tuple) else (kinds,))
            )
            raise InputError(self.path, f"{name} must be {names}, got {value!r:.60}")
        return value

    def _name(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def obj(self, key: str, *, optional: bool = False) -> JsonFields | None:
        """``data[key]`` as a JSON object (``None`` if ``optional`` and absent or null)."""
        value = self.get(key, dict, optional=optional)
        return None if value is None else JsonFields(self.path, value, self._name(key))

    def objects(self, key: str) -> list[JsonFields]:
        """``data[key]`` as a list of JSON objects."""
        items = self.get(key, list)
        return [JsonFields(self.path, v, f"{self._name(key)}[{i}]") for i, v in enumerate(items)]


def load_config(cls: type[T], path: str | Path) -> T:
    """Read a config written by :func:`save_config` (or a bare mapping of fields)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise InputError(path, f"cannot read config ({e.strerror})") from e
    except UnicodeDecodeError as e:
        raise InputError(path, f"config is not UTF-8 text ({e.reason})") from e
    try:
        # JSON files with the JSON parser: YAML 1.1 reads exponent floats such as 1e-05 as strings.
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (yaml.YAMLError, ValueError) as e:
        where = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        what = getattr(e, "problem", None) or " ".join(str(e).split())
        at = f", line {where.line + 1}" if where is not None else ""
        kind = "JSON" if path.suffix == ".json" else "YAML"
        raise InputError(path, f"not valid {kind} ({what}{at})") from e
    if not isinstance(data, dict):
        raise InputError(path, "config must be a mapping")
    if "config" in data and "kind" in data:
        if data["kind"] != cls.__name__:
            raise InputError(path, f"holds a {data['kind']}, expected a {cls.__name__}")
        data = data["config"]
    try:
        return from_dict(cls, data)
    except ConfigError as e:
        raise InputError(path, str(e)) from e
