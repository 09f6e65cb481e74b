"""``realdeal cohort``: build the built-in synthetic cohort (see :mod:`realdeal.data.cohort`)."""

from __future__ import annotations

import argparse

from realdeal.commands._checks import check_writable_dir
from realdeal.commands._flags import ConfigFlags, Flag, add_config_flags, on_first_use

COHORT_FLAGS = ConfigFlags(
    "realdeal.data.cohort:CohortConfig",
    (),
    {
        "n_subjects": Flag("number of subjects", short="-n"),
        "first_subject": "index of the first subject (sub-XXX and its random draws): a cohort "
        "built with the same seed and first subject = its size grows it with new subjects",
        "spacing": "isotropic voxel size in mm (1.0 available)",
        "shape": Flag("grid shape (default: 192×224×192 mm at --spacing)", metavar=("X", "Y", "Z")),
        "seed": "random seed; same seed, same cohort",
        "sources": "source brains",
        "colin_dir": "folder with ch2bet.nii.gz and aal.nii.gz (default "
        "/usr/share/mricron/templates)",
        "noise_sigma_1mm": Flag(
            "noise σ relative to white matter at 1 mm", name="--noise", metavar="NOISE_SIGMA_1MM"
        ),
        "workers": "processes",
    },
)
"""The flags of :class:`~realdeal.data.cohort.CohortConfig`: each given one replaces the
value of ``--config`` (or the default)."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cohort",
        help="build the built-in synthetic T1w cohort from Colin27/MNI152",
        description="Build N synthetic subjects (T1w + FreeSurfer-coded label map) from the real "
        "brains available offline: random affine/elastic deformation, bias field, contrast, Rician noise.",
    )
    on_first_use(p, _add_flags)  # CohortConfig's module imports numpy
    p.set_defaults(func=run, preflight=lambda a: check_writable_dir(a.out, "OUT"))


def _add_flags(p: argparse.ArgumentParser) -> None:
    """``OUT``, the flags of :data:`COHORT_FLAGS`, ``--config``, ``--overwrite`` and
    ``--no-figure``."""
    p.add_argument(
        "out", help="output folder (created; must be empty or an earlier cohort with --overwrite)"
    )
    add_config_flags(p, COHORT_FLAGS)
    p.add_argument("--config", help="YAML/JSON CohortConfig; flags override it")
    p.add_argument("--overwrite", action="store_true", help="replace an existing cohort in OUT")
    p.add_argument("--no-figure", action="store_true", help="skip the slice figure cohort.png")


def run(args: argparse.Namespace) -> int:
    import logging

    from realdeal.config import load_config
    from realdeal.data.cohort import CohortConfig, build_cohort
    from realdeal.report.figures import cohort_figure

    log = logging.getLogger("realdeal.cohort")
    cfg = load_config(CohortConfig, args.config) if args.config else CohortConfig()
    cfg = COHORT_FLAGS.build(args, cfg)
    result = build_cohort(args.out, cfg, overwrite=args.overwrite)
    log.info("%d subjects in %s (%.1f s)", len(result.subjects), result.folder, result.seconds)
    if not args.no_figure:
        fig = cohort_figure(result.folder)
        log.info("slice figure: %s", fig)
    return 0
