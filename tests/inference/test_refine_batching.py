"""The refined volume does not depend on how windows are batched (``max_batch``).

Every window draws from its own stream (seeded from the volume's seed and the window's index
in the plan), and windows of one wave never share an unrefined voxel: so splitting waves into
batches of 1, 3 or all of a wave's windows changes nothing — exactly with a network whose
output for a window does not depend on its batch, up to float rounding with a real U-Net.
One suite over every registered sampler (and DDIM's η and variance choices).
"""

from __future__ import annotations

import numpy as np
import pytest

from realdeal.diffusion import registry
from realdeal.diffusion.denoiser import Denoiser
from realdeal.diffusion.registry import make_sampler
from realdeal.diffusion.schedule import NoiseSchedule, ScheduleConfig
from realdeal.inference.plan import PlanConfig, make_plan, official_plan
from realdeal.inference.refine import refine_volume
from tiny_refiner import coarse_volumes, tiny_refiner_checkpoint

VARIANTS = [
    (name, eta, variance)
    for name, spec in registry.SAMPLERS.items()
    for eta, variance in ([(0.0, "fixed"), (1.0, "fixed"), (1.0, "analytic")] if spec.eta else [(0.0, "fixed")])
]  # fmt: skip
IDS = [f"{n}-eta{e}-{v}" for n, e, v in VARIANTS]


def _coarse(shape=(40, 44, 36)):
    x = -np.ones(shape, np.float32)
    idx = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
    d = np.sqrt((((idx - np.array(shape) / 2) / (np.array(shape) * 0.3)) ** 2).sum(-1))
    x[d < 1] = 0.2 + 0.3 * np.cos(idx[d < 1][:, 0] / 3.0)
    return x


def _noise_dependent(inp, t):
    """Output depends on x_t, the noise in y_prev and x̂; each window on its own."""
    return 0.5 * inp[:, :1] + 0.1 * inp[:, 2:3] - 0.05 * inp[:, 1:2]


@pytest.mark.parametrize("target", ["image", "residual"])
@pytest.mark.parametrize("name,eta,variance", VARIANTS, ids=IDS)
def test_refined_volume_does_not_depend_on_max_batch(name, eta, variance, target):
    schedule = NoiseSchedule(ScheduleConfig(schedule="scaled_linear_beta"))
    sampler = make_sampler(name, schedule, 4, eta=eta, clip_x0=target == "image", variance=variance)
    den = Denoiser(_noise_dependent, schedule)
    coarse = _coarse()
    out = {}
    for max_batch in (1, 3, 4, None):
        plan = make_plan(coarse.shape, PlanConfig(window=16, overlap=4, max_batch=max_batch),
                         coarse=coarse)  # fmt: skip
        out[max_batch] = refine_volume(coarse, den, sampler, plan, seed=2, show_progress=False,
                                       target=target, residual_scale=0.3).refined  # fmt: skip
        if max_batch is None:
            assert max(len(w) for w in plan.waves()) > 4  # some wave really is split above
    for max_batch in (3, 4, None):
        np.testing.assert_array_equal(out[max_batch], out[1])  # exactly: no batch interaction
    assert np.abs(out[1] - coarse).max() > 0.05
    plan = make_plan(coarse.shape, PlanConfig(window=16, overlap=4, max_batch=4), coarse=coarse)
    other = refine_volume(coarse, den, sampler, plan, seed=3, show_progress=False, target=target,
                          residual_scale=0.3).refined  # fmt: skip
    assert not np.array_equal(other, out[4])  # the seed still matters


def test_official_traversal_does_not_depend_on_max_batch_either():
    schedule = NoiseSchedule(ScheduleConfig(schedule="scaled_linear_beta"))
    sampler = make_sampler("ddim", schedule, 3, eta=1.0)
    coarse = _coarse((32, 32, 32))
    den = Denoiser(_noise_dependent, schedule)
    a, b = (
        refine_volume(coarse, den, sampler, official_plan(coarse.shape, 16, max_batch=mb),
                      seed=1, show_progress=False).refined
        for mb in (1, 4)
    )  # fmt: skip
    np.testing.assert_array_equal(a, b)


@pytest.fixture(scope="module")
def refiner(tmp_path_factory):
    from realdeal.pipelines.refiner import RefinerPipeline

    ckpt = tiny_refiner_checkpoint(tmp_path_factory.mktemp("refiner") / "refiner.pt")
    return RefinerPipeline.from_checkpoint(ckpt)


@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    from realdeal.data.io import load_volume

    return [load_volume(p) for p in coarse_volumes(tmp_path_factory.mktemp("in"), 2)]


@pytest.mark.slow
@pytest.mark.parametrize(
    "sampler", [None, *registry.SAMPLERS], ids=lambda s: s or "default"
)  # fmt: skip
def test_refiner_pipeline_max_batch_1_equals_4(refiner, volumes, sampler):
    """The tiny (real) U-Net: max_batch 1 and 4 agree up to float rounding, for the refiner's
    default sampling (DDIM η 1, analytic variance) and every sampler."""
    from realdeal.pipelines.refiner import RefineSettings

    eta = 1.0 if sampler == "ddim" else None
    settings = RefineSettings(sampler=sampler, steps=2, eta=eta, seed=3, precision="fp32")
    for v in volumes:
        one = refiner(v, settings, show_progress=False, max_batch=1).data
        four = refiner(v, settings, show_progress=False, max_batch=4).data
        np.testing.assert_allclose(one, four, rtol=0, atol=1e-5)
        assert np.abs(one - v.data).max() > 0.01  # the network did something
    plan = refiner.plan(volumes[0].data, RefineSettings(max_batch=4))
    assert max(len(w) for w in plan.waves()) > 4  # waves really are split differently


def test_volumes_refined_together_report_their_own_share_of_the_time(monkeypatch):
    """Each volume's ``compute_seconds`` is its windows' share of the network calls it took part
    in: positive, at most its time in flight, and the shares add up to the calls' total. A fake
    clock that only the network advances (by 1 per window) makes the shares exact."""
    import types

    from realdeal.inference import refine as refine_mod
    from realdeal.inference.refine import RefineJob, refine_volumes

    clock = [0.0]
    monkeypatch.setattr(refine_mod, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    schedule = NoiseSchedule(ScheduleConfig(schedule="scaled_linear_beta"))
    sampler = make_sampler("ddim", schedule, 3, eta=0.0)

    def net(inp, t):
        clock[0] += float(len(inp))  # one second per window and step
        return _noise_dependent(inp, t)

    coarse = _coarse()
    plan = make_plan(coarse.shape, PlanConfig(window=16, overlap=4, max_batch=8), coarse=coarse)
    jobs = [RefineJob(coarse, plan, seed=i) for i in range(3)]
    results = [r for _, r in refine_volumes(jobs, Denoiser(net, schedule), sampler, max_batch=8,
                                             show_progress=False)]  # fmt: skip
    shares = [r.compute_seconds for r in results]
    assert shares == pytest.approx([r.unet_evaluations for r in results])  # own windows only
    assert sum(shares) == pytest.approx(clock[0])
    assert all(s <= r.seconds + 1e-9 for s, r in zip(shares, results, strict=True))
    assert results[-1].seconds > 1.5 * shares[-1]  # in flight together: not the volume's own time
