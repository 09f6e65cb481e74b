"""The masked refinement loop, one shared suite over every sampler (DDPM, DDIM, DPM-Solver++)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from realdeal.diffusion.denoiser import Denoiser
from realdeal.diffusion.registry import make_sampler
from realdeal.diffusion.schedule import NoiseSchedule, ScheduleConfig
from realdeal.inference.plan import PlanConfig, make_plan
from realdeal.inference.refine import refine_volume

SAMPLERS = [("ddpm", 12, 0.0), ("ddim", 8, 0.0), ("ddim", 8, 1.0), ("dpm++", 8, 0.0)]
SHIFT = 0.1


def _coarse(shape=(40, 44, 36)):
    x = -np.ones(shape, np.float32)
    idx = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
    d = np.sqrt((((idx - np.array(shape) / 2) / (np.array(shape) * 0.3)) ** 2).sum(-1))
    x[d < 1] = 0.2 + 0.3 * np.cos(idx[d < 1][:, 0] / 3.0)
    return x


def _oracle(schedule, prediction, calls=None):
    """A network whose clean estimate is x̂ + SHIFT (the conditioning channel), exactly."""

    def model(inp, t):
        x_t, xhat, y_prev = inp[:, :1], inp[:, 1:2], inp[:, 2:3]
        if calls is not None:
            calls.append((x_t.clone(), y_prev.clone()))
        ab = schedule.alpha_bar(t).to(inp.dtype).view(-1, 1, 1, 1, 1)
        a, s = ab.sqrt(), (1 - ab).sqrt()
        x0 = xhat + SHIFT
        eps = (x_t - a * x0) / s
        return eps if prediction == "epsilon" else a * eps - s * x0

    return model


@pytest.fixture(params=SAMPLERS, ids=lambda p: f"{p[0]}-{p[1]}-eta{p[2]}")
def sampler_setup(request):
    name, steps, eta = request.param
    cfg = ScheduleConfig(schedule="scaled_linear_beta", prediction_type="epsilon")
    schedule = NoiseSchedule(cfg)
    return schedule, make_sampler(name, schedule, steps, eta=eta)


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_exact_denoiser_gives_exact_answer(sampler_setup, prediction):
    schedule, sampler = sampler_setup
    coarse = _coarse()
    plan = make_plan(coarse.shape, PlanConfig(window=16, overlap=4, max_batch=3), coarse=coarse)
    den = Denoiser(_oracle(schedule, prediction), schedule, prediction_type=prediction)
    res = refine_volume(coarse, den, sampler, plan, seed=0, show_progress=False)
    assert res.refined.shape == coarse.shape
    owner = plan.owner_map()
    gen = owner >= 0
    np.testing.assert_allclose(res.refined[gen], np.clip(coarse[gen] + SHIFT, -1, 1), atol=2e-4)
    np.testing.assert_array_equal(res.refined[~gen], coarse[~gen])  # skipped background
    assert res.unet_evaluations == plan.stats.windows_run * len(sampler.timesteps())


def test_known_region_is_clean_and_equals_refined_values(sampler_setup):
    schedule, sampler = sampler_setup
    coarse = _coarse((36, 36, 36))
    plan = make_plan(coarse.shape, PlanConfig(window=16, overlap=4, max_batch=None), coarse=coarse)
    calls: list = []
    den = Denoiser(_oracle(schedule, "epsilon", calls), schedule)
    refine_volume(coarse, den, sampler, plan, seed=1, show_progress=False)
    steps = len(sampler.timesteps())
    assert len(calls) == steps * len(plan.batches())
    for b, windows in enumerate(plan.batches()):
        m = np.stack([plan.generate_mask(w) for w in windows])[:, None]
        first = calls[b * steps]
        for x_t, y_prev in calls[b * steps : (b + 1) * steps]:
            # Known voxels: x_t holds the refined values at every step, and y_prev equals them.
            np.testing.assert_array_equal(x_t.numpy()[~m], first[0].numpy()[~m])
            np.testing.assert_array_equal(y_prev.numpy()[~m], x_t.numpy()[~m])
        # Where the mask generates, y_prev is noise (not the coarse input).
        if m.any():
            assert abs(float(first[1].numpy()[m].std()) - 1.0) < 0.2


def test_same_seed_same_output_other_seed_differs(sampler_setup):
    schedule, sampler = sampler_setup
    coarse = _coarse((32, 32, 32))
    plan = make_plan(coarse.shape, PlanConfig(window=16, overlap=4), coarse=coarse)

    def noisy_model(inp, t):  # depends on the noise: outputs differ between seeds
        return 0.5 * inp[:, :1] + 0.1 * inp[:, 2:3]

    den = Denoiser(noisy_model, schedule)
    a = refine_volume(coarse, den, sampler, plan, seed=3, show_progress=False).refined
    b = refine_volume(coarse, den, sampler, plan, seed=3, show_progress=False).refined
    c = refine_volume(coarse, den, sampler, plan, seed=4, show_progress=False).refined
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_official_plan_runs_through_the_same_loop():
    from realdeal.inference.plan import official_plan

    schedule = NoiseSchedule(ScheduleConfig(prediction_type="epsilon"))
    sampler = make_sampler("ddim", schedule, 4)
    coarse = _coarse((32, 32, 32))
    plan = official_plan(coarse.shape, window=16)
    res = refine_volume(
        coarse, Denoiser(_oracle(schedule, "epsilon"), schedule), sampler, plan, show_progress=False
    )
    np.testing.assert_allclose(res.refined, np.clip(coarse + SHIFT, -1, 1), atol=2e-4)


def test_bfloat16_autocast_runs_a_real_unet():
    """A tiny MONAI U-Net under bf16 autocast: finite output of the right shape."""
    from monai.networks.nets import DiffusionModelUNet

    torch.manual_seed(0)
    net = DiffusionModelUNet(
        spatial_dims=3,
        in_channels=3,
        out_channels=1,
        channels=(8, 8),
        attention_levels=(False, False),
        num_res_blocks=1,
        norm_num_groups=4,
    ).eval()
    schedule = NoiseSchedule(ScheduleConfig(prediction_type="epsilon"))
    coarse = _coarse((24, 24, 24))
    plan = make_plan(coarse.shape, PlanConfig(window=16, overlap=4), coarse=coarse)
    res = refine_volume(
        coarse,
        Denoiser(net, schedule),
        make_sampler("ddim", schedule, 2),
        plan,
        autocast_dtype=torch.bfloat16,
        show_progress=False,
    )
    assert res.refined.shape == coarse.shape and np.isfinite(res.refined).all()


@pytest.mark.parametrize("name", ["ddim", "dpm++"])
def test_residual_target_refines_coarse_plus_scaled_residual(name):
    """A residual-trained network (r = (x − x̂)/s) whose clean estimate is exactly r0 gives
    x̂ + s·r0 on generated voxels and the coarse value elsewhere."""
    schedule = NoiseSchedule(
        ScheduleConfig(schedule="scaled_linear_beta", prediction_type="epsilon")
    )
    sampler = make_sampler(name, schedule, 8, clip_x0=False)
    coarse = _coarse((36, 36, 36))
    plan = make_plan(coarse.shape, PlanConfig(window=16, overlap=4), coarse=coarse)
    r0, scale = 0.5, 0.2

    def model(inp, t):
        x_t = inp[:, :1]
        ab = schedule.alpha_bar(t).to(inp.dtype).view(-1, 1, 1, 1, 1)
        return (x_t - ab.sqrt() * r0) / (1 - ab).sqrt()  # ε for a clean residual of r0

    den = Denoiser(model, schedule)
    res = refine_volume(
        coarse, den, sampler, plan, show_progress=False, target="residual", residual_scale=scale
    )
    gen = plan.owner_map() >= 0
    np.testing.assert_allclose(res.refined[gen], coarse[gen] + scale * r0, atol=2e-4)
    np.testing.assert_array_equal(res.refined[~gen], coarse[~gen])
    with pytest.raises(Exception, match="image or residual"):
        refine_volume(coarse, den, sampler, plan, show_progress=False, target="x")


def test_partial_chain_starts_from_the_noised_coarse_and_runs_fewer_steps():
    schedule = NoiseSchedule(
        ScheduleConfig(schedule="scaled_linear_beta", prediction_type="epsilon")
    )
    sampler = make_sampler("ddim", schedule, 10)
    coarse = _coarse((32, 32, 32))
    plan = make_plan(coarse.shape, PlanConfig(window=16, overlap=4), coarse=coarse)
    seen_t: list[int] = []

    def model(inp, t):
        seen_t.append(int(t[0]))
        x_t, xhat = inp[:, :1], inp[:, 1:2]
        ab = schedule.alpha_bar(t).to(inp.dtype).view(-1, 1, 1, 1, 1)
        return (x_t - ab.sqrt() * (xhat + SHIFT)) / (1 - ab).sqrt()

    den = Denoiser(model, schedule)
    res = refine_volume(coarse, den, sampler, plan, show_progress=False, strength=0.3)
    assert max(seen_t) <= round(0.3 * 999) and len(set(seen_t)) == 3  # 3 of the 10 DDIM steps
    assert res.unet_evaluations == plan.stats.windows_run * 3
    gen = plan.owner_map() >= 0
    np.testing.assert_allclose(res.refined[gen], np.clip(coarse[gen] + SHIFT, -1, 1), atol=2e-4)
    with pytest.raises(Exception, match="strength"):
        refine_volume(coarse, den, sampler, plan, show_progress=False, strength=0)


def test_default_sampling_follows_the_refiner_target():
    from importlib.resources import files

    from realdeal.diffusion.registry import DEFAULT_SAMPLING
    from realdeal.pipelines.refiner import RefinerPipeline, RefineSettings

    def resolve_sampling(settings, target):
        return settings.resolve(DEFAULT_SAMPLING[target])

    r = resolve_sampling(RefineSettings(), "residual")
    assert (r.sampler, r.steps, r.eta, r.spacing, r.variance) == (
        "ddim",
        10,
        1.0,
        "quadratic",
        "analytic",
    )
    i = resolve_sampling(RefineSettings(), "image")
    assert (i.sampler, i.steps, i.eta, i.spacing, i.variance) == (
        "dpm++",
        20,
        0.0,
        "linear",
        "fixed",
    )
    # explicit flags win over the target's default; an explicit sampler without η gets 0
    e = resolve_sampling(
        RefineSettings(steps=4, eta=0.5, spacing="linear", variance="fixed"), "residual"
    )
    assert (e.sampler, e.steps, e.eta, e.spacing, e.variance) == ("ddim", 4, 0.5, "linear", "fixed")
    d = resolve_sampling(RefineSettings(sampler="ddim"), "residual")
    assert (d.sampler, d.steps, d.eta, d.spacing, d.variance) == (
        "ddim",
        None,
        0.0,
        "linear",
        "fixed",
    )
    q = resolve_sampling(RefineSettings(sampler="dpm++", spacing="quadratic"), "image")
    assert (q.sampler, q.spacing) == ("dpm++", "quadratic")
    assert resolve_sampling(RefineSettings(sampler="dpmpp"), "image").sampler == "dpm++"
    # the shipped cpu-small refiner is a residual one, so `realdeal refine` uses DDIM η = 1
    shipped = files("realdeal") / "demo_checkpoints" / "refiner.pt"
    pipe = RefinerPipeline.from_checkpoint(str(shipped))
    assert pipe.target == "residual"
    # and the demo refines with the same settings
    from realdeal.demo import DemoConfig

    d = DemoConfig()
    demo = (d.refine_sampler, d.refine_steps, d.refine_eta, d.refine_spacing, d.refine_variance)
    assert demo == DEFAULT_SAMPLING["residual"]


def test_traversal_setting_and_its_old_name():
    """``traversal`` picks the window traversal; settings saved as ``schedule`` still load."""
    from realdeal.pipelines.refiner import RefineSettings

    assert RefineSettings().traversal == "wavefront"
    old = RefineSettings.from_dict({"schedule": "official", "steps": 4})
    assert old == RefineSettings(traversal="official", steps=4)
    assert RefineSettings.from_dict({"traversal": "official"}).traversal == "official"
