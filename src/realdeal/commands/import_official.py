"""``realdeal import-official``: turn the authors' released checkpoints into realdeal ones.

One command per file (kind detected from keys and shapes, ``--kind`` forces it)::

    realdeal import-official autoencoder_checkpoint.pth -o ae.pt
    realdeal import-official checkpoint750.pth --autoencoder autoencoder_checkpoint.pth -o ldm.pt
    realdeal import-official checkpoint2690.pth -o refiner.pt

The results work with ``realdeal reconstruct``, ``sample`` and ``refine`` unchanged. The
output must not be one of the inputs (refused before anything is read); it is written under a
temporary name and renamed into place.
"""

from __future__ import annotations

import argparse

from realdeal.commands._checks import check_dataset, check_writable_file
from realdeal.config import option_arg


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import-official",
        help="convert the authors' released checkpoints (autoencoder, LDM, refiner)",
        description="Convert autoencoder_checkpoint.pth, checkpoint750.pth (LDM) or "
        "checkpoint2690.pth (refiner) from the authors' RealDeal release into a realdeal "
        "checkpoint with its configs. Files are read with weights_only=True.",
    )
    p.add_argument("checkpoint", help="released .pth file")
    p.add_argument("-o", "--out", required=True, help="realdeal checkpoint to write (.pt)")
    p.add_argument(
        "--kind",
        choices=["autoencoder", "ldm", "refiner"],
        help="force the kind (default: detected from the keys and shapes)",
    )
    p.add_argument(
        "--autoencoder",
        help="LDM only: autoencoder_checkpoint.pth (or its realdeal import); the LDM checkpoint "
        "carries its decoder",
    )
    p.add_argument(
        "--data",
        help="prepared dataset to record: the LDM's default output geometry for `realdeal "
        "sample`; the refiner's intensity scaler and voxel size",
    )
    p.add_argument(
        "--image-shape",
        type=option_arg(int, "import-official --image-shape"),
        nargs=3,
        metavar=("X", "Y", "Z"),
        help="LDM only: grid of the generated images (default 224 288 224)",
    )
    p.add_argument(
        "--window",
        type=option_arg(int, "import-official --window"),
        help="refiner only: window side in voxels (default 64)",
    )
    p.add_argument(
        "--norm-groups",
        type=option_arg(int, "import-official --norm-groups"),
        help="GroupNorm groups of the U-Net (default: from the refiner's norm buffers, else 32)",
    )
    p.add_argument(
        "--head-channels",
        type=option_arg(int, "import-official --head-channels"),
        nargs="+",
        metavar="H",
        help="LDM/refiner: the num_head_channels the U-Net was trained with in MONAI Generative "
        "(one value or one per level; the weights do not show it). Default: one head per "
        "attention level, as in the released configs",
    )
    p.set_defaults(func=run, preflight=_preflight)


def _preflight(args: argparse.Namespace) -> None:
    check_writable_file(args.out, "-o/--out")
    if args.data:
        check_dataset(args.data, "--data")


def run(args: argparse.Namespace) -> int:
    import logging

    from realdeal.official import import_official

    options = {"data": args.data, "norm_num_groups": args.norm_groups}
    if args.image_shape:
        options["image_shape"] = tuple(args.image_shape)
    if args.window:
        options["window"] = args.window
    if args.head_channels:
        heads = tuple(args.head_channels)
        options["num_head_channels"] = heads[0] if len(heads) == 1 else heads
    kind, path = import_official(
        args.checkpoint, args.out, kind=args.kind, autoencoder=args.autoencoder, **options
    )
    logging.getLogger("realdeal.import_official").info(
        "imported %s as a realdeal %s checkpoint: %s", args.checkpoint, kind, path
    )
    return 0
