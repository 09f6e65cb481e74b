"""``realdeal refine``: refine coarse NIfTI volumes with a trained refiner."""

from __future__ import annotations

import argparse

from realdeal.commands._checks import check_output, checkpoint_arg
from realdeal.commands._flags import ConfigFlags, Flag, add_config_flags, on_first_use
from realdeal.commands._scan import SCAN_FLAGS, add_input_flags
from realdeal.config import device_arg
from realdeal.diffusion.registry import (
    DEFAULT_SAMPLING,
    SAMPLERS,
    SPACINGS,
    VARIANCES,
    default_steps_help,
    describe,
)

REFINE_FLAGS = ConfigFlags(
    "realdeal.pipelines.refiner:RefineSettings",
    (),
    {
        "sampler": Flag(
            f"default: {describe(DEFAULT_SAMPLING['residual'])} for a residual (cpu-small) "
            f"refiner; {describe(DEFAULT_SAMPLING['image'])} for an image (paper) refiner",
            choices=list(SAMPLERS),
        ),
        "steps": "reverse steps, at least 1 (default: without --sampler as said there; with "
        f"--sampler {default_steps_help()})",
        "eta": "DDIM η in [0, 1] (0 deterministic, 1 DDPM-like; default: without --sampler as "
        "said there, else 0)",
        "spacing": Flag(
            "timestep spacing: linear, or quadratic (steps denser toward t = 0; default: "
            "without --sampler as said there, else linear)",
            choices=SPACINGS,
        ),
        "variance": Flag(
            "DDIM step variance: fixed, or analytic (adds the noise a large step loses to "
            "x0's uncertainty; default: without --sampler as said there, else fixed)",
            choices=VARIANCES,
        ),
        "strength": "in (0, 1]: start from the coarse input noised to strength·T (SDEdit) "
        "instead of pure noise (1 = the paper)",
        "overlap": "window overlap in voxels (default a quarter window)",
        "max_batch": "windows per network call at most (bounds memory)",
        "traversal": "window traversal: wavefront (ours) or official (the authors'); "
        "--schedule is the deprecated old name",
        "skip_background": Flag(
            "diffuse pure-background windows too", name="--no-skip-background", switch=True
        ),
        "seed": "random seed",
        "precision": Flag(
            "network precision; auto: bf16 on CUDA (measured 1.34x faster than fp32 on an "
            "H100) and on CPUs with native bf16 (2.2x faster on 2 cores), else fp32",
            choices=["fp32", "bf16", "fp16", "auto"],
        ),
        "compile": Flag(
            "torch.compile the network (backend default inductor), every call padded to "
            "--max-batch windows: on an H100 a full HCP volume at 20 steps took 41 s instead "
            "of 61 s (bf16, --max-batch 12) after 104 s of compilation once, so worth it for "
            "many volumes or steps (default off)",
            metavar="BACKEND",
            nargs="?",
            const="inductor",
        ),
        **SCAN_FLAGS,
        "resample": Flag("resample inputs whose voxel size differs from training", switch=True),
        "batch_volumes": "refine this many consecutive inputs together: their windows share "
        "network calls (up to --max-batch); under torchrun ranks take such groups in turn",
    },
)
"""The flags of :class:`~realdeal.pipelines.refiner.RefineSettings`: each given one replaces
the settings' default (sampling defaults: by the refiner's target, the registry's table)."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "refine",
        help="refine coarse volumes (reconstructions, LDM samples, any generator's output)",
        description="Restore detail in coarse volumes window by window, growing out from the "
        "brain's centre, with a trained refiner checkpoint. Outputs keep each input's "
        "orientation, affine and header; refine.json beside them records plan, timings and seam scores. "
        "Runs under torchrun (one process per GPU; the ranks split the inputs).",
    )
    on_first_use(p, _add_flags)  # RefineSettings' module imports torch
    p.set_defaults(func=run, preflight=_preflight)


def _add_flags(p: argparse.ArgumentParser) -> None:
    """Inputs, ``-o``, ``--checkpoint``, the flags of :data:`REFINE_FLAGS`, ``--device`` and
    ``--plan-only`` (and the hidden old name ``--schedule`` of ``--traversal``)."""
    add_input_flags(p)
    p.add_argument(
        "--checkpoint",
        required=True,
        type=checkpoint_arg,
        help="refiner checkpoint, .pt or .safetensors (realdeal train refiner), or demo:refiner "
        "for the shipped one",
    )
    add_config_flags(p, REFINE_FLAGS)
    p.add_argument(
        "--device",
        type=device_arg,
        default="auto",
        help="auto (this rank's GPU if any, else CPU), cpu, cuda, cuda:1 …",
    )
    p.add_argument(
        "--plan-only",
        action="store_true",
        help="print the plan (waves, windows, redundancy) and exit",
    )
    traversal = p._option_string_actions["--traversal"]
    p.add_argument(
        "--schedule", dest=traversal.dest, choices=traversal.choices, help=argparse.SUPPRESS
    )


def _preflight(args: argparse.Namespace) -> None:
    if not args.plan_only:
        check_output(args.out, "-o/--out")


def run(args: argparse.Namespace) -> int:
    from realdeal.data.brain import check_inputs
    from realdeal.data.dataset import find_inputs

    check_inputs(find_inputs(args.inputs), args.brain_mask)  # bad input: fail before torch loads

    from realdeal.pipelines.refiner import format_score, refine_paths
    from realdeal.runtime.distributed import inference_group

    settings = REFINE_FLAGS.build(args)
    with inference_group(args.device) as dist, _one_writer(args, dist):
        records = refine_paths(
            args.checkpoint, args.inputs, args.out, settings, args.device, args.plan_only, dist
        )
    if not dist.is_main:  # rank 0 reports for every rank
        return 0
    if args.plan_only:
        for r in records:
            print(f"## {r['input']}\n\n{r['plan']}\n")
    else:
        for r in records:
            print(
                f"{r['output']}: {r['seconds']:.1f} s, {r['plan']['windows_run']} windows in "
                f"{r['plan']['waves']} waves, {r['unet_evaluations']} U-Net evaluations, "
                f"redundancy {format_score(r['plan']['redundancy'], '.2f')}, seam score "
                f"{format_score(r['seam_score_output'])} "
                f"(input {format_score(r['seam_score_input'])})"
            )
    return 0


def _one_writer(args: argparse.Namespace, dist):
    """While refining into a folder (``-o DIR``), be the one realdeal process writing there:
    a second one is refused in one line ("DIR is in use by another realdeal process (pid N)");
    under torchrun rank 0 holds the lock for every rank. A single output file and
    ``--plan-only`` (which writes nothing) take no lock."""
    import contextlib

    from realdeal.data.dataset import find_inputs
    from realdeal.data.io import is_nifti_path
    from realdeal.training.distributed import exclusive_folder

    single = is_nifti_path(args.out) and len(find_inputs(args.inputs)) == 1
    if args.plan_only or single:
        return contextlib.nullcontext()
    return exclusive_folder(args.out, dist)
