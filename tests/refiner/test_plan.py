"""Refinement plans: one invariant suite run over our wavefront plans and the official schedule."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

from realdeal.diffusion.plan import (
    Plan,
    PlanConfig,
    make_plan,
    official_padded_shape,
    official_plan,
    plan_from_dict,
)
from realdeal.errors import ConfigError


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
    assert s.windows_total == int(np.prod(plan.grid_shape))
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


# -- our wavefront plan --------------------------------------------------------------------
WAVEFRONT = [k for k, p in PLANS.items() if p.kind == "wavefront"]


@pytest.mark.parametrize("name", WAVEFRONT)
def test_wavefront_generates_exactly_what_it_writes(name):
    plan = PLANS[name]
    for w in plan.running:
        np.testing.assert_array_equal(plan.generate_mask(w), plan.write_mask(w))


@pytest.mark.parametrize("name", WAVEFRONT)
def test_same_wave_generation_regions_are_disjoint(name):
    plan = PLANS[name]
    for wave in plan.waves():
        count = np.zeros(plan.padded_shape, np.int32)
        for w in wave:
            count[w.slices] += plan.generate_mask(w)
        assert count.max() <= 1


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


# -- the official schedule -----------------------------------------------------------------
def test_official_padding_reproduces_the_spec():
    assert official_padded_shape((224, 288, 224), 64) == (224, 320, 256)


def test_official_counts_at_full_size():
    plan = official_plan((224, 288, 224), window=64)
    s = plan.stats
    assert s.padded_shape == (224, 320, 256) and s.grid_shape == (6, 9, 7)
    assert s.windows_run == 378 and s.windows_skipped == 0
    # centre + 8 column windows one by one + 6 z-steps (9 windows) + 5 x-slabs (63 windows)
    assert s.waves == 1 + 8 + 6 + 5 == s.batches
    assert [len(b) for b in plan.batches()] == [1] * 9 + [9] * 6 + [63] * 5
    assert s.voxels_written == 224 * 320 * 256
    assert s.redundancy == pytest.approx(378 * 64**3 / (224 * 320 * 256))
    assert s.redundancy_volume == pytest.approx(378 * 64**3 / (224 * 288 * 224))
    assert s.unet_evaluations(1000) == 378_000
    assert official_plan((224, 288, 224), 64, max_batch=32).stats.batches == 9 + 6 + 5 * 2


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
