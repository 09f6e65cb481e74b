"""``realdeal skullstrip``: brain extraction by affine registration of MNI152 (offline)."""

from __future__ import annotations

import argparse

from realdeal.commands._checks import check_output
from realdeal.commands._scan import add_input_flags
from realdeal.config import option_arg


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "skullstrip",
        help="extract the brain from T1w scans with skull (MNI152 affine registration)",
        description="Register nilearn's MNI152 template to each scan (dipy, affine, on a 4 mm grid) and "
        "carry its brain mask back. Good enough for adult T1w scans near MNI shape; for "
        "anything else use a dedicated tool and pass its mask with --brain-mask. Writes "
        "OUT/<name>.nii.gz (brain, same units and header) and OUT/masks/<name>.nii.gz.",
    )
    add_input_flags(p)
    p.add_argument(
        "--spacing",
        type=option_arg(float, "skullstrip --spacing"),
        metavar="MM",
        help="resample to this isotropic voxel size first (the models' training spacing, "
        "e.g. 2 for the demo models)",
    )
    p.add_argument(
        "--labels",
        action="store_true",
        help="also write a rough FreeSurfer-coded label map (white matter, ventricles, "
        "cerebellum by simple rules) to OUT/labels/, for `realdeal evaluate --labels`",
    )
    p.set_defaults(func=run, preflight=lambda a: check_output(a.out, "-o/--out"))


def run(args: argparse.Namespace) -> int:
    from realdeal.data.brain import check_inputs, skullstrip_files
    from realdeal.data.dataset import find_inputs
    from realdeal.errors import ConfigError

    if args.spacing is not None and args.spacing <= 0:
        raise ConfigError("--spacing must be positive")
    files = find_inputs(args.inputs)
    check_inputs(files)
    for r in skullstrip_files(files, args.out, args.spacing, args.labels):
        print(
            f"{r['output']}: brain {r['brain_ml'] / 1000:.2f} L, mask {r['mask']}, {r['seconds']:.1f} s"
        )
    return 0
