"""Automatic FreeSurfer-coded label maps of a skull-stripped T1w brain, for metrics without labels.

``realdeal evaluate paired`` needs white matter, lateral ventricles and cerebellum. Without
label maps they are derived from the **original** image, on its own grid:

* **brain**: foreground above the background value (the image minimum: 0 for raw skull-stripped
  files, −1 for prepared ones), holes filled, largest connected component
  (:func:`realdeal.data.anatomy.foreground` with ``fraction=1e-6, top="max"``);
* **tissue classes**: dipy's ``TissueClassifierHMRF`` (Zhang et al. 2001: Gaussian classes with
  a Markov random field prior) on the brain's bounding box with 4 classes — the zero
  background, CSF, grey matter, white matter; the background gets its own class so that it
  does not pull the CSF class mean down. Classes are ordered by mean intensity, so in the
  brain the darkest two are CSF, the next grey matter and the brightest white matter;
* **MNI space**: the MNI152 2009c brain template shipped with nilearn is registered to the scan
  as to a skull-stripped brain (:func:`realdeal.data.registration.register_to_mni` with the
  brain mask: dipy, mutual information; centre of mass → translation → rigid → affine, at
  ``registration_spacing`` or coarser), giving every scan voxel its MNI coordinates;
* **lateral ventricles**: CSF voxels inside the box |x| ≤ 32, −48 ≤ y ≤ 36, −4 ≤ z ≤ 36 mm
  (MNI), opened by one voxel, connected components of at least 400 mm³ (MNI) — the rule the
  built-in cohort's own label maps use (:func:`realdeal.data.anatomy.compose_labels`);
* **cerebellum**: AAL labels 91–116 (``aal.nii.gz``, Debian ``mricron-data``, on the Colin27 grid
  in MNI space) sampled through the registration; its white matter is the WM class there.
  Without the atlas the cerebellum is left out with the reason in :attr:`AutoLabels.skipped`;
* **hemisphere** (left/right codes): the sign of the MNI x coordinate.

Remaining brain voxels are cortex/grey matter 3/42, remaining CSF 24 (as the cohort's maps).
At 2 mm (96×112×96) a subject takes about 15–20 s on a loaded 2-core machine (HMRF ≈ 7 s,
registration at 4 mm ≈ 10 s); finer scans are registered at ``registration_spacing`` but
classified at their own resolution (slower).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import numpy as np

from realdeal.data import labels as L
from realdeal.data.anatomy import compose_labels, foreground
from realdeal.data.io import Volume
from realdeal.data.registration import (
    MRICRON_DIR,
    RegistrationConfig,
    register_to_mni,
    sample_atlas,
)
from realdeal.errors import InputError

log = logging.getLogger(__name__)

CSF_CLASS, GM_CLASS, WM_CLASS = 1, 2, 3


@dataclasses.dataclass(frozen=True)
class SegmentConfig:
    """Settings of the automatic labels (module docstring)."""

    hmrf_beta: float = 0.1
    """Smoothness of the HMRF prior (dipy's example value)."""
    hmrf_iterations: int = 5
    """ICM iterations; more change white matter Dice by < 0.01 on the built-in cohort."""
    registration_spacing: float = 4.0
    """Finest voxel size (mm) the template registration works at: at 4 mm it moves brain
    voxels by 0.75 mm on average (1.8 mm at most) from a 2 mm registration, in a third of
    the time (built-in cohort subject, 2 mm grid)."""
    registration_iterations: tuple[int, int, int] = (100, 30, 0)
    """Optimizer iterations per pyramid level (4×, 2×, 1× downsampled)."""
    atlas_dir: str | None = None
    """Folder with ``aal.nii.gz`` (default /usr/share/mricron/templates)."""

    def registration(self) -> RegistrationConfig:
        """The registration's settings: ``registration_spacing`` as the finest working
        spacing (finer axes coarsened, coarser ones kept), ``registration_iterations``."""
        return RegistrationConfig(
            spacing=self.registration_spacing,
            resample="coarsen",
            level_iters=self.registration_iterations,
        )


@dataclasses.dataclass
class AutoLabels:
    """An automatic label map and where its regions came from."""

    labels: np.ndarray
    """``(X, Y, Z)`` int16 FreeSurfer codes on the image's grid."""
    to_mni: np.ndarray
    """4×4: scan voxel indices → MNI millimetres (the registration's world → MNI world map
    composed with the scan's affine)."""
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)
    """Region → why it is missing (e.g. no AAL atlas, no ventricle found)."""


def source_note(skipped: dict[str, str] | None = None) -> str:
    """One line saying where automatic regions come from (for tables and reports)."""
    note = (
        "labels: automatic — brain = original above background; dipy HMRF tissue classes "
        "(WM; ventricles = CSF in the central MNI box); cerebellum from AAL via affine "
        "registration of the MNI152 template"
    )
    for region, why in (skipped or {}).items():
        note += f"; {region} skipped: {why}"
    return note


def tissue_classes(
    image: np.ndarray, brain: np.ndarray, config: SegmentConfig = SegmentConfig()
) -> np.ndarray:
    """``(X, Y, Z)`` uint8: 0 outside ``brain``, then CSF 1, grey matter 2, white matter 3 (HMRF)."""
    from dipy.segment.tissue import TissueClassifierHMRF

    nz = np.argwhere(brain)
    lo, hi = np.maximum(nz.min(0) - 2, 0), np.minimum(nz.max(0) + 3, brain.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    inside = brain[box]
    x = np.asarray(image, dtype=np.float64)[box]
    x = x - x[inside].min()
    x = np.where(inside, x / max(float(np.percentile(x[inside], 99)), 1e-12), 0.0)
    _, seg, _ = TissueClassifierHMRF(verbose=False).classify(
        x, 4, config.hmrf_beta, max_iter=config.hmrf_iterations
    )
    # classes 1..4 by increasing mean: background (+ darkest CSF), CSF, GM, WM
    classes = np.clip(np.asarray(seg, dtype=np.int16) - 1, CSF_CLASS, WM_CLASS)
    out = np.zeros(brain.shape, np.uint8)
    out[box] = np.where(inside, classes, 0)
    return out


def auto_labels(
    volume: Volume, config: SegmentConfig = SegmentConfig(), path: str | os.PathLike | None = None
) -> AutoLabels:
    """FreeSurfer-coded labels of ``volume`` (a skull-stripped T1w brain), see the module doc.

    ``path`` names the image in errors. Raises :class:`InputError` when there is no brain.
    """
    import nibabel as nib

    image = np.asarray(volume.data, dtype=np.float32)
    brain = foreground(image, fraction=1e-6, top="max")  # all above the background
    if brain.sum() < 1000:
        raise InputError(
            path or volume.path,
            f"automatic labels need a skull-stripped brain; only {int(brain.sum())} foreground "
            "voxels above the background",
        )
    classes = tissue_classes(image, brain, config)
    affine = np.asarray(volume.affine, dtype=np.float64)
    to_mni = register_to_mni(image, affine, brain, config.registration()) @ affine
    skipped: dict[str, str] = {}
    atlas = Path(config.atlas_dir or MRICRON_DIR) / "aal.nii.gz"
    if atlas.is_file():
        aal = sample_atlas(nib.load(str(atlas)), to_mni, image.shape)
    else:
        aal = np.zeros(image.shape, np.int16)
        skipped["cerebellum"] = f"AAL atlas not found ({atlas}; Debian package mricron-data)"
    # the cohort's composition rule, on MNI coordinates (to_mni as the "affine")
    labels = compose_labels(brain, classes == WM_CLASS, classes == CSF_CLASS, aal, to_mni)
    if not np.isin(labels, L.REGIONS["lateral_ventricles"]).any():
        skipped["lateral_ventricles"] = "no CSF component ≥ 400 mm³ in the central MNI box"
    if "cerebellum" not in skipped and not np.isin(labels, L.REGIONS["cerebellum"]).any():
        skipped["cerebellum"] = "the registered AAL cerebellum misses the brain"
    for region, why in skipped.items():
        log.warning("%s: automatic labels have no %s (%s)", path or volume.path, region, why)
    return AutoLabels(labels, to_mni, skipped)
