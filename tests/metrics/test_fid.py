import numpy as np
import pytest
import scipy.linalg

from realdeal.metrics.fid import frechet_distance, frechet_distance_features, gaussian_stats


def test_diagonal_gaussians_match_closed_form():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    a, b = rng.uniform(0.1, 3, 6), rng.uniform(0.1, 3, 6)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)


def test_commuting_covariances_match_closed_form():
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    a, b = rng.uniform(0.1, 2, 5), rng.uniform(0.1, 2, 5)
    s1, s2 = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T
    expected = np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(np.zeros(5), s1, np.zeros(5), s2) == pytest.approx(expected, rel=1e-9)


def test_general_covariances_match_sqrtm_reference():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(8, 8)), rng.normal(size=(8, 8))
    s1, s2 = x @ x.T + 0.1 * np.eye(8), y @ y.T + 0.1 * np.eye(8)
    ref = np.trace(s1) + np.trace(s2) - 2 * np.trace(scipy.linalg.sqrtm(s1 @ s2).real)
    assert frechet_distance(np.zeros(8), s1, np.zeros(8), s2) == pytest.approx(ref, rel=1e-7)


def test_singular_covariance_is_finite_and_nonnegative():
    f = np.random.default_rng(3).normal(size=(5, 20))  # N < D: rank-deficient
    d = frechet_distance_features(f, f)
    mu, cov = gaussian_stats(f)
    assert np.isfinite(d) and 0 <= d < 1e-6 * np.trace(cov)
    assert cov.shape == (20, 20) and mu.shape == (20,)


def test_low_rank_route_equals_eigenvalue_route():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(6, 40)), rng.normal(loc=0.3, size=(7, 40))  # N1·N2 < D²: SVD route
    assert frechet_distance_features(a, b) == pytest.approx(
        frechet_distance(*gaussian_stats(a), *gaussian_stats(b)), rel=1e-5
    )
