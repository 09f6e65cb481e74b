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
import dataclasses
from typing import Literal

from realdeal.commands._checks import check_dataset, check_writable_file
from realdeal.commands._flags import ConfigFlags, Flag, add_config_flags, on_first_use
from realdeal.config import GRID, bounds


@dataclasses.dataclass(frozen=True)
class ImportOptions:
    """What ``realdeal import-official`` cannot read from a released file, and what it records."""

    kind: Literal["autoencoder", "ldm", "refiner"] | None = None
    """Force the kind (default: detected from the keys and shapes)."""
    autoencoder: str | None = None
    """LDM only: autoencoder_checkpoint.pth (or its realdeal import); the LDM checkpoint
    carries its decoder."""
    data: str | None = None
    """Prepared dataset to record: the LDM's default output geometry for ``realdeal sample``;
    the refiner's intensity scaler and voxel size."""
    image_shape: tuple[int, int, int] | None = dataclasses.field(
        default=None, metadata={"range": GRID}
    )
    """LDM only: grid of the generated images (default 224 288 224)."""
    window: int | None = dataclasses.field(default=None, metadata=bounds(4, 1024))
    """Refiner only: window side in voxels (default 64)."""
    norm_groups: int | None = dataclasses.field(default=None, metadata=bounds(1, 1024))
    """GroupNorm groups of the U-Net (default: from the refiner's norm buffers, else 32)."""
    head_channels: tuple[int, ...] | None = dataclasses.field(
        default=None, metadata=bounds(0, 8192, why="0 = no attention")
    )
    """LDM/refiner: the num_head_channels the U-Net was trained with in MONAI Generative (one
    value or one per level; the weights do not show it). Default: one head per attention
    level, as in the released configs."""


IMPORT_FLAGS = ConfigFlags(
    ImportOptions,
    (),
    {
        "kind": Flag(),
        "autoencoder": Flag(),
        "data": Flag(),
        "image_shape": Flag(metavar=("X", "Y", "Z")),
        "window": Flag(),
        "norm_groups": Flag(),
        "head_channels": Flag(metavar="H"),
    },
    field_defaults=True,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import-official",
        help="convert the authors' released checkpoints (autoencoder, LDM, refiner)",
        description="Convert autoencoder_checkpoint.pth, checkpoint750.pth (LDM) or "
        "checkpoint2690.pth (refiner) from the authors' RealDeal release into a realdeal "
        "checkpoint with its configs. Files are read with weights_only=True.",
    )
    on_first_use(p, _add_flags)
    p.set_defaults(func=run, preflight=_preflight)


def _add_flags(p: argparse.ArgumentParser) -> None:
    """The released file, ``-o`` and the flags of :data:`IMPORT_FLAGS`."""
    p.add_argument("checkpoint", help="released .pth file")
    p.add_argument("-o", "--out", required=True, help="realdeal checkpoint to write (.pt)")
    add_config_flags(p, IMPORT_FLAGS)


def _preflight(args: argparse.Namespace) -> None:
    check_writable_file(args.out, "-o/--out")
    if args.data:
        check_dataset(args.data, "--data")


def run(args: argparse.Namespace) -> int:
    import logging

    from realdeal.official import import_official

    opts = IMPORT_FLAGS.build(args)
    options = {"data": opts.data, "norm_num_groups": opts.norm_groups}
    if opts.image_shape:
        options["image_shape"] = opts.image_shape
    if opts.window:
        options["window"] = opts.window
    if opts.head_channels:
        heads = opts.head_channels
        options["num_head_channels"] = heads[0] if len(heads) == 1 else heads
    kind, path = import_official(
        args.checkpoint, args.out, kind=opts.kind, autoencoder=opts.autoencoder, **options
    )
    logging.getLogger("realdeal.import_official").info(
        "imported %s as a realdeal %s checkpoint: %s", args.checkpoint, kind, path
    )
    return 0
