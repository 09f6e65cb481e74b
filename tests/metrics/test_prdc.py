import numpy as np
import pytest
from prdc import compute_prdc

from realdeal.metrics.prdc import prdc_multi


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
