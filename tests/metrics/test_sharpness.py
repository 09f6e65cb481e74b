import numpy as np
from scipy import ndimage

from realdeal.metrics.patches import sample_patches_3d
from realdeal.metrics.sharpness import SharpnessConfig, laplacian, laplacian_variance_at, sharpness


def test_vectorised_variance_equals_per_patch_loop(phantom):
    img, _, lab = phantom
    corners = sample_patches_3d(lab > 0, 16, 60, np.random.default_rng(0))
    lap = laplacian(img, 0.5)
    fast = laplacian_variance_at(lap, corners, 16)
    loop = np.array([np.var(lap[x : x + 16, y : y + 16, z : z + 16]) for x, y, z in corners])
    np.testing.assert_allclose(fast, loop, rtol=1e-9, atol=1e-12)


def test_laplacian_uses_half_voxel_gaussian():
    v = np.random.default_rng(0).random((20, 20, 20))
    np.testing.assert_allclose(laplacian(v, 0.5), ndimage.laplace(ndimage.gaussian_filter(v, 0.5)))


def test_blurring_lowers_sharpness(phantom):
    img, _, lab = phantom
    corners = sample_patches_3d(lab > 0, 16, 100, np.random.default_rng(0))
    cfg = SharpnessConfig(patch_size=16, n_patches=100)
    s = [
        sharpness(ndimage.gaussian_filter(img, s) if s else img, corners, cfg)
        for s in (0, 0.7, 1.5)
    ]
    assert s[0] > s[1] > s[2] > 0
