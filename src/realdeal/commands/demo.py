"""``realdeal demo``: the whole method on the built-in cohort, end to end (see realdeal.demo)."""

from __future__ import annotations

import argparse

from realdeal.commands._checks import check_demo_checkpoints, check_writable_dir
from realdeal.commands._flags import ConfigFlags, Flag, add_config_flags, on_first_use
from realdeal.config import device_arg
from realdeal.diffusion.registry import DEFAULT_SAMPLING, SAMPLERS, SPACINGS, VARIANCES


def _none_is_none(value: str) -> str | None:
    """``--checkpoints none`` → ``None`` (always train)."""
    return None if value == "none" else value


DEMO_FLAGS = ConfigFlags(
    "realdeal.demo:DemoConfig",
    (),
    {
        "quick": Flag(switch=True),
        "seed": Flag(),
        "retrain": Flag(switch=True),
        "train_scale": Flag(metavar="K"),
        "checkpoints": Flag(metavar="DIR", convert=_none_is_none),
        "n_samples": Flag(name="--samples"),
        "n_refined_samples": Flag(name="--refined-samples"),
        "sample_steps": Flag(f"LDM sampling steps ({DEFAULT_SAMPLING['ldm'].sampler})"),
        "refine_sampler": Flag(choices=list(SAMPLERS)),
        "refine_steps": Flag(),
        "refine_eta": Flag(),
        "refine_spacing": Flag(choices=SPACINGS),
        "refine_variance": Flag(choices=VARIANCES),
        "refiner_student": Flag(switch=True),
        "refine_precision": Flag(),
        "max_batch": Flag(),
        "workers": Flag(),
        "device": Flag(type=device_arg),
    },
    field_defaults=True,
)
"""The flags of :class:`~realdeal.demo.DemoConfig`: each option's default is its field's."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="run the end-to-end demo on the built-in cohort and write its report",
        description="Build the built-in cohort, prepare it, obtain the cpu-small autoencoder, "
        "LDM and refiner (from the run folder, the demo checkpoints shipped with the package, "
        "or by training), refine the held-out reconstructions and LDM samples, evaluate both "
        "and write report/report.html. Re-running continues where an earlier run stopped.",
    )
    on_first_use(p, _add_flags)
    p.set_defaults(func=run, preflight=_preflight)


def _add_flags(p: argparse.ArgumentParser) -> None:
    """``-o``, the flags of :data:`DEMO_FLAGS` and ``--export-checkpoints``."""
    p.add_argument("-o", "--out", default="demo-output", help="output folder")
    add_config_flags(p, DEMO_FLAGS)
    p.add_argument(
        "--export-checkpoints",
        metavar="DIR",
        help="after the run, write its models as slim demo checkpoints into DIR "
        "(how src/realdeal/demo_checkpoints is made)",
    )


def _preflight(args: argparse.Namespace) -> None:
    """The run folder and the export folder writable, a --checkpoints folder's manifest sound."""
    check_writable_dir(args.out, "-o/--out")
    if args.export_checkpoints:
        check_writable_dir(args.export_checkpoints, "--export-checkpoints")
    check_demo_checkpoints(args.checkpoints, "--checkpoints")


def run(args: argparse.Namespace) -> int:
    import shlex

    from realdeal.demo import export_checkpoints, run_demo

    cfg = DEMO_FLAGS.build(args)
    # the command recorded in run.json; the number of evaluation processes changes no result
    words = ["realdeal", "demo", "-o", str(args.out)]
    words += DEMO_FLAGS.changed_words(args, leave_out=("workers",))
    report = run_demo(args.out, cfg, command=shlex.join(words))
    if args.export_checkpoints:
        export_checkpoints(args.out, args.export_checkpoints)
    print(f"report: {report}")
    return 0
