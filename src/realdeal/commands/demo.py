"""``realdeal demo``: the whole method on the built-in cohort, end to end (see realdeal.demo)."""

from __future__ import annotations

import argparse

from realdeal.commands._checks import check_demo_checkpoints, check_writable_dir
from realdeal.config import device_arg, field_arg
from realdeal.diffusion.registry import SAMPLERS, SPACINGS, VARIANCES

DEMO = "realdeal.demo:DemoConfig"


def register(sub: argparse._SubParsersAction) -> None:
    from realdeal.demo import DemoConfig

    d = DemoConfig()
    p = sub.add_parser(
        "demo",
        help="run the end-to-end demo on the built-in cohort and write its report",
        description="Build the built-in cohort, prepare it, obtain the cpu-small autoencoder, "
        "LDM and refiner (from the run folder, the demo checkpoints shipped with the package, "
        "or by training), refine the held-out reconstructions and LDM samples, evaluate both "
        "and write report/report.html. Re-running continues where an earlier run stopped.",
    )
    p.add_argument(
        "-o", "--out", default="demo-output", help="output folder (default ./demo-output)"
    )
    p.add_argument("--quick", action="store_true", help="tiny everything, trains from scratch")
    p.add_argument("--seed", type=field_arg(int, DEMO, "seed"), default=d.seed, help="random seed")
    p.add_argument(
        "--retrain",
        action="store_true",
        help="train all three models here instead of using existing or shipped checkpoints "
        "(earlier models are kept in models/<kind>.previous)",
    )
    p.add_argument(
        "--train-scale",
        type=field_arg(float, DEMO, "train_scale"),
        default=d.train_scale,
        metavar="K",
        help="multiply every model's cpu-small training steps by K when training",
    )
    p.add_argument(
        "--checkpoints",
        default=d.checkpoints,
        metavar="DIR",
        help="demo checkpoint folder (default: the ones shipped with the package; "
        "'none' = always train)",
    )
    p.add_argument(
        "--samples",
        type=field_arg(int, DEMO, "n_samples"),
        default=d.n_samples,
        help="LDM samples to draw",
    )
    p.add_argument(
        "--refined-samples",
        type=field_arg(int, DEMO, "n_refined_samples"),
        default=d.n_refined_samples,
        help="how many of the samples to refine (the first ones)",
    )
    p.add_argument(
        "--sample-steps",
        type=field_arg(int, DEMO, "sample_steps"),
        default=d.sample_steps,
        help=f"LDM sampling steps ({d.sample_sampler})",
    )
    p.add_argument(
        "--refine-sampler",
        choices=list(SAMPLERS),
        default=d.refine_sampler,
        help="refinement sampler",
    )
    p.add_argument(
        "--refine-steps",
        type=field_arg(int, DEMO, "refine_steps"),
        default=d.refine_steps,
        help="refinement steps",
    )
    p.add_argument(
        "--refine-eta",
        type=field_arg(float, DEMO, "refine_eta"),
        default=d.refine_eta,
        help="DDIM η for refinement (1 = DDPM-like)",
    )
    p.add_argument(
        "--refine-spacing",
        choices=list(SPACINGS),
        default=d.refine_spacing,
        help=f"refinement timestep spacing (default {d.refine_spacing}: denser toward t = 0)",
    )
    p.add_argument(
        "--refine-variance",
        choices=list(VARIANCES),
        default=d.refine_variance,
        help=f"refinement DDIM step variance (default {d.refine_variance})",
    )
    p.add_argument(
        "--refine-precision",
        choices=["auto", "fp32", "bf16"],
        default=d.refine_precision,
        help="the refiner's arithmetic (default auto: bf16 on CUDA and on CPUs with native "
        "bf16, else fp32)",
    )
    p.add_argument(
        "--max-batch",
        type=field_arg(int, DEMO, "max_batch"),
        default=d.max_batch,
        help="windows per refiner batch",
    )
    p.add_argument(
        "--workers",
        type=field_arg(int, DEMO, "workers"),
        help="evaluation worker processes (default: cores)",
    )
    p.add_argument(
        "--device",
        type=device_arg,
        default=d.device,
        help="where models train, sample and refine: auto (a CUDA GPU when present), cpu, "
        "cuda or cuda:N (default auto)",
    )
    p.add_argument(
        "--export-checkpoints",
        metavar="DIR",
        help="after the run, write its models as slim demo checkpoints into DIR "
        "(how src/realdeal/demo_checkpoints is made)",
    )
    p.set_defaults(func=run, preflight=_preflight)


def _preflight(args: argparse.Namespace) -> None:
    """The run folder and the export folder writable, a --checkpoints folder's manifest sound."""
    check_writable_dir(args.out, "-o/--out")
    if args.export_checkpoints:
        check_writable_dir(args.export_checkpoints, "--export-checkpoints")
    check_demo_checkpoints(args.checkpoints, "--checkpoints")


def run(args: argparse.Namespace) -> int:
    from realdeal.demo import DemoConfig, export_checkpoints, run_demo

    cfg = DemoConfig(
        quick=args.quick,
        seed=args.seed,
        retrain=args.retrain,
        train_scale=args.train_scale,
        checkpoints=None if args.checkpoints in (None, "none") else args.checkpoints,
        n_samples=args.samples,
        n_refined_samples=args.refined_samples,
        sample_steps=args.sample_steps,
        refine_sampler=args.refine_sampler,
        refine_steps=args.refine_steps,
        refine_eta=args.refine_eta,
        refine_spacing=args.refine_spacing,
        refine_variance=args.refine_variance,
        refine_precision=args.refine_precision,
        max_batch=args.max_batch,
        workers=args.workers,
        device=args.device,
    )
    import shlex

    d = DemoConfig()
    words = ["realdeal", "demo", "-o", str(args.out)]
    for flag, value, default in (
        ("--quick", cfg.quick, d.quick),
        ("--retrain", cfg.retrain, d.retrain),
        ("--seed", cfg.seed, d.seed),
        ("--train-scale", cfg.train_scale, d.train_scale),
        ("--checkpoints", args.checkpoints, d.checkpoints),
        ("--samples", cfg.n_samples, d.n_samples),
        ("--refined-samples", cfg.n_refined_samples, d.n_refined_samples),
        ("--sample-steps", cfg.sample_steps, d.sample_steps),
        ("--refine-sampler", cfg.refine_sampler, d.refine_sampler),
        ("--refine-steps", cfg.refine_steps, d.refine_steps),
        ("--refine-eta", cfg.refine_eta, d.refine_eta),
        ("--refine-spacing", cfg.refine_spacing, d.refine_spacing),
        ("--refine-variance", cfg.refine_variance, d.refine_variance),
        ("--refine-precision", cfg.refine_precision, d.refine_precision),
        ("--max-batch", cfg.max_batch, d.max_batch),
        ("--device", cfg.device, d.device),
    ):
        if value != default:
            words += [flag] if isinstance(value, bool) else [flag, str(value)]
    report = run_demo(args.out, cfg, command=shlex.join(words))
    if args.export_checkpoints:
        export_checkpoints(args.out, args.export_checkpoints)
    print(f"report: {report}")
    return 0
