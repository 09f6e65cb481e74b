"""``realdeal report RUN_DIR``: (re)build a run's report from what the run folder holds.

Reads ``RUN_DIR/run.json`` (written by ``realdeal demo``) and writes ``report.html``,
``report.md``, ``report.json`` and ``figures/`` into ``RUN_DIR/report`` (or ``--out``).
Sections whose inputs are missing are replaced by a one-line note.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from realdeal.commands._checks import check_writable_dir


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="build the HTML/Markdown report of a run folder (figures, tables vs the paper)",
        description=__doc__,
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="run folder with run.json")
    p.add_argument("--out", default=None, help="report folder (default RUN_DIR/report)")
    p.set_defaults(func=run, preflight=_preflight)


def _preflight(args: argparse.Namespace) -> None:
    out = args.out if args.out is not None else Path(args.run_dir) / "report"
    check_writable_dir(out, "--out")


def run(args: argparse.Namespace) -> int:
    from realdeal.report.build import build_report

    path = build_report(args.run_dir, args.out)
    print(f"report written to {path}")
    return 0
