"""One suite over every sampler (DDPM, DDIM, DPM-Solver++, distilled DDIM), the registry that makes them, and
step-for-step checks against MONAI's schedulers (DPM-Solver++ against diffusers: test_dpm_solver)."""

from __future__ import annotations

import pytest
import torch
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler

from realdeal.diffusion import registry
from realdeal.diffusion.denoiser import Denoiser
from realdeal.diffusion.dpm_solver import DPMSolverPP2M
from realdeal.diffusion.registry import DEFAULT_SAMPLING, make_sampler, truncate
from realdeal.diffusion.samplers import (
    DDIMSampler,
    DDPMSampler,
    DistilledSampler,
    sample,
    strided_timesteps,
)
from realdeal.diffusion.schedule import NoiseSchedule, ScheduleConfig
from realdeal.errors import ConfigError

SAMPLERS = {
    "ddpm-full": lambda s: DDPMSampler(s),
    "ddpm-50": lambda s: DDPMSampler(s, 50),
    "ddim-50": lambda s: DDIMSampler(s, 50),
    "ddim-10-eta1": lambda s: DDIMSampler(s, 10, eta=1.0),
    "dpm++-20": lambda s: DPMSolverPP2M(s, 20),
    "dpm++-7": lambda s: DPMSolverPP2M(s, 7),
    "dpm++-strength0.4": lambda s: truncate(DPMSolverPP2M(s, 20), 0.4, 1000)[0],
    "distilled-4": lambda s: DistilledSampler(s, 4),
    "distilled-8-quadratic": lambda s: DistilledSampler(s, 8, spacing="quadratic"),
}


def _net(seed: int = 0):
    """A fixed, deterministic stand-in for a U-Net: a 1×1 conv scaled by t."""
    torch.manual_seed(seed)
    conv = torch.nn.Conv3d(2, 2, 1)
    return lambda x, t: conv(x) * (t.float().view(-1, 1, 1, 1, 1) / 1000 + 0.1)


@pytest.mark.parametrize("name", list(SAMPLERS))
@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("snr_scale", [1.0, 8.0])
def test_oracle_denoiser_lands_on_its_target(name, prediction, snr_scale):
    """If the network always points at x0, every sampler must end exactly at x0."""
    s = NoiseSchedule(ScheduleConfig(prediction_type=prediction, snr_scale=snr_scale))
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


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SAMPLERS))
def test_timesteps_and_determinism(name):
    s = NoiseSchedule()
    sampler = SAMPLERS[name](s)
    ts = sampler.timesteps()
    # every sampler ends at t = 0 but the distilled one, whose halving grid ends above it
    # (test_distill.py checks that grid)
    assert (
        ts == sorted(ts, reverse=True)
        and (ts[-1] == 0 or isinstance(sampler, DistilledSampler) and ts[-1] > 0)
        and len(set(ts)) == len(ts) == sampler.num_steps
    )
    calls, base = [], _net()

    def net(x, t):
        calls.append(int(t[0]))
        return base(x, t)

    d = Denoiser(net, s)
    x = torch.randn(1, 2, 3, 3, 3, generator=torch.Generator().manual_seed(3))
    a = sample(d, sampler, x, generator=torch.Generator().manual_seed(5), show_progress=False)
    assert calls == ts  # one network call per visited step, in order
    b = sample(d, sampler, x, generator=torch.Generator().manual_seed(5), show_progress=False)
    assert torch.equal(a, b) and torch.isfinite(a).all() and a.shape == x.shape


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SAMPLERS))
def test_sampler_keeps_no_state_between_chains(name):
    """Multistep state is explicit: one sampler object runs interleaved chains, and batched
    groups (each with its own state) give what each chain gives alone."""
    from realdeal.diffusion.samplers import Group, sample_groups

    s = NoiseSchedule()
    sampler = SAMPLERS[name](s)
    d = Denoiser(_net(), s)
    x = torch.randn(3, 2, 3, 3, 3, generator=torch.Generator().manual_seed(3))
    alone = [
        sample(d, sampler, x[i : i + 1], generator=torch.Generator().manual_seed(i),
               show_progress=False)
        for i in range(3)
    ]  # fmt: skip
    groups = [Group(slice(i, i + 1), sampler, torch.Generator().manual_seed(i)) for i in range(3)]
    together = sample_groups(d, groups, x, show_progress=False)
    torch.testing.assert_close(together, torch.cat(alone), rtol=1e-6, atol=1e-6)
    again = sample(
        d, sampler, x[:1], generator=torch.Generator().manual_seed(0), show_progress=False
    )
    assert torch.equal(again, alone[0])


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
        pred = Denoiser(net, s)(x, tt)
        ours, state = sampler.step(x, t, t - 40, pred, torch.Generator().manual_seed(1))
        assert state is None
        theirs, _ = ref.step(net(x, tt), t, x, eta=eta, generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close(ours, theirs.detach(), rtol=1e-4, atol=1e-4)


def test_make_sampler_and_bad_step_counts():
    s = NoiseSchedule()
    assert (
        isinstance(make_sampler("ddim", s), DDIMSampler) and make_sampler("ddim", s).num_steps == 50
    )
    assert make_sampler("ddpm", s).num_steps == 1000
    dpm = make_sampler("dpm++", s)
    assert isinstance(dpm, DPMSolverPP2M) and dpm.num_steps == 20
    assert isinstance(make_sampler("dpmpp", s, 4), DPMSolverPP2M)  # an alias
    assert make_sampler("ddim", s, 7, eta=0.5, clip_x0=False).eta == 0.5
    assert not make_sampler("dpm++", s, clip_x0=False).clip_x0
    assert strided_timesteps(1000, 4) == [999, 666, 333, 0]
    with pytest.raises(ConfigError):
        strided_timesteps(1000, 0)
    # quadratic spacing: (T−1)·u², denser toward t = 0, for every sampler
    assert strided_timesteps(1000, 4, "quadratic") == [999, 444, 111, 0]
    assert make_sampler("ddim", s, 4, spacing="quadratic").timesteps() == [999, 444, 111, 0]
    assert make_sampler("dpm++", s, 4, spacing="quadratic").timesteps() == [999, 444, 111, 0]
    assert make_sampler("ddpm", s, 4, spacing="quadratic").timesteps() == [999, 444, 111, 0]
    for n in (2, 3, 10, 50, 300, 999, 1000):  # ties near t = 0 are moved up, never repeated
        for spacing in ("linear", "quadratic"):
            ts = strided_timesteps(1000, n, spacing)
            assert len(ts) == n and ts[0] == 999 and ts[-1] == 0
            assert all(a > b for a, b in zip(ts, ts[1:], strict=False)), (n, spacing)
    with pytest.raises(ConfigError, match="unknown timestep spacing 'cosine'"):
        strided_timesteps(1000, 4, "cosine")
    with pytest.raises(ConfigError, match="unknown sampler 'euler'; choose ddpm, ddim, dpm"):
        make_sampler("euler", s)


def test_registry_table_is_complete():
    """Every registered sampler is made with its table default; every default names one."""
    s = NoiseSchedule()
    for name, spec in registry.SAMPLERS.items():
        assert make_sampler(name, s).num_steps == (spec.steps or s.num_train_timesteps)
    for use in ("ldm", "residual", "image"):
        row = DEFAULT_SAMPLING[use]
        assert (
            row.sampler in registry.SAMPLERS
            and make_sampler(row.sampler, s, row.steps).num_steps > 0
        )


def test_truncate_for_strength():
    s = NoiseSchedule()
    base = DDIMSampler(s, 10)
    assert truncate(base, 1.0, 1000) == (base, None)
    short, t0 = truncate(base, 0.3, 1000)
    assert (
        short.timesteps() == [t for t in base.timesteps() if t <= round(0.3 * 999)] == [222, 111, 0]
    )
    assert t0 == 222 and short.num_steps == 3 and short.schedule is s
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(ConfigError, match="strength"):
            truncate(base, bad, 1000)


@pytest.mark.parametrize("steps", [0, -1])
@pytest.mark.parametrize("name", ["ddpm", "ddim", "dpm++"])
def test_invalid_step_counts_are_refused_not_replaced_by_the_default(name, steps):
    with pytest.raises(ConfigError, match="sampling steps"):
        make_sampler(name, NoiseSchedule(ScheduleConfig()), steps)


def test_ddim_analytic_variance_adds_what_the_mean_estimate_leaves_out():
    """Analytic-DPM's correction: c²(1 − Γ) more variance, Γ = ‖ε̂‖²/d per sample over the
    weighted (generated) voxels; none where the weight is 0, none when ε̂ is certain (Γ = 1),
    none on the last step; DDIM only."""
    from realdeal.diffusion.denoiser import Prediction

    s = NoiseSchedule()
    fixed = make_sampler("ddim", s, 10, eta=1.0, clip_x0=False, spacing="quadratic")
    analytic = make_sampler("ddim", s, 10, eta=1.0, clip_x0=False, spacing="quadratic",
                            variance="analytic")  # fmt: skip
    t, t_prev = analytic.timesteps()[3], analytic.timesteps()[4]
    x_t = torch.zeros(2, 1, 24, 24, 24)
    eps = torch.cat([torch.full((1, 1, 24, 24, 24), 0.5), torch.ones(1, 1, 24, 24, 24)])
    weight = torch.ones_like(x_t)
    weight[:, :, :12] = 0  # half of each window is known / background
    pred = Prediction(x0=torch.zeros_like(x_t), eps=eps, weight=weight)
    a, _ = analytic.step(x_t, t, t_prev, pred, torch.Generator().manual_seed(1))
    f, _ = fixed.step(x_t, t, t_prev, pred, torch.Generator().manual_seed(1))
    extra = a - f  # the same first draw: what is left is the added noise
    ab_t, ab_p = float(s.alpha_bar(t)), float(s.alpha_bar(t_prev))
    sigma = ((1 - ab_p) / (1 - ab_t) * (1 - ab_t / ab_p)) ** 0.5
    c = (1 - ab_p - sigma**2) ** 0.5 - (ab_p * (1 - ab_t) / ab_t) ** 0.5
    gen = extra[0][weight[0] > 0]
    assert gen.std().item() == pytest.approx(abs(c) * (1 - 0.25) ** 0.5, rel=0.05)
    assert torch.count_nonzero(extra[0][weight[0] == 0]) == 0  # nothing outside the weight
    assert torch.count_nonzero(extra[1]) == 0  # Γ = 1: ε̂ certain, nothing to add
    last, _ = analytic.step(x_t, 0, -1, pred, torch.Generator().manual_seed(1))
    assert torch.equal(last, fixed.step(x_t, 0, -1, pred, torch.Generator().manual_seed(1))[0])
    with pytest.raises(ConfigError, match="variance 'analytic' is DDIM's"):
        make_sampler("dpm++", s, 10, variance="analytic")
    with pytest.raises(ConfigError, match="unknown DDIM variance"):
        make_sampler("ddim", s, 10, variance="learned")
