"""Invertible preprocessing: scaling, crop/pad and resampling, and their serialisation."""

from __future__ import annotations

import numpy as np
import pytest

from realdeal.data.transforms import CropPad, IntensityScaler, Resample, SubjectTransform
from realdeal.errors import ConfigError


def test_scaler_maps_window_to_unit_range_and_inverts():
    s = IntensityScaler(100.0, 900.0)
    x = np.array([0.0, 100.0, 500.0, 900.0, 2000.0], np.float32)
    y = s.forward(x)
    np.testing.assert_allclose(y, [-1, -1, 0, 1, 1], atol=1e-6)
    inside = np.linspace(100, 900, 17, dtype=np.float32)
    np.testing.assert_allclose(s.inverse(s.forward(inside)), inside, rtol=1e-5)


def test_scaler_fit_pools_percentiles():
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0, 100, 50_000), rng.uniform(100, 200, 50_000)
    s = IntensityScaler.fit([a, b], 1.0, 99.0)
    lo, hi = np.percentile(np.concatenate([a, b]), [1, 99])
    assert s.low == pytest.approx(lo) and s.high == pytest.approx(hi)
    with pytest.raises(ConfigError):
        IntensityScaler.fit([np.full(10, 3.0)])
    with pytest.raises(ConfigError):
        IntensityScaler(5.0, 5.0)


@pytest.mark.parametrize(
    "in_shape, out_shape",
    [((10, 12, 8), (16, 16, 16)), ((20, 9, 30), (12, 14, 10)), ((8, 8, 8), (8, 8, 8))],
)
def test_croppad_inverse(in_shape, out_shape):
    rng = np.random.default_rng(0)
    x = rng.normal(size=in_shape).astype(np.float32)
    lo = np.array([1, 1, 1])
    hi = np.array(in_shape) - 1
    cp = CropPad.around_box(in_shape, out_shape, lo, hi)
    y = cp.forward(x, fill=-1.0)
    assert y.shape == out_shape
    back = cp.inverse(y, fill=-7.0)
    kept = back != -7.0
    np.testing.assert_array_equal(back[kept], x[kept])
    # Voxels are lost only along axes where the input is larger than the output.
    assert kept.sum() == np.prod([min(a, b) for a, b in zip(in_shape, out_shape, strict=True)])
    # The affine moves with the window: output voxel 0 sits where input voxel `start` was.
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    np.testing.assert_allclose(cp.forward_affine(aff) @ [0, 0, 0, 1], aff @ [*cp.start, 1])
    np.testing.assert_allclose(cp.inverse_affine(cp.forward_affine(aff)), aff)
    assert CropPad.from_dict(cp.to_dict()) == cp


def test_croppad_centres_the_box():
    cp = CropPad.around_box(
        (40, 40, 40), (20, 20, 20), np.array([10, 10, 10]), np.array([20, 20, 20])
    )
    assert cp.start == (5, 5, 5)
    pad = CropPad.around_box(
        (10, 10, 10), (20, 20, 20), np.array([0, 0, 0]), np.array([10, 10, 10])
    )
    assert pad.start == (-5, -5, -5)


def test_resample_geometry_and_round_trip():
    x = np.zeros((30, 32, 28), np.float32)
    x[8:22, 10:24, 6:20] = 1.0
    rs = Resample(x.shape, (1.0, 1.0, 1.0), (2.0, 2.0, 2.0))
    assert rs.out_shape == (15, 16, 14)
    aff = np.eye(4)
    new_aff = rs.forward_affine(aff)
    # The field of view keeps its centre.
    c_in = aff @ [*(np.array(x.shape) - 1) / 2, 1]
    c_out = new_aff @ [*(np.array(rs.out_shape) - 1) / 2, 1]
    np.testing.assert_allclose(c_in, c_out, atol=1e-9)
    y = rs.forward(x)
    # The block's centre of mass stays in place in world coordinates.
    com_in = np.argwhere(x > 0.5).mean(0)
    com_out = (new_aff @ [*np.argwhere(y > 0.5).mean(0), 1])[:3]
    np.testing.assert_allclose(com_out, com_in, atol=0.6)
    back = rs.inverse(y)
    assert back.shape == x.shape
    assert np.abs(back - x)[10:20, 12:22, 8:18].max() < 0.05  # interior recovered
    lab = (x > 0).astype(np.int16) * 41
    assert set(np.unique(rs.forward(lab, order=0))) <= {0, 41}
    assert Resample.from_dict(rs.to_dict()) == rs


def test_subject_transform_serialises_and_inverts():
    rng = np.random.default_rng(0)
    x = rng.uniform(100, 1000, size=(20, 22, 18)).astype(np.float32)
    tf = SubjectTransform(
        IntensityScaler(50.0, 1100.0), CropPad((20, 22, 18), (24, 24, 24), (-2, -1, -3))
    )
    y = tf.forward_image(x)
    assert y.shape == (24, 24, 24) and y.min() >= -1 and y.max() <= 1
    assert (y[:2] == -1).all()  # padding is background
    np.testing.assert_allclose(tf.inverse_image(y), x, rtol=1e-5)
    assert SubjectTransform.from_dict(tf.to_dict()) == tf
