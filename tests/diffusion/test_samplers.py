"""One suite over every sampler, plus step-for-step checks against MONAI's schedulers."""

from __future__ import annotations

import pytest
import torch
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler

from realdeal.diffusion.denoiser import Denoiser
from realdeal.diffusion.samplers import (
    DDIMSampler,
    DDPMSampler,
    make_sampler,
    sample,
    strided_timesteps,
)
from realdeal.diffusion.schedule import NoiseSchedule, ScheduleConfig

SAMPLERS = {
    "ddpm-full": lambda s: DDPMSampler(s),
    "ddpm-50": lambda s: DDPMSampler(s, 50),
    "ddim-50": lambda s: DDIMSampler(s, 50),
    "ddim-10-eta1": lambda s: DDIMSampler(s, 10, eta=1.0),
}


def _net(seed: int = 0):
    """A fixed, deterministic stand-in for a U-Net: a 1×1 conv scaled by t."""
    torch.manual_seed(seed)
    conv = torch.nn.Conv3d(2, 2, 1)
    return lambda x, t: conv(x) * (t.float().view(-1, 1, 1, 1, 1) / 1000 + 0.1)


@pytest.mark.parametrize("name", list(SAMPLERS))
@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_oracle_denoiser_lands_on_its_target(name, prediction):
    """If the network always points at x0, every sampler must end exactly at x0."""
    s = NoiseSchedule(ScheduleConfig(prediction_type=prediction))
    target = torch.linspace(-0.9, 0.9, 2 * 2 * 27).view(2, 2, 3, 3, 3)

    def oracle(x, t):
        ab = s.alpha_bar(t).float().view(-1, 1, 1, 1, 1)
        eps = (x - ab.sqrt() * target) / (1 - ab).sqrt()
        return eps if prediction == "epsilon" else ab.sqrt() * eps - (1 - ab).sqrt() * target

    sampler = SAMPLERS[name](s)
    out = sample(
        Denoiser(oracle, s),
        sampler,
        torch.randn(2, 2, 3, 3, 3),
        generator=torch.Generator().manual_seed(0),
        show_progress=False,
    )
    torch.testing.assert_close(out, target, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_timesteps_and_determinism(name):
    s = NoiseSchedule()
    sampler = SAMPLERS[name](s)
    ts = sampler.timesteps()
    assert (
        ts == sorted(ts, reverse=True)
        and ts[-1] == 0
        and len(set(ts)) == len(ts) == sampler.num_steps
    )
    d = Denoiser(_net(), s)
    x = torch.randn(1, 2, 3, 3, 3, generator=torch.Generator().manual_seed(3))
    a = sample(d, sampler, x, generator=torch.Generator().manual_seed(5), show_progress=False)
    b = sample(d, sampler, x, generator=torch.Generator().manual_seed(5), show_progress=False)
    assert torch.equal(a, b) and torch.isfinite(a).all()


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_callback_can_pin_a_known_region(name):
    """The refiner's masked loop: resetting voxels after each step keeps them fixed."""
    s = NoiseSchedule()
    known = torch.full((1, 2, 3, 3, 3), 0.5)
    mask = torch.zeros_like(known, dtype=torch.bool)
    mask[..., 0] = True
    calls = []

    def keep(i, t_prev, x):
        calls.append(t_prev)
        return torch.where(mask, known, x)

    out = sample(
        Denoiser(_net(), s),
        SAMPLERS[name](s),
        torch.randn(1, 2, 3, 3, 3),
        callback=keep,
        show_progress=False,
    )
    assert torch.equal(out[mask], known[mask]) and calls[-1] == -1


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_ddpm_matches_monai_full_chain(prediction):
    s = NoiseSchedule(ScheduleConfig(prediction_type=prediction))
    ref = DDPMScheduler(
        1000, schedule="linear_beta", beta_start=0.0015, beta_end=0.0205, prediction_type=prediction
    )
    net = _net(1)
    x = torch.randn(1, 2, 3, 3, 3, generator=torch.Generator().manual_seed(2))
    ours = sample(
        Denoiser(net, s),
        DDPMSampler(s),
        x,
        generator=torch.Generator().manual_seed(9),
        show_progress=False,
    )
    g, y = torch.Generator().manual_seed(9), x.clone()
    with torch.no_grad():
        for t in ref.timesteps:
            y, _ = ref.step(net(y, torch.tensor([int(t)])), int(t), y, generator=g)
    torch.testing.assert_close(ours, y, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_ddim_step_matches_monai(prediction, eta):
    s = NoiseSchedule(ScheduleConfig(schedule="scaled_linear_beta", prediction_type=prediction))
    ref = DDIMScheduler(
        1000,
        schedule="scaled_linear_beta",
        beta_start=0.0015,
        beta_end=0.0205,
        prediction_type=prediction,
    )
    ref.set_timesteps(25)
    sampler = DDIMSampler(s, 25, eta=eta)
    assert sampler.timesteps() == [int(t) for t in ref.timesteps]  # same visited steps
    net = _net(2)
    x = torch.randn(1, 2, 3, 3, 3, generator=torch.Generator().manual_seed(4))
    for t in (999, 500, 30):  # MONAI steps to t - T // n; give ours the same target step
        tt = torch.tensor([t])
        ours = sampler.step(x, t, t - 40, Denoiser(net, s)(x, tt), torch.Generator().manual_seed(1))
        theirs, _ = ref.step(net(x, tt), t, x, eta=eta, generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close(ours, theirs.detach(), rtol=1e-4, atol=1e-4)


def test_make_sampler_and_bad_step_counts():
    s = NoiseSchedule()
    assert (
        isinstance(make_sampler("ddim", s), DDIMSampler) and make_sampler("ddim", s).num_steps == 50
    )
    assert make_sampler("ddpm", s).num_steps == 1000
    assert strided_timesteps(1000, 4) == [999, 666, 333, 0]
    from realdeal.errors import ConfigError

    with pytest.raises(ConfigError):
        strided_timesteps(1000, 0)


@pytest.mark.parametrize("steps", [0, -1])
@pytest.mark.parametrize("name", ["ddpm", "ddim", "dpm++"])
def test_invalid_step_counts_are_refused_not_replaced_by_the_default(name, steps):
    from realdeal.diffusion.refine import make_refine_sampler
    from realdeal.errors import ConfigError

    with pytest.raises(ConfigError, match="sampling steps"):
        make_refine_sampler(name, NoiseSchedule(ScheduleConfig()), steps)
