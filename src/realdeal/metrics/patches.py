"""In-brain patch sampling shared by LPIPS, FID/PRDC (2D patches per axis) and sharpness (3D).

Volumes are ``(X, Y, Z)`` arrays. A 2D patch "along axis a" (``dim a``) is a ``size × size``
window of one slice perpendicular to axis ``a``; its position is ``(i, j, k)`` = the slice
index along ``a`` and the window's first voxel along the other two axes in increasing order. A
3D patch position is the window's first voxel. Placement rule (both kinds): a window is
eligible when at least ``min_fraction`` (default 0.5) of its voxels are brain; positions are
drawn uniformly from the eligible ones by a seeded :class:`numpy.random.Generator`, without
replacement when there are enough. If no window reaches ``min_fraction`` (tiny or thin
brains), the eligible set falls back to windows holding at least half the best window's
brain fraction, with a warning. Brain fractions of all windows come from a summed-area table,
so sampling costs a few array passes, not a loop over windows.
"""

from __future__ import annotations

import logging

import numpy as np

from realdeal.errors import RealDealError

log = logging.getLogger(__name__)

AXES = (0, 1, 2)
AXIS_NAMES = ("dim0", "dim1", "dim2")


class PatchSamplingError(RealDealError):
    """No patch can be placed (empty mask, or a volume smaller than the patch)."""


def integral_image(a: np.ndarray, axes: tuple[int, ...], dtype=np.float64) -> np.ndarray:
    """Summed-area table over ``axes``, zero-padded in front: ``S[i+1] = sum(a[: i+1])``."""
    s = np.asarray(a, dtype=dtype)
    pad = [(1, 0) if ax in axes else (0, 0) for ax in range(s.ndim)]
    for ax in axes:
        s = np.cumsum(s, axis=ax, dtype=dtype)
    return np.pad(s, pad)


def box_sums_all(table: np.ndarray, size: int, axes: tuple[int, ...]) -> np.ndarray:
    """Sums of every ``size``-wide window along ``axes`` from an :func:`integral_image` table.

    Output shape: ``n - size + 1`` along each axis in ``axes`` (``n`` = original length), the
    table's length elsewhere.
    """
    out = table
    for ax in axes:
        n = out.shape[ax]
        hi = [slice(None)] * out.ndim
        lo = [slice(None)] * out.ndim
        hi[ax] = slice(size, n)
        lo[ax] = slice(0, n - size)
        out = out[tuple(hi)] - out[tuple(lo)]
    return out


def box_sums_at(table: np.ndarray, corners: np.ndarray, size: int) -> np.ndarray:
    """Sums of the ``size³`` windows starting at ``corners`` (``(N, 3)``) from a 3D table."""
    c = np.asarray(corners, dtype=np.int64)
    total = np.zeros(len(c), dtype=table.dtype)
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                # inclusion–exclusion: the all-upper corner counts +, one lower index −, ...
                sign = 1 if (3 - dx - dy - dz) % 2 == 0 else -1
                total += sign * table[c[:, 0] + dx * size, c[:, 1] + dy * size, c[:, 2] + dz * size]
    return total


def _check_fits(shape: tuple[int, ...], size: int, axes: tuple[int, ...]) -> None:
    small = [shape[a] for a in axes if shape[a] < size]
    if small:
        raise PatchSamplingError(
            f"volume of shape {tuple(shape)} is smaller than the {size}-voxel patch"
        )


def _draw(
    fraction: np.ndarray, n: int, min_fraction: float, rng: np.random.Generator, what: str
) -> np.ndarray:
    """Draw ``n`` positions (``(n, 3)`` indices into ``fraction``) by the module's rule."""
    best = float(fraction.max()) if fraction.size else 0.0
    if best <= 0:
        raise PatchSamplingError(
            f"brain mask is empty: no {what} patch can be placed inside the brain"
        )
    threshold = min_fraction
    if best < min_fraction:
        threshold = best / 2
        log.warning(
            "no %s window is %.0f%% brain (best %.0f%%); using windows at least %.0f%% brain",
            what,
            100 * min_fraction,
            100 * best,
            100 * threshold,
        )
    eligible = np.flatnonzero(fraction.ravel() >= threshold)
    chosen = rng.choice(eligible, size=n, replace=len(eligible) < n)
    return np.stack(np.unravel_index(np.sort(chosen), fraction.shape), axis=1).astype(np.int64)


def sample_patches_3d(
    mask: np.ndarray, size: int, n: int, rng: np.random.Generator, min_fraction: float = 0.5
) -> np.ndarray:
    """``(n, 3)`` first-voxel positions of ``size³`` windows inside the brain ``mask``."""
    mask = np.asarray(mask, dtype=bool)
    _check_fits(mask.shape, size, AXES)
    table = integral_image(mask, AXES, dtype=np.int32)
    fraction = box_sums_all(table, size, AXES).astype(np.float32) / size**3
    return _draw(fraction, n, min_fraction, rng, f"{size}³")


def sample_patches_2d(
    mask: np.ndarray,
    axis: int,
    size: int,
    n: int,
    rng: np.random.Generator,
    min_fraction: float = 0.5,
) -> np.ndarray:
    """``(n, 3)`` positions of ``size × size`` windows in slices perpendicular to ``axis``.

    Column 0 is the slice index along ``axis``; columns 1–2 the window's first voxel along the
    remaining axes (in increasing axis order).
    """
    m = np.moveaxis(np.asarray(mask, dtype=bool), axis, 0)
    _check_fits(m.shape, size, (1, 2))
    table = integral_image(m, (1, 2), dtype=np.int32)
    fraction = box_sums_all(table, size, (1, 2)).astype(np.float32) / size**2
    return _draw(fraction, n, min_fraction, rng, f"{size}² {AXIS_NAMES[axis]}")


def extract_patches_2d(
    volume: np.ndarray, axis: int, positions: np.ndarray, size: int
) -> np.ndarray:
    """``(N, size, size)`` patches at ``positions`` from :func:`sample_patches_2d` (a copy)."""
    v = np.moveaxis(np.asarray(volume), axis, 0)
    windows = np.lib.stride_tricks.sliding_window_view(v, (size, size), axis=(1, 2))
    p = np.asarray(positions, dtype=np.int64)
    return np.ascontiguousarray(windows[p[:, 0], p[:, 1], p[:, 2]])


def extract_patches_3d(volume: np.ndarray, corners: np.ndarray, size: int) -> np.ndarray:
    """``(N, size, size, size)`` patches starting at ``corners`` (a copy; for tests and loops)."""
    return np.stack(
        [volume[x : x + size, y : y + size, z : z + size] for x, y, z in np.asarray(corners)]
    )


def sample_all_axes_2d(
    mask: np.ndarray, size: int, n: int, rng: np.random.Generator, min_fraction: float = 0.5
) -> dict[int, np.ndarray]:
    """:func:`sample_patches_2d` for each of the three axes, drawn in axis order from ``rng``."""
    return {a: sample_patches_2d(mask, a, size, n, rng, min_fraction) for a in AXES}
