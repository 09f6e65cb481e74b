"""Every ``--help`` of the real parser: plain text, a description, each default stated; the
memorisation copy rule as the code applies it; log lines beside progress bars."""

from __future__ import annotations

import argparse
import re

import pytest

from realdeal.cli import build_parser
from realdeal.commands._flags import HelpFormatter, plain_text


def _parsers() -> dict[str, argparse.ArgumentParser]:
    """``{"realdeal": root, "realdeal train ldm": …}``: every parser, generated flags added."""
    out = {}

    def walk(p: argparse.ArgumentParser, words: list[str]) -> None:
        p.format_usage()  # adds deferred flags and help texts
        out[" ".join(words)] = p
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for name, sub in a.choices.items():
                    walk(sub, [*words, name])

    walk(build_parser(), ["realdeal"])
    return out


PARSERS = _parsers()


def _help_of(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """The help text ``parser --help`` prints for ``action`` (one line, defaults expanded)."""
    return " ".join(parser._get_formatter()._expand_help(action).split())


def test_the_walk_finds_every_command():
    names = set(PARSERS)
    assert {"realdeal doctor", "realdeal encode", "realdeal evaluate"} <= names
    assert {"realdeal train autoencoder", "realdeal train ldm", "realdeal train refiner"} <= names
    assert len(names) >= 18


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_help_is_plain_text_with_a_description(name):
    parser = PARSERS[name]
    text = parser.format_help()
    assert "``" not in text, name
    assert not re.search(r":(class|func|meth|mod|data|attr|exc):", text), name
    assert (parser.description or "").strip(), f"{name}: no description"


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_every_option_states_its_default(name):
    """An option with a default (other than ``None``, an empty list, or a flag's "not given")
    says so in its help."""
    parser = PARSERS[name]
    for a in parser._actions:
        if a.help == argparse.SUPPRESS or a.default in (None, argparse.SUPPRESS) or a.nargs == 0:
            continue
        if isinstance(a.default, (list, tuple)) and not a.default:
            continue
        text = _help_of(parser, a)
        assert "default" in text.lower(), f"{name} {a.option_strings or a.dest}: {text!r}"
    assert "default: None" not in parser.format_help(), name


def test_generated_train_flags_state_the_presets_values():
    from realdeal.presets import preset

    ldm = PARSERS["realdeal train ldm"]
    lr = _help_of(ldm, ldm._option_string_actions["--lr"])
    paper, small = preset("ldm", "paper").train.lr, preset("ldm", "cpu-small").train.lr
    assert f"paper {paper:g}" in lr and f"cpu-small {small:g}" in lr, lr
    for p in (PARSERS[f"realdeal train {k}"] for k in ("autoencoder", "ldm", "refiner")):
        generated = {s.dest(f) for s in p.get_default("config_flags") for f in s.flags()}
        assert len(generated) > 20
        for a in p._actions:
            if a.dest in generated and a.nargs != 0:
                assert "default" in _help_of(p, a).lower(), (p.prog, a.option_strings)


def test_defaults_are_stated_once_and_none_is_not_stated():
    p = argparse.ArgumentParser(formatter_class=HelpFormatter)
    p.add_argument("--a", default=3, help="a number")
    p.add_argument("--b", help="no default here")
    p.add_argument("--c", default="x", help="a letter (default x, as said)")
    p.add_argument("--d", action="store_true", help="a flag")
    text = " ".join(p.format_help().split())
    assert "a number (default: 3)" in text
    assert "no default here (default" not in text and "default: None" not in text
    assert text.count("default") == 3  # --a's, --b's own words, --c's own, none for --d


def test_plain_text_strips_markup():
    doc = "Uses ``x`` and :class:`~realdeal.errors.InputError`, :func:`realdeal.f`; example::"
    assert plain_text(doc) == "Uses x and InputError, realdeal.f; example:"


def test_memorization_help_states_the_rule_the_code_applies():
    from realdeal.metrics.memorization import COPY_FRACTION, COPY_RULE, copy_threshold

    text = " ".join(PARSERS["realdeal evaluate"].format_help().split())
    assert COPY_RULE in text
    assert "than all of them" not in text
    assert COPY_FRACTION == 0.5 and "half" in COPY_RULE
    # the rule in numbers: half the closest held-out subject's distance 1 − 0.8
    assert copy_threshold([0.7, 0.8]) == pytest.approx(1 - (1 - 0.8) / 2)


def test_log_lines_get_their_own_line_beside_a_progress_bar(monkeypatch):
    """Through the command line's handler a log line is not appended to a running bar's line."""
    import io
    import logging

    from realdeal.cli import setup_logging
    from realdeal.utils import progress as P

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    term = Terminal()
    monkeypatch.delenv("REALDEAL_NO_PROGRESS", raising=False)
    monkeypatch.setattr("sys.stderr", term)
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))  # restored after the test
    monkeypatch.setattr(root, "level", root.level)
    setup_logging()
    try:
        assert isinstance(logging.getLogger().handlers[0], P.ProgressLogHandler)
        bar = P.progress(total=4, desc="work")
        bar.update(1)
        logging.getLogger("realdeal.test").info("a log line")
        bar.close()
    finally:
        P.set_quiet(False)
    out = term.getvalue()
    assert "work" in out and "a log line" in out
    line = next(ln for ln in out.split("\n") if "a log line" in ln)
    assert line.split("\r")[-1].startswith("INFO realdeal.test: a log line"), repr(line)
