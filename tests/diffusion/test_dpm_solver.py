"""DPM-Solver++(2M) against diffusers' implementation and against a closed-form ODE solution."""

from __future__ import annotations

import math

import pytest
import torch

from realdeal.diffusion.denoiser import Denoiser
from realdeal.diffusion.dpm_solver import DPMSolverPP2M
from realdeal.diffusion.samplers import DDIMSampler, sample
from realdeal.diffusion.schedule import NoiseSchedule, ScheduleConfig

MU, S = 0.3, 0.2  # data distribution N(MU, S²) per element


def gaussian_eps_model(schedule: NoiseSchedule):
    """The exact ε-predictor for data ~ N(MU, S²): E[x0 | x_t] in closed form."""

    def model(x, t):
        ab = schedule.alpha_bar(t).to(x.dtype).view(-1, *([1] * (x.ndim - 1)))
        a, sig2 = ab.sqrt(), 1 - ab
        x0 = MU + a * S**2 / (a**2 * S**2 + sig2) * (x - a * MU)
        return (x - a * x0) / sig2.sqrt()

    return model


@pytest.mark.slow
@pytest.mark.parametrize("steps", [5, 12])
def test_matches_diffusers_dpmsolver_multistep(steps):
    diffusers = pytest.importorskip("diffusers", reason="diffusers is the reference implementation")
    cfg = ScheduleConfig(schedule="scaled_linear_beta", prediction_type="epsilon")
    schedule = NoiseSchedule(cfg)
    ours = DPMSolverPP2M(schedule, steps, clip_x0=False)
    ref = diffusers.DPMSolverMultistepScheduler(
        num_train_timesteps=schedule.num_train_timesteps,
        trained_betas=schedule.betas.double().numpy(),
        algorithm_type="dpmsolver++",
        solver_order=2,
        solver_type="midpoint",
        lower_order_final=True,
        final_sigmas_type="zero",
        prediction_type="epsilon",
    )
    ref.set_timesteps(timesteps=ours.timesteps())
    model = gaussian_eps_model(schedule)
    g = torch.Generator().manual_seed(0)
    x_T = torch.randn(2, 1, 4, 4, 4, generator=g, dtype=torch.float64)
    got = sample(Denoiser(model, schedule), ours, x_T, show_progress=False)
    x = x_T.clone()
    for t in ref.timesteps:
        eps = model(x, torch.full((x.shape[0],), int(t)))
        x = ref.step(eps, t, x).prev_sample
    torch.testing.assert_close(got, x, rtol=1e-5, atol=1e-5)


def test_reaches_the_exact_ode_solution():
    """For Gaussian data the probability-flow ODE keeps z = (x_t − a μ) / √(a² S² + σ²) constant
    (a = √ᾱ, σ² = 1 − ᾱ); the last step then returns E[x_0 | x_{t=0}] = μ + a₀ S² z / √(a₀² S² + σ₀²)."""
    schedule = NoiseSchedule(ScheduleConfig(prediction_type="epsilon"))
    x_T = torch.randn(
        1, 1, 8, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    T = schedule.num_train_timesteps - 1
    ab_T = float(schedule.alpha_bar(T))
    z = (x_T - math.sqrt(ab_T) * MU) / math.sqrt(ab_T * S**2 + 1 - ab_T)
    ab_0 = float(schedule.alpha_bar(0))
    exact = MU + math.sqrt(ab_0) * S**2 * z / math.sqrt(ab_0 * S**2 + 1 - ab_0)
    den = Denoiser(gaussian_eps_model(schedule), schedule)
    for steps in (10, 20, 50):
        ours = sample(den, DPMSolverPP2M(schedule, steps, clip_x0=False), x_T, show_progress=False)
        ddim = sample(den, DDIMSampler(schedule, steps, clip_x0=False), x_T, show_progress=False)
        # The second-order multistep solver is more accurate than DDIM at the same step count.
        assert (ours - exact).abs().max() < 0.6 * (ddim - exact).abs().max()
    assert float((ours - exact).abs().max()) < 0.06
    full = sample(den, DPMSolverPP2M(schedule, 1000, clip_x0=False), x_T, show_progress=False)
    assert float((full - exact).abs().max()) < 3e-3
