"""Build trained networks from realdeal checkpoints (EMA weights by default)."""

from __future__ import annotations

import json
import os
from typing import Any

import torch

from realdeal.config import from_dict
from realdeal.errors import InputError
from realdeal.models.autoencoder import Autoencoder, AutoencoderConfig
from realdeal.runtime.checkpoint import load_checkpoint


def autoencoder_from_state(
    config: dict[str, Any], state: dict[str, torch.Tensor], where: str | os.PathLike
) -> Autoencoder:
    """An :class:`Autoencoder` in eval mode from its config dict and state dict.

    Configs marked ``layout: "official"`` (imports of the authors' released autoencoder)
    build :class:`realdeal.official.OfficialAutoencoder` instead.
    """
    if config.get("layout") == "official":
        from realdeal.official import official_autoencoder_from_state

        return official_autoencoder_from_state(config, state, where)  # type: ignore[return-value]
    model = Autoencoder(from_dict(AutoencoderConfig, config))
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise InputError(
            where, f"weights do not fit the stored autoencoder config ({str(e).splitlines()[0]})"
        ) from e
    return model.eval()


def load_autoencoder(
    path: str | os.PathLike, device: str | torch.device = "cpu", ema: bool = True
) -> tuple[Autoencoder, dict[str, Any]]:
    """(autoencoder in eval mode on ``device``, checkpoint dict) from an autoencoder checkpoint."""
    ckpt = load_checkpoint(path, kind="autoencoder")
    model = autoencoder_from_state(
        json.loads(ckpt["model_config"]), ckpt["ema" if ema else "model"], path
    )
    return model.to(device), ckpt


def unet_from_checkpoint(
    ckpt: dict[str, Any], where: str | os.PathLike, ema: bool = True
) -> torch.nn.Module:
    """The MONAI U-Net of an LDM or refiner checkpoint (EMA weights by default), eval mode."""
    from realdeal.models.unet import UNetConfig, build_unet

    unet = build_unet(from_dict(UNetConfig, json.loads(ckpt["model_config"])))
    try:
        unet.load_state_dict(ckpt["ema" if ema and "ema" in ckpt else "model"])
    except RuntimeError as e:
        raise InputError(
            where, f"weights do not fit the stored U-Net config ({str(e).splitlines()[0]})"
        ) from e
    return unet.eval()
