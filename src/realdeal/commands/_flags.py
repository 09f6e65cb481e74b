"""Command-line flags generated from config dataclasses, and the overrides they give back.

A :class:`ConfigFlags` names some fields of one config dataclass and where that config sits
in a run config (``("train",)`` for :class:`~realdeal.presets.TrainConfig` inside a run).
Each field becomes one option: its type, ``choices`` (``Literal``), ``nargs`` (tuples) and
on/off form (``bool``) come from the field's annotation, its help from the table given here,
its number type and range from the field's declared :class:`~realdeal.config.Range` (a
numeric field without one cannot become a flag), its default is ``None`` = "not given, keep
the preset's value". :func:`config_overrides`
turns the parsed flags back into nested overrides for :func:`realdeal.presets.with_overrides`.

The config classes live in modules that import torch, so sub-commands made by a
:class:`DeferredFlagsParser` add these flags only when they are parsed or their help is shown:
``realdeal --help`` and the other commands stay fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import types
import typing
from collections.abc import Callable
from typing import Any


@dataclasses.dataclass(frozen=True)
class Flag:
    """How one config field appears on the command line, where the defaults do not fit.

    ``name``: the option (default ``--field-name``); ``zero_clears``: the value 0 sets the
    optional field to ``None`` ("0 = off"); ``type``: the ``argparse`` type of a ``str`` field
    whose values have a form (``--device``).
    """

    help: str
    name: str | None = None
    metavar: str | tuple[str, ...] | None = None
    zero_clears: bool = False
    type: Callable[[str], Any] | None = None


@dataclasses.dataclass(frozen=True)
class ConfigFlags:
    """Flags for ``fields`` of the dataclass ``cls`` (``"module:Name"``, imported when used),
    which sits at ``path`` inside the run config; listed under the help heading ``title``."""

    cls: str
    path: tuple[str, ...]
    fields: dict[str, str | Flag]
    title: str

    def config_class(self) -> type:
        module, _, name = self.cls.partition(":")
        return getattr(importlib.import_module(module), name)

    def flags(self) -> dict[str, Flag]:
        return {k: v if isinstance(v, Flag) else Flag(v) for k, v in self.fields.items()}

    def dest(self, field: str) -> str:
        return ".".join((*self.path, field))

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        """Add one option per field (to the argument group ``title``, made if missing)."""
        from realdeal.config import field_range

        cls = self.config_class()
        hints = typing.get_type_hints(cls)
        group = argument_group(parser, self.title)
        for field, flag in self.flags().items():
            name = flag.name or "--" + field.replace("_", "-")
            try:
                kwargs = _argparse_kwargs(hints[field], field_range(cls, field))
            except TypeError as e:
                raise TypeError(f"{cls.__name__}.{field}: {e}") from None
            if flag.type is not None:
                kwargs["type"] = flag.type
            if flag.metavar and "choices" not in kwargs:
                kwargs["metavar"] = flag.metavar
            elif "choices" not in kwargs and kwargs.get("action") is None:
                kwargs["metavar"] = name.lstrip("-").replace("-", "_").upper()
            group.add_argument(name, dest=self.dest(field), default=None, help=flag.help, **kwargs)

    def overrides(self, args: argparse.Namespace) -> dict[str, Any]:
        """``{path...: {field: value}}`` of the given flags (unset flags are ``None``)."""
        from realdeal.presets import CLEAR

        hints = typing.get_type_hints(self.config_class())
        out: dict[str, Any] = {}
        for field, flag in self.flags().items():
            value = getattr(args, self.dest(field), None)
            if value is not None and flag.zero_clears and value == 0:
                value = CLEAR
            elif isinstance(value, list) and _element(hints[field]) is bool:
                value = [bool(v) for v in value]
            out[field] = value
        for key in reversed(self.path):
            out = {key: out}
        return out


def add_config_flags(parser: argparse.ArgumentParser, *sets: ConfigFlags) -> None:
    """Give ``parser`` the flags of ``sets`` (deferred on a :class:`DeferredFlagsParser`)."""
    parser.set_defaults(config_flags=(*(parser.get_default("config_flags") or ()), *sets))
    for s in sets:
        if isinstance(parser, DeferredFlagsParser):
            parser.defer(s.add_to)
        else:
            s.add_to(parser)


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Nested overrides from every :class:`ConfigFlags` the parsed sub-command has."""
    out: dict[str, Any] = {}
    for s in getattr(args, "config_flags", ()):
        _merge(out, s.overrides(args))
    return out


class CommandParser(argparse.ArgumentParser):
    """The parser of ``realdeal`` and its sub-commands: a usage error is one line (the
    command, the option and the problem, and where to read more) and exit status 2."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class DeferredFlagsParser(CommandParser):
    """A sub-command parser that adds its generated flags on first use (parse or help)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deferred: list[Callable[[argparse.ArgumentParser], None]] = []

    def defer(self, add: Callable[[argparse.ArgumentParser], None]) -> None:
        self._deferred.append(add)

    def _add_deferred(self) -> None:
        while self._deferred:
            self._deferred.pop(0)(self)

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        self._add_deferred()
        return super().parse_known_args(args, namespace)

    def format_usage(self) -> str:
        self._add_deferred()
        return super().format_usage()

    def format_help(self) -> str:
        self._add_deferred()
        return super().format_help()


def argument_group(parser: argparse.ArgumentParser, title: str):
    """``parser``'s argument group ``title``, added if it has none."""
    for g in parser._action_groups:
        if g.title == title:
            return g
    return parser.add_argument_group(title)


def _merge(base: dict[str, Any], new: dict[str, Any]) -> None:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = v


def _optional_removed(tp: Any) -> Any:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        rest = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return tp


def _element(tp: Any) -> Any:
    """Element type of a tuple annotation (``None`` for other types)."""
    tp = _optional_removed(tp)
    return typing.get_args(tp)[0] if typing.get_origin(tp) is tuple else None


def _argparse_kwargs(tp: Any, rng: Any = None) -> dict[str, Any]:
    """``type``/``choices``/``nargs``/``action`` of an option for a field annotated ``tp``;
    numbers parse with :func:`realdeal.config.number_arg` of the field's range ``rng``."""
    from realdeal.config import number_arg

    tp = _optional_removed(tp)
    if tp is bool:
        return {"action": argparse.BooleanOptionalAction}
    if typing.get_origin(tp) is typing.Literal:
        choices = list(typing.get_args(tp))
        return {"type": type(choices[0]), "choices": choices}
    if typing.get_origin(tp) is tuple:
        args = typing.get_args(tp)
        nargs = "+" if len(args) == 2 and args[1] is Ellipsis else len(args)
        if args[0] is bool:  # 0/1 per element
            return {"type": int, "choices": [0, 1], "nargs": nargs}
        if args[0] in (int, float):
            return {"type": number_arg(args[0], rng), "nargs": nargs}
        return {"type": args[0], "nargs": nargs}
    if tp in (int, float):
        return {"type": number_arg(tp, rng)}
    if tp is str:
        return {"type": tp}
    raise TypeError(f"no command-line form for a field of type {tp}")
