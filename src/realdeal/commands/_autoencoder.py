"""Flags and loading shared by the commands that run the autoencoder over a prepared dataset."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Literal

from realdeal.commands._checks import checkpoint_arg
from realdeal.commands._flags import ConfigFlags, Flag, add_config_flags
from realdeal.config import device_arg


@dataclasses.dataclass(frozen=True)
class AutoencoderRun:
    """Where and how ``realdeal reconstruct`` and ``realdeal encode`` run the autoencoder."""

    split: Literal["all", "train", "val", "test"] = "all"
    """The prepared dataset's subjects to run on."""
    device: str = "auto"
    """``auto``, ``cpu`` or ``cuda[:N]``."""
    precision: Literal["fp32", "bf16", "auto"] = "fp32"
    """Inference precision."""


def add_autoencoder_flags(p: argparse.ArgumentParser, what: str, need_data: bool = True) -> None:
    """``--autoencoder``, ``--data`` and the flags of :class:`AutoencoderRun` (``--split``,
    ``--device``, ``--precision``)."""
    p.add_argument(
        "--autoencoder",
        required=True,
        type=checkpoint_arg,
        help="autoencoder checkpoint (.pt or .safetensors), or demo:autoencoder for the shipped one",
    )
    p.add_argument("--data", required=need_data, help="prepared dataset folder")
    fields = {"split": Flag(f"subjects to {what}"), "device": Flag(type=device_arg)}
    add_config_flags(
        p, ConfigFlags(AutoencoderRun, (), {**fields, "precision": Flag()}, field_defaults=True)
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
