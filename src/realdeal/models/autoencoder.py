"""Stage 1: the paper's 3D ResNet autoencoder (4× spatial compression, 4 latent channels).

The paper's supplement §1 and the authors' code (docs/method.md#spec-3).

Tensors are ``(B, C, X, Y, Z)`` (axis 2 = left→right, RAS order as in :mod:`realdeal.data.io`).
Images lie in [-1, 1]; latents in (0, 1) (sigmoid output). Every spatial size must be
divisible by 4.

The official code's residual block applies its second convolution to the block *input*, so
the first convolution's output is discarded. :class:`ResBlock` is a correct residual block;
the defect can be reproduced with ``AutoencoderConfig(official_resblock_defect=True)`` only to
load the authors' weights faithfully.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from realdeal.errors import ConfigError

Norm = Literal["batch", "group", "none"]


@dataclasses.dataclass(frozen=True)
class AutoencoderConfig:
    """Architecture of :class:`Autoencoder`. Defaults are the paper's (docs/method.md#spec-3).

    ``channels`` are the widths at full, 1/2 and 1/4 resolution; ``bottleneck`` the width of
    the 1×1×1 layer before the latent; ``norm`` replaces BatchNorm (``"group"`` makes a
    step independent of how the batch is split across processes).
    """

    in_channels: int = 1
    channels: tuple[int, int, int] = (64, 128, 64)
    bottleneck: int = 32
    latent_channels: int = 4
    norm: Norm = "batch"
    negative_slope: float = 0.01
    official_resblock_defect: bool = False

    def __post_init__(self) -> None:
        if min(self.channels) < 1 or self.bottleneck < 1 or self.latent_channels < 1:
            raise ConfigError(f"autoencoder widths must be positive: {self}")

    @property
    def downsampling(self) -> int:
        """Spatial compression factor per axis."""
        return 4


def _norm(kind: Norm, ch: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm3d(ch)
    if kind == "group":
        return nn.GroupNorm(min(8, ch), ch)
    return nn.Identity()


def _conv_block(
    cin: int, cout: int, k: int, cfg: AutoencoderConfig, act: bool = True
) -> nn.Sequential:
    """conv(k) → norm → LeakyReLU."""
    layers: list[nn.Module] = [nn.Conv3d(cin, cout, k, padding=k // 2), _norm(cfg.norm, cout)]
    if act:
        layers.append(nn.LeakyReLU(cfg.negative_slope))
    return nn.Sequential(*layers)


class ResBlock(nn.Module):
    """``y = act(x + norm(conv(act(norm(conv(x))))))``: a correct residual block.

    With ``defect=True`` the second convolution reads the block input instead of the first
    convolution's output, as in the official code (docs/method.md#spec-3).
    """

    def __init__(
        self, ch: int, norm: Norm = "batch", negative_slope: float = 0.01, defect: bool = False
    ):
        super().__init__()
        self.conv1 = nn.Conv3d(ch, ch, 3, padding=1)
        self.norm1 = _norm(norm, ch)
        self.conv2 = nn.Conv3d(ch, ch, 3, padding=1)
        self.norm2 = _norm(norm, ch)
        self.act = nn.LeakyReLU(negative_slope)
        self.defect = defect

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.norm1(self.conv1(x)))
        h = self.norm2(self.conv2(x if self.defect else h))
        return self.act(x + h)


class _Down(nn.Module):
    """Trilinear ×0.5 then conv3 → norm → LeakyReLU."""

    def __init__(self, cin: int, cout: int, cfg: AutoencoderConfig):
        super().__init__()
        self.conv = _conv_block(cin, cout, 3, cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=0.5, mode="trilinear", align_corners=False)
        return self.conv(x)


class _Up(nn.Module):
    """Nearest ×2 then conv3 → norm → LeakyReLU."""

    def __init__(self, cin: int, cout: int, cfg: AutoencoderConfig):
        super().__init__()
        self.conv = _conv_block(cin, cout, 3, cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Encoder(nn.Module):
    """Image ``(B, 1, X, Y, Z)`` in [-1, 1] → latent ``(B, 4, X/4, Y/4, Z/4)`` in (0, 1)."""

    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        c0, c1, c2 = cfg.channels
        rb = {
            "norm": cfg.norm,
            "negative_slope": cfg.negative_slope,
            "defect": cfg.official_resblock_defect,
        }
        self.net = nn.Sequential(
            _conv_block(cfg.in_channels, c0, 3, cfg),
            ResBlock(c0, **rb),
            _Down(c0, c1, cfg),
            ResBlock(c1, **rb),
            _Down(c1, c2, cfg),
            ResBlock(c2, **rb),
            _conv_block(c2, cfg.bottleneck, 1, cfg),
            nn.Conv3d(cfg.bottleneck, cfg.latent_channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Decoder(nn.Module):
    """Latent ``(B, 4, x, y, z)`` → image ``(B, 1, 4x, 4y, 4z)`` in [-1, 1] (sigmoid·2−1)."""

    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        c0, c1, c2 = cfg.channels
        rb = {
            "norm": cfg.norm,
            "negative_slope": cfg.negative_slope,
            "defect": cfg.official_resblock_defect,
        }
        self.net = nn.Sequential(
            _conv_block(cfg.latent_channels, cfg.bottleneck, 1, cfg),
            _conv_block(cfg.bottleneck, c2, 1, cfg),
            ResBlock(c2, **rb),
            _Up(c2, c1, cfg),
            ResBlock(c1, **rb),
            _Up(c1, c0, cfg),
            ResBlock(c0, **rb),
            nn.Conv3d(c0, cfg.in_channels, 3, padding=1),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(z)) * 2.0 - 1.0


class Autoencoder(nn.Module):
    """The stage-1 autoencoder; ``forward`` returns the reconstruction D(E(x))."""

    def __init__(self, cfg: AutoencoderConfig | None = None):
        super().__init__()
        self.config = cfg or AutoencoderConfig()
        self.encoder = Encoder(self.config)
        self.decoder = Decoder(self.config)

    def check_shape(self, x: torch.Tensor) -> None:
        """Raise ``ConfigError`` unless ``x`` is ``(B, C, X, Y, Z)`` with sizes divisible by 4."""
        f = self.config.downsampling
        if x.ndim != 5 or x.shape[1] != self.config.in_channels or any(s % f for s in x.shape[2:]):
            raise ConfigError(
                f"autoencoder input must be (B, {self.config.in_channels}, X, Y, Z) with X, Y, Z "
                f"divisible by {f}; got {tuple(x.shape)}"
            )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, X, Y, Z)`` in [-1, 1] → ``(B, 4, X/4, Y/4, Z/4)`` in (0, 1)."""
        self.check_shape(x)
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latent → image in [-1, 1]."""
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


def latent_shape(image_shape: tuple[int, ...], cfg: AutoencoderConfig) -> tuple[int, int, int, int]:
    """``(C, x, y, z)`` of the latent of an image of spatial shape ``(X, Y, Z)``."""
    f = cfg.downsampling
    if any(s % f for s in image_shape):
        raise ConfigError(f"image shape {tuple(image_shape)} is not divisible by {f}")
    x, y, z = (s // f for s in image_shape)
    return (cfg.latent_channels, x, y, z)
