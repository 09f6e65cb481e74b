import numpy as np
import pytest
from prdc import compute_prdc

from realdeal.metrics.prdc import knn_radii, prdc_multi


@pytest.mark.parametrize("shift", [0.0, 0.7])
def test_matches_prdc_package(shift):
    rng = np.random.default_rng(0)
    real = rng.normal(size=(300, 16))
    fake = rng.normal(loc=shift, size=(250, 16))
    ours = prdc_multi(real, fake, (5, 10, 20), block=64)  # small blocks exercise the chunking
    for k in (5, 10, 20):
        ref = compute_prdc(real_features=real, fake_features=fake, nearest_k=k)
        for m in ("precision", "recall", "density", "coverage"):
            assert ours[k][m] == pytest.approx(ref[m], abs=1e-12), (k, m)


def test_shift_lowers_coverage_and_density():
    rng = np.random.default_rng(1)
    real = rng.normal(size=(200, 8))
    near = prdc_multi(real, rng.normal(size=(200, 8)), (10,))[10]
    far = prdc_multi(real, rng.normal(loc=1.5, size=(200, 8)), (10,))[10]
    assert near["coverage"] > far["coverage"] and near["density"] > far["density"]


def test_precomputed_real_radii_give_the_same_result():
    rng = np.random.default_rng(3)
    real, fake = rng.normal(size=(300, 6)), rng.normal(0.3, 1.0, size=(120, 6))
    radii = knn_radii(real, (5, 10))
    assert prdc_multi(real, fake, (5, 10), real_radii=radii) == prdc_multi(real, fake, (5, 10))
    shrunk = {k: v * 0.5 for k, v in radii.items()}  # the radii passed in are really used
    assert prdc_multi(real, fake, (5, 10), real_radii=shrunk) != prdc_multi(real, fake, (5, 10))
