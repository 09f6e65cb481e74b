"""DPM-Solver++(2M): a second-order multistep solver for the reverse process (Lu et al. 2022).

Follows the :class:`~realdeal.diffusion.samplers.Sampler` protocol, so it drops into any
loop that runs DDPM or DDIM — the refiner's masked loop included. It works in the
data-prediction (x̂_0) form with half-log-SNR λ_t = log(α_t/σ_t), α_t = √ᾱ_t, σ_t = √(1−ᾱ_t):

    x_{t'} = (σ_{t'}/σ_t) x_t − α_{t'} (e^{−h} − 1) D,      h = λ_{t'} − λ_t,

with D = x̂_0(t) on the first step and D = (1 + 1/(2r)) x̂_0(t) − 1/(2r) x̂_0(t_last),
r = h_last/h, afterwards (diffusers' ``DPMSolverMultistepScheduler`` with
``algorithm_type="dpmsolver++"``, ``solver_order=2``, ``solver_type="midpoint"``). The last step
(to t = −1, clean data) returns x̂_0, as diffusers' ``final_sigmas_type="zero"``, and
drops to first order, as its ``lower_order_final``. The previous step's λ and x̂_0 are the
explicit multistep state (:class:`DPMState`) that ``step`` takes and returns; the solver object
itself keeps nothing between calls.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from realdeal.diffusion.denoiser import Prediction
from realdeal.diffusion.samplers import strided_timesteps
from realdeal.diffusion.schedule import NoiseSchedule
from realdeal.runtime.rng import NoiseSource


@dataclasses.dataclass(frozen=True)
class DPMState:
    """What a DPM-Solver++(2M) step hands to the next one: λ at the step just taken and the
    x̂_0 estimated there."""

    lam: float
    x0: torch.Tensor


class DPMSolverPP2M:
    """DPM-Solver++(2M) over ``num_steps`` strided timesteps (default 20; ``spacing`` as in
    :func:`~realdeal.diffusion.samplers.strided_timesteps`)."""

    def __init__(
        self,
        schedule: NoiseSchedule,
        num_steps: int | None = 20,
        clip_x0: bool = True,
        spacing: str = "linear",
    ):
        self.schedule = schedule
        self.num_steps = 20 if num_steps is None else num_steps  # 0 must fail, not become 20
        self.clip_x0 = clip_x0
        self._timesteps = strided_timesteps(schedule.num_train_timesteps, self.num_steps, spacing)

    def timesteps(self) -> list[int]:
        return list(self._timesteps)

    def _lambda(self, t: int) -> float:
        ab = float(self.schedule.alpha_bar(t))
        return 0.5 * math.log(ab / (1.0 - ab))

    def step(
        self,
        x_t: torch.Tensor,
        t: int,
        t_prev: int,
        pred: Prediction,
        generator: NoiseSource = None,
        state: DPMState | None = None,
    ) -> tuple[torch.Tensor, DPMState | None]:
        """``(x_{t_prev}, state)``; ``state`` is the previous step's (``None``: first order).
        The last step (to t = −1) returns x̂_0 and no state. Deterministic: ``generator`` is
        never drawn from (a chain's only randomness is its start noise)."""
        x0 = pred.x0.clamp(-1.0, 1.0) if self.clip_x0 else pred.x0
        if t_prev < 0:
            return x0, None
        ab_t, ab_p = float(self.schedule.alpha_bar(t)), float(self.schedule.alpha_bar(t_prev))
        sigma_t, sigma_p, alpha_p = math.sqrt(1 - ab_t), math.sqrt(1 - ab_p), math.sqrt(ab_p)
        lam_t, lam_p = self._lambda(t), self._lambda(t_prev)
        h = lam_p - lam_t
        d = x0
        if state is not None:
            r = (lam_t - state.lam) / h
            d = (1.0 + 0.5 / r) * x0 - (0.5 / r) * state.x0
        return (sigma_p / sigma_t) * x_t - alpha_p * math.expm1(-h) * d, DPMState(lam_t, x0)
