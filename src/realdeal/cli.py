"""The ``realdeal`` command: a thin layer over the library.

Each sub-command lives in :mod:`realdeal.commands` as a module with ``register(subparsers)``,
which adds its parser and sets ``func``; the function builds objects and calls one library
function. Heavy imports (torch, MONAI) happen inside those functions so ``--help`` is fast.
Any :class:`~realdeal.errors.RealDealError` becomes one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from realdeal import __version__
from realdeal.errors import RealDealError

COMMANDS = [
    "realdeal.commands.cohort",
    "realdeal.commands.prepare",
    "realdeal.commands.skullstrip",
    "realdeal.commands.train",
    "realdeal.commands.reconstruct",
    "realdeal.commands.encode",
    "realdeal.commands.sample",
    "realdeal.commands.refine",
    "realdeal.commands.evaluate",
    "realdeal.commands.import_official",
    "realdeal.commands.demo",
    "realdeal.commands.export_demo",
    "realdeal.commands.report",
]


def positive_int(text: str) -> int:
    """``argparse`` type for counts that must be ≥ 1 (sampling steps): else a usage error, exit 2."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="realdeal",
        description="RealDeal: make generated 3D brain MRIs look real.",
    )
    parser.add_argument("--version", action="version", version=f"realdeal {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="warnings and errors only, no progress bars"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(name).register(sub)
    return parser


def setup_logging(verbose: bool = False, quiet: bool = False) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", force=True)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    try:
        return int(args.func(args) or 0)
    except RealDealError as e:
        print(f"realdeal {args.command}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and closed early
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(f"realdeal {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
