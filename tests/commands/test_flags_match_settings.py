"""Every command's flags against the settings dataclasses they are generated from.

The options come from the real parser (every sub-command, generated flags added). Each
generated option must carry its field's default, choices, number range and number of values;
the command parsed with no options must give the dataclass's defaults; every option that is
not generated must be one of the few written by hand (inputs, outputs, checkpoints, modes), and
no help text written by hand may state a default value: the one place a default lives is the
dataclass field (or the ``add_argument`` call of a hand-written option), and the help states it
from there.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import typing

import pytest
from command_leaves import leaves

from realdeal.commands._flags import ConfigFlags, Flag, field_defaults, format_default
from realdeal.config import NumberArg, bounds, field_range

# --------------------------------------------------------------------------- the parser


LEAVES = leaves()

#: Commands whose flags are still written by hand, each with the reason.
NOT_GENERATED: dict[str, str] = {}

COMMANDS = sorted(c for c in LEAVES if c not in NOT_GENERATED)

#: The options written by hand, per command (long name, or dest for a positional): inputs,
#: outputs, checkpoints, the run's own files and modes, which no settings class holds.
HAND_WRITTEN = {
    cmd: set(names.split())
    for cmd, names in {
        "cohort": "out --config --overwrite --no-figure",
        "demo": "--out --export-checkpoints",
        "doctor": "--weights-dir --out",
        "encode": "--out --autoencoder --data",
        "evaluate": "mode --out --originals --candidate --labels --real --generated "
        "--real-labels --train --held-out --workers --device",
        "export-demo-checkpoints": "--autoencoder --ldm --refiner --refiner-student --data "
        "--cohort --made-by "
        "--trained-on --out",
        "import-official": "checkpoint --out",
        "prepare": "inputs --out --labels --split --intensity-from --config --overwrite",
        "reconstruct": "inputs --out --autoencoder --data --skip-existing --intensity-from",
        "refine": "inputs --out --checkpoint --device --plan-only --schedule",
        "report": "run_dir --out",
        "sample": "--ldm --out",
        "skullstrip": "inputs --out",
        "train autoencoder": "--data --out --preset --config --resume --whole-volumes",
        "train ldm": "--data --out --preset --config --resume --autoencoder --latents",
        "train refiner": "--data --out --preset --config --resume",
        "train refiner-student": "--data --out --preset --config --resume --teacher",
    }.items()
}


def _name(action: argparse.Action) -> str:
    """An option's long name (``--out`` of ``-o/--out``), or a positional's dest."""
    return next((o for o in action.option_strings if o.startswith("--")), action.dest)


def _sets(cmd: str) -> tuple[ConfigFlags, ...]:
    return LEAVES[cmd].get_default("config_flags") or ()


def _own_options(cmd: str) -> list[argparse.Action]:
    return [a for a in LEAVES[cmd]._actions if not isinstance(a, argparse._HelpAction)]


def _generated(cmd: str) -> dict[argparse.Action, tuple[ConfigFlags, str]]:
    """``{option: (flag set, field)}`` of the command's generated options."""
    options = LEAVES[cmd]._option_string_actions
    out = {}
    for s in _sets(cmd):
        for field, flag in s.flags().items():
            action = options.get(flag.option(field))
            assert action is not None and action.dest == s.dest(field), f"{cmd}: {field}"
            out[action] = (s, field)
    return out


def _base_argv(cmd: str) -> list[str]:
    """The command with a placeholder for every required argument."""
    argv = cmd.split()
    for a in _own_options(cmd):
        if a.option_strings and not a.required:
            continue
        value = str(list(a.choices)[0]) if a.choices else f"x-{a.dest}"
        argv += [a.option_strings[-1], value] if a.option_strings else [value]
    return argv


def _preset_kind(cmd: str) -> str | None:
    return LEAVES[cmd].get_default("preset_kind")


# --------------------------------------------------------------------------- tests


def test_the_walk_finds_every_command_and_the_lists_are_complete():
    assert len(COMMANDS) >= 15
    assert set(COMMANDS) <= set(HAND_WRITTEN), "list every command's hand-written options"
    assert set(NOT_GENERATED) <= set(LEAVES)


@pytest.mark.parametrize("cmd", COMMANDS)
def test_every_option_is_generated_or_listed_as_hand_written(cmd):
    generated = _generated(cmd)
    hand = {_name(a) for a in _own_options(cmd) if a not in generated}
    assert hand == HAND_WRITTEN[cmd], f"{cmd}: options written by hand"


def _expected_choices(tp: typing.Any, flag_choices: typing.Any) -> list | None:
    if flag_choices is not None:
        return None  # the command names them (checked to hold the default below)
    tp = _without_none(tp)
    if typing.get_origin(tp) is typing.Literal:
        return list(typing.get_args(tp))
    return None


def _without_none(tp: typing.Any) -> typing.Any:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if type(None) in typing.get_args(tp) and len(args) == 1 else tp


@pytest.mark.parametrize("cmd", COMMANDS)
def test_generated_options_carry_their_fields_declarations(cmd):
    """Default, choices, number type and range, number of values: as the field declares."""
    for a, (s, field) in _generated(cmd).items():
        cls = s.config_class()
        tp = typing.get_type_hints(cls)[field]
        default = field_defaults(cls)[field]
        flag = s.flags()[field]
        where = f"{cmd} {_name(a)}"
        assert flag.option(field) in a.option_strings, where
        if flag.switch:
            assert a.nargs == 0 and a.const is (not default), where
        own = default if s.field_defaults else None
        assert a.default == own, f"{where}: default {a.default!r}, field {default!r}"
        expected = _expected_choices(tp, flag.choices)
        if expected is not None:
            assert list(a.choices) == expected, where
        if a.choices is not None and default is not None and not flag.switch:
            values = default if isinstance(default, tuple) else (default,)
            assert all(v in a.choices for v in values), f"{where}: the default is no choice"
        element = typing.get_args(_without_none(tp))
        if typing.get_origin(_without_none(tp)) is tuple and flag.nargs is None:
            fixed = len(element) != 2 or element[1] is not Ellipsis
            assert a.nargs == (len(element) if fixed else "+"), where
        number = element[0] if element else _without_none(tp)
        if number in (int, float) and a.choices is None:
            assert isinstance(a.type, NumberArg), f"{where}: no declared range"
            assert a.type.range == field_range(cls, field), where
            assert a.type.integer == (number is int), where


@pytest.mark.parametrize("cmd", COMMANDS)
def test_no_options_give_the_dataclasses_defaults(cmd):
    """The command parsed with only its required arguments builds each settings class's own
    defaults (train: overrides nothing in the preset)."""
    args = LEAVES[cmd].parse_args(_base_argv(cmd)[len(cmd.split()) :])
    for s in _sets(cmd):
        if not s.field_defaults:
            assert s.given(args) == {}, f"{cmd}: {s.cls}"
        if _preset_kind(cmd) is None:
            assert s.build(args) == s.config_class()(), f"{cmd}: {s.cls}"


#: Settings classes of which only some fields are flags, with the reason; every other class
#: generated from has each of its fields on the command line.
PARTIAL = {
    "CohortConfig": "the other fields come from --config files",
    "PrepareConfig": "the other fields come from --config files",
    "DemoConfig": "sample_batch and sample_sampler are the demo's own choice",
    "PairedConfig": "the other fields are the paper's protocol (configurable from Python)",
    "UnpairedConfig": "the other fields are the paper's protocol (configurable from Python)",
    "NoiseConfig": "the denoiser's parameters are the paper's (configurable from Python)",
    "NetworkOptions": "--device is the command's own (auto: a GPU if there is one)",
}
DEMO_ONLY = {"sample_batch", "sample_sampler"}


@pytest.mark.parametrize("cmd", [c for c in COMMANDS if _preset_kind(c) is None])
def test_every_field_of_a_commands_settings_is_a_flag(cmd):
    """A field added to a command's settings gets its flag (or is listed as not one here)."""
    for s in _sets(cmd):
        cls = s.config_class()
        missing = {f.name for f in dataclasses.fields(cls)} - set(s.flags())
        if cls.__name__ == "DemoConfig":
            assert missing == DEMO_ONLY, f"{cmd}: {sorted(missing)}"
        elif cls.__name__ not in PARTIAL:
            assert not missing, f"{cmd}: {cls.__name__} fields without a flag: {sorted(missing)}"


def _stated_defaults(text: str) -> list[str]:
    return re.findall(r"default", text, flags=re.IGNORECASE)


@pytest.mark.parametrize("cmd", COMMANDS)
def test_no_default_is_written_twice(cmd):
    """A help text written by hand states no default value (it may say what ``None`` means):
    the default is stated from its one place, the field (or a hand-written option's own
    ``default``), and the stated one is that value."""
    parser = LEAVES[cmd]
    generated = _generated(cmd)
    for a in _own_options(cmd):
        if a.help == argparse.SUPPRESS or a.nargs == 0:
            continue
        shown = " ".join(parser._get_formatter()._expand_help(a).split())
        if a not in generated:
            if a.default is not None:
                assert not _stated_defaults(a.help), f"{cmd} {_name(a)}: {a.help!r}"
                assert shown.endswith(f"(default: {format_default(a.default)})"), shown
            continue
        s, field = generated[a]
        value = field_defaults(s.config_class())[field]
        if _preset_kind(cmd) is not None:
            from realdeal.presets import PRESETS, preset

            values = []
            for name in PRESETS:
                v = preset(_preset_kind(cmd), name)
                for key in (*s.path, field):
                    v = getattr(v, key)
                values.append(v)
            value = None if any(v is None for v in values) else values[0]
        if value is None:
            continue  # the help says what None means, as it needs
        assert len(_stated_defaults(shown)) == 1, f"{cmd} {_name(a)}: {shown!r}"
        if _preset_kind(cmd) is None:
            assert shown.endswith(f"(default: {format_default(value)})"), shown
        else:  # the presets' values, as the generator states them
            assert re.search(r"\(default: [^()]+\)$", shown), f"{cmd} {_name(a)}: {shown!r}"


# --------------------------------------------------------------------------- the generator


@dataclasses.dataclass(frozen=True)
class _Base:
    steps: int | None = dataclasses.field(default=None, metadata=bounds(1, 100))
    """Steps of the base.

    A second paragraph, left out of the help."""


@dataclasses.dataclass(frozen=True)
class _Settings(_Base):
    mode: typing.Literal["a", "b"] = "a"
    """Which way; 50% of the time."""
    size: tuple[float, float, float] = dataclasses.field(
        default=(1.0, 1.0, 1.0), metadata=bounds(0.0, 10.0, lo_open=True)
    )
    """Sizes."""
    keep: bool = True
    """Keep everything."""
    folder: str | None = "somewhere"
    """LDM folder."""
    plain: str = "p"


_FLAGS = ConfigFlags(
    _Settings,
    (),
    {
        "steps": Flag(),
        "mode": Flag(),
        "size": Flag(nargs="+", convert=lambda v: v * 3 if len(v) == 1 else v),
        "keep": Flag(name="--no-keep", switch=True),
        "folder": Flag(convert=lambda v: None if v == "none" else v),
    },
)


def _parser(flags: ConfigFlags) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    flags.add_to(p)
    return p


def test_help_from_docstrings_inherited_fields_included():
    p = _parser(_FLAGS)
    helps = {a.dest: a.help for a in p._actions}
    assert helps["steps"] == "steps of the base"  # the base's docstring, first paragraph
    assert helps["mode"] == "which way; 50%% of the time (default: a)"  # % kept for argparse
    assert helps["folder"] == "LDM folder (default: somewhere)"  # a name keeps its capitals
    assert helps["keep"] == "keep everything"  # a switch states no default
    assert p._option_string_actions["--steps"].type.range == field_range(_Base, "steps")
    with pytest.raises(TypeError, match="no help"):
        _parser(ConfigFlags(_Settings, (), {"steps": Flag(), "plain": Flag()}))


def test_given_flags_replace_the_base_and_convert():
    p = _parser(_FLAGS)
    assert _FLAGS.build(p.parse_args([])) == _Settings()
    args = p.parse_args(["--size", "2", "--no-keep", "--folder", "none", "--mode", "b"])
    assert _FLAGS.given(args) == {"size": [2.0, 2.0, 2.0], "keep": False, "folder": None,
                                  "mode": "b"}  # fmt: skip
    built = _FLAGS.build(args, _Settings(steps=7))
    assert built == _Settings(steps=7, mode="b", size=(2.0, 2.0, 2.0), keep=False, folder=None)


def test_field_defaults_are_the_options_defaults_and_changed_words_repeat_them():
    flags = dataclasses.replace(_FLAGS, field_defaults=True)
    p = _parser(flags)
    assert p.parse_args([]).folder == "somewhere" and p.parse_args([]).keep is True
    args = p.parse_args(["--steps", "3", "--no-keep", "--mode", "a"])
    assert flags.build(args) == _Settings(steps=3, keep=False)
    assert flags.changed_words(args) == ["--steps", "3", "--no-keep"]
    assert flags.changed_words(args, leave_out=("steps",)) == ["--no-keep"]


def test_deferred_flags_keep_their_place_among_hand_written_ones():
    from realdeal.commands._flags import CommandParser, add_config_flags, on_first_use

    p = CommandParser(prog="x")

    def add(q):
        q.add_argument("--first")
        add_config_flags(q, _FLAGS)
        q.add_argument("--last")

    on_first_use(p, add)
    assert "--steps" not in p._option_string_actions  # not before first use
    names = [a.option_strings[-1] for a in p._actions if a.option_strings][1:]  # after -h
    assert names == []
    p.format_usage()
    names = [a.option_strings[-1] for a in p._actions if a.option_strings][1:]
    assert names == ["--first", "--steps", "--mode", "--size", "--no-keep", "--folder", "--last"]
