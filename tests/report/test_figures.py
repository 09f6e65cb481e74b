"""Triplanar slice figures."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib import image as mpimg

from realdeal.errors import ConfigError, InputError
from realdeal.report.figures import centre_point, cohort_figure, triplanar_png

from synthetic import save_nifti


def test_triplanar_png_rows_and_content(tmp_path):
    rng = np.random.default_rng(0)
    a = -np.ones((20, 24, 18), np.float32)
    a[5:15, 6:18, 4:14] = rng.uniform(0, 1, (10, 12, 10))
    one = triplanar_png([a], tmp_path / "one.png", titles=["a"])
    two = triplanar_png([a, a * 0.5], tmp_path / "two.png", titles=["a", "b"], suptitle="pair")
    img1, img2 = mpimg.imread(one), mpimg.imread(two)
    assert img1.ndim == 3 and img2.shape[0] > 1.6 * img1.shape[0]  # one row per volume
    assert img1[..., :3].std() > 0.05  # not blank
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temp files left


def test_centre_point_is_foreground_centre():
    v = -np.ones((10, 10, 10), np.float32)
    v[6:9, 1:4, 4:7] = 1
    assert centre_point(v) == (7, 2, 5)
    assert centre_point(-np.ones((4, 6, 8))) == (2, 3, 4)


def test_rejects_mismatched_shapes(tmp_path):
    with pytest.raises(ConfigError):
        triplanar_png([np.zeros((4, 4, 4)), np.zeros((4, 4, 5))], tmp_path / "x.png")


def test_cohort_figure_writes_cohort_png(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(2):
        v = np.zeros((16, 18, 14), np.float32)
        v[4:12, 5:13, 3:11] = rng.uniform(50, 100, (8, 8, 8))
        save_nifti(tmp_path / f"sub-{i:03d}_T1w.nii.gz", v)
    fig = cohort_figure(tmp_path)
    assert fig == tmp_path / "cohort.png"
    assert mpimg.imread(fig)[..., :3].std() > 0.05
    with pytest.raises(InputError):
        cohort_figure(tmp_path / "empty")
