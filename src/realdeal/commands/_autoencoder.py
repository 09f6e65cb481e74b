"""Flags and loading shared by the commands that run the autoencoder over a prepared dataset."""

from __future__ import annotations

import argparse
from typing import Any

from realdeal.commands._checks import checkpoint_arg
from realdeal.config import device_arg


def add_autoencoder_flags(p: argparse.ArgumentParser, what: str, need_data: bool = True) -> None:
    """``--autoencoder``, ``--data``, ``--split``, ``--device`` and ``--precision``."""
    p.add_argument(
        "--autoencoder",
        required=True,
        type=checkpoint_arg,
        help="autoencoder checkpoint (.pt or .safetensors), or demo:autoencoder for the shipped one",
    )
    p.add_argument("--data", required=need_data, help="prepared dataset folder")
    p.add_argument(
        "--split",
        choices=["all", "train", "val", "test"],
        default="all",
        help=f"subjects to {what}",
    )
    p.add_argument("--device", type=device_arg, default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument(
        "--precision", choices=["fp32", "bf16", "auto"], default="fp32", help="inference precision"
    )


def load_autoencoder_and_data(args: argparse.Namespace) -> tuple[Any, Any, Any, Any, list[str]]:
    """(device, prepared dataset, autoencoder, its checkpoint, subject ids of ``--split``)."""
    from realdeal.data.dataset import PreparedDataset
    from realdeal.models.loading import load_autoencoder
    from realdeal.runtime.device import resolve_device

    device = resolve_device(args.device)
    ds = PreparedDataset(args.data)
    ae, ckpt = load_autoencoder(args.autoencoder, device)
    ids = ds.ids(None if args.split == "all" else args.split)
    return device, ds, ae, ckpt, ids
