"""Typed, frozen configuration dataclasses: dict/JSON/YAML in and out, with overrides.

Every config in the package is a frozen dataclass whose defaults come from the paper (or,
for the built-in cohort, from what is documented next to the field). ``to_dict`` and
``from_dict`` round-trip through plain JSON types so that the resolved configuration can be
saved next to every checkpoint and output and a run repeated from what it wrote.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from realdeal.errors import ConfigError

T = TypeVar("T")


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
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from e


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


def load_config(cls: type[T], path: str | Path) -> T:
    """Read a config written by :func:`save_config` (or a bare mapping of fields)."""
    from realdeal.errors import InputError

    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise InputError(path, f"cannot read config ({e.strerror})") from e
    try:
        # JSON files with the JSON parser: YAML 1.1 reads exponent floats such as 1e-05 as strings.
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (yaml.YAMLError, ValueError) as e:
        raise InputError(
            path, f"not valid {'JSON' if path.suffix == '.json' else 'YAML'} ({e})"
        ) from e
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
