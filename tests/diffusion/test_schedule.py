"""Noise schedule and denoiser wrapper against MONAI's schedulers and closed forms."""

from __future__ import annotations

import pytest
import torch
from monai.networks.schedulers import DDPMScheduler

from realdeal.diffusion.denoiser import Denoiser
from realdeal.diffusion.schedule import NoiseSchedule, ScheduleConfig


@pytest.mark.parametrize("name", ["linear_beta", "scaled_linear_beta"])
def test_alpha_bar_matches_monai_and_closed_form(name):
    s = NoiseSchedule(ScheduleConfig(schedule=name))
    ref = DDPMScheduler(1000, schedule=name, beta_start=0.0015, beta_end=0.0205)
    torch.testing.assert_close(s.alphas_cumprod.float(), ref.alphas_cumprod, rtol=1e-4, atol=1e-7)
    t = torch.arange(1000, dtype=torch.float64)
    if name == "linear_beta":
        beta = 0.0015 + (0.0205 - 0.0015) * t / 999
    else:
        beta = (0.0015**0.5 + (0.0205**0.5 - 0.0015**0.5) * t / 999) ** 2
    torch.testing.assert_close(s.alphas_cumprod, torch.cumprod(1 - beta, 0), rtol=1e-5, atol=1e-9)
    assert s.alpha_bar(-1) == 1.0


def test_forward_process_and_velocity_match_monai():
    s = NoiseSchedule()
    ref = DDPMScheduler(1000, schedule="linear_beta", beta_start=0.0015, beta_end=0.0205)
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(3, 2, 4, 4, 4, generator=g), torch.randn(3, 2, 4, 4, 4, generator=g)
    t = torch.tensor([0, 321, 999])
    torch.testing.assert_close(
        s.add_noise(x0, eps, t), ref.add_noise(x0, eps, t), rtol=1e-4, atol=1e-5
    )
    torch.testing.assert_close(
        s.velocity(x0, eps, t), ref.get_velocity(x0, eps, t), rtol=1e-4, atol=1e-5
    )


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_denoiser_recovers_x0_and_eps_from_an_oracle(prediction):
    s = NoiseSchedule(ScheduleConfig(prediction_type=prediction))
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(2, 1, 4, 4, 4, generator=g), torch.randn(2, 1, 4, 4, 4, generator=g)
    t = torch.tensor([10, 800])
    xt = s.add_noise(x0, eps, t)
    oracle_out = eps if prediction == "epsilon" else s.velocity(x0, eps, t)
    d = Denoiser(lambda x, tt: oracle_out, s)
    pred = d(xt, t)
    torch.testing.assert_close(pred.x0, x0, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(pred.eps, eps, rtol=1e-4, atol=1e-4)
    assert d.loss(x0, eps, t).item() == pytest.approx(0.0, abs=1e-10)
    mask = torch.zeros_like(x0)
    mask[:, :, :2] = 1
    wrong = Denoiser(lambda x, tt: oracle_out + (1 - mask), s)  # wrong only where mask = 0
    assert wrong.loss(x0, eps, t, mask=mask).item() == pytest.approx(0.0, abs=1e-10)
    assert wrong.loss(x0, eps, t).item() == pytest.approx(0.5, rel=1e-5)


@pytest.mark.parametrize("name", ["linear_beta", "scaled_linear_beta"])
@pytest.mark.parametrize("k", [0.25, 8.0, 64.0])
def test_snr_scale_multiplies_every_timesteps_snr(name, k):
    base = NoiseSchedule(ScheduleConfig(schedule=name))
    s = NoiseSchedule(ScheduleConfig(schedule=name, snr_scale=k))
    snr = lambda ab: ab / (1 - ab)  # noqa: E731
    torch.testing.assert_close(
        snr(s.alphas_cumprod), k * snr(base.alphas_cumprod), rtol=1e-9, atol=0
    )
    # the β it keeps give back its ᾱ (samplers that step with β see the same schedule)
    torch.testing.assert_close(torch.cumprod(1 - s.betas, 0), s.alphas_cumprod, rtol=1e-9, atol=0)
    assert bool(((s.betas > 0) & (s.betas < 1)).all())
    assert bool((s.alphas_cumprod[1:] < s.alphas_cumprod[:-1]).all())


def test_snr_scale_is_the_forward_process_of_scaled_data():
    """x_t under snr_scale k is x_t of √k·x0 under the plain schedule, divided by its norm."""
    k = 8.0
    base, s = NoiseSchedule(), NoiseSchedule(ScheduleConfig(snr_scale=k))
    g = torch.Generator().manual_seed(3)
    x0, eps = torch.randn(3, 2, 4, 4, 4, generator=g), torch.randn(3, 2, 4, 4, 4, generator=g)
    t = torch.tensor([0, 250, 999])
    ab = base.alpha_bar(t).view(-1, 1, 1, 1, 1)
    norm = (k * ab + 1 - ab).sqrt().float()
    torch.testing.assert_close(
        s.add_noise(x0, eps, t), base.add_noise(k**0.5 * x0, eps, t) / norm, rtol=1e-5, atol=1e-6
    )
    assert NoiseSchedule(ScheduleConfig(snr_scale=1.0)).alphas_cumprod.equal(base.alphas_cumprod)
