"""``realdeal reconstruct``: write autoencoder reconstructions D(E(x)).

Two forms. ``realdeal reconstruct --data PREP --autoencoder AE.pt`` writes every subject's
reconstruction into the prepared dataset (``<data>/reconstructions/<id>.nii.gz``, on its grid
and geometry; the refiner's training input). ``realdeal reconstruct FILES… -o OUT
--autoencoder AE.pt`` reconstructs your own scans (files, folders, quoted globs) and writes
each in its own units, orientation, affine and header.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from realdeal.commands._autoencoder import add_autoencoder_flags, load_autoencoder_and_data
from realdeal.commands._checks import (
    check_dataset,
    check_intensity_source,
    check_output,
    check_writable_dir,
    checkpoint_arg,
)
from realdeal.commands._flags import ConfigFlags, add_config_flags, on_first_use
from realdeal.commands._scan import SCAN_FLAGS, add_input_flags

SCAN = ConfigFlags("realdeal.data.intensity:ScanOptions", (), SCAN_FLAGS)
"""The flags of :class:`~realdeal.data.intensity.ScanOptions` (how your own scans are read)."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reconstruct",
        help="write autoencoder reconstructions D(E(x)) of a prepared dataset or of NIfTI files",
        description="Encode and decode with the autoencoder's EMA weights: every subject (or "
        "one split) of --data, stored as the dataset's 'reconstructions'; or the NIfTI files "
        "given, written to -o in their own geometry and intensity units.",
    )
    on_first_use(p, _add_flags)
    p.set_defaults(func=run, preflight=_preflight)


def _add_flags(p: argparse.ArgumentParser) -> None:
    """Inputs and ``-o``, the autoencoder's flags, ``--skip-existing``, ``--intensity-from``
    and the flags of :data:`SCAN`."""
    add_input_flags(p, optional=True)
    add_autoencoder_flags(p, "reconstruct", need_data=False)
    p.add_argument(
        "--skip-existing", action="store_true", help="keep reconstructions that already exist"
    )
    p.add_argument(
        "--intensity-from",
        metavar="DATASET_OR_CHECKPOINT",
        type=checkpoint_arg,
        help="the training set's intensity mapping (prepared dataset or checkpoint); default: "
        "the autoencoder's training dataset if it still exists",
    )
    add_config_flags(p, SCAN)


def _preflight(args: argparse.Namespace) -> None:
    """Files: ``-o`` writable; dataset: ``--data`` readable and its reconstructions/ writable."""
    if args.inputs and args.out:
        check_output(args.out, "-o/--out")
    if args.data and not args.inputs:
        check_dataset(args.data, "--data")
        check_writable_dir(Path(args.data) / "reconstructions", "--data")
    check_intensity_source(args.intensity_from, "--intensity-from")


def run(args: argparse.Namespace) -> int:
    from realdeal.errors import ConfigError

    if bool(args.inputs) == bool(args.data):
        raise ConfigError("give either input files (with -o) or --data PREPARED, not both")
    return run_files(args) if args.inputs else run_dataset(args)


def run_files(args: argparse.Namespace) -> int:
    import logging

    from realdeal.data.brain import check_inputs
    from realdeal.data.dataset import find_inputs
    from realdeal.errors import ConfigError, InputError

    if not args.out:
        raise ConfigError("reconstructing files needs -o OUT")
    files = find_inputs(args.inputs)
    check_inputs(files, args.brain_mask)  # bad input: fail before torch and the checkpoint load

    from realdeal.data.intensity import load_intensity_mapping, mapping_from_checkpoint
    from realdeal.data.io import output_paths
    from realdeal.models.loading import load_autoencoder
    from realdeal.pipelines.autoencoder import reconstruct_files
    from realdeal.runtime.device import resolve_device
    from realdeal.utils.fs import write_json_atomic

    outs = output_paths(files, args.out)
    mapping = load_intensity_mapping(args.intensity_from) if args.intensity_from else None
    device = resolve_device(args.device)
    ae, ckpt = load_autoencoder(args.autoencoder, device)
    if mapping is None:
        try:
            mapping = mapping_from_checkpoint(ckpt, args.autoencoder)
        except InputError:  # no stored mapping: auto maps each scan's own brain percentiles
            mapping = (None, (0.5, 99.5))
    stored, percentiles = mapping
    options = SCAN.build(args)
    records = reconstruct_files(
        ae, files, args.out, options, stored, percentiles, device, args.precision
    )
    write_json_atomic(
        outs[0].parent / "reconstruct.json",
        {"autoencoder": str(args.autoencoder), "step": ckpt.step,
         "precision": args.precision, "volumes": records},
    )  # fmt: skip
    logging.getLogger("realdeal.reconstruct").info("%d reconstructions written", len(records))
    return 0


def run_dataset(args: argparse.Namespace) -> int:
    import logging

    from realdeal.config import to_dict
    from realdeal.pipelines.autoencoder import reconstruct_dataset
    from realdeal.runtime.distributed import gather_objects, inference_group, shard
    from realdeal.utils.fs import write_json_atomic

    with inference_group(args.device) as dist:  # under torchrun the ranks split the subjects
        device, ds, ae, ckpt, ids = load_autoencoder_and_data(args)
        paths = reconstruct_dataset(
            ae, ds, shard(ids, dist), device, args.precision, overwrite=not args.skip_existing
        )
        paths = [p for part in gather_objects(paths, dist) for p in part]
    if not dist.is_main:
        return 0
    write_json_atomic(
        ds.root / "reconstructions" / "reconstruct_config.json",
        {
            "autoencoder": str(args.autoencoder),
            "step": ckpt.step,
            "preset": ckpt.preset,
            "model": to_dict(ae.config),
            "split": args.split,
            "precision": args.precision,
        },
    )
    logging.getLogger("realdeal.reconstruct").info(
        "%d reconstructions written to %s", len(paths), ds.root / "reconstructions"
    )
    return 0
