"""``realdeal skullstrip``: brain extraction by affine registration of MNI152 (offline)."""

from __future__ import annotations

import argparse
import dataclasses

from realdeal.commands._checks import check_output
from realdeal.commands._flags import ConfigFlags, Flag, add_config_flags, on_first_use
from realdeal.commands._scan import add_input_flags
from realdeal.config import VOXEL_MM


@dataclasses.dataclass(frozen=True)
class SkullstripOptions:
    """How ``realdeal skullstrip`` treats each scan besides extracting its brain."""

    spacing: float | None = dataclasses.field(default=None, metadata={"range": VOXEL_MM})
    """Resample to this isotropic voxel size first (the models' training spacing, e.g. 2 for
    the demo models)."""
    labels: bool = False
    """Also write a rough FreeSurfer-coded label map (white matter, ventricles, cerebellum by
    simple rules) to OUT/labels/, for ``realdeal evaluate --labels``."""


SKULLSTRIP_FLAGS = ConfigFlags(
    SkullstripOptions,
    (),
    {"spacing": Flag(metavar="MM"), "labels": Flag(switch=True)},
    field_defaults=True,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "skullstrip",
        help="extract the brain from T1w scans with skull (MNI152 affine registration)",
        description="Register nilearn's MNI152 template to each scan (dipy, affine, on a 4 mm grid) and "
        "carry its brain mask back. Good enough for adult T1w scans near MNI shape; for "
        "anything else use a dedicated tool and pass its mask with --brain-mask. Writes "
        "OUT/<name>.nii.gz (brain, same units and header) and OUT/masks/<name>.nii.gz.",
    )
    on_first_use(p, _add_flags)
    p.set_defaults(func=run, preflight=lambda a: check_output(a.out, "-o/--out"))


def _add_flags(p: argparse.ArgumentParser) -> None:
    """Inputs, ``-o`` and the flags of :data:`SKULLSTRIP_FLAGS`."""
    add_input_flags(p)
    add_config_flags(p, SKULLSTRIP_FLAGS)


def run(args: argparse.Namespace) -> int:
    from realdeal.data.brain import check_inputs, skullstrip_files
    from realdeal.data.dataset import find_inputs
    from realdeal.errors import ConfigError

    opts = SKULLSTRIP_FLAGS.build(args)
    if opts.spacing is not None and opts.spacing <= 0:
        raise ConfigError("--spacing must be positive")
    files = find_inputs(args.inputs)
    check_inputs(files)
    for r in skullstrip_files(files, args.out, opts.spacing, opts.labels):
        print(
            f"{r['output']}: brain {r['brain_ml'] / 1000:.2f} L, mask {r['mask']}, {r['seconds']:.1f} s"
        )
    return 0
