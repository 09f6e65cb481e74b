"""Every runnable sub-command of the real parser, for the tests that hold each one to a rule."""

from __future__ import annotations

import argparse

from realdeal.cli import build_parser


def leaves() -> dict[str, argparse.ArgumentParser]:
    """``{"train ldm": parser, ...}``: every runnable sub-command, its generated flags added
    (on first use, as a real command line adds them)."""
    out = {}

    def walk(p: argparse.ArgumentParser, words: list[str]) -> None:
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for name, sub in a.choices.items():
                    sub.format_usage()  # adds a deferred parser's generated flags
                    walk(sub, [*words, name])
                return
        out[" ".join(words)] = p

    walk(build_parser(), [])
    return out
