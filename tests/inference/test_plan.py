"""Refinement plans: one invariant suite run over our wavefront plans and the official traversal."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

from realdeal.errors import ConfigError
from realdeal.inference.plan import (
    Plan,
    PlanConfig,
    make_plan,
    official_padded_shape,
    official_plan,
    plan_from_dict,
)


def ellipsoid(shape, centre=None, radii=None):
    idx = np.indices(shape).astype(float)
    c = np.array(shape) / 2.0 if centre is None else np.asarray(centre, float)
    r = np.array(shape) * 0.3 if radii is None else np.asarray(radii, float)
    d = sum(((idx[i] - c[i]) / r[i]) ** 2 for i in range(3))
    return d < 1.0


SHAPE = (40, 46, 36)
BRAIN = ellipsoid(SHAPE, centre=(22, 20, 18), radii=(14, 17, 12))


def plans() -> dict[str, Plan]:
    coarse = np.where(BRAIN, 0.3, -1.0).astype(np.float32)
    return {
        "full-grid": make_plan(SHAPE, PlanConfig(window=16)),
        "half-overlap": make_plan(SHAPE, PlanConfig(window=16, overlap=8), brain_mask=BRAIN),
        "brain-mask": make_plan(SHAPE, PlanConfig(window=16), brain_mask=BRAIN),
        "coarse": make_plan(SHAPE, PlanConfig(window=16, max_batch=3), coarse=coarse),
        "no-overlap": make_plan(SHAPE, PlanConfig(window=16, overlap=0), brain_mask=BRAIN),
        "odd": make_plan((23, 17, 29), PlanConfig(window=10, overlap=3)),
        "official": official_plan(SHAPE, window=16),
        "official-batched": official_plan((30, 40, 26), window=8, max_batch=4),
    }


PLANS = plans()


@pytest.fixture(params=sorted(PLANS), scope="module")
def plan(request) -> Plan:
    return PLANS[request.param]


# -- invariants every plan satisfies -------------------------------------------------------
def test_every_voxel_written_once_or_kept_coarse(plan):
    count = np.zeros(plan.padded_shape, np.int32)
    for w in plan.running:
        count[w.slices] += plan.write_mask(w)
    np.testing.assert_array_equal(count, (plan.owner >= 0).astype(np.int32))
    assert plan.stats.voxels_written == int(count.sum())
    # what no window writes is background left by skipped windows
    assert ((plan.owner >= 0) | (plan.level == -1)).all()


def test_write_within_generated_and_known_from_earlier_waves(plan):
    for w in plan.running:
        gen, wr = plan.generate_mask(w), plan.write_mask(w)
        assert gen.shape == plan.window_shape and gen.dtype == bool
        assert not (wr & ~gen).any()
        lv = plan.level[w.slices]
        known = ~gen
        # known voxels were refined in an earlier wave or are skipped background
        assert ((lv[known] < w.wave) & (lv[known] >= -1)).all()
        own = plan.owner[w.slices][known]
        earlier = {u.index for u in plan.running if u.wave < w.wave}
        assert set(np.unique(own)) <= earlier | {-1}


def test_batches_are_sequential_and_bounded(plan):
    batches = plan.batches()
    assert len(batches) == plan.stats.batches
    assert [b[0].batch for b in batches] == list(range(len(batches)))
    for b in batches:
        assert len({w.wave for w in b}) == 1
        if plan.max_batch:
            assert len(b) <= plan.max_batch
    waves = [b[0].wave for b in batches]
    assert waves == sorted(waves)
    assert len(plan.waves()) == plan.stats.waves
    if plan.max_batch:
        assert plan.stats.batches == sum(math.ceil(len(w) / plan.max_batch) for w in plan.waves())


def test_pad_unpad_round_trip(plan):
    x = np.random.default_rng(0).normal(size=plan.shape).astype(np.float32)
    p = plan.pad(x)
    assert p.shape == plan.padded_shape
    assert (p == -1).sum() >= int(np.prod(plan.padded_shape)) - x.size
    np.testing.assert_array_equal(plan.unpad(p), x)


def test_windows_tile_the_padded_volume(plan):
    s = plan.stats
    # our plan uses every lattice position; the authors' traversal a subset of it
    if plan.kind == "wavefront":
        assert s.windows_total == int(np.prod(plan.grid_shape))
    else:
        assert s.windows_total < int(np.prod(plan.grid_shape))
    assert s.windows_run + s.windows_skipped == s.windows_total
    assert s.voxels_computed == s.windows_run * plan.window**3
    assert math.isclose(s.redundancy, s.voxels_computed / s.voxels_written)
    covered = np.zeros(plan.padded_shape, bool)
    for w in plan.windows:
        covered[w.slices] = True
        assert all(a == g * plan.stride for a, g in zip(w.start, w.grid, strict=True))
    assert covered.all()


def test_plan_round_trips_through_dict(plan):
    again = plan_from_dict(json.loads(json.dumps(plan.to_dict(windows=True))))
    np.testing.assert_array_equal(again.owner, plan.owner)
    np.testing.assert_array_equal(again.level, plan.level)
    assert again.windows == plan.windows
    assert "| waves" in plan.describe() and plan.to_markdown() == plan.describe()


def test_generates_exactly_what_it_writes(plan):
    for w in plan.running:
        np.testing.assert_array_equal(plan.generate_mask(w), plan.write_mask(w))


def test_same_wave_generation_regions_are_disjoint(plan):
    for wave in plan.waves():
        count = np.zeros(plan.padded_shape, np.int32)
        for w in wave:
            count[w.slices] += plan.generate_mask(w)
        assert count.max() <= 1


# -- our wavefront plan --------------------------------------------------------------------
WAVEFRONT = [k for k, p in PLANS.items() if p.kind == "wavefront"]


@pytest.mark.parametrize("name", ["brain-mask", "coarse", "half-overlap"])
def test_first_window_is_nearest_the_brain_centre_with_full_mask(name):
    plan = PLANS[name]
    first = plan.running[0]
    assert first.wave == 0 and first.batch == 0
    assert plan.generate_mask(first).all()
    com = np.array(np.nonzero(BRAIN)).mean(1) - np.array(plan.crop_pad.start)
    centres = {w.grid: np.array(w.start) + (plan.window - 1) / 2 for w in plan.windows}
    best = min(np.linalg.norm(c - com) for c in centres.values())
    assert np.linalg.norm(centres[first.grid] - com) == pytest.approx(best)
    assert first.grid == plan.centre


def test_no_brain_starts_at_volume_centre():
    plan = PLANS["full-grid"]
    centre = (np.array(SHAPE) - 1) / 2 - np.array(plan.crop_pad.start)
    dist = {
        w.grid: np.linalg.norm(np.array(w.start) + (plan.window - 1) / 2 - centre)
        for w in plan.windows
    }
    assert dist[plan.centre] == pytest.approx(min(dist.values()))
    assert plan.running[0].grid == plan.centre
    assert plan.generate_mask(plan.running[0]).all()


def l1(a, b):
    return sum(abs(x - y) for x, y in zip(a, b, strict=True))


def test_full_grid_waves_are_l1_distance_from_the_centre():
    plan = PLANS["full-grid"]
    for w in plan.running:
        assert w.wave == l1(w.grid, plan.centre)


@pytest.mark.parametrize("name", WAVEFRONT)
def test_waves_grow_outward(name):
    plan = PLANS[name]
    by_grid = {w.grid: w for w in plan.running}
    for w in plan.running:
        assert w.wave <= l1(w.grid, plan.centre)
        for d in itertools.product((-1, 0, 1), repeat=3):
            h = by_grid.get(tuple(g + e for g, e in zip(w.grid, d, strict=True)))
            if h is not None and plan.overlap and l1(h.grid, plan.centre) < l1(w.grid, plan.centre):
                assert h.wave < w.wave


def test_background_windows_are_skipped():
    plan = PLANS["brain-mask"]
    brain_p = plan.pad(BRAIN, False)
    assert plan.stats.windows_skipped > 0
    for w in plan.windows:
        assert w.skipped == (not brain_p[w.slices].any())
    assert not brain_p[plan.owner < 0].any()
    # the coarse volume gives the same plan as its brain mask
    assert [w.skipped for w in PLANS["coarse"].windows] == [w.skipped for w in plan.windows]


def test_no_overlap_runs_everything_in_one_wave():
    plan = PLANS["no-overlap"]
    assert plan.stats.waves == 1
    assert all(plan.generate_mask(w).all() for w in plan.running)
    assert plan.stats.redundancy == pytest.approx(1.0)


def test_determinism():
    a = make_plan(SHAPE, PlanConfig(window=16), brain_mask=BRAIN)
    b = make_plan(SHAPE, PlanConfig(window=16), brain_mask=BRAIN.copy())
    assert a.windows == b.windows
    np.testing.assert_array_equal(a.owner, b.owner)
    np.testing.assert_array_equal(a.level, b.level)


def test_padding_rule_and_small_volumes():
    plan = make_plan((100, 64, 7), PlanConfig(window=32, overlap=8))
    # 100 → ceil(68/24)+1 = 4 windows → 104; 64 → 3 → 80; 7 (< window) → one padded window
    assert plan.padded_shape == (104, 80, 32)
    assert plan.grid_shape == (4, 3, 1)
    tiny = make_plan((5, 6, 7), PlanConfig(window=16))
    assert tiny.stats.windows_run == 1 and tiny.padded_shape == (16, 16, 16)
    assert tiny.generate_mask(tiny.running[0]).all()


def test_empty_brain_skips_everything():
    plan = make_plan(SHAPE, PlanConfig(window=16), brain_mask=np.zeros(SHAPE, bool))
    assert plan.stats.windows_run == 0 and plan.stats.voxels_written == 0
    assert plan.batches() == []


@pytest.mark.parametrize(
    "kw", [{"window": 16, "overlap": 9}, {"window": 16, "overlap": -1}, {"max_batch": 0}]
)
def test_bad_config(kw):
    with pytest.raises(ConfigError):
        PlanConfig(**kw)


def test_default_overlap_is_a_quarter_window():
    assert PlanConfig(window=64).resolved_overlap == 16
    assert PlanConfig(window=32).resolved_overlap == 8


def test_mask_shape_mismatch_is_an_error():
    with pytest.raises(ConfigError):
        make_plan(SHAPE, brain_mask=np.ones((3, 3, 3), bool))


# -- the authors' traversal (--schedule official) -----------------------------------------
def test_official_padding_reproduces_the_spec():
    assert official_padded_shape((224, 288, 224), 64) == (224, 320, 256)
    # x to whole strides, y and z to whole windows, at least one window
    assert official_padded_shape((96, 112, 96), 32) == (96, 128, 96)
    assert official_padded_shape((5, 70, 33), 16) == (16, 80, 48)


def _starts(batch):
    return [w.start for w in batch]


def test_official_traversal_on_the_hcp_grid():
    """The authors' traversal (docs/method.md#spec-5-4), coordinate by coordinate: 139 windows in
    20 sequential steps."""
    plan = official_plan((224, 288, 224), window=64)
    s = plan.stats
    assert s.padded_shape == (224, 320, 256) and s.stride == 32
    batches = plan.batches()
    assert _starts(batches[0]) == [(96, 128, 96)]
    column = [(96, y, 96) for y in (96, 64, 32, 0, 160, 192, 224, 256)]
    assert [_starts(b) for b in batches[1:9]] == [[c] for c in column]
    ys = (0, 64, 128, 192, 256)
    assert [_starts(b) for b in batches[9:15]] == [
        [(96, y, z) for y in ys] for z in (64, 32, 0, 128, 160, 192)
    ]
    assert [_starts(b) for b in batches[15:]] == [
        [(x, y, z) for y in ys for z in (0, 64, 128, 192)] for x in (64, 32, 0, 128, 160)
    ]
    assert len(batches) == s.batches == s.waves == 1 + 8 + 6 + 5 == 20
    assert [len(b) for b in batches] == [1] * 9 + [5] * 6 + [20] * 5
    assert s.windows_run == s.windows_total == 1 + 8 + 30 + 100 == 139
    assert s.windows_skipped == 0
    assert s.voxels_written == 224 * 320 * 256  # the union covers the padded grid
    assert s.redundancy == pytest.approx(139 * 64**3 / (224 * 320 * 256))
    assert s.unet_evaluations(1000) == 139_000
    # max_batch splits the 20-window slabs into network calls; steps and masks stay
    split = official_plan((224, 288, 224), 64, max_batch=8)
    assert split.stats.batches == 9 + 6 + 5 * 3 and split.stats.waves == 20
    np.testing.assert_array_equal(split.level, plan.level)
    assert "positions, 139 used" in plan.describe()


def test_official_traversal_on_a_small_grid():
    """The same rules scaled to an 8³ window (stride 4), written out by hand."""
    plan = official_plan((12, 20, 14), window=8)
    assert plan.padded_shape == (12, 24, 16) and plan.grid_shape == (2, 5, 3)
    assert [_starts(b) for b in plan.batches()] == [
        [(4, 8, 4)],  # centre: lattice (1, 2, 1)
        [(4, 4, 4)], [(4, 0, 4)], [(4, 12, 4)], [(4, 16, 4)],  # y column
        [(4, 0, 0), (4, 8, 0), (4, 16, 0)], [(4, 0, 8), (4, 8, 8), (4, 16, 8)],  # z growth
        [(0, y, z) for y in (0, 8, 16) for z in (0, 8)],  # the x slab
    ]  # fmt: skip
    assert plan.stats.voxels_written == 12 * 24 * 16


def test_official_masks_are_full_or_halves():
    plan = PLANS["official"]
    first, *rest = plan.running
    assert plan.generate_mask(first).all()
    h = plan.window // 2
    for w in rest:
        m = plan.generate_mask(w)
        assert m.sum() == plan.window**3 // 2
        # the known half is a face slab of half a window
        assert any(
            (~m).take(range(0, h), ax).all() or (~m).take(range(h, 2 * h), ax).all()
            for ax in range(3)
        )


def test_official_bad_padding_is_refused():
    with pytest.raises(ConfigError, match="multiples of 16"):
        official_plan((40, 46, 36), window=16, padded_shape=(40, 56, 48))
    with pytest.raises(ConfigError, match="even window"):
        official_plan((40, 46, 36), window=15)


def test_refine_loop_writes_every_voxel_once_over_the_official_plan():
    """The authors' traversal through the masked loop, with an exact denoiser that tags each
    window's output: every voxel ends with the tag of the one window whose write mask holds
    it, and a window's known region stays fixed while it runs. The volume is its own padded
    grid, so every voxel the plan covers is checked."""
    import torch

    from realdeal.diffusion.denoiser import Denoiser
    from realdeal.diffusion.registry import make_sampler
    from realdeal.diffusion.schedule import NoiseSchedule, ScheduleConfig
    from realdeal.inference.refine import refine_volume

    schedule = NoiseSchedule(ScheduleConfig(prediction_type="epsilon"))
    sampler = make_sampler("ddim", schedule, 3)
    steps = len(sampler.timesteps())
    shape = (12, 24, 16)
    coarse = (0.2 * np.sin(np.indices(shape).sum(0) / 3.0)).astype(np.float32)
    plan = official_plan(shape, window=8)
    assert plan.padded_shape == shape
    batches = plan.batches()
    first_of = np.cumsum([0] + [len(b) for b in batches])
    tag = 0.01 * (1 + np.arange(len(plan.running)))
    calls: list[torch.Tensor] = []

    def model(inp, t):
        b = len(calls) // steps  # every batch makes `steps` network calls
        calls.append(inp[:, 0].clone())
        tags = torch.tensor(tag[first_of[b] : first_of[b + 1]], dtype=inp.dtype)
        ab = schedule.alpha_bar(t).to(inp.dtype).view(-1, 1, 1, 1, 1)
        x0 = inp[:, 1:2] + tags.view(-1, 1, 1, 1, 1)
        return (inp[:, :1] - ab.sqrt() * x0) / (1 - ab).sqrt()

    res = refine_volume(coarse, Denoiser(model, schedule), sampler, plan, show_progress=False)
    assert res.unet_evaluations == 17 * steps and res.network_calls == len(calls) == 8 * steps
    pos = {w.index: k for k, w in enumerate(plan.running)}
    expected = coarse + tag[np.vectorize(pos.get)(plan.owner)]
    np.testing.assert_allclose(res.refined, expected, atol=1e-4)
    for b, windows in enumerate(batches):
        known = ~np.stack([plan.generate_mask(w) for w in windows])
        x_ts = [c.numpy() for c in calls[b * steps : (b + 1) * steps]]
        for x_t in x_ts[1:]:
            np.testing.assert_array_equal(x_t[known], x_ts[0][known])
