import numpy as np
import pytest
from scipy import ndimage, stats

from realdeal.errors import ConfigError
from realdeal.metrics.noise import (
    NoiseConfig,
    ants_available,
    kl_divergence,
    noise_histogram,
    noise_residual,
)


def test_kl_matches_scipy_entropy():
    rng = np.random.default_rng(0)
    p, q = rng.random(101) + 1e-3, rng.random(101) + 1e-3
    assert kl_divergence(p, q) == pytest.approx(stats.entropy(p, q), rel=1e-12)
    assert kl_divergence(p, p) == pytest.approx(0.0, abs=1e-12)


def test_histogram_binning_is_fixed():
    cfg = NoiseConfig()
    noise = np.array([-1.0, -0.25, 0.0, 0.001, 0.25, 1.0])
    h = noise_histogram(noise, np.ones(6, bool), cfg)
    assert h.shape == (101,) and h.sum() == pytest.approx(1.0)
    counts = np.round((h * (6 + 101 * cfg.eps)) - cfg.eps).astype(int)
    assert counts[0] == 2 and counts[-1] == 2 and counts[50] == 2  # clipped into edge bins
    assert np.allclose(cfg.edges[[0, -1]], [-0.25, 0.25])


def _kl(orig, cand, lab):
    m = np.isin(lab, (2, 41))
    work = m | np.isin(lab, (4, 43))
    ref = noise_histogram(noise_residual(orig, work), m)
    return kl_divergence(ref, noise_histogram(noise_residual(cand, work), m))


def test_noise_kl_ordering(phantom):
    img, clean, lab = phantom
    rng = np.random.default_rng(7)
    brain = lab > 0
    renoised = np.where(brain, clean + rng.normal(0, 0.03, img.shape), clean).astype(np.float32)
    stripped = _kl(img, clean, lab)
    matched = _kl(img, renoised, lab)
    blurred = _kl(img, ndimage.gaussian_filter(img, 1.0), lab)
    assert stripped > 5 * matched
    assert blurred > 5 * matched


def test_residual_is_zero_far_from_mask(phantom):
    img, _, lab = phantom
    m = np.zeros(img.shape, bool)
    m[20:24, 20:24, 20:24] = True
    r = noise_residual(img, m)
    assert np.all(r[:5] == 0) and np.abs(r[20:24, 20:24, 20:24]).max() > 0


def test_bad_config_and_missing_ants():
    with pytest.raises(ConfigError):
        NoiseConfig(backend="bm3d")
    with pytest.raises(ConfigError):
        NoiseConfig(bins=1)
    if not ants_available():
        from realdeal.metrics.noise import denoise

        with pytest.raises(ConfigError, match="antspyx"):
            denoise(np.zeros((8, 8, 8)), np.ones((8, 8, 8), bool), NoiseConfig(backend="ants"))


def test_denoising_does_not_depend_on_where_the_mask_box_starts():
    """dipy's blockwise NLM depends on the crop origin's parity; the box is aligned to even
    indices so two masks whose boxes start one voxel apart denoise the core identically."""
    from realdeal.metrics.noise import denoise

    rng = np.random.default_rng(0)
    v = np.clip(rng.normal(0.2, 0.05, (40, 40, 40)), -1, 1).astype(np.float32)
    m1 = np.zeros(v.shape, bool)
    m1[10:30, 10:30, 10:30] = True
    m2 = m1.copy()
    m2[9, 15, 15] = True
    core = (slice(14, 26),) * 3
    np.testing.assert_array_equal(denoise(v, m1)[core], denoise(v, m2)[core])
