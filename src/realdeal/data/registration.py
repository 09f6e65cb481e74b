"""MNI space: the reference brains, the affine registration of a scan to MNI152, and atlases
carried onto a scan's grid.

Every map here follows one convention: a 4×4 matrix from a scan's **world** coordinates (mm,
its NIfTI affine applied to voxel indices) to MNI152 world coordinates (mm). Compose it with
the scan's affine (``to_mni @ affine``) for the map from voxel indices to MNI millimetres.

**Registration** (:func:`register_to_mni`): nilearn's MNI152 2009 template (2 mm, shipped,
offline) is registered to the scan with dipy — centre of mass → translation → rigid →
12-parameter affine, mutual information (32 bins, every voxel: deterministic), a pyramid of
4×, 2× and 1× downsampling — on a copy of the scan at a coarse working spacing
(:class:`RegistrationConfig`). Two kinds of scan are told apart by whether their brain mask is
given:

* a **head** (``brain=None``, skull stripping): the whole template is compared with the
  whole scan, the metric restricted to the template's brain mask dilated by three voxels so
  that scalp and neck do not pull it;
* a **skull-stripped brain** (``brain`` given, automatic labels): the scan outside ``brain``
  and the template outside MNI152's brain mask are set to 0 (the scan shifted so that its
  darkest brain voxel is 0) and compared whole.

**Atlases** (:func:`sample_atlas`): a label atlas in MNI space, such as AAL from Debian's
``mricron-data`` (:data:`MRICRON_DIR`), sampled with nearest neighbour on another grid.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from pathlib import Path
from typing import Literal

import nibabel as nib
import numpy as np
from scipy import ndimage

from realdeal.data.io import voxel_spacing
from realdeal.data.transforms import Resample

log = logging.getLogger(__name__)

MRICRON_DIR = Path("/usr/share/mricron/templates")
"""Where Debian's ``mricron-data`` installs Colin27 (``ch2.nii.gz``, ``ch2bet.nii.gz``) and
the AAL atlas (``aal.nii.gz``), all on one 1 mm grid in MNI space."""

METRIC_MASK_DILATION = 3
"""Voxels (2 mm) by which MNI152's brain mask is dilated to restrict the metric for a head."""


@dataclasses.dataclass(frozen=True)
class RegistrationConfig:
    """How :func:`register_to_mni` works (module docstring)."""

    spacing: float = 4.0
    """Working voxel size (mm). On Colin27 with skull (1 mm), process time on one loaded core:
    4 mm 6 s (Dice 0.956 of the extracted brain against ``ch2bet``), 3 mm 14 s (0.956), 2 mm
    25 s (0.952): an affine needs no finer grid."""
    resample: Literal["isotropic", "coarsen"] = "isotropic"
    """``isotropic``: the scan is always resampled to ``spacing`` along every axis.
    ``coarsen``: only axes finer than ``spacing`` are coarsened to it; a scan already at
    ``spacing`` or coarser is registered on its own grid."""
    level_iters: tuple[int, int, int] = (100, 30, 0)
    """Optimizer iterations per pyramid level (4×, 2×, 1× downsampled)."""


@functools.lru_cache(maxsize=1)
def mni_template() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(template, brain mask, affine) of nilearn's MNI152 2009 template at 2 mm.

    ``(X, Y, Z)`` float32 T1w template (non-zero beyond the brain mask too), its bool brain
    mask and the float64 4×4 affine (voxel → MNI mm). Loaded once; the arrays are read-only.
    """
    from nilearn.datasets import load_mni152_brain_mask, load_mni152_template

    t = load_mni152_template(resolution=2)
    m = load_mni152_brain_mask(resolution=2)
    out = (
        np.asarray(t.get_fdata(), np.float32),
        np.asarray(m.get_fdata()) > 0,
        np.asarray(t.affine, dtype=np.float64),
    )
    for a in out:
        a.flags.writeable = False
    return out


def _working_grid(
    image: np.ndarray, affine: np.ndarray, config: RegistrationConfig
) -> tuple[np.ndarray, np.ndarray]:
    """The scan (and its affine) at the working spacing; outside the grid, its minimum."""
    spacing = voxel_spacing(affine)
    if config.resample == "isotropic":
        target = (config.spacing,) * 3
    elif min(spacing) < config.spacing - 1e-3:
        target = tuple(float(max(s, config.spacing)) for s in spacing)
    else:
        return image, affine
    rs = Resample(tuple(image.shape), spacing, target)  # type: ignore[arg-type]
    return rs.forward(image, order=1, fill=float(image.min())), rs.forward_affine(affine)


def register_to_mni(
    image: np.ndarray,
    affine: np.ndarray,
    brain: np.ndarray | None = None,
    config: RegistrationConfig = RegistrationConfig(),
) -> np.ndarray:
    """4×4 map from the scan's world coordinates to MNI152 world coordinates (mm).

    ``image`` is ``(X, Y, Z)`` in any units with its 4×4 ``affine`` (voxel → world mm).
    ``brain`` (bool, ``image``'s shape) marks a skull-stripped scan's brain; ``None`` is a
    head (see the module docstring for both). Deterministic.
    """
    from dipy.align.imaffine import (
        AffineRegistration,
        MutualInformationMetric,
        transform_centers_of_mass,
    )
    from dipy.align.transforms import AffineTransform3D, RigidTransform3D, TranslationTransform3D

    t0 = time.perf_counter()
    template, template_brain, t_aff = mni_template()
    affine = np.asarray(affine, dtype=np.float64)
    if brain is None:
        static = image
        moving = template
        metric_mask = ndimage.binary_dilation(template_brain, iterations=METRIC_MASK_DILATION)
        metric_mask = metric_mask.astype(np.int32)
    else:
        static = np.where(brain, np.asarray(image, dtype=np.float32), 0.0)
        static = np.where(brain, static - static[brain].min(), 0.0).astype(np.float32)
        moving = np.where(template_brain, template, 0.0).astype(np.float32)
        metric_mask = None
    static, s_aff = _working_grid(static, affine, config)
    reg = AffineRegistration(
        metric=MutualInformationMetric(nbins=32, sampling_proportion=None),
        level_iters=list(config.level_iters), sigmas=[3.0, 1.0, 0.0], factors=[4, 2, 1],
        verbosity=0,
    )  # fmt: skip
    current = transform_centers_of_mass(static, s_aff, moving, t_aff).affine
    for transform in (TranslationTransform3D(), RigidTransform3D(), AffineTransform3D()):
        current = reg.optimize(
            static, moving, transform, None, static_grid2world=s_aff, moving_grid2world=t_aff,
            starting_affine=current, moving_mask=metric_mask,
        ).affine  # fmt: skip
    log.info("MNI152 registered in %.1f s", time.perf_counter() - t0)
    return np.asarray(current)


def sample_atlas(atlas: nib.Nifti1Image, affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``atlas``'s labels (int16) on a grid of ``shape`` whose voxel indices ``affine`` maps
    to the atlas's world coordinates (nearest neighbour, 0 outside the atlas).

    For a scan registered to MNI, ``affine`` is ``to_mni @ scan_affine``.
    """
    vox = np.linalg.inv(atlas.affine) @ affine
    return ndimage.affine_transform(
        np.asarray(atlas.dataobj).astype(np.int16),
        vox[:3, :3],
        offset=vox[:3, 3],
        output_shape=shape,
        order=0,
        mode="constant",
        cval=0,
    )
