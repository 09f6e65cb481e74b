"""The discrete noise schedule (ᾱ_t for t = 0 … T−1) and the forward process q(x_t | x_0).

β comes from MONAI's ``DDPMScheduler`` (``"linear_beta"``: β linear in t;
``"scaled_linear_beta"``: √β linear in t), 1,000 steps, β 0.0015 → 0.0205 (docs/method.md#spec-4, #spec-5).
ᾱ is recomputed in float64 so that samplers far from t = 0 stay accurate.
``snr_scale`` (default 1, the paper's) multiplies the signal-to-noise ratio ᾱ/(1−ᾱ) of every
timestep, as if the data were scaled by √snr_scale: a data set whose content has a small
amplitude (the paper's per-channel [lo, hi] → [−1, 1] latent scaling leaves demo latents with a
standard deviation of about 0.35, and subjects differing by about 0.1) otherwise has its
detail drowned in noise at all but the last few timesteps (see docs/training.md).
Timesteps ``t`` are integer tensors of shape ``(B,)``; data tensors are ``(B, C, ...)``.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch

ScheduleName = Literal["linear_beta", "scaled_linear_beta"]
PredictionType = Literal["epsilon", "v_prediction"]


@dataclasses.dataclass(frozen=True)
class ScheduleConfig:
    """Noise schedule and what the network predicts.

    The paper's LDM uses a "linear" schedule (the official config: scaled linear) with
    v-prediction; the refiner uses scaled linear with ε-prediction.
    """

    num_train_timesteps: int = 1000
    schedule: ScheduleName = "linear_beta"
    beta_start: float = 0.0015
    beta_end: float = 0.0205
    prediction_type: PredictionType = "v_prediction"
    snr_scale: float = 1.0
    """Multiplies every timestep's ᾱ/(1−ᾱ) (1 = the β schedule as it is)."""


def _bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``(B,)`` → ``(B, 1, 1, ...)`` in the dtype/device of ``like``."""
    return v.to(device=like.device, dtype=like.dtype).view(-1, *([1] * (like.ndim - 1)))


class NoiseSchedule:
    """ᾱ_t and the forward process for a :class:`ScheduleConfig`."""

    def __init__(self, cfg: ScheduleConfig | None = None):
        from monai.networks.schedulers import DDPMScheduler

        self.config = cfg or ScheduleConfig()
        ref = DDPMScheduler(
            num_train_timesteps=self.config.num_train_timesteps,
            schedule=self.config.schedule,
            beta_start=self.config.beta_start,
            beta_end=self.config.beta_end,
        )
        betas = ref.betas.double()
        ab = torch.cumprod(1.0 - betas, dim=0)
        k = float(self.config.snr_scale)
        if k != 1.0:  # SNR' = k·SNR, and the β that give that ᾱ
            ab = k * ab / (1.0 + (k - 1.0) * ab)
            betas = 1.0 - ab / torch.cat([ab.new_ones(1), ab[:-1]])
        self.betas = betas
        self.alphas_cumprod = ab

    @property
    def num_train_timesteps(self) -> int:
        return self.config.num_train_timesteps

    def alpha_bar(self, t: torch.Tensor | int) -> torch.Tensor:
        """ᾱ_t (float64); ``t = -1`` means ᾱ = 1 (clean data)."""
        t = torch.as_tensor(t, dtype=torch.long)
        ab = self.alphas_cumprod[t.clamp(min=0).cpu()]
        return torch.where(t.cpu() < 0, torch.ones_like(ab), ab)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε."""
        ab = self.alpha_bar(t)
        return _bcast(ab.sqrt(), x0) * x0 + _bcast((1 - ab).sqrt(), x0) * noise

    def velocity(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """v = √ᾱ_t ε − √(1−ᾱ_t) x_0 (Salimans & Ho 2022)."""
        ab = self.alpha_bar(t)
        return _bcast(ab.sqrt(), x0) * noise - _bcast((1 - ab).sqrt(), x0) * x0

    def sample_timesteps(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` training timesteps uniform on {0, …, T−1} (CPU long tensor)."""
        return torch.randint(0, self.num_train_timesteps, (n,), generator=generator)
