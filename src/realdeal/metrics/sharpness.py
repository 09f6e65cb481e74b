"""Sharpness: variance of the Laplacian in random in-brain 3D patches (paper §3.2, Table 2).

The volume (``(X, Y, Z)``, intensities in [-1, 1]) is smoothed with a Gaussian of σ = 0.5
voxel to be robust to noise, the 6-neighbour discrete Laplacian ``L`` is taken
(``scipy.ndimage.laplace``, reflecting borders), and for each of ``n_patches`` random 64³
windows (:mod:`realdeal.metrics.patches` placement) the population variance of ``L`` is
``E[L²] − E[L]²``, read from summed-area tables of ``L`` and ``L²`` (float64) — all windows at
once. Sharpness is the mean over windows; higher is sharper. Units: (intensity units)².
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

from realdeal.metrics.patches import AXES, box_sums_at, integral_image


@dataclasses.dataclass(frozen=True)
class SharpnessConfig:
    """Sharpness parameters (paper: σ = 0.5 voxel, 1,000 patches of 64³)."""

    sigma: float = 0.5
    patch_size: int = 64
    n_patches: int = 1000


def laplacian(volume: np.ndarray, sigma: float = 0.5) -> np.ndarray:
    """Discrete Laplacian of the σ-smoothed volume (float64, same shape)."""
    v = np.asarray(volume, dtype=np.float64)
    if sigma > 0:
        v = ndimage.gaussian_filter(v, sigma=sigma, mode="reflect")
    return ndimage.laplace(v, mode="reflect")


def laplacian_variance_at(lap: np.ndarray, corners: np.ndarray, size: int) -> np.ndarray:
    """Variance of ``lap`` in each ``size³`` window at ``corners`` (``(N, 3)``), vectorised."""
    n = float(size) ** 3
    s1 = box_sums_at(integral_image(lap, AXES), corners, size) / n
    s2 = box_sums_at(integral_image(lap * lap, AXES), corners, size) / n
    return np.maximum(s2 - s1 * s1, 0.0)


def sharpness(
    volume: np.ndarray, corners: np.ndarray, config: SharpnessConfig = SharpnessConfig()
) -> float:
    """Mean Laplacian variance over the windows at ``corners`` (paper's sharpness score)."""
    lap = laplacian(volume, config.sigma)
    return float(laplacian_variance_at(lap, corners, config.patch_size).mean())
