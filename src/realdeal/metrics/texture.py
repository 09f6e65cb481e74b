"""Texture distance: HOG descriptors on 2D slices, whole brain and cerebellum (paper §3.2, Table 1).

For a region (``brain`` or ``cerebellum``, from the label map) the original and candidate
volumes are cropped to the region's 3D bounding box (taken from the original's labels, so both
images are cut identically; voxels of the box outside the region are kept — HOG needs the
surrounding context). For each axis, every slice of the box perpendicular to that axis gets a
HOG descriptor (:func:`skimage.feature.hog`, parameters pinned in :class:`HogConfig`); the
slice's texture distance is the L2 distance between the original's and the candidate's
descriptors, and the metric is the mean over the slices. Lower = more similar texture. HOG is
block-normalised, so the distance is unitless; it grows with the number of blocks in a slice
(whole-brain values are larger than cerebellum values, as in the paper).
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class HogConfig:
    """Pinned :func:`skimage.feature.hog` parameters."""

    orientations: int = 9
    pixels_per_cell: int = 8
    cells_per_block: int = 2
    block_norm: str = "L2-Hys"


def region_box(mask: np.ndarray) -> tuple[slice, slice, slice]:
    """Bounding box of a non-empty boolean mask as slices."""
    idx = np.nonzero(mask)
    return tuple(slice(int(i.min()), int(i.max()) + 1) for i in idx)  # type: ignore[return-value]


def hog_slices(volume: np.ndarray, axis: int, config: HogConfig = HogConfig()) -> np.ndarray:
    """``(n_slices, n_features)`` HOG descriptors of every slice perpendicular to ``axis``.

    Slices smaller than one block are padded with their edge values up to one block.
    """
    from skimage.feature import hog

    v = np.moveaxis(np.asarray(volume, dtype=np.float32), axis, 0)
    block = config.pixels_per_cell * config.cells_per_block
    pad = [(0, 0)] + [(0, max(block - n, 0)) for n in v.shape[1:]]
    if any(p[1] for p in pad):
        v = np.pad(v, pad, mode="edge")
    kw = dict(
        orientations=config.orientations,
        pixels_per_cell=(config.pixels_per_cell,) * 2,
        cells_per_block=(config.cells_per_block,) * 2,
        block_norm=config.block_norm,
        feature_vector=True,
    )
    return np.stack([hog(s, **kw) for s in v]).astype(np.float32)


def hog_distance_from_descriptors(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over slices of the L2 distance between two ``(n_slices, F)`` descriptor stacks."""
    return float(np.linalg.norm(a.astype(np.float64) - b, axis=1).mean())


def hog_descriptors(
    volume: np.ndarray, box: tuple[slice, ...], config: HogConfig = HogConfig()
) -> dict[int, np.ndarray]:
    """Per-axis slice descriptors of ``volume[box]`` (cache the original's across candidates)."""
    crop = np.asarray(volume)[box]
    return {a: hog_slices(crop, a, config) for a in range(3)}


def hog_distance(
    original: np.ndarray,
    candidate: np.ndarray,
    mask: np.ndarray,
    axis: int,
    config: HogConfig = HogConfig(),
) -> float:
    """Texture distance along ``axis`` within the bounding box of ``mask`` (see module doc)."""
    box = region_box(mask)
    return hog_distance_from_descriptors(
        hog_slices(np.asarray(original)[box], axis, config),
        hog_slices(np.asarray(candidate)[box], axis, config),
    )
