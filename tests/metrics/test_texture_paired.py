import numpy as np
import pytest
from scipy import ndimage
from skimage.feature import hog
from skimage.metrics import peak_signal_noise_ratio

from realdeal.metrics.paired import psnr_in_mask, ssim_in_mask
from realdeal.metrics.texture import HogConfig, hog_distance, hog_slices, region_box


def test_hog_slices_are_skimage_hog_with_pinned_parameters(phantom):
    img, _, _ = phantom
    d = hog_slices(img, 1)
    ref = hog(
        img[:, 5, :],
        orientations=9,
        pixels_per_cell=(8, 8),
        cells_per_block=(2, 2),
        block_norm="L2-Hys",
    )
    assert d.shape[0] == img.shape[1]
    np.testing.assert_allclose(d[5], ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("region", [(2, 41, 3, 42, 4, 43, 8, 47), (8, 47)])
def test_blurring_raises_hog_distance(phantom, region):
    img, _, lab = phantom
    mask = np.isin(lab, region)
    assert hog_distance(img, img, mask, 0) == 0
    d = [
        hog_distance(img, ndimage.gaussian_filter(img, s), mask, a)
        for s in (0.6, 1.5)
        for a in (0,)
    ]
    assert 0 < d[0] < d[1]


def test_tiny_regions_are_padded_to_one_block():
    v = np.random.default_rng(0).random((5, 6, 7)).astype(np.float32)
    assert hog_slices(v, 0, HogConfig()).shape[0] == 5
    assert region_box(np.pad(np.ones((2, 2, 2), bool), 1)) == (slice(1, 3),) * 3


def test_psnr_matches_skimage_on_masked_voxels(phantom):
    img, clean, lab = phantom
    m = lab > 0
    ref = peak_signal_noise_ratio(img[m], clean[m], data_range=2.0)
    assert psnr_in_mask(img, clean, m) == pytest.approx(ref, rel=1e-6)
    assert psnr_in_mask(img, img, m) == float("inf")


def test_ssim_in_mask_orders_degradations(phantom):
    img, _, lab = phantom
    m = lab > 0
    assert ssim_in_mask(img, img, m) == pytest.approx(1.0)
    s1 = ssim_in_mask(img, ndimage.gaussian_filter(img, 0.7), m)
    s2 = ssim_in_mask(img, ndimage.gaussian_filter(img, 2.0), m)
    assert 1 > s1 > s2


def test_psnr_and_ssim_do_not_depend_on_the_intensity_unit(phantom):
    """Scans kept in scanner units (own scans) get the same PSNR/SSIM as in [-1, 1]."""
    img, clean, lab = phantom
    m = lab > 0
    img = np.clip(img, -1, 1)
    img.flat[0], img.flat[1] = -1.0, 1.0  # spans exactly [-1, 1]: data range 2

    def units(a):  # [-1, 1] → 0…1000, a scanner-like range
        return (a + 1) * 500

    assert psnr_in_mask(units(img), units(clean), m) == pytest.approx(psnr_in_mask(img, clean, m))
    assert ssim_in_mask(units(img), units(clean), m) == pytest.approx(
        ssim_in_mask(img, clean, m), abs=1e-3
    )
