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
from realdeal.commands._flags import ConfigFlags, Flag, add_config_flags, on_first_use
from realdeal.config import device_arg, option_arg

PAIRED = "realdeal.metrics.suite:PairedConfig"
UNPAIRED = "realdeal.metrics.suite:UnpairedConfig"

PAIRED_FLAGS = ConfigFlags(
    PAIRED,
    (),
    {
        "lpips": Flag("skip LPIPS (no pretrained networks needed)", name="--no-lpips", switch=True),
        "seam_window": Flag(
            "window side of the refiner whose seams the seam score looks for (default: 64 "
            "if every side is ≥ 192 voxels, else 32)",
            metavar="N",
        ),
    },
    "paired mode",
)
"""Paired-only settings of :class:`~realdeal.metrics.suite.PairedConfig`."""

NOISE_FLAGS = ConfigFlags(
    "realdeal.metrics.noise:NoiseConfig",
    ("noise",),
    {"backend": Flag("NLM denoiser for noise KL", name="--noise-backend")},
    "paired mode",
)
"""The noise-KL denoiser of :class:`~realdeal.metrics.noise.NoiseConfig`."""

UNPAIRED_FLAGS = ConfigFlags(
    UNPAIRED,
    (),
    {
        "features": "feature space: FID's Inception (paper) or weight-free patch statistics "
        "(reported as FD-patchstats)"
    },
    "unpaired mode (--generated also for memorization)",
)
"""Unpaired-only settings of :class:`~realdeal.metrics.suite.UnpairedConfig`."""

NETWORK_FLAGS = ConfigFlags(
    "realdeal.metrics.suite:NetworkOptions",
    (),
    {
        "weights_dir": Flag("folder with pretrained weights (default: torch.hub cache)"),
        "allow_download": Flag(
            "never download pretrained weights", name="--no-download", switch=True
        ),
    },
    "common",
)
"""Where the pretrained networks come from (:class:`~realdeal.metrics.suite.NetworkOptions`;
where they run is ``--device``)."""


def common_flags() -> ConfigFlags:
    """The settings both suites share, as fields of :class:`~realdeal.metrics.suite.PairedConfig`
    (whose defaults they state); ``--bootstrap`` left unset means each suite's own default."""
    from realdeal.commands._flags import field_defaults

    jackknife = field_defaults(_imported_class(UNPAIRED))["n_bootstrap"]
    return ConfigFlags(
        PAIRED,
        (),
        {
            "n_patches_2d": Flag("2D patches per axis and image (paper: 1000)", name="--patches"),
            "patch_size_2d": Flag("2D patch side in voxels (paper: 64)", name="--patch-size"),
            "seed": "random seed",
            "n_bootstrap": Flag(
                "interval resamples: paired, bootstrap resamples of subjects; unpaired, "
                f"leave-one-subject-out sets of the jackknife ({jackknife} when not given); "
                "0 = no intervals",
                name="--bootstrap",
            ),
        },
        "common",
    )


def _imported_class(name: str) -> type:
    import importlib

    module, _, cls = name.partition(":")
    return getattr(importlib.import_module(module), cls)


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
    on_first_use(p, _settings_flags)
    p.set_defaults(func=run, preflight=_preflight)


def _settings_flags(p: argparse.ArgumentParser) -> None:
    """The flags generated from the suites' settings, and the copy rule in ``--held-out``'s
    help (added on first use of the parser: the settings' modules import numpy and torch)."""
    add_config_flags(p, PAIRED_FLAGS, NOISE_FLAGS, UNPAIRED_FLAGS, common_flags(), NETWORK_FLAGS)
    _state_the_copy_rule(p)


def _preflight(args: argparse.Namespace) -> None:
    """``--out`` writable; torchvision working where LPIPS or FID will run."""
    check_writable_dir(args.out, "--out")
    from realdeal.runtime.environment import check_torchvision

    if args.mode == "paired" and args.lpips is not False:
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


def _add_unpaired_flags(g: argparse._ArgumentGroup) -> None:
    """Real and generated sets, real labels and the feature space."""
    g.add_argument(
        "--real", nargs="+", metavar="PATH", help="folder(s) or NIfTI files of real images"
    )
    g.add_argument(
        "--generated",
        action="append",
        type=_named,
        metavar="NAME=PATH",
        help="a generated set (folder), e.g. ldm=DIR; repeatable",
    )
    g.add_argument(
        "--real-labels",
        nargs="+",
        metavar="PATH",
        help="label maps of the real images (else a threshold mask)",
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
    """Workers and device (the suites' shared settings are generated: :func:`common_flags`)."""
    g.add_argument(
        "--workers",
        type=option_arg(int, "evaluate --workers"),
        default=None,
        help="processes over subjects (default: min(2, CPUs))",
    )
    g.add_argument(
        "--device",
        type=device_arg,
        default="auto",
        help="where LPIPS and Inception run: auto (a GPU if there is one), cpu or cuda[:N]",
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
    import dataclasses

    from realdeal.errors import ConfigError
    from realdeal.metrics import suite
    from realdeal.metrics.subjects import find_set

    network = dataclasses.replace(NETWORK_FLAGS.build(args), device=str(dist.device))
    common = common_flags().given(args)
    if args.mode == "paired":
        if not args.originals or not args.candidate:
            raise ConfigError(
                "paired mode needs --originals and at least one --candidate NAME=PATH"
            )
        config = PAIRED_FLAGS.build(args, suite.PairedConfig(**common))
        config = dataclasses.replace(config, noise=NOISE_FLAGS.build(args))
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
    config = UNPAIRED_FLAGS.build(args, suite.UnpairedConfig(**common))
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
