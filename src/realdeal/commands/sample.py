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

from realdeal.commands._checks import check_dataset, check_writable_dir, checkpoint_arg
from realdeal.config import device_arg, option_arg
from realdeal.diffusion.registry import DEFAULT_SAMPLING, SAMPLERS, default_steps_help, describe


def register(sub: argparse._SubParsersAction) -> None:
    default = DEFAULT_SAMPLING["ldm"]
    p = sub.add_parser(
        "sample",
        help="generate volumes with the latent diffusion model",
        description="Sample latents with DDPM, DDIM or DPM-Solver++, undo the latent scaling, "
        "decode, and write NIfTI volumes in the prepared dataset's geometry.",
    )
    p.add_argument(
        "--ldm",
        required=True,
        type=checkpoint_arg,
        help="LDM checkpoint, .pt or .safetensors (it carries its autoencoder), or demo:ldm for "
        "the shipped one",
    )
    p.add_argument("-o", "--out", required=True, help="output folder")
    p.add_argument(
        "-n", "--n", type=option_arg(int, "sample --n"), default=1, help="number of volumes"
    )
    p.add_argument(
        "--sampler",
        choices=list(SAMPLERS),
        help=f"reverse process (default: {describe(default)})",
    )
    p.add_argument(
        "--steps",
        type=option_arg(int, "sample --steps"),
        help="sampling steps, at least 1 (default: without --sampler as said there; with "
        f"--sampler {default_steps_help()})",
    )
    p.add_argument(
        "--eta",
        type=option_arg(float, "sample --eta"),
        help=f"DDIM η in [0, 1] (0 = deterministic, 1 = DDPM-like; default {default.eta:g})",
    )
    p.add_argument(
        "--seed", type=option_arg(int, "sample --seed"), default=0, help="volume i uses seed + i"
    )
    p.add_argument(
        "--data",
        help="prepared dataset giving the output geometry (default: the one the LDM was trained on)",
    )
    p.add_argument(
        "--device",
        type=device_arg,
        default="auto",
        help="auto (this rank's GPU if any, else CPU), cpu or cuda[:N]",
    )
    p.add_argument(
        "--precision", choices=["fp32", "bf16", "auto"], default="fp32", help="inference precision"
    )
    p.add_argument(
        "--raw-weights", action="store_true", help="use the raw instead of the EMA weights"
    )
    p.set_defaults(func=run, preflight=_preflight)


def _preflight(args: argparse.Namespace) -> None:
    check_writable_dir(args.out, "-o/--out")
    if args.data:
        check_dataset(args.data, "--data")


def run(args: argparse.Namespace) -> int:
    import logging

    from realdeal.data.dataset import PreparedDataset
    from realdeal.errors import ConfigError
    from realdeal.pipelines.ldm import LatentDiffusionPipeline, ldm_sampling, save_samples
    from realdeal.runtime.distributed import inference_group
    from realdeal.training.distributed import exclusive_folder
    from realdeal.utils.fs import sha256_file

    if args.n < 1:
        raise ConfigError("--n must be at least 1")
    # bad sampler settings (e.g. --eta nan) fail here, before the checkpoint loads
    chosen = ldm_sampling(sampler=args.sampler, steps=args.steps, eta=args.eta).resolve(
        DEFAULT_SAMPLING["ldm"]
    )
    sampler, eta = chosen.sampler, chosen.eta
    # Under torchrun every rank loads the model on its own device and writes its share.
    with inference_group(args.device) as dist:
        pipe = LatentDiffusionPipeline.from_checkpoint(
            args.ldm, dist.device, ema=not args.raw_weights
        )
        ckpt = pipe.checkpoint
        ds = PreparedDataset(args.data or ckpt.dataset)
        reference = ds.load_image(ds.ids()[0])
        settings = {
            "ldm": str(args.ldm),
            "step": int(ckpt.step),
            "preset": ckpt.preset or None,
            "n": args.n,
            "sampler": sampler,
            "steps": args.steps,
            "eta": eta,
            "seed": args.seed,
            "precision": args.precision,
            "ema": not args.raw_weights,
            "geometry_from": str(ds.root),
            "ldm_sha256": sha256_file(args.ldm),
        }
        # one realdeal process writes into the folder (rank 0 holds the lock for every rank)
        with exclusive_folder(args.out, dist):
            paths = save_samples(
                pipe,
                args.n,
                args.out,
                reference,
                settings,
                sampler=args.sampler,
                steps=args.steps,
                eta=args.eta,
                seed=args.seed,
                precision=args.precision,
                dist=dist,
            )
    if dist.is_main:
        logging.getLogger("realdeal.sample").info("%d volumes written to %s", len(paths), args.out)
    return 0
