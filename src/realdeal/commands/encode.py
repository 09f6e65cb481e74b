"""``realdeal encode``: write autoencoder latents of a prepared dataset as safetensors.

Each ``<out>/<id>.safetensors`` holds ``latent`` ``(4, X/4, Y/4, Z/4)`` float32 (raw encoder
output in (0, 1)); ``<out>/latent_scaling.json`` holds the per-channel [lo, hi] fitted on the
training subjects, which maps latents to the LDM's [-1, 1]. One realdeal process writes into
``<out>`` at a time (a second is refused in one line).
"""

from __future__ import annotations

import argparse

from realdeal.commands._autoencoder import add_autoencoder_flags, load_autoencoder_and_data
from realdeal.commands._checks import check_dataset, check_writable_dir
from realdeal.commands._flags import on_first_use


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "encode",
        help="write autoencoder latents (safetensors) of a prepared dataset",
        description=__doc__,
    )
    on_first_use(p, _add_flags)
    p.set_defaults(func=run, preflight=_preflight)


def _add_flags(p: argparse.ArgumentParser) -> None:
    """``-o`` and the autoencoder's flags."""
    p.add_argument(
        "-o",
        "--out",
        required=True,
        help="output folder for <id>.safetensors and latent_scaling.json",
    )
    add_autoencoder_flags(p, "encode")


def _preflight(args: argparse.Namespace) -> None:
    check_writable_dir(args.out, "-o/--out")
    check_dataset(args.data, "--data")


def run(args: argparse.Namespace) -> int:
    import logging

    from realdeal.pipelines.autoencoder import checkpoint_fingerprint, encode_dataset
    from realdeal.utils.fs import folder_lock

    device, ds, ae, _, ids = load_autoencoder_and_data(args)
    with folder_lock(args.out):
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
