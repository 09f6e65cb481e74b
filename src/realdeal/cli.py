"""The ``realdeal`` command: a thin layer over the library.

Each sub-command lives in :mod:`realdeal.commands` as a module with ``register(subparsers)``,
which adds its parser and sets ``func``; the function builds objects and calls one library
function. Heavy imports (torch, MONAI) happen inside those functions so ``--help`` is fast.
Any :class:`~realdeal.errors.RealDealError` becomes one line on stderr and exit status 2; so
does a usage error (a bad option value: every number option has a declared range, see
:mod:`realdeal.config`). Before a command starts, :func:`realdeal.commands._checks.preflight`
checks its device, that its outputs can be written and that its input files are well formed.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from realdeal import __version__
from realdeal.commands._flags import CommandParser
from realdeal.config import SAMPLING_STEPS, number_arg
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
    "realdeal.commands.doctor",
]


#: ``argparse`` type for sampling step counts (≥ 1, :data:`realdeal.config.SAMPLING_STEPS`).
positive_int = number_arg(int, SAMPLING_STEPS)


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
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
    """Log to stderr at INFO (``-v``: DEBUG; ``-q``: WARNING, and no progress bars), through
    :class:`~realdeal.utils.progress.ProgressLogHandler`: a log line never lands inside a
    progress bar's line."""
    from realdeal.utils.progress import ProgressLogHandler, set_quiet

    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    handler = ProgressLogHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    set_quiet(quiet)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    try:
        from realdeal.commands._checks import preflight

        preflight(args)
        return int(args.func(args) or 0)
    except RealDealError as e:
        command = " ".join(filter(None, (args.command, getattr(args, "kind", None))))
        print(f"realdeal {command}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and closed early
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(f"realdeal {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
