"""One denoiser interface over ε- and v-prediction networks (k-diffusion ``external`` style).

A :class:`Denoiser` wraps a network ``f(x, t) -> output`` and a :class:`NoiseSchedule`;
calling it returns both the clean-data estimate x̂_0 and the noise estimate ε̂, whatever the
network predicts. Samplers and training losses talk only to this interface. Conditioning
images (the refiner's x̂ and y_prev) are concatenated to x_t on the channel axis.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

from realdeal.diffusion.schedule import NoiseSchedule, PredictionType, _bcast

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclasses.dataclass
class Prediction:
    """Estimates at one step: ``x0`` (clean data) and ``eps`` (noise), same shape as x_t;
    ``weight`` (optional, 1/0 of the same shape): the voxels whose content is generated (the
    rest is known or fixed), where DDIM's analytic variance estimates and adds its noise."""

    x0: torch.Tensor
    eps: torch.Tensor
    weight: torch.Tensor | None = None


class Denoiser:
    """Turns a network's output into (x̂_0, ε̂) and gives its training target."""

    def __init__(
        self, model: ModelFn, schedule: NoiseSchedule, prediction_type: PredictionType | None = None
    ):
        self.model = model
        self.schedule = schedule
        self.prediction_type = prediction_type or schedule.config.prediction_type

    def network(
        self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Raw network output for x_t ``(B, C, ...)`` at timesteps ``t`` ``(B,)``."""
        inp = x_t if cond is None else torch.cat([x_t, cond.to(x_t.dtype)], dim=1)
        return self.model(inp, t.to(x_t.device))

    def __call__(
        self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None
    ) -> Prediction:
        out = self.network(x_t, t, cond).to(x_t.dtype)
        ab = self.schedule.alpha_bar(t)
        sa, sb = _bcast(ab.sqrt(), x_t), _bcast((1 - ab).sqrt(), x_t)
        if self.prediction_type == "epsilon":
            eps = out
            x0 = (x_t - sb * eps) / sa
        else:  # v = √ᾱ ε − √(1−ᾱ) x0
            x0 = sa * x_t - sb * out
            eps = sb * x_t + sa * out
        return Prediction(x0=x0, eps=eps)

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the network should output for ``x_t = add_noise(x0, noise, t)``."""
        if self.prediction_type == "epsilon":
            return noise
        return self.schedule.velocity(x0, noise, t)

    def loss(
        self,
        x0: torch.Tensor,
        noise: torch.Tensor,
        t: torch.Tensor,
        cond: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        x_t: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mean squared error between network output and target (only where ``mask`` = 1).

        ``x_t`` may be given when the caller builds it itself (the refiner keeps the known
        region clean); otherwise it is ``add_noise(x0, noise, t)``.
        """
        if x_t is None:
            x_t = self.schedule.add_noise(x0, noise, t)
        err = (self.network(x_t, t, cond).float() - self.target(x0, noise, t).float()) ** 2
        if mask is None:
            return err.mean()
        m = mask.float().expand_as(err)
        return (err * m).sum() / m.sum().clamp(min=1.0)
