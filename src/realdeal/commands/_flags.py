"""Command-line flags generated from settings dataclasses, and the settings they give back.

A :class:`ConfigFlags` names some fields of one dataclass (a command's settings, or a config
inside a run config: ``("train",)`` for :class:`~realdeal.presets.TrainConfig` inside a run).
Each field becomes one option: its type, ``choices`` (``Literal``), ``nargs`` (tuples) and
on/off form (``bool``) come from the field's annotation, its help from the table given here or
else the first paragraph of the field's docstring, its number type and range from the field's
declared :class:`~realdeal.config.Range` (a numeric field without one cannot become a flag).
Its default is the field's own (``field_defaults``), or ``None`` = "not given, keep the base
config's value" (a preset, a ``--config`` file or the class's defaults), with the base's
default stated in the help. :meth:`ConfigFlags.build` turns the parsed flags into the settings;
:func:`config_overrides` turns them into nested overrides for
:func:`realdeal.presets.with_overrides`.

Many settings classes live in modules that import torch, so their flags are added when a
command is first used (:meth:`CommandParser.defer`, :func:`on_first_use`; every flag of a
sub-command made by a :class:`DeferredFlagsParser`): ``realdeal --help`` and the other commands
stay fast. On a parser that names its model kind (``preset_kind``, set by ``realdeal train``),
each generated flag's help states the presets' values as its default.

Every parser is a :class:`CommandParser`, whose :class:`HelpFormatter` writes descriptions and
help texts as plain text (:func:`plain_text`: no reStructuredText markup from docstrings) and
states each option's default.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import importlib
import inspect
import re
import textwrap
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any


@dataclasses.dataclass(frozen=True)
class Flag:
    """How one field appears on the command line, where the defaults do not fit.

    - ``help``: the option's help (default: the first paragraph of the field's docstring);
    - ``name``: the option (default ``--field-name``); ``short``: a one-letter form before it
      (``-n``); ``metavar``: the value's name in the help;
    - ``zero_clears``: the value 0 sets the optional field to ``None`` ("0 = off");
    - ``type``: the ``argparse`` type of a ``str`` field whose values have a form
      (``--device``);
    - ``choices``: the values of a field whose annotation does not list them (a ``str``, not a
      ``Literal``), or ``"module:NAME"`` of such a sequence, imported when the flag is added;
    - ``nargs``, ``const``: another number of values than the annotation's
      (``--compile [BACKEND]``: ``nargs="?"``, and the bare option's value ``const``);
    - ``switch``: a ``bool`` field as one option without a value, which sets the opposite of
      the field's default (``--quick``; ``--no-skip-background``, named so);
    - ``convert``: makes a given value the field's (one or three voxel sizes → three;
      ``none`` → ``None``), refusing a bad one with a :class:`~realdeal.errors.ConfigError`.
    """

    help: str | None = None
    name: str | None = None
    metavar: str | tuple[str, ...] | None = None
    zero_clears: bool = False
    type: Callable[[str], Any] | None = None
    short: str | None = None
    choices: Sequence[Any] | str | None = None
    nargs: int | str | None = None
    const: Any = None
    switch: bool = False
    convert: Callable[[Any], Any] | None = None

    def option(self, field: str) -> str:
        """The option's long name: ``name``, else ``--field-name``."""
        return self.name or "--" + field.replace("_", "-")


@dataclasses.dataclass(frozen=True)
class ConfigFlags:
    """Flags for ``fields`` of the dataclass ``cls`` (the class, or ``"module:Name"`` imported
    when used), which sits at ``path`` inside the run config (``()``: the settings themselves);
    listed under the help heading ``title`` (``None``: the parser's options).

    ``field_defaults``: each option's default is its field's default; else ``None`` (not given:
    :meth:`build` keeps the base's value), and the help states the field's default (or, on a
    parser with a ``preset_kind``, the presets' values).
    """

    cls: str | type
    path: tuple[str, ...]
    fields: dict[str, str | Flag]
    title: str | None = None
    field_defaults: bool = False

    def config_class(self) -> type:
        return self.cls if isinstance(self.cls, type) else _imported(self.cls)

    def flags(self) -> dict[str, Flag]:
        return {k: v if isinstance(v, Flag) else Flag(v) for k, v in self.fields.items()}

    def dest(self, field: str) -> str:
        return ".".join((*self.path, field))

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        """Add one option per field (to the argument group ``title``, made if missing)."""
        cls = self.config_class()
        hints = typing.get_type_hints(cls)
        defaults = field_defaults(cls)
        group = parser if self.title is None else argument_group(parser, self.title)
        for field, flag in self.flags().items():
            try:
                kwargs = self._kwargs(cls, hints[field], field, flag, defaults[field])
                text = flag.help if flag.help is not None else docstring_help(cls, field)
            except (TypeError, KeyError) as e:
                raise TypeError(f"{cls.__name__}.{field}: {e}") from None
            text += self._stated_default(parser, field, flag, text, defaults[field])
            names = [flag.option(field)] if flag.short is None else [flag.short, flag.option(field)]
            group.add_argument(*names, dest=self.dest(field), help=text, **kwargs)

    def _kwargs(self, cls: type, tp: Any, field: str, flag: Flag, default: Any) -> dict[str, Any]:
        """``add_argument``'s keywords (all but names, dest and help) of one field's option."""
        from realdeal.config import field_range

        own = default if self.field_defaults else None
        if flag.switch:
            if _optional_removed(tp) is not bool:
                raise TypeError("only a bool field can be a switch")
            return {"action": "store_const", "const": not default, "default": own}
        if flag.choices is not None:
            choices = list(
                _imported(flag.choices) if isinstance(flag.choices, str) else flag.choices
            )
            kwargs: dict[str, Any] = {"type": type(choices[0]), "choices": choices}
        else:
            kwargs = _argparse_kwargs(tp, field_range(cls, field))
        if flag.type is not None:
            kwargs["type"] = flag.type
        for key in ("nargs", "const"):
            if getattr(flag, key) is not None:
                kwargs[key] = getattr(flag, key)
        if flag.metavar and "choices" not in kwargs:
            kwargs["metavar"] = flag.metavar
        elif "choices" not in kwargs and kwargs.get("action") is None:
            kwargs["metavar"] = flag.option(field).lstrip("-").replace("-", "_").upper()
        return {**kwargs, "default": own}

    def _stated_default(
        self, parser: argparse.ArgumentParser, field: str, flag: Flag, text: str, default: Any
    ) -> str:
        """`` (default: X)`` where the help does not state a default and the option's own
        default does not show it: the presets' values on a parser with a ``preset_kind``
        (`` (default: paper X, cpu-small Y)``), else the field's default unless ``None``."""
        if "default" in text.lower() or flag.switch:
            return ""
        if parser.get_default("preset_kind") is not None:
            return self._preset_defaults(parser, field, flag)
        if self.field_defaults or default is None:
            return ""  # the formatter states an option's own default
        return f" (default: {format_default(default)})".replace("%", "%%")

    def _preset_defaults(self, parser: argparse.ArgumentParser, field: str, flag: Flag) -> str:
        """`` (default: paper X, cpu-small Y)`` from the presets of the parser's model kind."""
        from realdeal.presets import PRESETS, preset

        kind = parser.get_default("preset_kind")
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

    def given(self, args: argparse.Namespace) -> dict[str, Any]:
        """``{field: value}`` of the options given (an option left at ``None`` is not given),
        each value made the field's (``convert``; 0/1 lists of ``bool`` tuples as booleans)."""
        hints = typing.get_type_hints(self.config_class())
        out: dict[str, Any] = {}
        for field, flag in self.flags().items():
            value = getattr(args, self.dest(field), None)
            if value is None:
                continue
            if flag.convert is not None:
                value = flag.convert(value)
            elif isinstance(value, list) and _element(hints[field]) is bool:
                value = [bool(v) for v in value]
            out[field] = value
        return out

    def build(self, args: argparse.Namespace, base: Any = None) -> Any:
        """The settings the parsed flags give: ``base`` (default: the class's defaults) with
        the value of each option given, checked as :func:`realdeal.config.from_dict` checks."""
        from realdeal.config import from_dict, to_dict

        base = self.config_class()() if base is None else base
        changes = self.given(args)
        if not changes:
            return base
        return from_dict(type(base), {**to_dict(base), **to_dict(changes)})

    def overrides(self, args: argparse.Namespace) -> dict[str, Any]:
        """``{path...: {field: value}}`` of the flags (unset flags are ``None``; a zero given to
        a ``zero_clears`` flag is :data:`realdeal.presets.CLEAR`)."""
        from realdeal.presets import CLEAR

        given = self.given(args)
        out: dict[str, Any] = {}
        for field, flag in self.flags().items():
            value = given.get(field)
            out[field] = CLEAR if flag.zero_clears and value == 0 else value
        for key in reversed(self.path):
            out = {key: out}
        return out

    def changed_words(self, args: argparse.Namespace, leave_out: Sequence[str] = ()) -> list[str]:
        """The options (with their values) whose parsed value differs from the field's
        default, in the order of the flags: what a command line needs to say to repeat the
        settings. ``leave_out``: fields not to say."""
        defaults = field_defaults(self.config_class())
        words: list[str] = []
        for field, flag in self.flags().items():
            value = getattr(args, self.dest(field), None)
            if field in leave_out or value is None or value == defaults[field]:
                continue
            if flag.switch:
                words.append(flag.option(field))
            else:
                values = value if isinstance(value, list) else [value]
                words += [flag.option(field), *(str(v) for v in values)]
        return words


def add_config_flags(parser: argparse.ArgumentParser, *sets: ConfigFlags) -> None:
    """Give ``parser`` the flags of ``sets`` (deferred on a :class:`DeferredFlagsParser`) and
    list them in its ``config_flags`` default (:func:`config_overrides`, the tests)."""
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


def _imported(name: str) -> Any:
    """The object ``"module:name"`` names."""
    module, _, attr = name.partition(":")
    return getattr(importlib.import_module(module), attr)


def field_defaults(cls: type) -> dict[str, Any]:
    """``{field: default}`` of a dataclass (``dataclasses.MISSING`` for a required field)."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
        else:
            out[f.name] = f.default
    return out


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """``{field: docstring}`` of a dataclass and its bases: the string literal written right
    after a field (read from the source; ``{}`` where there is none)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, after in zip(body, body[1:], strict=False):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                docs[node.target.id] = inspect.cleandoc(after.value.value)
    return docs


def docstring_help(cls: type, field: str) -> str:
    """An option's help from the first paragraph of its field's docstring, written as help
    texts are: one line, no final full stop, a lower-case first word (unless it is a name such
    as ``LDM``); ``%`` escaped for ``argparse``."""
    doc = field_docs(cls).get(field)
    if not doc:
        raise TypeError("no help: give one, or a docstring to the field")
    text = " ".join(re.split(r"\n[ \t]*\n", doc)[0].split()).removesuffix(".")
    first = text.split(" ", 1)[0]
    if first[1:2].islower() and first[1:].islower():
        text = text[0].lower() + text[1:]
    return text.replace("%", "%%")


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
        self._adding = False

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def defer(self, add: Callable[[argparse.ArgumentParser], None]) -> None:
        """Run ``add(self)`` before this parser first parses or formats its help or usage (at
        once when called from such a deferred function: the options keep their order)."""
        if self._adding:
            add(self)
        else:
            self._deferred.append(add)

    def _add_deferred(self) -> None:
        self._adding = True
        try:
            while self._deferred:
                self._deferred.pop(0)(self)
        finally:
            self._adding = False

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
