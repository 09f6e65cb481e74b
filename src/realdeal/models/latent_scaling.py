"""Per-channel linear latent scaling: [lo_c, hi_c] → [-1, 1] before diffusion.

The latent scaling of the paper's LDM (docs/method.md#spec-4).

Computed from the training encodings (per-channel minimum and maximum, so every training
latent lies in [-1, 1]) and stored with the LDM checkpoint; :meth:`LatentScaler.inverse`
undoes it after sampling. Latents are ``(B, C, x, y, z)`` or ``(C, x, y, z)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import torch

from realdeal.errors import ConfigError

#: The official code's hard-coded ranges (docs/method.md#spec-4), for importing the authors' checkpoints.
OFFICIAL_RANGES = ((0.2, 0.9), (0.1, 0.65), (0.1, 0.85), (0.2, 1.0))


@dataclasses.dataclass(frozen=True)
class LatentScaler:
    """Maps channel ``c`` linearly from ``[lo[c], hi[c]]`` to ``[-1, 1]``."""

    lo: tuple[float, ...]
    hi: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.lo) != len(self.hi) or any(
            h <= lo for lo, h in zip(self.lo, self.hi, strict=True)
        ):
            raise ConfigError(
                f"latent scaling needs lo < hi per channel; got lo={self.lo}, hi={self.hi}"
            )

    @classmethod
    def fit(cls, latents: Iterable[torch.Tensor]) -> LatentScaler:
        """Per-channel min/max over training latents, each ``(C, x, y, z)`` or ``(B, C, ...)``."""
        lo = hi = None
        for z in latents:
            z = z.detach().float()
            if z.ndim == 4:
                z = z[None]
            flat = z.transpose(0, 1).reshape(z.shape[1], -1)
            zmin, zmax = flat.min(dim=1).values, flat.max(dim=1).values
            lo = zmin if lo is None else torch.minimum(lo, zmin)
            hi = zmax if hi is None else torch.maximum(hi, zmax)
        if lo is None or hi is None:
            raise ConfigError("cannot fit latent scaling: no training latents")
        hi = torch.maximum(hi, lo + 1e-6)
        return cls(tuple(lo.tolist()), tuple(hi.tolist()))

    def _view(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c_axis = 0 if z.ndim == 4 else 1
        if z.shape[c_axis] != len(self.lo):
            raise ConfigError(f"latent has {z.shape[c_axis]} channels, scaling has {len(self.lo)}")
        shape = [1] * z.ndim
        shape[c_axis] = len(self.lo)
        lo = torch.tensor(self.lo, dtype=z.dtype, device=z.device).view(shape)
        hi = torch.tensor(self.hi, dtype=z.dtype, device=z.device).view(shape)
        return lo, hi

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Raw latent → diffusion space [-1, 1]."""
        lo, hi = self._view(z)
        return (z - lo) / (hi - lo) * 2.0 - 1.0

    def inverse(self, s: torch.Tensor) -> torch.Tensor:
        """Diffusion space → raw latent."""
        lo, hi = self._view(s)
        return (s + 1.0) / 2.0 * (hi - lo) + lo

    def to_dict(self) -> dict[str, list[float]]:
        return {"lo": list(self.lo), "hi": list(self.hi)}

    @classmethod
    def from_dict(cls, d: dict) -> LatentScaler:
        return cls(tuple(float(v) for v in d["lo"]), tuple(float(v) for v in d["hi"]))
