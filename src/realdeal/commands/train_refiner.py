"""``realdeal train refiner``: the patch-based image-to-image refiner on the common engine."""

from __future__ import annotations

import argparse


def register_train(kinds: argparse._SubParsersAction) -> None:
    from realdeal.commands.train import add_engine_flags

    p = kinds.add_parser(
        "refiner",
        help="train the RealDeal refiner on (original, reconstruction) patch pairs",
        description="Train the patch-based image-to-image diffusion refiner (SPEC §5) on the "
        "train split of a prepared dataset whose reconstructions/ were written by "
        "`realdeal reconstruct`.",
    )
    add_engine_flags(p)
    g = p.add_argument_group("refiner")
    g.add_argument("--window", type=int, help="patch size (paper 64, cpu-small 32)")
    g.add_argument(
        "--positions",
        choices=["uniform", "stratified"],
        help="window positions (default stratified over brain-fraction bins)",
    )
    g.add_argument(
        "--coarse", help="derived-volume kind holding the coarse inputs (default reconstructions)"
    )
    g.add_argument(
        "--target",
        choices=["image", "residual"],
        help="what to diffuse: the image (paper) or the residual x − x̂ (cpu-small default)",
    )
    g.add_argument(
        "--residual-scale",
        type=float,
        help="residual normalisation (default: its std in the brain, measured on the data)",
    )
    g.add_argument("--channels", type=int, nargs="+", help="U-Net channels per level")
    g.add_argument("--num-res-blocks", type=int, help="residual blocks per level")
    g.add_argument("--p-full", type=float, help="probability of the full mask (paper 0.1)")
    g.add_argument("--p-half", type=float, help="probability of a half mask")
    g.add_argument(
        "--p-slabs", type=float, help="probability of 1–3 known face slabs (our plan's shapes)"
    )
    p.set_defaults(func=run_refiner)


def run_refiner(args: argparse.Namespace) -> int:
    from realdeal.commands.train import _report, engine_overrides, resolve_config
    from realdeal.training.distributed import cleanup
    from realdeal.training.refiner import RefinerRunConfig, train_refiner

    over = engine_overrides(args)
    over["window"] = args.window
    over["positions"] = args.positions
    over["coarse"] = args.coarse
    over["target"] = args.target
    over["residual_scale"] = args.residual_scale
    over["unet"] = {"channels": args.channels, "num_res_blocks": args.num_res_blocks}
    over["masks"] = {"p_full": args.p_full, "p_half": args.p_half, "p_slabs": args.p_slabs}
    cfg = resolve_config("refiner", RefinerRunConfig, args, over)
    try:
        res = train_refiner(cfg, args.data, args.out, resume=args.resume)
    finally:
        cleanup()
    _report(res)
    return 0
