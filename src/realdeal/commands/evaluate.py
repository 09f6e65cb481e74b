"""``realdeal evaluate``: the paper's realism metrics over sets of NIfTI volumes.

Paired mode: originals vs named candidate sets (``--candidate recon=DIR``), with FreeSurfer
label maps (``--labels DIR``) or, without them, automatic labels of each original (brain =
foreground; white matter and ventricles from dipy's HMRF tissue classes; cerebellum from the
AAL atlas via affine registration of the MNI152 template; written to ``OUT/labels/``);
unpaired mode: real vs generated sets. Files are matched by
name (subject id = file name without ``.nii``/``.nii.gz``). Writes ``tables.md``,
``summary.csv``, ``per_subject.csv`` and ``results.json`` to ``--out`` and prints the tables.
Memorization mode: each generated volume's similarity to its nearest training volume
(``--train``), against held-out subjects' (``--held-out``), which coverage and FID cannot
see (:mod:`realdeal.metrics.memorization`); writes ``memorization.json``, ``per_subject.csv``
and ``tables.md``.

Under ``torchrun`` (one node or several) the ranks split the volumes: each computes the
values or features of its share, rank 0 gathers them, writes the tables (equal to one
process's) and prints them.
"""

from __future__ import annotations

import argparse

from realdeal.commands._checks import check_writable_dir
from realdeal.commands._flags import on_first_use
from realdeal.config import device_arg, field_arg, option_arg

PAIRED = "realdeal.metrics.suite:PairedConfig"


def _named(value: str) -> tuple[str, str]:
    name, sep, path = value.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {value!r}")
    return name, path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="realism metrics (LPIPS, HOG, noise KL, sharpness, FID, coverage/density) as paper tables",
        description=__doc__,
    )
    p.add_argument(
        "mode",
        choices=("paired", "unpaired", "memorization"),
        help="paired: originals vs candidates; unpaired: real vs generated; memorization: "
        "generated vs the generator's training set (copies of training subjects)",
    )
    p.add_argument("--out", required=True, help="output folder for tables, CSV and JSON")
    _add_paired_flags(p.add_argument_group("paired mode"))
    _add_unpaired_flags(p.add_argument_group("unpaired mode (--generated also for memorization)"))
    _add_memorization_flags(p.add_argument_group("memorization mode"))
    _add_common_flags(p.add_argument_group("common"))
    on_first_use(p, _state_the_copy_rule)
    p.set_defaults(func=run, preflight=_preflight)


def _preflight(args: argparse.Namespace) -> None:
    """``--out`` writable; torchvision working where LPIPS or FID will run."""
    check_writable_dir(args.out, "--out")
    from realdeal.runtime.environment import check_torchvision

    if args.mode == "paired" and not args.no_lpips:
        check_torchvision("LPIPS (--no-lpips skips it)")
    elif args.mode == "unpaired" and args.features == "inception":
        check_torchvision("FID (--features patchstats avoids it)")


def _add_paired_flags(g: argparse._ArgumentGroup) -> None:
    """Originals, candidate sets, labels and the paired-only metrics' options."""
    g.add_argument(
        "--originals",
        nargs="+",
        metavar="PATH",
        help="folder(s) or NIfTI files of the original images",
    )
    g.add_argument(
        "--candidate",
        action="append",
        type=_named,
        default=[],
        metavar="NAME=PATH",
        help="a candidate set (folder), e.g. recon=DIR; repeatable",
    )
    g.add_argument(
        "--labels",
        nargs="+",
        metavar="PATH",
        help="FreeSurfer label maps matching the originals (default: automatic labels from "
        "the originals, written to OUT/labels/)",
    )
    g.add_argument(
        "--no-lpips", action="store_true", help="skip LPIPS (no pretrained networks needed)"
    )
    g.add_argument(
        "--seam-window",
        type=field_arg(int, PAIRED, "seam_window"),
        metavar="N",
        help="window side of the refiner whose seams to score (default: 64 if every side "
        "≥ 192, else 32)",
    )
    g.add_argument(
        "--noise-backend",
        choices=("dipy", "ants"),
        default="dipy",
        help="NLM denoiser for noise KL",
    )


def _add_unpaired_flags(g: argparse._ArgumentGroup) -> None:
    """Real and generated sets, real labels and the feature space."""
    g.add_argument(
        "--real", nargs="+", metavar="PATH", help="folder(s) or NIfTI files of real images"
    )
    g.add_argument(
        "--generated",
        action="append",
        type=_named,
        default=[],
        metavar="NAME=PATH",
        help="a generated set (folder), e.g. ldm=DIR; repeatable",
    )
    g.add_argument(
        "--real-labels",
        nargs="+",
        metavar="PATH",
        help="label maps of the real images (else a threshold mask)",
    )
    g.add_argument(
        "--features",
        choices=("inception", "patchstats"),
        default="inception",
        help="feature space: FID's Inception (paper) or weight-free patch statistics (reported as FD-patchstats)",
    )


def _add_memorization_flags(g: argparse._ArgumentGroup) -> None:
    """The generator's training set and the held-out baseline."""
    g.add_argument(
        "--train",
        nargs="+",
        metavar="PATH",
        help="folder(s) or NIfTI files the generator was trained on (for an LDM: their "
        "autoencoder reconstructions, the space its samples are decoded in)",
    )
    g.add_argument(
        "--held-out",
        nargs="+",
        metavar="PATH",
        help="real subjects it never saw, prepared the same way: the baseline",
    )


def _state_the_copy_rule(p: argparse.ArgumentParser) -> None:
    """``--held-out``'s help ends with the copy rule as the metric's module states it
    (:data:`realdeal.metrics.memorization.COPY_RULE`; imported on first use of the parser, as
    numpy and scipy come with it)."""
    from realdeal.metrics.memorization import COPY_RULE

    action = p._option_string_actions["--held-out"]
    action.help = f"{action.help}; {COPY_RULE}"


def _add_common_flags(g: argparse._ArgumentGroup) -> None:
    """Patch sampling, intervals, workers, pretrained weights and device."""
    g.add_argument(
        "--patches",
        type=field_arg(int, PAIRED, "n_patches_2d"),
        default=1000,
        help="2D patches per axis and image (paper: 1000)",
    )
    g.add_argument(
        "--patch-size",
        type=field_arg(int, PAIRED, "patch_size_2d"),
        default=64,
        help="2D patch side in voxels (paper: 64)",
    )
    g.add_argument("--seed", type=field_arg(int, PAIRED, "seed"), default=0, help="random seed")
    g.add_argument(
        "--bootstrap",
        type=field_arg(int, PAIRED, "n_bootstrap"),
        default=None,
        help="interval resamples: paired, bootstrap resamples of subjects (default 1000); "
        "unpaired, leave-one-subject-out sets of the jackknife (default 20); 0 = no intervals",
    )
    g.add_argument(
        "--workers",
        type=option_arg(int, "evaluate --workers"),
        default=None,
        help="processes over subjects (default: min(2, CPUs))",
    )
    g.add_argument(
        "--weights-dir",
        default=None,
        help="folder with pretrained weights (default: torch.hub cache)",
    )
    g.add_argument("--no-download", action="store_true", help="never download pretrained weights")
    g.add_argument(
        "--device",
        type=device_arg,
        default="auto",
        help="torch device for LPIPS/Inception (auto: GPU if any)",
    )


def run(args: argparse.Namespace) -> int:
    import datetime

    from realdeal.runtime.distributed import inference_group

    # Under torchrun the ranks split the volumes. The others then wait while rank 0 computes
    # the tables (FD and PRDC over every patch, bootstrap intervals), which at full scale can
    # outlast torch's 30-minute default for a collective call.
    wait = datetime.timedelta(hours=12)
    with inference_group(args.device, timeout=wait) as dist:
        result = _evaluate(args, dist)
    if result is None:  # not rank 0: rank 0 reports for every rank
        return 0
    print(result.markdown)
    print(f"results written to {args.out}")
    return 0


def _evaluate(args: argparse.Namespace, dist):
    """The result of the chosen mode (``None`` on ranks other than 0)."""
    from realdeal.errors import ConfigError
    from realdeal.metrics import suite
    from realdeal.metrics.noise import NoiseConfig
    from realdeal.metrics.subjects import find_set

    network = suite.NetworkOptions(args.weights_dir, not args.no_download, str(dist.device))
    common = {"n_patches_2d": args.patches, "patch_size_2d": args.patch_size, "seed": args.seed}
    if args.bootstrap is not None:
        common["n_bootstrap"] = args.bootstrap
    if args.mode == "paired":
        if not args.originals or not args.candidate:
            raise ConfigError(
                "paired mode needs --originals and at least one --candidate NAME=PATH"
            )
        config = suite.PairedConfig(
            **common,
            lpips=not args.no_lpips,
            noise=NoiseConfig(backend=args.noise_backend),
            seam_window=args.seam_window,
        )
        return suite.evaluate_paired(
            find_set("originals", args.originals),
            [find_set(name, path) for name, path in args.candidate],
            find_set("labels", args.labels) if args.labels else None,
            config,
            network,
            args.workers,
            args.out,
            dist,
        )
    if args.mode == "memorization":
        from realdeal.metrics.memorization import evaluate_memorization

        if not args.train or not args.generated:
            raise ConfigError("memorization mode needs --train and at least one --generated NAME=PATH")  # fmt: skip
        return evaluate_memorization(
            find_set("train", args.train),
            [find_set(name, path) for name, path in args.generated],
            find_set("held-out", args.held_out) if args.held_out else None,
            out_dir=args.out,
            dist=dist,
        )
    if not args.real or not args.generated:
        raise ConfigError("unpaired mode needs --real and at least one --generated NAME=PATH")
    config = suite.UnpairedConfig(**common, features=args.features)
    return suite.evaluate_unpaired(
        find_set("real", args.real),
        [find_set(name, path) for name, path in args.generated],
        config,
        find_set("real labels", args.real_labels) if args.real_labels else None,
        network,
        args.workers,
        args.out,
        dist,
    )
