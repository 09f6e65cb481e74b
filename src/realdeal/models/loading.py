"""Build trained networks from realdeal checkpoints (EMA weights by default): one loader per kind.

:func:`load_autoencoder`, :func:`load_ldm` and :func:`load_refiner` read a checkpoint file
(:mod:`realdeal.runtime.checkpoint`) and return the networks in eval mode on a device, with
the stored values they are applied with, and the typed checkpoint itself.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import torch

from realdeal.config import from_dict
from realdeal.data.transforms import IntensityScaler
from realdeal.diffusion.samplers import halving_timesteps
from realdeal.errors import ConfigError, InputError
from realdeal.models.autoencoder import Autoencoder, AutoencoderConfig
from realdeal.models.latent_scaling import LatentScaler
from realdeal.models.unet import UNetConfig, build_unet
from realdeal.runtime.checkpoint import (
    AutoencoderCheckpoint,
    Distillation,
    LDMCheckpoint,
    RefinerCheckpoint,
    load_checkpoint,
)


def autoencoder_from_state(
    config: dict[str, Any], state: dict[str, torch.Tensor], where: str | os.PathLike
) -> Autoencoder:
    """An :class:`Autoencoder` in eval mode from its config dict and state dict.

    Configs marked ``layout: "official"`` (imports of the authors' released autoencoder)
    build :class:`realdeal.models.official_autoencoder.OfficialAutoencoder` instead.
    """
    if config.get("layout") == "official":
        from realdeal.models.official_autoencoder import official_autoencoder_from_state

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
) -> tuple[Autoencoder, AutoencoderCheckpoint]:
    """(autoencoder in eval mode on ``device``, its checkpoint) from an autoencoder checkpoint."""
    ckpt = load_checkpoint(path, kind="autoencoder")
    assert isinstance(ckpt, AutoencoderCheckpoint)
    model = autoencoder_from_state(ckpt.model_config, ckpt.weights(ema), path)
    return model.to(device), ckpt


def unet_from_checkpoint(
    ckpt: LDMCheckpoint | RefinerCheckpoint, where: str | os.PathLike, ema: bool = True
) -> torch.nn.Module:
    """The MONAI U-Net of an LDM or refiner checkpoint (EMA weights by default), eval mode."""

    unet = build_unet(from_dict(UNetConfig, ckpt.model_config))
    try:
        unet.load_state_dict(ckpt.weights(ema))
    except RuntimeError as e:
        raise InputError(
            where, f"weights do not fit the stored U-Net config ({str(e).splitlines()[0]})"
        ) from e
    return unet.eval()


@dataclasses.dataclass
class LoadedLDM:
    """What latent diffusion sampling needs from an LDM checkpoint."""

    unet: torch.nn.Module
    autoencoder: Autoencoder
    """The autoencoder the checkpoint carries (its decoder maps latents to images)."""
    scaler: LatentScaler
    latent_shape: tuple[int, ...]
    """(C, x, y, z) of one latent."""
    checkpoint: LDMCheckpoint


def load_ldm(
    path: str | os.PathLike, device: str | torch.device = "cpu", ema: bool = True
) -> LoadedLDM:
    """The U-Net, autoencoder and latent scaling of an LDM checkpoint, on ``device``."""
    ckpt = load_checkpoint(path, kind="ldm")
    assert isinstance(ckpt, LDMCheckpoint)
    missing = [
        name
        for name in ("autoencoder", "latent_scaling", "latent_shape")
        if getattr(ckpt, name) is None
    ]
    if missing:
        raise InputError(path, f"is an LDM checkpoint without {', '.join(missing)}")
    assert ckpt.autoencoder is not None and ckpt.latent_scaling is not None
    unet = unet_from_checkpoint(ckpt, path, ema)
    ae = autoencoder_from_state(ckpt.autoencoder.model_config, ckpt.autoencoder.ema, path)
    return LoadedLDM(
        unet=unet.to(device),
        autoencoder=ae.to(device),
        scaler=LatentScaler.from_dict(ckpt.latent_scaling),
        latent_shape=tuple(ckpt.latent_shape or ()),
        checkpoint=ckpt,
    )


@dataclasses.dataclass
class LoadedRefiner:
    """A refiner U-Net and the settings it was trained with."""

    unet: torch.nn.Module
    window: int
    spacing: tuple[float, float, float] | None
    """Voxel size (mm) inputs must have; ``None``: any."""
    scaler: IntensityScaler | None
    """The training data's intensity mapping; ``None``: inputs must already be in [−1, 1]."""
    target: str
    """What the U-Net learnt to reconstruct: ``image`` or ``residual``."""
    residual_scale: float
    checkpoint: RefinerCheckpoint
    distillation: Distillation | None = None
    """A distilled student's record (its native sampler, steps and time grid); ``None`` for
    every other refiner."""


def load_refiner(
    path: str | os.PathLike, device: str | torch.device = "cpu", ema: bool = True
) -> LoadedRefiner:
    """The U-Net of a refiner checkpoint on ``device``, with its window, spacing and intensities.

    Older run configs without ``target``/``residual_scale`` are image refiners (scale 1). A
    student's record is checked: its time grid must be the one its sampler visits.
    """
    ckpt = load_checkpoint(path, kind="refiner")
    assert isinstance(ckpt, RefinerCheckpoint)
    if ckpt.distilled is not None:
        _check_distillation(ckpt, path)
    unet = unet_from_checkpoint(ckpt, path, ema)
    spacing = tuple(float(v) for v in ckpt.spacing) if ckpt.spacing else None
    return LoadedRefiner(
        unet=unet.to(device),
        window=ckpt.window,
        spacing=spacing,  # type: ignore[arg-type]
        scaler=IntensityScaler.from_dict(ckpt.scaler) if ckpt.scaler else None,
        target=ckpt.config.get("target", "image"),
        residual_scale=ckpt.config.get("residual_scale") or 1.0,
        checkpoint=ckpt,
        distillation=ckpt.distilled,
    )


def _check_distillation(ckpt: RefinerCheckpoint, where: str | os.PathLike) -> None:
    """Refuse a student whose recorded time grid is not its sampler's (one line)."""

    d = ckpt.distilled
    assert d is not None
    num_train = int((ckpt.config.get("schedule") or {}).get("num_train_timesteps", 1000))
    try:
        grid = halving_timesteps(num_train, d.steps, d.spacing)
    except ConfigError as e:
        raise InputError(where, f"has an unusable distillation record ({e})") from e
    if list(d.timesteps) != grid:
        raise InputError(
            where,
            f"records the time grid {list(d.timesteps)}, but its {d.steps} {d.spacing} "
            f"distilled steps visit {grid}",
        )
