"""PSNR and SSIM of a candidate against its original, inside the brain.

Intensities are on the [-1, 1] scale, so the data range is 2. PSNR = 10 log10(2² / MSE) with
the MSE over brain voxels (dB; ∞ when identical). SSIM is skimage's 3D
:func:`~skimage.metrics.structural_similarity` (7³ uniform window, default constants) computed
on the brain's bounding box grown by 3 voxels, and averaged over brain voxels only.
"""

from __future__ import annotations

import numpy as np

DATA_RANGE = 2.0


def data_range(original: np.ndarray) -> float:
    """The peak-to-peak range PSNR and SSIM use: 2 for images in [-1, 1] (prepared data, as
    in the paper), else the original's own range (scans kept in their scanner units)."""
    lo, hi = float(np.min(original)), float(np.max(original))
    return DATA_RANGE if lo >= -1.05 and hi <= 1.05 else max(hi - lo, 1e-12)


def psnr_in_mask(original: np.ndarray, candidate: np.ndarray, mask: np.ndarray) -> float:
    """Peak signal-to-noise ratio (dB) inside ``mask``; peak = :func:`data_range`."""
    m = np.asarray(mask, dtype=bool)
    diff = np.asarray(original, dtype=np.float64)[m] - np.asarray(candidate, dtype=np.float64)[m]
    mse = float(np.mean(diff * diff))
    return float("inf") if mse == 0 else float(10 * np.log10(data_range(original) ** 2 / mse))


def ssim_in_mask(
    original: np.ndarray, candidate: np.ndarray, mask: np.ndarray, margin: int = 3
) -> float:
    """Mean 3D SSIM inside ``mask`` (window 7³, data range :func:`data_range`)."""
    from skimage.metrics import structural_similarity

    m = np.asarray(mask, dtype=bool)
    idx = np.nonzero(m)
    box = tuple(
        slice(max(int(i.min()) - margin, 0), min(int(i.max()) + margin + 1, n))
        for i, n in zip(idx, m.shape, strict=True)
    )
    _, smap = structural_similarity(
        np.asarray(original, dtype=np.float32)[box],
        np.asarray(candidate, dtype=np.float32)[box],
        data_range=data_range(original),
        full=True,
    )
    return float(smap[m[box]].mean())
