"""Brains, not heads: head detection, brain masks and an offline brain extraction.

realdeal's models are trained on skull-stripped brains (background −1 around the brain), so a
scan with skull and scalp is out of distribution for every model and for the intensity mapping.

**Head test** (:func:`detect_head`): the scan's foreground
(:func:`realdeal.data.anatomy.foreground`: voxels above 5 % of the way from the background
level to the 99th percentile, holes filled, largest connected component) is measured in
millilitres from the affine. A skull-stripped adult brain (cerebrum, cerebellum
and brain stem, with the CSF a stripping tool keeps) is 1.1–2.3 L (MNI152's brain mask 1.88 L,
Colin27's ``ch2bet`` 1.74 L, the built-in cohort's 16 deformed brains 1.6–2.27 L); the skull
and scalp around even a small adult brain add over a litre, and a head with some neck is
3–6 L (Colin27 with skull 4.15 L). Foreground above :data:`HEAD_VOLUME_ML` (2.6 L) is a head. The test needs no
intensity units and no registration; it is meant for adult T1w scans (an infant's head can
be smaller than the threshold).

**Brain extraction** (:func:`extract_brain`): the MNI152 2009 template that nilearn ships
(2 mm) is registered to the scan as to a head (:func:`realdeal.data.registration.register_to_mni`
without a brain mask: dipy, centre of mass → translation → rigid → 12-parameter affine, mutual
information, metric restricted to the template's dilated brain mask so that scalp and neck do
not pull it, on a 4 mm copy of the scan), and nilearn's MNI152 brain mask is carried back onto
the scan's own grid. An affine cannot follow individual anatomy, so the mask is good for
T1w scans of adult brains near MNI shape (Dice 0.956 against Colin27's own ``ch2bet`` mask),
not for unusual anatomy, lesions or children; use a dedicated tool (HD-BET, SynthStrip, FSL
BET) and ``--brain-mask`` there.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path

import numpy as np

from realdeal.data.anatomy import cerebellum_box, compose_labels, foreground
from realdeal.data.io import (
    Volume,
    check_same_grid,
    is_nifti_path,
    load_volume,
    nifti_stem,
    open_nifti,
    output_paths,
)
from realdeal.data.registration import mni_template, register_to_mni
from realdeal.data.transforms import Resample
from realdeal.errors import InputError

log = logging.getLogger(__name__)

HEAD_VOLUME_ML = 2600.0
"""Foreground volume above which a scan is taken for a head with skull and scalp."""

STRIP_FIX = (
    "skull-strip it first (`realdeal skullstrip SCAN -o OUT`, or --skull-strip here), or pass "
    "--brain-mask MASK (--allow-head processes it anyway)"
)


@dataclasses.dataclass(frozen=True)
class HeadCheck:
    """Outcome of :func:`detect_head`."""

    foreground_ml: float
    is_head: bool

    def describe(self) -> str:
        what = "a head with skull and scalp" if self.is_head else "a brain"
        return (
            f"foreground {self.foreground_ml / 1000:.2f} L looks like {what} (skull-stripped "
            f"adult brains are under {HEAD_VOLUME_ML / 1000:.1f} L)"
        )


def detect_head(vol: Volume) -> HeadCheck:
    """Is ``vol`` a whole head (skull, scalp) rather than an extracted brain? See the module."""
    ml = float(foreground(vol.data).sum()) * float(np.prod(vol.spacing)) / 1000.0
    return HeadCheck(ml, ml > HEAD_VOLUME_ML)


def refuse_head(vol: Volume) -> None:
    """Raise :class:`InputError` (with the fix) if ``vol`` is a head; see :func:`detect_head`."""
    check = detect_head(vol)
    if check.is_head:
        raise InputError(vol.path, f"{check.describe()}; the models expect a brain. {STRIP_FIX}")


def load_brain_mask(spec: str | os.PathLike, vol: Volume) -> np.ndarray:
    """The brain mask of ``vol`` from ``spec``: a mask file, or a folder holding
    ``<stem>.nii.gz`` for each input (as ``realdeal skullstrip`` writes in ``OUT/masks/``).

    The mask must be on the scan's grid; voxels > 0 are brain.
    """
    path = Path(spec)
    if path.is_dir():
        path = path / f"{nifti_stem(vol.path or '')}.nii.gz"
    mask = load_volume(path, kind="label")
    check_same_grid(vol, mask, what="brain mask")
    if not (mask.data > 0).any():
        raise InputError(path, "brain mask is empty")
    return mask.data > 0


def background_level(x: np.ndarray) -> float:
    """The value written outside the brain: the scan's minimum (its background)."""
    return float(x.min())


def apply_mask(vol: Volume, mask: np.ndarray) -> Volume:
    """``vol`` with every voxel outside ``mask`` set to the background level."""
    return vol.with_data(np.where(mask, vol.data, background_level(vol.data)).astype(np.float32))


def extract_brain(vol: Volume, to_mni: np.ndarray | None = None) -> np.ndarray:
    """Boolean brain mask on ``vol``'s grid: MNI152's brain mask carried back through
    ``to_mni`` (world → MNI world; default: :func:`realdeal.data.registration.register_to_mni`
    of ``vol`` as a head), within the scan's foreground."""
    from dipy.align.imaffine import AffineMap

    to_mni = register_to_mni(vol.data, vol.affine) if to_mni is None else to_mni
    _, tmask, t_aff = mni_template()
    back = AffineMap(
        to_mni, domain_grid_shape=vol.shape, domain_grid2world=vol.affine,
        codomain_grid_shape=tmask.shape, codomain_grid2world=t_aff,
    )  # fmt: skip
    mask = back.transform(tmask.astype(np.float32), interpolation="linear") > 0.5
    mask &= foreground(vol.data)  # never call background voxels brain
    if not mask.any():
        raise InputError(
            vol.path, "brain extraction found no brain (registration to MNI152 failed)"
        )
    log.info(
        "%s: MNI152 brain mask carried back (%.2f L)",
        vol.path,
        mask.sum() * np.prod(vol.spacing) / 1e6,
    )
    return mask


def rough_labels(vol: Volume, brain: np.ndarray, to_mni: np.ndarray) -> np.ndarray:
    """A rough FreeSurfer-coded label map (int16) of a T1w scan, for the metrics' regions.

    The label rule the built-in cohort uses (:func:`realdeal.data.anatomy.compose_labels`)
    applied in MNI coordinates (``to_mni``, world → MNI world, from
    :func:`realdeal.data.registration.register_to_mni`): white matter = the brightest of three
    multi-Otsu classes in the brain, dark voxels = the darkest (lateral ventricles where they
    lie in the central box), brain below z = −20 mm and behind y = −40 mm = cerebellum
    (:func:`realdeal.data.anatomy.cerebellum_box`), hemispheres by MNI x. Good enough to place
    the noise and sharpness regions of ``realdeal evaluate``; not a segmentation.
    """
    from skimage.filters import threshold_multiotsu

    x = vol.data
    t_low, t_high = threshold_multiotsu(x[brain], classes=3)
    mni_affine = to_mni @ vol.affine
    cereb = cerebellum_box(mni_affine, x.shape, brain)
    return compose_labels(brain, brain & (x > t_high), brain & (x <= t_low), cereb, mni_affine)


def brain_for(
    vol: Volume,
    brain_mask: str | os.PathLike | None = None,
    skull_strip: bool = False,
    allow_head: bool = False,
) -> tuple[np.ndarray, bool]:
    """(brain mask of ``vol``, whether it came from a mask/extraction rather than the foreground).

    ``brain_mask`` (file or folder, see :func:`load_brain_mask`) wins; else ``skull_strip``
    runs :func:`extract_brain`; else the scan must already be a brain (:func:`refuse_head`
    unless ``allow_head``) and its foreground is the brain.
    """
    if brain_mask is not None:
        return load_brain_mask(brain_mask, vol), True
    if skull_strip:
        return extract_brain(vol), True
    if allow_head:
        check = detect_head(vol)
        if check.is_head:
            log.warning("%s: %s; processing it anyway (--allow-head)", vol.path, check.describe())
    else:
        refuse_head(vol)
    return foreground(vol.data), False


def check_inputs(files: list[Path], brain_mask: str | os.PathLike | None = None) -> None:
    """Cheap checks before any model loads: every input (and its brain mask, if one is given)
    exists and is a readable 3D NIfTI file; raises :class:`InputError` naming the first bad one."""

    for f in files:
        open_nifti(f)
        if brain_mask is not None:
            spec = Path(brain_mask)
            open_nifti(spec / f"{nifti_stem(f)}.nii.gz" if spec.is_dir() else spec)


def _beside(dst: Path, kind: str, single: bool) -> Path:
    """Where a scan's mask/labels go: ``OUT/<kind>/<name>`` or, for one output file,
    ``<name>_mask.nii.gz`` / ``<name>_label.nii.gz`` beside it."""
    if single:
        return dst.with_name(f"{nifti_stem(dst)}_{kind.rstrip('s')}.nii.gz")
    return dst.parent / kind / dst.name


def skullstrip_files(
    files: list[Path], out: str | os.PathLike, spacing: float | None = None, labels: bool = False
) -> list[dict]:
    """Extract the brain of each scan (:func:`extract_brain`) into ``out``.

    ``out`` is a folder (``out/<stem>.nii.gz`` brain, ``out/masks/<stem>.nii.gz`` mask) or,
    for one input, a ``.nii[.gz]`` file (mask beside it as ``<name>_mask.nii.gz``). Outside the
    brain the scan's background level is written; units, orientation and header are kept.
    With ``spacing`` (mm) the scan is first resampled to that isotropic voxel size (the
    models' training spacing), so the output can go straight to ``reconstruct``/``refine``.
    With ``labels``, also a rough FreeSurfer-coded label map (:func:`rough_labels`) in
    ``out/labels/`` (``<name>_labels.nii.gz`` for a file). Returns one record per scan
    (input, output, mask, labels, brain volume, seconds).
    """

    dsts = output_paths(files, out)
    records = []
    for src, dst in zip(files, dsts, strict=True):
        t0 = time.perf_counter()
        vol = load_volume(src)
        if spacing is not None:
            rs = Resample(vol.shape, vol.spacing, (float(spacing),) * 3)
            if not rs.is_identity():
                data = rs.forward(vol.data, order=1, fill=background_level(vol.data))
                vol = vol.with_data(data, rs.forward_affine(vol.affine))
        to_mni = register_to_mni(vol.data, vol.affine)
        mask = extract_brain(vol, to_mni)
        single = len(files) == 1 and is_nifti_path(out)
        mask_dst = _beside(dst, "masks", single)
        apply_mask(vol, mask).save(dst)
        vol.with_data(mask.astype(np.int16)).save(mask_dst, dtype=np.uint8)
        lab_dst = None
        if labels:
            lab = rough_labels(vol, mask, to_mni)
            lab_dst = vol.with_data(lab).save(_beside(dst, "labels", single))
        records.append({
            "input": str(src), "output": str(dst), "mask": str(mask_dst),
            "labels": None if lab_dst is None else str(lab_dst),
            "brain_ml": float(mask.sum() * np.prod(vol.spacing) / 1000.0),
            "seconds": time.perf_counter() - t0,
        })  # fmt: skip
    return records
