"""The authors' released autoencoder network (docs/method.md#spec-3), module names as in their file.

It differs from :class:`realdeal.models.autoencoder.Autoencoder` in more than its
residual-block defect (norm after the activation in the resamplers, no norm in the residual
blocks or after the first decoder conv), so it is its own module. Its model config carries
``layout = "official"``; :func:`official_autoencoder_from_state` builds it, and
:func:`realdeal.models.loading.autoencoder_from_state` calls that for such configs. Converting
the released file is :mod:`realdeal.official`'s job.

Tensors are ``(B, C, X, Y, Z)`` as everywhere in realdeal.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import nn
from torch.nn import functional as F

from realdeal.config import from_dict
from realdeal.errors import ConfigError, InputError


@dataclasses.dataclass(frozen=True)
class OfficialAutoencoderConfig:
    """Architecture of the released autoencoder (3,549,447 parameters by default).

    See docs/method.md#spec-3.

    ``layout`` marks a model config as this architecture (see
    :func:`official_autoencoder_from_state`). ``resblock_defect`` is the explicit legacy
    switch: ``True`` reproduces the released residual block ``lrelu(conv2(x) + x)`` (its
    ``conv1`` is unused); ``False`` gives ``lrelu(conv2(lrelu(conv1(x))) + x)``.
    """

    layout: Literal["official"] = "official"
    in_channels: int = 1
    base_channels: int = 64
    bottleneck: int = 32
    latent_channels: int = 4
    negative_slope: float = 0.01
    resblock_defect: bool = True

    def __post_init__(self) -> None:
        if min(self.in_channels, self.base_channels, self.bottleneck, self.latent_channels) < 1:
            raise ConfigError(f"official autoencoder widths must be positive: {self}")

    @property
    def downsampling(self) -> int:
        """Spatial compression factor per axis."""
        return 4


class OfficialResBlock(nn.Module):
    """The released residual block: 3³ ``conv1``, ``conv2``, same width, no norm, no skip conv.

    With ``defect=True`` (as released) ``y = lrelu(conv2(x) + x)``: ``conv1``'s output was
    computed and discarded, so it is not computed here (the result is the same).
    """

    def __init__(self, ch: int, negative_slope: float, defect: bool):
        super().__init__()
        self.conv1 = nn.Conv3d(ch, ch, 3, padding=1)
        self.conv2 = nn.Conv3d(ch, ch, 3, padding=1)
        self.negative_slope = negative_slope
        self.defect = defect

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x if self.defect else F.leaky_relu(self.conv1(x), self.negative_slope)
        return F.leaky_relu(self.conv2(h) + x, self.negative_slope)


class OfficialResample(nn.Module):
    """``down``: trilinear ×0.5 → 3³ conv → lrelu; ``up``: nearest ×2 → 3³ conv → lrelu.

    Assumption: the released ×0.5 is ``F.interpolate(scale_factor=0.5, mode="trilinear")``
    with PyTorch's default ``align_corners=False`` (for even sizes: the 2×2×2 mean).
    """

    def __init__(self, cin: int, cout: int, mode: Literal["down", "up"], negative_slope: float):
        super().__init__()
        self.conv = nn.Conv3d(cin, cout, 3, padding=1)
        self.mode = mode
        self.negative_slope = negative_slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "down":
            x = F.interpolate(x, scale_factor=0.5, mode="trilinear", align_corners=False)
        else:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return F.leaky_relu(self.conv(x), self.negative_slope)


class OfficialAutoencoder(nn.Module):
    """The released autoencoder, module names as in ``autoencoder_checkpoint.pth``.

    Offers the interface of :class:`~realdeal.models.autoencoder.Autoencoder` (``config``,
    ``encode``, ``decode``, ``forward``, ``check_shape``), so ``realdeal reconstruct``,
    ``encode`` and ``sample`` use it unchanged. Images ``(B, 1, X, Y, Z)`` in [-1, 1], sizes
    divisible by 4; latents ``(B, 4, X/4, Y/4, Z/4)`` in (0, 1). ``dbn4`` is stored, unused.
    """

    def __init__(self, cfg: OfficialAutoencoderConfig | None = None):
        super().__init__()
        self.config = cfg = cfg or OfficialAutoencoderConfig()
        b, b2 = cfg.base_channels, 2 * cfg.base_channels
        slope, defect = cfg.negative_slope, cfg.resblock_defect
        self.in_conv = nn.Conv3d(cfg.in_channels, b, 3, padding=1)
        self.eresblock1 = OfficialResBlock(b, slope, defect)
        self.down1 = OfficialResample(b, b2, "down", slope)
        self.eresblock2 = OfficialResBlock(b2, slope, defect)
        self.down2 = OfficialResample(b2, b, "down", slope)
        self.eresblock3 = OfficialResBlock(b, slope, defect)
        self.echan_conv1 = nn.Conv3d(b, cfg.bottleneck, 1)
        self.echan_conv2 = nn.Conv3d(cfg.bottleneck, cfg.latent_channels, 1)
        self.ebn1, self.ebn2 = nn.BatchNorm3d(b), nn.BatchNorm3d(b2)
        self.ebn3, self.ebn4 = nn.BatchNorm3d(b), nn.BatchNorm3d(cfg.bottleneck)
        self.dchan_conv1 = nn.Conv3d(cfg.latent_channels, cfg.bottleneck, 1)
        self.dchan_conv2 = nn.Conv3d(cfg.bottleneck, b, 1)
        self.dbn1, self.dbn2 = nn.BatchNorm3d(b), nn.BatchNorm3d(b2)
        self.dbn3, self.dbn4 = nn.BatchNorm3d(b), nn.BatchNorm3d(cfg.in_channels)
        self.dresblock1 = OfficialResBlock(b, slope, defect)
        self.up1 = OfficialResample(b, b2, "up", slope)
        self.dresblock2 = OfficialResBlock(b2, slope, defect)
        self.up2 = OfficialResample(b2, b, "up", slope)
        self.dresblock3 = OfficialResBlock(b, slope, defect)
        self.out_conv = nn.Conv3d(b, cfg.in_channels, 3, padding=1)

    def _act(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x, self.config.negative_slope)

    def check_shape(self, x: torch.Tensor) -> None:
        """Raise ``ConfigError`` unless ``x`` is ``(B, C, X, Y, Z)`` with sizes divisible by 4."""
        f, c = self.config.downsampling, self.config.in_channels
        if x.ndim != 5 or x.shape[1] != c or any(s % f for s in x.shape[2:]):
            raise ConfigError(
                f"autoencoder input must be (B, {c}, X, Y, Z) with X, Y, Z divisible by {f}; "
                f"got {tuple(x.shape)}"
            )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, X, Y, Z)`` in [-1, 1] → ``(B, 4, X/4, Y/4, Z/4)`` in (0, 1)."""
        self.check_shape(x)
        h = self._act(self.ebn1(self.in_conv(x)))
        h = self.eresblock1(h)
        h = self.eresblock2(self.ebn2(self.down1(h)))
        h = self.eresblock3(self.ebn3(self.down2(h)))
        h = self._act(self.ebn4(self.echan_conv1(h)))
        return torch.sigmoid(self.echan_conv2(h))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latent ``(B, 4, x, y, z)`` → image ``(B, 1, 4x, 4y, 4z)`` in [-1, 1]."""
        h = self._act(self.dchan_conv1(z))
        h = self._act(self.dbn1(self.dchan_conv2(h)))
        h = self.dresblock1(h)
        h = self.dresblock2(self.dbn2(self.up1(h)))
        h = self.dresblock3(self.dbn3(self.up2(h)))
        return torch.sigmoid(self.out_conv(h)) * 2.0 - 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


def is_official_autoencoder_config(config: Mapping[str, Any]) -> bool:
    """Whether an autoencoder model config (dict) describes :class:`OfficialAutoencoder`."""
    return config.get("layout") == "official"


def official_autoencoder_from_state(
    config: Mapping[str, Any], state: Mapping[str, torch.Tensor], where: str | os.PathLike | None
) -> OfficialAutoencoder:
    """An :class:`OfficialAutoencoder` in eval mode from its config dict and state dict.

    The hook :func:`realdeal.models.loading.autoencoder_from_state` calls for model configs
    with ``layout = "official"``.
    """
    model = OfficialAutoencoder(from_dict(OfficialAutoencoderConfig, dict(config)))
    try:
        model.load_state_dict(dict(state))
    except RuntimeError as e:
        raise InputError(
            where,
            f"weights do not fit the released autoencoder layout ({str(e).splitlines()[0]})",
        ) from e
    return model.eval()
