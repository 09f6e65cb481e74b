"""Anatomy from intensities: the foreground mask of a scan and the rule that composes
FreeSurfer-coded label maps from tissue classes in MNI coordinates.

One rule serves the built-in cohort's label maps (:mod:`realdeal.data.cohort`), the rough
labels of skull-stripped scans (:mod:`realdeal.data.brain`) and the automatic labels of
``realdeal evaluate`` (:mod:`realdeal.data.segment`); each brings its own tissue classes
(white matter, dark voxels) and cerebellum, and :func:`compose_labels` does the rest:

* hemisphere (left/right codes): the sign of the MNI x coordinate;
* lateral ventricles: dark voxels inside :data:`VENTRICLE_BOX_MM` (MNI), opened by one voxel,
  connected components of at least :data:`MIN_VENTRICLE_MM3`;
* cerebellum: AAL labels :data:`AAL_CEREBELLUM` (or :func:`cerebellum_box` without the atlas);
* the regions are painted in the order of :data:`LABEL_RULE`, each over the ones before.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy import ndimage

from realdeal.data import labels as L


def foreground(
    x: np.ndarray, fraction: float = 0.05, top: Literal["p99", "max"] = "p99"
) -> np.ndarray:
    """Boolean foreground of an ``(X, Y, Z)`` image in any units.

    Voxels above ``fraction`` of the way from the background level (the minimum) to ``top``
    (the 99th percentile, or the maximum with the range floored at 1e-12), holes filled, then
    the largest connected component. Filling first matters: a scalp separated from the brain
    by a dark skull is a closed shell whose filling is the whole head. The defaults find a
    head or brain in a raw scan; ``fraction=1e-6, top="max"`` is everything above the
    background of a skull-stripped image.
    """
    x = np.asarray(x)
    if top == "p99":
        lo, ref = float(x.min()), float(np.percentile(x, 99.0))
        mask = x > lo + fraction * (ref - lo)
    elif top == "max":
        mask = x > x.min() + fraction * max(float(np.ptp(x)), 1e-12)
    else:
        raise ValueError(f"top must be 'p99' or 'max', not {top!r}")
    if not mask.any():
        return mask
    mask = ndimage.binary_fill_holes(mask)
    comp, n = ndimage.label(mask)
    if n > 1:
        sizes = ndimage.sum(mask, comp, index=np.arange(1, n + 1))
        mask = comp == (int(np.argmax(sizes)) + 1)
    return mask


VENTRICLE_BOX_MM = ((-32.0, 32.0), (-48.0, 36.0), (-4.0, 36.0))
"""(low, high) MNI x, y, z (mm) of the box the lateral ventricles are looked for in."""
MIN_VENTRICLE_MM3 = 400.0
"""Smallest connected component of dark voxels in the box kept as ventricle (mm³)."""
AAL_CEREBELLUM = (91, 116)
"""First and last AAL label of the cerebellum (lobules and vermis)."""

LABEL_RULE: tuple[tuple[str, int, int], ...] = (
    ("brain", L.LEFT_CORTEX, L.RIGHT_CORTEX),
    ("csf", L.CSF, L.CSF),
    ("cerebral_white_matter", L.LEFT_WM, L.RIGHT_WM),
    ("cerebellum_cortex", L.LEFT_CEREBELLUM_CORTEX, L.RIGHT_CEREBELLUM_CORTEX),
    ("cerebellum_white_matter", L.LEFT_CEREBELLUM_WM, L.RIGHT_CEREBELLUM_WM),
    ("lateral_ventricles", L.LEFT_LAT_VENT, L.RIGHT_LAT_VENT),
)
"""(region, left code, right code) in painting order; a later region overwrites an earlier one.

* ``brain``: every brain voxel starts as cortex/grey matter;
* ``csf``: dark brain voxels;
* ``cerebral_white_matter``: white-matter voxels of the brain outside the cerebellum;
* ``cerebellum_cortex`` / ``cerebellum_white_matter``: the cerebellum without / with white matter;
* ``lateral_ventricles``: the ventricle rule (module docstring).
"""


def _world_coords(affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``(*shape, 3)`` float32 world coordinates of every voxel under ``affine``."""
    idx = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij"), -1)
    return idx @ affine[:3, :3].T.astype(np.float32) + affine[:3, 3].astype(np.float32)


def _ventricles(
    dark: np.ndarray, brain: np.ndarray, xyz: np.ndarray, affine: np.ndarray
) -> np.ndarray:
    """Dark brain voxels in the ventricle box, opened, components of ≥ MIN_VENTRICLE_MM3."""
    box = np.ones(brain.shape, bool)
    for ax, (lo, hi) in enumerate(VENTRICLE_BOX_MM):
        box &= (xyz[..., ax] >= lo) & (xyz[..., ax] <= hi)
    vent = ndimage.binary_opening(dark & box & brain, iterations=1)
    comp, n = ndimage.label(vent)
    if n:
        sizes = ndimage.sum(vent, comp, index=np.arange(1, n + 1))
        vox_mm3 = abs(np.linalg.det(affine[:3, :3]))
        keep = np.flatnonzero(sizes * vox_mm3 >= MIN_VENTRICLE_MM3) + 1
        vent = np.isin(comp, keep)
    return vent


def compose_labels(
    brain: np.ndarray,
    wm: np.ndarray,
    dark: np.ndarray,
    aal: np.ndarray,
    to_mni: np.ndarray,
) -> np.ndarray:
    """``(X, Y, Z)`` int16 FreeSurfer-coded label map by :data:`LABEL_RULE`.

    ``brain``, ``wm`` (white matter) and ``dark`` (CSF-dark voxels) are bool masks on one
    grid, ``aal`` the AAL atlas labels on it (int; only the cerebellum,
    :data:`AAL_CEREBELLUM`, is used) and ``to_mni`` the 4×4 map from its voxel indices to
    MNI millimetres (the grid's own affine for an image in MNI space).
    """
    xyz = _world_coords(to_mni, brain.shape)
    left = xyz[..., 0] < 0
    cereb = (aal >= AAL_CEREBELLUM[0]) & (aal <= AAL_CEREBELLUM[1]) & brain
    regions = {
        "brain": brain,
        "csf": brain & dark,
        "cerebral_white_matter": brain & wm & ~cereb,
        "cerebellum_cortex": cereb & ~wm,
        "cerebellum_white_matter": cereb & wm,
        "lateral_ventricles": _ventricles(dark, brain, xyz, to_mni),
    }
    lab = np.zeros(brain.shape, np.int16)
    for region, left_code, right_code in LABEL_RULE:
        sel = regions[region]
        lab[sel] = np.where(left, left_code, right_code)[sel]
    return lab


def cerebellum_box(to_mni: np.ndarray, shape: tuple[int, ...], brain: np.ndarray) -> np.ndarray:
    """Stand-in for the AAL atlas: brain below MNI z = −20 mm and behind y = −40 mm gets the
    first AAL cerebellum label, everything else 0 (int16, ``shape``)."""
    xyz = _world_coords(to_mni, shape)
    inside = brain & (xyz[..., 2] < -20) & (xyz[..., 1] < -40)
    return np.where(inside, AAL_CEREBELLUM[0], 0).astype(np.int16)
