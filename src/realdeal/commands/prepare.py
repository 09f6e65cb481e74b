"""``realdeal prepare``: raw T1w NIfTI files → a prepared dataset (see :mod:`realdeal.data.dataset`)."""

from __future__ import annotations

import argparse

from realdeal.commands._checks import (
    check_intensity_source,
    check_writable_dir,
    checkpoint_arg,
)
from realdeal.commands._flags import ConfigFlags, Flag, add_config_flags, on_first_use
from realdeal.errors import ConfigError


def _one_or_three(values: list[float]) -> list[float]:
    """``--spacing MM`` or ``--spacing X Y Z``: three voxel sizes."""
    if len(values) not in (1, 3):
        raise ConfigError("--spacing takes one or three values")
    return values * 3 if len(values) == 1 else values


PREPARE_FLAGS = ConfigFlags(
    "realdeal.data.dataset:PrepareConfig",
    (),
    {
        "shape": Flag("prepared grid", metavar=("X", "Y", "Z")),
        "spacing": Flag(
            "resample to this voxel size (one or three values)",
            metavar="MM",
            nargs="+",
            convert=_one_or_three,
        ),
        "window": "window size of the brain-fraction maps",
        "low_percentile": "foreground percentile mapped to -1",
        "high_percentile": "foreground percentile mapped to +1",
        "test_fraction": "fraction of subjects held out",
        "seed": "split seed",
    },
)
"""The flags of :class:`~realdeal.data.dataset.PrepareConfig`: each given one replaces the
value of ``--config`` (or the default)."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prepare",
        help="preprocess T1w NIfTI files into a prepared dataset",
        description="Reorient to RAS, optionally resample, scale intensities with one global "
        "(low, high) pair from the training set, crop/pad around the brain, split 80/20, and "
        "precompute brain-fraction maps of every window position.",
    )
    on_first_use(p, _add_flags)  # PrepareConfig's module imports numpy
    p.set_defaults(func=run, preflight=_preflight)


def _add_flags(p: argparse.ArgumentParser) -> None:
    """Inputs, ``-o``, ``--labels``, the flags of :data:`PREPARE_FLAGS`, ``--split``,
    ``--intensity-from``, ``--config`` and ``--overwrite``."""
    p.add_argument(
        "inputs", nargs="+", help="folder(s), glob pattern(s) (quote them) or NIfTI files"
    )
    p.add_argument("-o", "--out", required=True, help="prepared dataset folder to create")
    p.add_argument(
        "--labels",
        help="label-map pattern with {dir}, {stem}, {id}, e.g. '{dir}/{id}_dseg.nii.gz' or '{dir}/aparc+aseg.nii.gz'",
    )
    add_config_flags(p, PREPARE_FLAGS)
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


def _preflight(args: argparse.Namespace) -> None:
    check_writable_dir(args.out, "-o/--out")
    check_intensity_source(args.intensity_from, "--intensity-from")
    if args.split:
        from realdeal.data.dataset import read_split_csv

        read_split_csv(args.split, [])  # its form; the subjects are matched when they are found


def run(args: argparse.Namespace) -> int:
    import logging

    from realdeal.config import load_config
    from realdeal.data.dataset import PrepareConfig, prepare_dataset

    cfg = load_config(PrepareConfig, args.config) if args.config else PrepareConfig()
    cfg = PREPARE_FLAGS.build(args, cfg)
    inputs = args.inputs if len(args.inputs) > 1 else args.inputs[0]
    ds = prepare_dataset(
        inputs, args.out, cfg, labels=args.labels, split_csv=args.split,
        overwrite=args.overwrite, intensity_from=args.intensity_from,
    )  # fmt: skip
    logging.getLogger("realdeal.prepare").info("%r", ds)
    return 0
