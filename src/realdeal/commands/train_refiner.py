"""``realdeal train refiner``: the patch-based image-to-image refiner on the common engine."""

from __future__ import annotations

import argparse

from realdeal.commands._flags import ConfigFlags, add_config_flags, config_overrides
from realdeal.commands.train import add_engine_flags, resolve_config, train_and_report

REFINER_FLAGS = (
    ConfigFlags(
        "realdeal.presets:RefinerRunConfig",
        (),
        {
            "window": "patch size (voxels per side)",
            "positions": "window positions: uniform, or stratified over brain-fraction bins",
            "coarse": "derived-volume kind holding the coarse inputs",
            "target": "what to diffuse: the image or the residual x − x̂",
            "residual_scale": "residual normalisation (default: its std in the brain, measured "
            "on the data)",
        },
        "refiner",
    ),
    ConfigFlags(
        "realdeal.models.unet:UNetConfig",
        ("unet",),
        {"channels": "U-Net channels per level", "num_res_blocks": "residual blocks per level"},
        "refiner",
    ),
    ConfigFlags(
        "realdeal.inference.masks:MaskConfig",
        ("masks",),
        {
            "p_full": "probability of the full mask (the paper's value)",
            "p_half": "probability of a half mask",
            "p_slabs": "probability of 1–3 known face slabs (our plan's shapes)",
        },
        "refiner",
    ),
)


def register_train(kinds: argparse._SubParsersAction) -> None:
    p = kinds.add_parser(
        "refiner",
        help="train the RealDeal refiner on (original, reconstruction) patch pairs",
        description="Train the patch-based image-to-image diffusion refiner (paper §2.2) on the "
        "train split of a prepared dataset whose reconstructions/ were written by "
        "`realdeal reconstruct`.",
    )
    add_engine_flags(p)
    add_config_flags(p, *REFINER_FLAGS)
    p.set_defaults(func=run_refiner)


def run_refiner(args: argparse.Namespace) -> int:
    from realdeal.presets import RefinerRunConfig
    from realdeal.training.refiner import train_refiner

    cfg = resolve_config("refiner", RefinerRunConfig, args, config_overrides(args))
    return train_and_report(train_refiner, cfg, args.data, args.out, resume=args.resume)
