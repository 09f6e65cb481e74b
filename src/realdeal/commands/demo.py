"""``realdeal demo``: the main job, end to end, with what exists so far.

Today: build the built-in cohort, prepare it, and write slice figures. Training,
refinement, evaluation and the report join this command as their stages land.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the end-to-end demo on the built-in cohort")
    p.add_argument(
        "-o", "--out", default="demo-output", help="output folder (default ./demo-output)"
    )
    p.add_argument("--quick", action="store_true", help="tiny everything (for tests)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from realdeal.pipeline import run_demo

    run_demo(args.out, quick=args.quick, seed=args.seed)
    return 0
