"""Several volumes refined together share network calls and give each volume's own result."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from realdeal.diffusion.denoiser import Denoiser
from realdeal.diffusion.registry import make_sampler
from realdeal.diffusion.schedule import NoiseSchedule, ScheduleConfig
from realdeal.inference.plan import PlanConfig, make_plan
from realdeal.inference.refine import RefineJob, refine_volume, refine_volumes

SAMPLERS = [("ddpm", 6, 0.0), ("ddim", 5, 1.0), ("dpm++", 5, 0.0)]


def _coarse(shape, shift):
    x = -np.ones(shape, np.float32)
    idx = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
    c = np.array(shape) / 2 + shift
    d = np.sqrt((((idx - c) / (np.array(shape) * 0.3)) ** 2).sum(-1))
    x[d < 1] = 0.2 + 0.3 * np.cos(idx[d < 1][:, 0] / 3.0)
    return x


def _jobs(max_batch=3):
    """Three volumes of different shapes (so different plans), each with its own seed."""
    shapes = [((32, 36, 28), 0), ((24, 24, 24), 1), ((36, 28, 32), -2)]
    jobs = []
    for i, (shape, shift) in enumerate(shapes):
        x = _coarse(shape, shift)
        plan = make_plan(shape, PlanConfig(window=16, overlap=4, max_batch=max_batch), coarse=x)
        jobs.append(RefineJob(x, plan, seed=10 + i, key=i))
    return jobs


def _noise_dependent(calls):
    """A network whose output depends on x_t and on the noise in y_prev (so on the seed)."""

    def model(inp, t):
        calls.append(inp.shape[0])
        return 0.5 * inp[:, :1] + 0.1 * inp[:, 2:3] - 0.05 * inp[:, 1:2]

    return model


@pytest.mark.parametrize("name,steps,eta", SAMPLERS)
@pytest.mark.parametrize("target", ["image", "residual"])
def test_volumes_refined_together_equal_each_refined_alone(name, steps, eta, target):
    schedule = NoiseSchedule(ScheduleConfig(schedule="scaled_linear_beta"))
    sampler = make_sampler(name, schedule, steps, eta=eta, clip_x0=target == "image")
    kw = dict(show_progress=False, target=target, residual_scale=0.3)
    alone_calls: list[int] = []
    den = Denoiser(_noise_dependent(alone_calls), schedule)
    jobs = _jobs()
    alone = [refine_volume(j.coarse, den, sampler, j.plan, seed=j.seed, **kw) for j in jobs]
    together_calls: list[int] = []
    den = Denoiser(_noise_dependent(together_calls), schedule)
    out = dict((job.key, res) for job, res in refine_volumes(jobs, den, sampler, max_batch=7, **kw))
    assert sorted(out) == [0, 1, 2]
    for i, res in enumerate(alone):
        np.testing.assert_array_equal(out[i].refined, res.refined)  # exactly, not close
        assert out[i].unet_evaluations == res.unet_evaluations
    # The same windows were diffused in fewer, larger network calls, none above max_batch.
    assert sum(together_calls) == sum(alone_calls)
    assert len(together_calls) < len(alone_calls) and max(together_calls) <= 7
    assert max(together_calls) > max(alone_calls)
    # Seeds matter: a volume refined with another seed differs.
    j = jobs[0]
    other = refine_volume(j.coarse, den, sampler, j.plan, seed=j.seed + 1, **kw).refined
    assert not np.array_equal(other, alone[0].refined)


@pytest.mark.slow
def test_real_unet_grouped_volumes_match_alone_up_to_rounding_and_repeat_exactly():
    """A tiny MONAI U-Net. Its convolutions and linear layers are not batch-invariant on CPU
    (a window's output changes in the last bits with the batch it shares), so volumes
    refined together equal volumes refined alone up to float rounding, and the same grouping
    run twice (as in one process and under torchrun) is bit-for-bit identical."""
    from realdeal.models.unet import UNetConfig, build_unet

    torch.manual_seed(0)
    net = build_unet(
        UNetConfig(in_channels=3, out_channels=1, channels=(8, 8), num_res_blocks=1,
                   attention_levels=(False, False), num_head_channels=(0, 8), norm_num_groups=4)
    ).eval()  # fmt: skip
    with torch.no_grad():
        for p in net.parameters():  # MONAI zero-initialises the output layer
            p.add_(0.05 * torch.randn_like(p))
    schedule = NoiseSchedule(ScheduleConfig(schedule="scaled_linear_beta"))
    den = Denoiser(net, schedule)
    sampler = make_sampler("ddim", schedule, 2, eta=1.0)
    jobs = _jobs(max_batch=2)[:2]
    with torch.no_grad():
        alone = [refine_volume(j.coarse, den, sampler, j.plan, seed=j.seed, show_progress=False)
                 for j in jobs]  # fmt: skip
        runs = [
            {
                j.key: r.refined
                for j, r in refine_volumes(jobs, den, sampler, max_batch=3, show_progress=False)
            }  # fmt: skip
            for _ in range(2)
        ]
    for k, res in enumerate(alone):
        np.testing.assert_allclose(runs[0][k], res.refined, rtol=0, atol=1e-5)
        np.testing.assert_array_equal(runs[0][k], runs[1][k])
        assert np.abs(res.refined - jobs[k].coarse).max() > 0.1  # the network did something


def test_volumes_with_different_windows_are_refused():
    schedule = NoiseSchedule(ScheduleConfig(schedule="scaled_linear_beta"))
    a = _coarse((24, 24, 24), 0)
    jobs = [
        RefineJob(a, make_plan(a.shape, PlanConfig(window=16, overlap=4), coarse=a)),
        RefineJob(a, make_plan(a.shape, PlanConfig(window=8, overlap=2), coarse=a)),
    ]
    den = Denoiser(_noise_dependent([]), schedule)
    with pytest.raises(Exception, match="same window size"):
        list(refine_volumes(jobs, den, make_sampler("ddim", schedule, 2), max_batch=None,
                            show_progress=False))  # fmt: skip
