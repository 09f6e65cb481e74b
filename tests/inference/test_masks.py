"""Training masks: distribution, determinism, and coverage of every mask a plan produces."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from realdeal.errors import ConfigError
from realdeal.inference.masks import (
    MaskConfig,
    MaskShape,
    describe_mask,
    half_mask,
    in_support,
    plan_mask_shapes,
    sample_mask,
    sample_shape,
)
from realdeal.inference.plan import PlanConfig, make_plan, official_plan

CONFIGS = {"default": MaskConfig(), "paper": MaskConfig.paper()}


@pytest.fixture(params=sorted(CONFIGS))
def config(request) -> MaskConfig:
    return CONFIGS[request.param]


def ellipsoid(shape, radii):
    idx = np.indices(shape).astype(float)
    c = np.array(shape) / 2.0
    return sum(((idx[i] - c[i]) / radii[i]) ** 2 for i in range(3)) < 1.0


def test_samples_are_bool_windows_in_support(config):
    rng = np.random.default_rng(0)
    for _ in range(300):
        m = sample_mask((16, 16, 16), rng, config)
        assert m.shape == (16, 16, 16) and m.dtype == bool and m.any()
        shape = describe_mask(m)
        assert in_support(shape, m.shape, config)


def test_full_mask_probability_is_the_papers(config):
    rng = np.random.default_rng(1)
    kinds = Counter(sample_shape((32, 32, 32), rng, config).kind((32,) * 3) for _ in range(4000))
    assert kinds["full"] / 4000 == pytest.approx(0.1, abs=0.02)
    assert kinds["half"] / 4000 == pytest.approx(config.p_half, abs=0.03)
    assert kinds["slabs"] / 4000 == pytest.approx(config.p_slabs, abs=0.03)


def test_all_six_halves_and_face_counts_occur():
    rng = np.random.default_rng(2)
    shapes = [sample_shape((16, 16, 16), rng) for _ in range(3000)]
    halves = {s for s in shapes if s.kind((16,) * 3) == "half"}
    assert len(halves) == 6
    faces = Counter(len(s.known) for s in shapes if s.kind((16,) * 3) == "slabs")
    assert set(faces) == {1, 2, 3}
    thick = {t for s in shapes for _, _, t in s.known}
    assert thick == set(range(2, 9))  # 1/8 … 1/2 of 16


def test_deterministic_given_rng():
    a = [sample_mask((8, 8, 8), np.random.default_rng(5)) for _ in range(3)]
    b = [sample_mask((8, 8, 8), np.random.default_rng(5)) for _ in range(3)]
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


def test_half_masks_match_the_paper():
    m = half_mask((8, 8, 8), axis=0, generate_high=False)  # M = 1 on the left half
    assert m[:4].all() and not m[4:].any()
    assert describe_mask(m) == MaskShape(((0, 1, 4),))
    assert describe_mask(m).kind((8, 8, 8)) == "half"


def test_describe_round_trip_and_irregular_shapes():
    shape = MaskShape(((0, 0, 3), (1, 1, 2), (2, 0, 5)))
    assert describe_mask(shape.to_mask((10, 10, 10))) == shape
    assert describe_mask(np.ones((4, 4, 4), bool)) == MaskShape()
    odd = np.ones((8, 8, 8), bool)
    odd[2:4, 2:4, 2:4] = False  # a known cube inside: not face slabs
    assert describe_mask(odd) is None
    assert not in_support(None, (8, 8, 8))


def test_support_rules():
    cfg = MaskConfig()
    ws = (64, 64, 64)
    assert in_support(MaskShape(((0, 0, 16), (1, 1, 16), (2, 0, 16))), ws, cfg)
    assert not in_support(MaskShape(((0, 0, 16), (0, 1, 16))), ws, cfg)  # same axis twice
    assert not in_support(MaskShape(((0, 0, 16), (1, 1, 8))), ws, cfg)  # unequal thickness
    assert not in_support(MaskShape(((0, 0, 4),)), ws, cfg)  # thinner than 1/8
    paper = MaskConfig.paper()
    assert in_support(MaskShape(((2, 1, 32),)), ws, paper)
    assert not in_support(MaskShape(((2, 1, 16),)), ws, paper)


@pytest.mark.parametrize(
    "kw",
    [
        {"p_full": 0.5},
        {"p_full": -0.1, "p_half": 0.5, "p_slabs": 0.6},
        {"thickness": (0.3, 0.6)},
        {"faces": (0.0, 0.0, 0.0)},
    ],
)
def test_bad_config(kw):
    with pytest.raises(ConfigError):
        MaskConfig(**kw)


def test_config_round_trips():
    cfg = MaskConfig(p_full=0.2, p_half=0.2, p_slabs=0.6, thickness=(0.25, 0.5))
    assert MaskConfig.from_dict(cfg.to_dict()) == cfg


# every mask a plan produces is in the support of the training distribution
@pytest.mark.slow
@pytest.mark.parametrize(
    ("window", "overlap"), [(32, None), (32, 16), (32, 4), (64, None), (64, 8), (64, 32)]
)
def test_plan_masks_are_in_the_training_support(window, overlap):
    shape = (3 * window, int(3.5 * window), 3 * window)
    brain = ellipsoid(shape, [0.4 * s for s in shape])
    plan = make_plan(shape, PlanConfig(window=window, overlap=overlap), brain_mask=brain)
    shapes = plan_mask_shapes(plan)
    assert None not in shapes
    for s in shapes:
        assert in_support(s, plan.window_shape, MaskConfig()), str(s)
    # several faces occur: the six halves alone would not cover them
    assert max(len(s.known) for s in shapes) == 3


def test_official_masks_are_the_papers():
    plan = official_plan((48, 56, 40), window=16)
    shapes = plan_mask_shapes(plan)
    kinds = Counter(s.kind(plan.window_shape) for s in shapes.elements())
    assert kinds == {"full": 1, "half": plan.stats.windows_run - 1}
    for s in shapes:
        assert in_support(s, plan.window_shape, MaskConfig.paper())
        assert in_support(s, plan.window_shape, MaskConfig())
