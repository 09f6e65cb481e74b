"""``realdeal prepare``: raw T1w NIfTI files → a prepared dataset (see :mod:`realdeal.data.dataset`)."""

from __future__ import annotations

import argparse

from realdeal.commands._checks import (
    check_intensity_source,
    check_writable_dir,
    checkpoint_arg,
)
from realdeal.config import field_arg

PREPARE = "realdeal.data.dataset:PrepareConfig"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prepare",
        help="preprocess T1w NIfTI files into a prepared dataset",
        description="Reorient to RAS, optionally resample, scale intensities with one global "
        "(low, high) pair from the training set, crop/pad around the brain, split 80/20, and "
        "precompute brain-fraction maps of every window position.",
    )
    p.add_argument(
        "inputs", nargs="+", help="folder(s), glob pattern(s) (quote them) or NIfTI files"
    )
    p.add_argument("-o", "--out", required=True, help="prepared dataset folder to create")
    p.add_argument(
        "--labels",
        help="label-map pattern with {dir}, {stem}, {id}, e.g. '{dir}/{id}_dseg.nii.gz' or '{dir}/aparc+aseg.nii.gz'",
    )
    p.add_argument(
        "--shape",
        type=field_arg(int, PREPARE, "shape"),
        nargs=3,
        metavar=("X", "Y", "Z"),
        help="prepared grid (default 224 288 224)",
    )
    p.add_argument(
        "--spacing",
        type=field_arg(float, PREPARE, "spacing"),
        nargs="+",
        metavar="MM",
        help="resample to this voxel size (one or three values)",
    )
    p.add_argument(
        "--window",
        type=field_arg(int, PREPARE, "window"),
        help="window size of the brain-fraction maps (default 64)",
    )
    p.add_argument(
        "--low-percentile",
        type=field_arg(float, PREPARE, "low_percentile"),
        help="foreground percentile mapped to -1 (default 0.5)",
    )
    p.add_argument(
        "--high-percentile",
        type=field_arg(float, PREPARE, "high_percentile"),
        help="foreground percentile mapped to +1 (default 99.5)",
    )
    p.add_argument(
        "--test-fraction",
        type=field_arg(float, PREPARE, "test_fraction"),
        help="fraction of subjects held out (default 0.2)",
    )
    p.add_argument("--seed", type=field_arg(int, PREPARE, "seed"), help="split seed (default 0)")
    p.add_argument(
        "--split", help="CSV with columns subject,split (train/val/test) instead of a random split"
    )
    p.add_argument(
        "--intensity-from",
        metavar="DATASET_OR_CHECKPOINT",
        type=checkpoint_arg,
        help="reuse the (low, high) intensity mapping saved in a prepared dataset or checkpoint "
        "instead of fitting one (new data in an existing model's intensity space)",
    )
    p.add_argument("--config", help="YAML/JSON PrepareConfig; flags override it")
    p.add_argument(
        "--overwrite", action="store_true", help="replace an existing prepared dataset at --out"
    )
    p.set_defaults(func=run, preflight=_preflight)


def _preflight(args: argparse.Namespace) -> None:
    check_writable_dir(args.out, "-o/--out")
    check_intensity_source(args.intensity_from, "--intensity-from")
    if args.split:
        from realdeal.data.dataset import read_split_csv

        read_split_csv(args.split, [])  # its form; the subjects are matched when they are found


def run(args: argparse.Namespace) -> int:
    import logging

    from realdeal.config import load_config, replace
    from realdeal.data.dataset import PrepareConfig, prepare_dataset
    from realdeal.errors import ConfigError

    cfg = load_config(PrepareConfig, args.config) if args.config else PrepareConfig()
    spacing = None
    if args.spacing:
        if len(args.spacing) not in (1, 3):
            raise ConfigError("--spacing takes one or three values")
        spacing = tuple(args.spacing * 3 if len(args.spacing) == 1 else args.spacing)
    cfg = replace(
        cfg,
        shape=tuple(args.shape) if args.shape else None,
        spacing=spacing,
        window=args.window,
        low_percentile=args.low_percentile,
        high_percentile=args.high_percentile,
        test_fraction=args.test_fraction,
        seed=args.seed,
    )
    inputs = args.inputs if len(args.inputs) > 1 else args.inputs[0]
    ds = prepare_dataset(
        inputs, args.out, cfg, labels=args.labels, split_csv=args.split,
        overwrite=args.overwrite, intensity_from=args.intensity_from,
    )  # fmt: skip
    logging.getLogger("realdeal.prepare").info("%r", ds)
    return 0
