"""``realdeal reconstruct``: write each subject's autoencoder reconstruction D(E(x)).

The reconstructions go into the prepared dataset (``<data>/reconstructions/<id>.nii.gz``)
on its grid and geometry; they are the refiner's training input.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reconstruct",
        help="write autoencoder reconstructions D(E(x)) into a prepared dataset",
        description="Encode and decode every subject (or one split) with the autoencoder's EMA "
        "weights and store the result as the dataset's 'reconstructions'.",
    )
    p.add_argument("--autoencoder", required=True, help="autoencoder checkpoint.pt")
    p.add_argument("--data", required=True, help="prepared dataset folder")
    p.add_argument(
        "--split",
        choices=["all", "train", "val", "test"],
        default="all",
        help="subjects to reconstruct",
    )
    p.add_argument(
        "--skip-existing", action="store_true", help="keep reconstructions that already exist"
    )
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument(
        "--precision", choices=["fp32", "bf16", "auto"], default="fp32", help="inference precision"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging

    from realdeal.config import to_dict
    from realdeal.data.dataset import PreparedDataset
    from realdeal.models.codec import reconstruct_dataset
    from realdeal.models.loading import load_autoencoder
    from realdeal.training.distributed import resolve_device
    from realdeal.utils.fs import write_json_atomic

    device = resolve_device(args.device)
    ds = PreparedDataset(args.data)
    ae, ckpt = load_autoencoder(args.autoencoder, device)
    ids = ds.ids(None if args.split == "all" else args.split)
    paths = reconstruct_dataset(
        ae, ds, ids, device, args.precision, overwrite=not args.skip_existing
    )
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
