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
``realdeal --help`` and the other commands stay fast. On a parser that names its model kind
(``preset_kind``, set by ``realdeal train``), each generated flag's help states the presets'
values as its default.

Every parser is a :class:`CommandParser`, whose :class:`HelpFormatter` writes descriptions and
help texts as plain text (:func:`plain_text`: no reStructuredText markup from docstrings) and
states each option's default.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import re
import textwrap
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
            help_text = flag.help + self._preset_defaults(parser, field, flag)
            group.add_argument(name, dest=self.dest(field), default=None, help=help_text, **kwargs)

    def _preset_defaults(self, parser: argparse.ArgumentParser, field: str, flag: Flag) -> str:
        """`` (default: paper X, cpu-small Y)`` from the presets of the parser's model kind
        (``preset_kind``); ``""`` without a kind or where the help already states a default."""
        kind = parser.get_default("preset_kind")
        if kind is None or "default" in flag.help.lower():
            return ""
        from realdeal.presets import PRESETS, preset

        values = {}
        for name in PRESETS:
            value: Any = preset(kind, name)
            for key in (*self.path, field):
                value = getattr(value, key)
            if flag.zero_clears and value is None:
                value = 0
            if isinstance(value, tuple) and value and isinstance(value[0], bool):
                value = tuple(int(v) for v in value)  # given as 0/1 per element
            values[name] = format_default(value)
        if len(set(values.values())) == 1:
            return f" (default: {next(iter(values.values()))})"
        return " (default: " + ", ".join(f"{k} {v}" for k, v in values.items()) + ")"

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


def on_first_use(
    parser: argparse.ArgumentParser, add: Callable[[argparse.ArgumentParser], None]
) -> None:
    """Run ``add(parser)`` when ``parser`` is first used (:meth:`CommandParser.defer`), or at
    once on a plain ``argparse`` parser."""
    if isinstance(parser, CommandParser):
        parser.defer(add)
    else:
        add(parser)


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Nested overrides from every :class:`ConfigFlags` the parsed sub-command has."""
    out: dict[str, Any] = {}
    for s in getattr(args, "config_flags", ()):
        _merge(out, s.overrides(args))
    return out


_ROLE = re.compile(r":(?:[a-z]+:)?(?:class|func|meth|mod|data|attr|obj|exc|ref|doc):`([^`]*)`")


def _role_text(m: re.Match[str]) -> str:
    """A role's target as plain text: ``~a.b.C`` → ``C``; ``title <target>`` → ``title``."""
    text = m.group(1)
    if "<" in text and text.endswith(">"):
        return text[: text.index("<")].strip()
    return text.lstrip("~").rsplit(".", 1)[-1] if text.startswith("~") else text


def plain_text(text: str) -> str:
    """``text`` (a docstring used as a description, or a help string) as plain text:
    Sphinx roles (``:class:`~a.B``` → ``B``), double backticks and bold markers removed, and a
    literal-block marker ``::`` at the end of a line made a colon."""
    text = _ROLE.sub(_role_text, text)
    text = text.replace("``", "").replace("**", "")
    return re.sub(r"(?<=\S)::$", ":", text, flags=re.MULTILINE)


def format_default(value: Any) -> str:
    """An option's default as its help states it: sequences space-separated, ``None`` as
    ``none``, booleans as ``on``/``off``."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (list, tuple)):
        return " ".join(format_default(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Help of every realdeal parser: descriptions in :func:`plain_text`, paragraphs re-wrapped
    to the terminal (indented literal blocks kept as written, list items wrapped one by one),
    and every option's default stated (`` (default: X)``) unless its help states one already;
    an option without a default (``None``), a flag that takes no value and an empty list
    (a repeatable option) state none."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        paragraphs = re.split(r"\n[ \t]*\n", plain_text(text).strip("\n"))
        return "\n\n".join(self._fill_paragraph(p, width, indent) for p in paragraphs)

    @staticmethod
    def _fill_paragraph(paragraph: str, width: int, indent: str) -> str:
        lines = paragraph.splitlines()
        if all(line.startswith((" ", "\t")) for line in lines if line.strip()):
            return "\n".join(indent + line for line in lines)  # a literal block
        items: list[str] = []
        for line in lines:
            if not items or re.match(r"\s*[-*] ", line):
                items.append(line.strip())
            else:
                items[-1] += " " + line.strip()
        out = []
        for item in items:
            hang = indent + ("  " if re.match(r"[-*] ", item) else "")
            out.append(
                textwrap.fill(
                    item,
                    width,
                    initial_indent=indent,
                    subsequent_indent=hang,
                    break_on_hyphens=False,
                )
            )
        return "\n".join(out)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = plain_text(action.help or "")
        default = action.default
        if (
            "default" in text.lower()
            or default is None
            or default is argparse.SUPPRESS
            or action.nargs == 0  # a flag: its default is not giving it
            or (isinstance(default, (list, tuple)) and not default)
            or not (action.option_strings or action.nargs in (argparse.OPTIONAL, "*"))
        ):
            return text
        return text + " (default: " + format_default(default).replace("%", "%%") + ")"


class CommandParser(argparse.ArgumentParser):
    """The parser of ``realdeal`` and its sub-commands: a usage error is one line (the
    command, the option and the problem, and where to read more) and exit status 2; help is
    written by :class:`HelpFormatter`. :meth:`defer` runs a function on the parser at its first
    use (parse or help): what needs a slow import is added only when that command runs."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
        self._deferred: list[Callable[[argparse.ArgumentParser], None]] = []

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def defer(self, add: Callable[[argparse.ArgumentParser], None]) -> None:
        """Run ``add(self)`` before this parser first parses or formats its help or usage."""
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


class DeferredFlagsParser(CommandParser):
    """A sub-command parser whose generated flags (:func:`add_config_flags`) are deferred
    (:meth:`CommandParser.defer`): added on first use (parse or help)."""


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
