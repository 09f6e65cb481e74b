"""``realdeal encode``: write autoencoder latents of a prepared dataset as safetensors.

Each ``<out>/<id>.safetensors`` holds ``latent`` ``(4, X/4, Y/4, Z/4)`` float32 (raw encoder
output in (0, 1)); ``<out>/latent_scaling.json`` holds the per-channel [lo, hi] fitted on the
training subjects, which maps latents to the LDM's [-1, 1].
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "encode", help="write autoencoder latents (safetensors) of a prepared dataset"
    )
    p.add_argument("--autoencoder", required=True, help="autoencoder checkpoint.pt")
    p.add_argument("--data", required=True, help="prepared dataset folder")
    p.add_argument(
        "-o",
        "--out",
        required=True,
        help="output folder for <id>.safetensors and latent_scaling.json",
    )
    p.add_argument(
        "--split", choices=["all", "train", "val", "test"], default="all", help="subjects to encode"
    )
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument(
        "--precision", choices=["fp32", "bf16", "auto"], default="fp32", help="inference precision"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging

    from realdeal.data.dataset import PreparedDataset
    from realdeal.models.codec import checkpoint_fingerprint, encode_dataset
    from realdeal.models.loading import load_autoencoder
    from realdeal.training.distributed import resolve_device

    device = resolve_device(args.device)
    ds = PreparedDataset(args.data)
    ae, _ = load_autoencoder(args.autoencoder, device)
    ids = ds.ids(None if args.split == "all" else args.split)
    lat = encode_dataset(
        ae,
        ds,
        ids,
        args.out,
        device,
        args.precision,
        autoencoder_id=checkpoint_fingerprint(args.autoencoder),
    )
    logging.getLogger("realdeal.encode").info("%d latents written to %s", len(lat), args.out)
    return 0
