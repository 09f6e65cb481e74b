"""``realdeal reconstruct``: write each subject's autoencoder reconstruction D(E(x)).

The reconstructions go into the prepared dataset (``<data>/reconstructions/<id>.nii.gz``)
on its grid and geometry; they are the refiner's training input.
"""

from __future__ import annotations

import argparse

from realdeal.commands._autoencoder import add_autoencoder_flags, load_autoencoder_and_data


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reconstruct",
        help="write autoencoder reconstructions D(E(x)) into a prepared dataset",
        description="Encode and decode every subject (or one split) with the autoencoder's EMA "
        "weights and store the result as the dataset's 'reconstructions'.",
    )
    add_autoencoder_flags(p, "reconstruct")
    p.add_argument(
        "--skip-existing", action="store_true", help="keep reconstructions that already exist"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging

    from realdeal.config import to_dict
    from realdeal.inference.distributed import gather_objects, inference_group, shard
    from realdeal.models.codec import reconstruct_dataset
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
            "step": int(ckpt["step"]),
            "preset": ckpt.get("preset"),
            "model": to_dict(ae.config),
            "split": args.split,
            "precision": args.precision,
        },
    )
    logging.getLogger("realdeal.reconstruct").info(
        "%d reconstructions written to %s", len(paths), ds.root / "reconstructions"
    )
    return 0
