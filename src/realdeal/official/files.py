"""The authors' released files: what they hold, reading them, telling them apart.

See :mod:`realdeal.official` for the three files and their layouts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch

from realdeal.errors import InputError
from realdeal.runtime.checkpoint import FORMAT, read_torch_file

OfficialKind = Literal["autoencoder", "ldm", "refiner"]
KINDS: tuple[OfficialKind, ...] = ("autoencoder", "ldm", "refiner")

#: Grid, voxel size and refiner window of the released models (SPEC §2, §5).
OFFICIAL_IMAGE_SHAPE = (224, 288, 224)
OFFICIAL_SPACING = (0.7, 0.7, 0.7)
OFFICIAL_WINDOW = 64
#: Group count of MONAI Generative's ``DiffusionModelUNet`` (its default; the official configs).
OFFICIAL_NORM_GROUPS = 32
#: Buffers of the authors' running-statistics GroupNorm variant (refiner fine-tuning).
GROUPNORM_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")
PRESET = "official"


#: A key only the released autoencoder's / a released U-Net's state dict has.
AE_KEY = "in_conv.weight"
UNET_KEY = "conv_in.conv.weight"
#: Input channels of the released U-Nets, by kind.
UNET_IN_CHANNELS = {"ldm": 4, "refiner": 3}


def read_official(path: str | os.PathLike) -> dict[str, Any]:
    """The dict of a released ``.pth`` file, read with ``weights_only=True`` (memory-mapped).

    Raises :class:`InputError` for a missing, unreadable or non-weights file.
    """
    ckpt = read_torch_file(path, mmap=True)
    if not isinstance(ckpt, dict):
        raise InputError(path, f"holds a {type(ckpt).__name__}, not a checkpoint dict")
    return ckpt


def detect_kind(ckpt: Mapping[str, Any], path: str | os.PathLike | None = None) -> OfficialKind:
    """Which released file ``ckpt`` is, from its keys and the U-Net's input width."""
    refuse_realdeal(ckpt, path)
    model, unet = ckpt.get("model"), ckpt.get("diffusion")
    if isinstance(model, Mapping) and AE_KEY in strip_prefix(model, path, strict=False):
        return "autoencoder"
    if isinstance(unet, Mapping):
        state = strip_prefix(unet, path, strict=False)
        if UNET_KEY not in state:
            raise InputError(path, f"its 'diffusion' state dict has no {UNET_KEY!r}")
        cin = int(state[UNET_KEY].shape[1])
        for kind, n in UNET_IN_CHANNELS.items():
            if cin == n:
                return kind  # type: ignore[return-value]
        raise InputError(
            path,
            f"U-Net with {cin} input channels is neither the LDM (4) nor the refiner (3); "
            "pass --kind to force one",
        )
    raise InputError(
        path,
        "is not one of the authors' released checkpoints (expected key 'model' with the "
        "autoencoder's weights, or 'diffusion' with a U-Net's); found keys "
        f"{sorted(map(str, ckpt))[:8]}",
    )


def strip_prefix(
    state: Mapping[str, Any], where: str | os.PathLike | None, strict: bool = True
) -> dict[str, Any]:
    """``state`` without DataParallel's ``module.`` prefix (all keys or none must have it)."""
    keys = list(state)
    prefixed = [k.startswith("module.") for k in keys]
    if all(prefixed) and keys:
        return {k[len("module.") :]: v for k, v in state.items()}
    if any(prefixed) and strict:
        raise InputError(where, "state dict mixes keys with and without the 'module.' prefix")
    return dict(state)


def refuse_realdeal(ckpt: Mapping[str, Any], path: str | os.PathLike | None) -> None:
    if ckpt.get("format") == FORMAT:
        raise InputError(
            path, f"is already a realdeal {ckpt.get('kind')} checkpoint; use it as it is"
        )


def unet_state(ckpt: Mapping[str, Any], where: str | os.PathLike) -> Mapping[str, torch.Tensor]:
    unet = ckpt.get("diffusion")
    if not isinstance(unet, Mapping):
        raise InputError(where, "has no 'diffusion' state dict (not a released LDM or refiner)")
    return unet


def provenance(src: str | os.PathLike, ckpt: Mapping[str, Any], loss_key: str) -> dict[str, Any]:
    def plain(v: Any) -> Any:
        if isinstance(v, torch.Tensor) and v.numel() == 1:
            return v.item()
        return v if isinstance(v, (int, float, str)) or v is None else str(v)

    return {
        "file": Path(src).name,
        "epoch": plain(ckpt.get("epoch")),
        loss_key: plain(ckpt.get(loss_key)),
    }
