"""Brain-fraction maps against a brute-force count."""

from __future__ import annotations

import numpy as np
import pytest

from realdeal.data.fraction import brain_fraction_map, window_sums
from realdeal.errors import ConfigError


def test_fraction_map_equals_brute_force():
    rng = np.random.default_rng(0)
    mask = rng.random((11, 9, 10)) > 0.6
    w = 4
    fmap = brain_fraction_map(mask, w)
    assert fmap.shape == (8, 6, 7)
    brute = np.empty_like(fmap)
    for i in range(8):
        for j in range(6):
            for k in range(7):
                brute[i, j, k] = mask[i : i + w, j : j + w, k : k + w].mean()
    np.testing.assert_allclose(fmap, brute, atol=1e-6)


def test_window_sums_of_floats_and_rectangular_windows():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(7, 8, 9))
    s = window_sums(x, (2, 3, 4))
    assert s.shape == (6, 6, 6)
    assert s[2, 1, 3] == pytest.approx(x[2:4, 1:4, 3:7].sum())


def test_window_larger_than_volume():
    with pytest.raises(ConfigError):
        brain_fraction_map(np.ones((5, 5, 5), bool), 6)
