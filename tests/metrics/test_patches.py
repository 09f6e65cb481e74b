import numpy as np
import pytest

from realdeal.metrics.patches import (
    PatchSamplingError,
    box_sums_all,
    extract_patches_2d,
    integral_image,
    sample_patches_2d,
    sample_patches_3d,
)


def _mask():
    m = np.zeros((40, 44, 36), bool)
    m[8:34, 10:40, 5:30] = True
    return m


def test_box_sums_all_match_direct_sums():
    a = np.random.default_rng(0).random((9, 10, 11))
    sums = box_sums_all(integral_image(a, (0, 1, 2)), 4, (0, 1, 2))
    assert sums.shape == (6, 7, 8)
    for x, y, z in [(0, 0, 0), (5, 6, 7), (2, 3, 1)]:
        assert sums[x, y, z] == pytest.approx(a[x : x + 4, y : y + 4, z : z + 4].sum())


def test_3d_patches_fit_and_are_mostly_brain():
    m = _mask()
    c = sample_patches_3d(m, 16, 200, np.random.default_rng(0))
    assert c.shape == (200, 3)
    assert (c >= 0).all() and (c + 16 <= np.array(m.shape)).all()
    fractions = [m[x : x + 16, y : y + 16, z : z + 16].mean() for x, y, z in c]
    assert min(fractions) >= 0.5


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_2d_patches_are_mostly_brain_and_extracted_correctly(axis):
    m = _mask()
    vol = np.random.default_rng(1).random(m.shape).astype(np.float32)
    pos = sample_patches_2d(m, axis, 12, 50, np.random.default_rng(0))
    patches = extract_patches_2d(vol, axis, pos, 12)
    mp = extract_patches_2d(m.astype(np.float32), axis, pos, 12)
    assert patches.shape == (50, 12, 12)
    assert mp.reshape(50, -1).mean(1).min() >= 0.5
    i, j, k = pos[0]
    expected = np.moveaxis(vol, axis, 0)[i, j : j + 12, k : k + 12]
    np.testing.assert_array_equal(patches[0], expected)


def test_sampling_is_deterministic_per_seed():
    m = _mask()
    a = sample_patches_2d(m, 1, 12, 30, np.random.default_rng(5))
    b = sample_patches_2d(m, 1, 12, 30, np.random.default_rng(5))
    c = sample_patches_2d(m, 1, 12, 30, np.random.default_rng(6))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_thin_brain_falls_back_and_empty_mask_raises():
    m = np.zeros((30, 30, 30), bool)
    m[10:13, 5:25, 5:25] = True  # 3 voxels thick: no 16³ window is half brain
    c = sample_patches_3d(m, 16, 10, np.random.default_rng(0))
    assert all(m[x : x + 16, y : y + 16, z : z + 16].any() for x, y, z in c)
    with pytest.raises(PatchSamplingError, match="empty"):
        sample_patches_3d(np.zeros((30, 30, 30), bool), 16, 10, np.random.default_rng(0))
    with pytest.raises(PatchSamplingError, match="smaller"):
        sample_patches_3d(np.ones((10, 30, 30), bool), 16, 10, np.random.default_rng(0))
