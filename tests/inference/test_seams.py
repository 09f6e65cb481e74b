"""Seam score: per-window offsets on smooth noise are detected; seamless images score ≈ 1."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from realdeal.errors import ConfigError
from realdeal.inference.plan import PlanConfig, make_plan, official_plan
from realdeal.inference.seams import SeamScore, seam_score
from realdeal.metrics.seam import seam_function

SHAPE = (48, 56, 40)


def smooth_noise(shape=SHAPE, seed=0, sigma=1.5):
    # periodic smoothing: stationary up to the faces (reflect borders damp the steps there)
    x = ndimage.gaussian_filter(np.random.default_rng(seed).normal(size=shape), sigma, mode="wrap")
    return (x / x.std() * 0.2).astype(np.float32)


def with_offsets(x, plan, amplitude, seed=1):
    """Add one constant per window (the window that wrote the voxel)."""
    owner = plan.owner_map()
    off = np.random.default_rng(seed).normal(size=len(plan.windows)) * amplitude
    return (x + np.where(owner >= 0, off[np.maximum(owner, 0)], 0.0)).astype(np.float32)


PLANS = {
    "wavefront": make_plan(SHAPE, PlanConfig(window=16)),
    "official": official_plan(SHAPE, window=16),
}


@pytest.fixture(params=sorted(PLANS))
def plan(request):
    return PLANS[request.param]


def test_seamless_image_scores_one(plan):
    s = seam_score(smooth_noise(), plan)
    assert isinstance(s, SeamScore)
    assert s.ratio == pytest.approx(1.0, abs=0.05)
    assert s.ratio_p95 == pytest.approx(1.0, abs=0.08)
    assert all(r == pytest.approx(1.0, abs=0.08) for r in s.ratio_axis)
    assert s.n_boundary > 0 and s.n_interior > s.n_boundary
    assert float(s) == s.ratio


def test_offsets_raise_the_score_monotonically(plan):
    x = smooth_noise()
    step = seam_score(x, plan).mean_interior  # offsets in units of the typical voxel step
    ratios = [seam_score(with_offsets(x, plan, k * step), plan).ratio for k in (0, 0.5, 1, 2, 4)]
    assert ratios[0] == pytest.approx(1.0, abs=0.05)
    assert ratios[1] > 1.05
    assert ratios[3] > 1.5
    assert ratios[4] > 2.5
    assert all(b > a for a, b in zip(ratios, ratios[1:], strict=False))


def test_wrong_boundaries_do_not_see_the_seams():
    """Offsets pasted on one plan's windows, scored with a plan whose boundaries lie elsewhere."""
    right = PLANS["wavefront"]
    wrong = make_plan(SHAPE, PlanConfig(window=14, overlap=3))
    y = with_offsets(smooth_noise(), right, 0.2)
    assert seam_score(y, right).ratio > 2.0
    assert seam_score(y, wrong).ratio < 0.7 * seam_score(y, right).ratio


class OwnerOnly:
    """Stand-in plan with a given owner map (the seam score needs nothing else)."""

    def __init__(self, owner):
        self.shape = owner.shape
        self._owner = owner

    def owner_map(self):
        return self._owner


def test_relabelled_and_shuffled_assignments():
    plan = PLANS["wavefront"]
    y = with_offsets(smooth_noise(seed=3), plan, 0.2)
    owner = plan.owner_map()
    # renaming windows changes nothing
    perm = np.random.default_rng(0).permutation(len(plan.windows))
    assert seam_score(y, OwnerOnly(perm[owner])) == seam_score(y, plan)
    # owners drawn at random per voxel: boundary and interior pairs are alike → ≈ 1
    rng = np.random.default_rng(1)
    shuffled = rng.integers(0, 8, size=owner.shape)
    assert seam_score(y, OwnerOnly(shuffled)).ratio == pytest.approx(1.0, abs=0.05)


def test_mask_restricts_pairs_and_hook_signature():
    plan = PLANS["wavefront"]
    idx = np.indices(SHAPE)
    mask = (idx[0] > 8) & (idx[0] < 40)
    y = with_offsets(smooth_noise(), plan, 0.05)
    full, part = seam_score(y, plan), seam_score(y, plan, mask)
    assert part.n_interior < full.n_interior
    # the metrics suite calls fn(image, brain_mask) and takes float()
    v = float(seam_score(smooth_noise(), mask))
    assert seam_function(None)(smooth_noise(), mask) == pytest.approx(v)
    assert v == pytest.approx(1.0, abs=0.08)


def test_seam_function_scores_on_the_given_window():
    # offsets on a 16³-window plan: the suite's default (32³ windows for this size) mostly
    # scores the 16-grid boundaries as window interiors; bound to 16 it finds them
    mask = np.ones(SHAPE, bool)
    plan16 = make_plan(SHAPE, PlanConfig(window=16), brain_mask=mask)
    y = with_offsets(smooth_noise(), plan16, 0.1)
    on16, default = seam_function(16)(y, mask), float(seam_function(None)(y, mask))
    assert on16 == pytest.approx(float(seam_score(y, plan16, mask)))
    assert on16 > 1.5 and on16 > default * 1.3


def test_shape_errors():
    with pytest.raises(ConfigError):
        seam_score(np.zeros((4, 4)), PLANS["wavefront"])
    with pytest.raises(ConfigError):
        seam_score(np.zeros((8, 8, 8), np.float32), PLANS["wavefront"])
