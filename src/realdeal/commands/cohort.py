"""``realdeal cohort``: build the built-in synthetic cohort (see :mod:`realdeal.data.cohort`)."""

from __future__ import annotations

import argparse

from realdeal.commands._checks import check_writable_dir
from realdeal.config import field_arg

COHORT = "realdeal.data.cohort:CohortConfig"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cohort",
        help="build the built-in synthetic T1w cohort from Colin27/MNI152",
        description="Build N synthetic subjects (T1w + FreeSurfer-coded label map) from the real "
        "brains available offline: random affine/elastic deformation, bias field, contrast, Rician noise.",
    )
    p.add_argument(
        "out", help="output folder (created; must be empty or an earlier cohort with --overwrite)"
    )
    p.add_argument(
        "-n",
        "--n-subjects",
        type=field_arg(int, COHORT, "n_subjects"),
        help="number of subjects (default 16)",
    )
    p.add_argument(
        "--spacing",
        type=field_arg(float, COHORT, "spacing"),
        help="isotropic voxel size in mm (default 2.0; 1.0 available)",
    )
    p.add_argument(
        "--shape",
        type=field_arg(int, COHORT, "shape"),
        nargs=3,
        metavar=("X", "Y", "Z"),
        help="grid shape (default: 192×224×192 mm at --spacing)",
    )
    p.add_argument(
        "--seed",
        type=field_arg(int, COHORT, "seed"),
        help="random seed (default 0); same seed, same cohort",
    )
    p.add_argument(
        "--sources",
        choices=["auto", "colin27", "mni152", "both"],
        help="source brains (default auto)",
    )
    p.add_argument(
        "--colin-dir",
        help="folder with ch2bet.nii.gz and aal.nii.gz (default /usr/share/mricron/templates)",
    )
    p.add_argument(
        "--noise",
        type=field_arg(float, COHORT, "noise_sigma_1mm"),
        dest="noise_sigma_1mm",
        help="noise σ relative to white matter at 1 mm (default 0.045)",
    )
    p.add_argument(
        "--workers", type=field_arg(int, COHORT, "workers"), help="processes (default 2)"
    )
    p.add_argument("--config", help="YAML/JSON CohortConfig; flags override it")
    p.add_argument("--overwrite", action="store_true", help="replace an existing cohort in OUT")
    p.add_argument("--no-figure", action="store_true", help="skip the slice figure cohort.png")
    p.set_defaults(func=run, preflight=lambda a: check_writable_dir(a.out, "OUT"))


def run(args: argparse.Namespace) -> int:
    import logging

    from realdeal.config import load_config, replace
    from realdeal.data.cohort import CohortConfig, build_cohort
    from realdeal.report.figures import cohort_figure

    log = logging.getLogger("realdeal.cohort")
    cfg = load_config(CohortConfig, args.config) if args.config else CohortConfig()
    cfg = replace(
        cfg,
        n_subjects=args.n_subjects,
        spacing=args.spacing,
        shape=tuple(args.shape) if args.shape else None,
        seed=args.seed,
        sources=args.sources,
        colin_dir=args.colin_dir,
        noise_sigma_1mm=args.noise_sigma_1mm,
        workers=args.workers,
    )
    result = build_cohort(args.out, cfg, overwrite=args.overwrite)
    log.info("%d subjects in %s (%.1f s)", len(result.subjects), result.folder, result.seconds)
    if not args.no_figure:
        fig = cohort_figure(result.folder)
        log.info("slice figure: %s", fig)
    return 0
