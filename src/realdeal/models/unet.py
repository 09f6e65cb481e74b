"""MONAI ``DiffusionModelUNet`` built from a typed config (the paper's LDM and refiner).

The LDM: docs/method.md#spec-4; the refiner: docs/method.md#spec-5.

A fresh MONAI U-Net outputs zeros: its output conv and every residual block's second conv
start at zero (docs/method.md#spec-8). Inputs are ``(B, in_channels, X, Y, Z)``; each spatial size must be
divisible by ``2 ** (len(channels) - 1)``.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from realdeal.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class UNetConfig:
    """Arguments of MONAI's ``DiffusionModelUNet``; defaults are the paper's LDM (docs/method.md#spec-4).

    ``num_head_channels`` is per level (0 where there is no attention); the last level's
    also serves the middle block, which always attends.
    ``use_flash_attention`` selects PyTorch SDPA (much less memory, docs/method.md#spec-8).
    ``include_fc``: each self-attention ends with a learnt output projection (``attn.out_proj``,
    MONAI's default). Imports of the authors' U-Nets set it to ``False``: MONAI Generative
    0.2.x, which they trained with, creates that projection (``proj_attn``) but never applies
    it. Configs written before the field existed read as ``True``, the network they built.
    """

    in_channels: int = 4
    out_channels: int = 4
    channels: tuple[int, ...] = (256, 512, 768)
    num_res_blocks: int = 2
    attention_levels: tuple[bool, ...] = (False, True, True)
    num_head_channels: tuple[int, ...] = (0, 512, 768)
    norm_num_groups: int = 32
    use_flash_attention: bool = True
    include_fc: bool = True

    def __post_init__(self) -> None:
        n = len(self.channels)
        if len(self.attention_levels) != n or len(self.num_head_channels) != n:
            raise ConfigError(
                f"U-Net: channels, attention_levels and num_head_channels need one entry per "
                f"level ({n}); got {self.attention_levels}, {self.num_head_channels}"
            )
        if self.num_head_channels[-1] < 1:
            raise ConfigError(
                "U-Net: MONAI's middle block always attends; the last level needs head channels > 0"
            )
        attending = [*self.attention_levels[:-1], True]  # the middle block attends at the last
        bad = [
            (c, h)
            for c, h, a in zip(self.channels, self.num_head_channels, attending, strict=True)
            if a and (h < 1 or c % h)
        ]
        if bad:
            raise ConfigError(
                f"U-Net: an attention level's channels ({bad[0][0]}) must be a multiple of its "
                f"head channels ({bad[0][1]}); got num_head_channels={self.num_head_channels}"
            )
        if any(c % self.norm_num_groups for c in self.channels):
            raise ConfigError(
                f"U-Net: every channel count {self.channels} must be divisible by "
                f"norm_num_groups={self.norm_num_groups}"
            )

    @property
    def size_multiple(self) -> int:
        """Spatial sizes must be divisible by this."""
        return 2 ** (len(self.channels) - 1)


def build_unet(cfg: UNetConfig) -> nn.Module:
    """A 3D MONAI ``DiffusionModelUNet`` without conditioning, from ``cfg``."""
    from monai.networks.nets import DiffusionModelUNet

    return DiffusionModelUNet(
        spatial_dims=3,
        in_channels=cfg.in_channels,
        out_channels=cfg.out_channels,
        num_res_blocks=cfg.num_res_blocks,
        channels=cfg.channels,
        attention_levels=cfg.attention_levels,
        num_head_channels=list(cfg.num_head_channels),
        norm_num_groups=cfg.norm_num_groups,
        use_flash_attention=cfg.use_flash_attention,
        include_fc=cfg.include_fc,
    )


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def check_unet_input(x: torch.Tensor, cfg: UNetConfig) -> None:
    """Raise ``ConfigError`` unless ``x`` is ``(B, in_channels, X, Y, Z)`` of a valid size."""
    m = cfg.size_multiple
    if x.ndim != 5 or x.shape[1] != cfg.in_channels or any(s % m for s in x.shape[2:]):
        raise ConfigError(
            f"U-Net input must be (B, {cfg.in_channels}, X, Y, Z) with sizes divisible by {m}; "
            f"got {tuple(x.shape)}"
        )
