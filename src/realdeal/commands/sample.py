"""``realdeal sample``: generate brain volumes with the latent diffusion model.

Writes ``<out>/sample_NNN.nii.gz`` on the prepared dataset's grid and geometry, plus
``sample_config.json`` with everything needed to repeat the run (the checkpoint's sha256
included). Under torchrun the ranks split the sample indices (volume ``i`` always uses
seed + i). Run again into the same folder, the same run continues (volumes already there are
kept); a folder holding samples of another run (other checkpoint, seed, sampler, steps, …) is
refused in one line, as is a second process writing into the folder at the same time.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Literal

from realdeal.commands._checks import check_dataset, check_writable_dir, checkpoint_arg
from realdeal.commands._flags import ConfigFlags, Flag, add_config_flags, on_first_use
from realdeal.config import SAMPLING_STEPS, SEED, bounds, device_arg
from realdeal.diffusion.registry import DEFAULT_SAMPLING, SAMPLERS, default_steps_help, describe


@dataclasses.dataclass(frozen=True)
class SampleOptions:
    """What ``realdeal sample`` draws, with which sampler, and where it computes."""

    n: int = dataclasses.field(default=1, metadata=bounds(1, 100_000))
    """Number of volumes."""
    sampler: str | None = None
    """Reverse process (``None``: the LDM's row of
    :data:`~realdeal.diffusion.registry.DEFAULT_SAMPLING`)."""
    steps: int | None = dataclasses.field(default=None, metadata={"range": SAMPLING_STEPS})
    """Sampling steps (``None``: the sampler's default)."""
    eta: float | None = dataclasses.field(default=None, metadata=bounds(0.0, 1.0, why="DDIM η"))
    """DDIM η (``None``: the default sampling's, or 0 with a sampler named)."""
    seed: int = dataclasses.field(default=0, metadata={"range": SEED})
    """Volume i uses seed + i."""
    data: str | None = None
    """Prepared dataset giving the output geometry (default: the one the LDM was trained on)."""
    device: str = "auto"
    """``auto`` (this rank's GPU if any, else CPU), ``cpu`` or ``cuda[:N]``."""
    precision: Literal["fp32", "bf16", "auto"] = "fp32"
    """Inference precision."""
    raw_weights: bool = False
    """Use the raw instead of the EMA weights."""


_LDM = DEFAULT_SAMPLING["ldm"]
SAMPLE_FLAGS = ConfigFlags(
    SampleOptions,
    (),
    {
        "n": Flag(short="-n"),
        "sampler": Flag(f"reverse process (default: {describe(_LDM)})", choices=list(SAMPLERS)),
        "steps": "sampling steps, at least 1 (default: without --sampler as said there; with "
        f"--sampler {default_steps_help()})",
        "eta": f"DDIM η in [0, 1] (0 = deterministic, 1 = DDPM-like; default {_LDM.eta:g})",
        "seed": Flag(),
        "data": Flag(),
        "device": Flag(type=device_arg),
        "precision": Flag(),
        "raw_weights": Flag(switch=True),
    },
    field_defaults=True,
)
"""The flags of :class:`SampleOptions` (help texts of the sampling flags from the registry)."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sample",
        help="generate volumes with the latent diffusion model",
        description="Sample latents with DDPM, DDIM or DPM-Solver++, undo the latent scaling, "
        "decode, and write NIfTI volumes in the prepared dataset's geometry.",
    )
    on_first_use(p, _add_flags)
    p.set_defaults(func=run, preflight=_preflight)


def _add_flags(p: argparse.ArgumentParser) -> None:
    """``--ldm``, ``-o`` and the flags of :data:`SAMPLE_FLAGS`."""
    p.add_argument(
        "--ldm",
        required=True,
        type=checkpoint_arg,
        help="LDM checkpoint, .pt or .safetensors (it carries its autoencoder), or demo:ldm for "
        "the shipped one",
    )
    p.add_argument("-o", "--out", required=True, help="output folder")
    add_config_flags(p, SAMPLE_FLAGS)


def _preflight(args: argparse.Namespace) -> None:
    check_writable_dir(args.out, "-o/--out")
    if args.data:
        check_dataset(args.data, "--data")


def run(args: argparse.Namespace) -> int:
    import logging
    from pathlib import Path

    from realdeal.data.dataset import PreparedDataset
    from realdeal.errors import ConfigError, InputError
    from realdeal.pipelines.ldm import LatentDiffusionPipeline, ldm_sampling, save_samples
    from realdeal.runtime.distributed import inference_group
    from realdeal.training.distributed import exclusive_folder
    from realdeal.utils.fs import sha256_file

    opts = SAMPLE_FLAGS.build(args)
    if opts.n < 1:
        raise ConfigError("--n must be at least 1")
    # bad sampler settings (e.g. --eta nan) fail here, before the checkpoint loads
    chosen = ldm_sampling(sampler=opts.sampler, steps=opts.steps, eta=opts.eta).resolve(
        DEFAULT_SAMPLING["ldm"]
    )
    sampler, eta = chosen.sampler, chosen.eta
    # Under torchrun every rank loads the model on its own device and writes its share.
    with inference_group(opts.device) as dist:
        pipe = LatentDiffusionPipeline.from_checkpoint(
            args.ldm, dist.device, ema=not opts.raw_weights
        )
        ckpt = pipe.checkpoint
        if not opts.data and not (ckpt.dataset and Path(ckpt.dataset).is_dir()):
            where = (
                f"the dataset it was trained on ({ckpt.dataset}) is not here"
                if ckpt.dataset
                else "it names no dataset"
            )
            raise InputError(
                args.ldm, f"{where}; pass --data, a prepared dataset that gives the output geometry"
            )
        ds = PreparedDataset(opts.data or ckpt.dataset)
        first = ds.image_path(ds.ids()[0])
        if not opts.data and not first.is_file():  # e.g. a dataset.json carried to train on latents
            raise InputError(
                args.ldm,
                f"the dataset it was trained on ({ckpt.dataset}) has no images here ({first} is "
                "missing); pass --data, a prepared dataset that gives the output geometry",
            )
        reference = ds.load_image(ds.ids()[0])
        settings = {
            "ldm": str(args.ldm),
            "step": int(ckpt.step),
            "preset": ckpt.preset or None,
            "n": opts.n,
            "sampler": sampler,
            "steps": opts.steps,
            "eta": eta,
            "seed": opts.seed,
            "precision": opts.precision,
            "ema": not opts.raw_weights,
            "geometry_from": str(ds.root),
            "ldm_sha256": sha256_file(args.ldm),
        }
        # one realdeal process writes into the folder (rank 0 holds the lock for every rank)
        with exclusive_folder(args.out, dist):
            paths = save_samples(
                pipe,
                opts.n,
                args.out,
                reference,
                settings,
                sampler=opts.sampler,
                steps=opts.steps,
                eta=opts.eta,
                seed=opts.seed,
                precision=opts.precision,
                dist=dist,
            )
    if dist.is_main:
        logging.getLogger("realdeal.sample").info("%d volumes written to %s", len(paths), args.out)
    return 0
