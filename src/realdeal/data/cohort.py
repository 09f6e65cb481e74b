"""The built-in synthetic cohort: real brains reachable offline, randomly deformed and re-scanned.

Sources (real T1w brains, 1 mm, MNI space):

* **Colin27** (``ch2bet.nii.gz`` with the AAL atlas ``aal.nii.gz`` on the same grid), from
  Debian's ``mricron-data`` package: one subject, 27 averaged scans.
* **MNI152 2009c** T1 template with its grey/white-matter probability maps, shipped inside
  nilearn: an average of 152 subjects, nearly noise-free.

Each synthetic subject takes one source (alternating) and applies, at the target spacing:
a random affine + elastic deformation (MONAI ``RandAffineGrid`` + ``RandDeformGrid``, as
``Rand2DElastic`` in 3D; the label map follows with nearest neighbour), a multiplicative bias field (``RandBiasField``), a gamma contrast change
(``RandAdjustContrast``), a random scanner gain, and Rician noise (``RandRicianNoise``);
voxels outside the deformed brain (interpolated intensity below 5 % of white matter) are set
to 0, as in skull-stripped data.

**Noise level.** Estimator (:func:`wm_noise_sigma`): robust (MAD) standard deviation of the
residual ``x − mean₃ₓ₃ₓ₃(x)`` inside white matter eroded by two voxels, corrected by √(27/26),
relative to the white-matter median. Anatomy leaks into that residual too, so the structure
floor measured the same way on the nearly noise-free MNI152 average (0.62 % at 1 mm) is
subtracted in quadrature. On Colin27 at 1 mm this gives 1.07 % → **0.87 %** noise. Colin27
averages 27 acquisitions, so one acquisition carries √27 times that: ``noise_sigma_1mm =
0.045`` (white-matter SNR ≈ 22, typical of a single 1 mm T1w scan). At spacing ``s`` mm the
target is ``noise_sigma_1mm · s^-1.5`` (noise averages over the voxel volume): 0.016 at 2 mm,
varying ±25 % between subjects. The noise a source already carries at the target spacing
(Colin27: 0.87 % · s^-1.5; MNI152: none) is subtracted in quadrature before Rician noise is
added. Each subject's record in ``cohort.json`` holds the target and the noise measured on
the result (the estimator on the final image, with the same subject's noise-free version
subtracted in quadrature, so anatomy cancels).

**Labels** use FreeSurfer codes (see :mod:`realdeal.data.labels`), composed by the rule the
skull stripping and the automatic labels share (:func:`realdeal.data.anatomy.compose_labels`),
hemisphere by world x:

* white matter 2/41: Colin27 — the brightest of three multi-Otsu classes inside the brain;
  MNI152 — white-matter probability ≥ 0.5 and above the grey-matter probability;
* cerebellum 7/46 (its white matter) and 8/47: AAL labels 91–116 (without Colin27's folder,
  MNI152's brain below z = −20 mm and behind y = −40 mm);
* lateral ventricles 4/43: dark voxels (below the lower multi-Otsu threshold) inside the box
  |x| ≤ 32, −48 ≤ y ≤ 36, −4 ≤ z ≤ 36 mm (MNI), opened by one voxel, keeping connected
  components of at least 400 mm³;
* cortex/grey matter 3/42 for the remaining tissue, CSF 24 for the remaining dark voxels.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import functools
import logging
import multiprocessing
import os
import time
from pathlib import Path
from typing import Literal

import nibabel as nib
import numpy as np
from scipy import ndimage

from realdeal.config import to_dict
from realdeal.data import labels as L
from realdeal.data.anatomy import cerebellum_box, compose_labels
from realdeal.data.io import Volume
from realdeal.data.registration import MRICRON_DIR, sample_atlas
from realdeal.data.transforms import CropPad, Resample
from realdeal.errors import ConfigError, InputError
from realdeal.utils.fs import atomic_dir, check_replaceable, write_json_atomic
from realdeal.utils.progress import progress

log = logging.getLogger(__name__)

COLIN_SIGMA_REL_1MM = 0.0087
"""Noise of Colin27 (27 averaged scans) at 1 mm, relative to the white-matter median (measured)."""
MNI_STRUCTURE_FLOOR_1MM = 0.0062
"""What :func:`wm_noise_sigma` reads on the noise-free MNI152 average at 1 mm (anatomy, not noise)."""
COLIN_AVERAGES = 27
WM_LEVEL = 1000.0
"""Nominal white-matter intensity of the synthetic scanner (before the random gain)."""


@dataclasses.dataclass(frozen=True)
class CohortConfig:
    """How to build the synthetic cohort. Defaults: 16 subjects at 2 mm (96×112×96)."""

    n_subjects: int = 16
    first_subject: int = 0
    """Index of the first subject: subjects ``first_subject … first_subject + n_subjects − 1``
    (``sub-XXX`` and each subject's random draws follow the index), so a cohort can be grown
    with new subjects of the same distribution: same seed and config, ``first_subject`` = the
    size of the cohort already built."""
    spacing: float = 2.0
    shape: tuple[int, int, int] | None = None
    """Grid (X, Y, Z); ``None`` → 192×224×192 mm field of view at ``spacing``, rounded up to 16."""
    seed: int = 0
    sources: Literal["auto", "colin27", "mni152", "both"] = "auto"
    """``auto``: Colin27 and MNI152 alternating if Colin27 is installed, else MNI152 alone."""
    colin_dir: str | None = None
    """Folder holding ch2bet.nii.gz and aal.nii.gz (default /usr/share/mricron/templates)."""
    rotate_deg: float = 8.0
    scale: float = 0.08
    translate_mm: float = 4.0
    elastic_spacing_mm: float = 24.0
    """Distance between the control points of the elastic deformation."""
    elastic_magnitude_mm: tuple[float, float] = (1.0, 2.0)
    """Range of the standard deviation of control-point displacements (mm)."""
    coarse_elastic_spacing_mm: float = 0.0
    """A second, coarser elastic deformation (lobe- and head-shape variation) with control
    points this far apart; 0 turns it off."""
    coarse_elastic_magnitude_mm: tuple[float, float] = (0.0, 0.0)
    """Range of the standard deviation of the coarse control-point displacements (mm)."""
    ventricle_scale: tuple[float, float] = (1.0, 1.0)
    """Range (drawn log-uniformly) of a smooth radial scaling of the lateral ventricles and their
    surroundings about the ventricles' centre: > 1 enlarges them, as with age or atrophy."""
    ventricle_radius_mm: float = 24.0
    """Width (Gaussian σ) of the region the ventricle scaling moves."""
    bias_coeff: float = 0.04
    gamma: tuple[float, float] = (0.8, 1.25)
    gain: tuple[float, float] = (0.8, 1.25)
    noise_sigma_1mm: float = round(float(np.sqrt(COLIN_AVERAGES) * COLIN_SIGMA_REL_1MM), 4)
    """Noise σ relative to white matter of one acquisition at 1 mm (see module docstring)."""
    noise_jitter: float = 0.25
    workers: int = 2

    def grid_shape(self) -> tuple[int, int, int]:
        if self.shape is not None:
            return tuple(int(s) for s in self.shape)  # type: ignore[return-value]
        fov = np.array([192.0, 224.0, 192.0])
        return tuple(int(np.ceil(f / self.spacing / 16.0) * 16) for f in fov)  # type: ignore[return-value]

    def target_sigma(self) -> float:
        return self.noise_sigma_1mm * self.spacing**-1.5

    def __post_init__(self) -> None:
        if self.n_subjects < 1:
            raise ConfigError("n_subjects must be at least 1")
        if self.first_subject < 0:
            raise ConfigError("first_subject must not be negative")
        if not 0.25 <= self.spacing <= 8:
            raise ConfigError(f"spacing {self.spacing} mm is outside 0.25–8 mm")
        lo, hi = self.ventricle_scale
        if not 0.5 <= lo <= hi <= 2.0:
            raise ConfigError(
                f"ventricle_scale {self.ventricle_scale} must lie in 0.5–2 and be ordered"
            )
        if self.ventricle_radius_mm <= 0:
            raise ConfigError("ventricle_radius_mm must be positive")
        if self.coarse_elastic_spacing_mm < 0 or min(self.coarse_elastic_magnitude_mm) < 0:
            raise ConfigError("the coarse elastic spacing and magnitudes must not be negative")


@dataclasses.dataclass
class Source:
    """A real brain resampled to the cohort grid: intensities, labels and support mask."""

    name: str
    image: np.ndarray  # (X, Y, Z) float32, WM median scaled to WM_LEVEL, 0 outside the brain
    label: np.ndarray  # (X, Y, Z) int16 FreeSurfer codes
    affine: np.ndarray
    sigma_rel: float  # noise already present, relative to WM, at this spacing


def wm_noise_sigma(image: np.ndarray, wm: np.ndarray) -> float:
    """Robust noise σ (absolute units): MAD of ``x − mean₃ₓ₃ₓ₃(x)`` in white matter eroded by 2.

    Anatomy also contributes to this residual; compare two versions of the same anatomy (or
    subtract a structure floor in quadrature) to isolate the noise.
    """
    core = ndimage.binary_erosion(wm, iterations=2)
    if core.sum() < 100:
        core = wm
    resid = (image - ndimage.uniform_filter(image, 3))[core] * np.sqrt(27.0 / 26.0)
    return float(1.4826 * np.median(np.abs(resid - np.median(resid))))


@functools.lru_cache(maxsize=2)
def _load_colin(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Colin27 brain (float32), FreeSurfer labels and affine at 1 mm."""
    from skimage.filters import threshold_multiotsu

    img = nib.load(str(folder / "ch2bet.nii.gz"))
    x = np.asarray(img.dataobj, dtype=np.float32)
    brain = ndimage.binary_fill_holes(x > 0)
    t_low, t_high = threshold_multiotsu(x[brain], classes=3)
    wm = brain & (x > t_high)
    dark = brain & (x <= t_low)
    aal = sample_atlas(nib.load(str(folder / "aal.nii.gz")), img.affine, x.shape)
    return x, compose_labels(brain, wm, dark, aal, img.affine), img.affine


@functools.lru_cache(maxsize=2)
def _load_mni(colin_folder: Path | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MNI152 2009c brain, FreeSurfer labels and affine at 1 mm (AAL resampled if available)."""
    from nilearn import datasets
    from skimage.filters import threshold_multiotsu

    t1 = datasets.load_mni152_template(resolution=1)
    affine = t1.affine
    x = np.asarray(t1.get_fdata(), dtype=np.float32)
    mask = np.asarray(datasets.load_mni152_brain_mask(resolution=1).get_fdata()) > 0.5
    gm = np.asarray(datasets.load_mni152_gm_template(resolution=1).get_fdata(), dtype=np.float32)
    wmp = np.asarray(datasets.load_mni152_wm_template(resolution=1).get_fdata(), dtype=np.float32)
    brain = ndimage.binary_fill_holes(mask & (x > 0))
    x = np.where(brain, x, 0.0).astype(np.float32)
    t_low, _ = threshold_multiotsu(x[brain], classes=3)
    wm = brain & (wmp >= 0.5) & (wmp >= gm)
    dark = brain & (x <= t_low) & ~wm
    if colin_folder is not None and (colin_folder / "aal.nii.gz").exists():
        aal = sample_atlas(nib.load(str(colin_folder / "aal.nii.gz")), affine, x.shape)
    else:
        aal = cerebellum_box(affine, x.shape, brain)
    return x, compose_labels(brain, wm, dark, aal, affine), affine


def _to_grid(
    name: str, x: np.ndarray, lab: np.ndarray, affine: np.ndarray, cfg: CohortConfig
) -> Source:
    """Resample a 1 mm source to the cohort spacing, crop/pad around the brain, measure noise."""
    spacing_in = tuple(float(v) for v in np.sqrt((affine[:3, :3] ** 2).sum(0)))
    rs = Resample(tuple(x.shape), spacing_in, (cfg.spacing,) * 3)  # type: ignore[arg-type]
    if not rs.is_identity():
        x = rs.forward(x, order=1, fill=0.0)
        lab = rs.forward(lab, order=0, fill=0)
        affine = rs.forward_affine(affine)
    brain = lab > 0
    x = np.where(brain, x, 0.0).astype(np.float32)
    nz = np.argwhere(brain)
    cp = CropPad.around_box(x.shape, cfg.grid_shape(), nz.min(0), nz.max(0) + 1)
    x, lab, affine = cp.forward(x, 0.0), cp.forward(lab, 0), cp.forward_affine(affine)
    wm = np.isin(lab, L.REGIONS["white_matter"])
    level = float(np.median(x[wm]))
    x = x * (WM_LEVEL / level)
    sigma_rel = COLIN_SIGMA_REL_1MM * cfg.spacing**-1.5 if name == "colin27" else 0.0
    return Source(name, x.astype(np.float32), lab.astype(np.int16), affine, sigma_rel)


def load_sources(cfg: CohortConfig) -> list[Source]:
    """The real brains to deform, on the cohort grid. Falls back to MNI152 alone without Colin27."""
    folder = Path(cfg.colin_dir) if cfg.colin_dir else MRICRON_DIR
    have_colin = (folder / "ch2bet.nii.gz").exists() and (folder / "aal.nii.gz").exists()
    if cfg.sources == "colin27" and not have_colin:
        raise InputError(
            folder / "ch2bet.nii.gz", "Colin27 not found (Debian: apt-get install mricron-data)"
        )
    if cfg.sources == "auto" and not have_colin:
        log.warning(
            "Colin27 not found in %s (Debian package mricron-data); building the cohort from MNI152 alone",
            folder,
        )
    sources = []
    if have_colin and cfg.sources in ("auto", "both", "colin27"):
        sources.append(_to_grid("colin27", *_load_colin(folder), cfg))
    if cfg.sources in ("auto", "both", "mni152") or not sources:
        sources.append(_to_grid("mni152", *_load_mni(folder if have_colin else None), cfg))
    return sources


def _elastic_offsets(
    shape: tuple[int, ...], spacing_mm: float, magnitude_mm: tuple[float, float], cfg, seed: int
):
    """Smooth random displacements (3, X, Y, Z) in voxels: random offsets on a control grid
    one point every ``spacing_mm`` (MONAI ``RandDeformGrid``), trilinearly upsampled."""
    import torch
    from monai.transforms import CenterSpatialCrop, RandDeformGrid
    from monai.transforms.utils import create_control_grid

    step = max(2, int(round(spacing_mm / cfg.spacing)))
    deform = RandDeformGrid(
        spacing=(step,) * 3, magnitude_range=tuple(m / cfg.spacing for m in magnitude_mm)
    )
    deform.set_random_state(seed)
    control = torch.as_tensor(deform(spatial_size=shape))[:3]
    offsets = control - torch.as_tensor(create_control_grid(shape, (step,) * 3))[:3].to(control)
    dense = torch.nn.functional.interpolate(
        offsets[None].float(),
        scale_factor=(float(step),) * 3,
        mode="trilinear",
        align_corners=False,
    )
    return CenterSpatialCrop(roi_size=shape)(dense[0])


def _deformation_grid(
    shape: tuple[int, ...],
    cfg: CohortConfig,
    seed: int,
    ventricle_centre: np.ndarray | None = None,
):
    """Random affine + elastic sampling grid for MONAI's ``Resample`` (voxel units, centred).

    As MONAI's ``Rand2DElastic``, in 3D: random offsets on a coarse control grid
    (``RandDeformGrid``, one control point every ``elastic_spacing_mm``), a random affine
    (``RandAffineGrid``) applied to it, then trilinear upsampling to the image grid. Memory and
    time stay proportional to the image (MONAI's ``Rand3DElastic`` smooths a full-resolution
    random field instead, which needs ~15 GB and minutes per subject at 1 mm).

    With ``coarse_elastic_spacing_mm`` a second, coarser field is added; with a
    ``ventricle_scale`` range other than 1 the points near ``ventricle_centre`` (source voxels,
    centred as the grid) are drawn towards it (> 1, larger ventricles) or pushed away from it
    by a Gaussian-weighted radial map, which stays one-to-one for scales in 0.5–2.
    """
    import torch
    from monai.transforms import CenterSpatialCrop, RandAffineGrid, RandDeformGrid

    step = max(2, int(round(cfg.elastic_spacing_mm / cfg.spacing)))
    deform = RandDeformGrid(
        spacing=(step,) * 3,
        magnitude_range=tuple(m / cfg.spacing for m in cfg.elastic_magnitude_mm),
    )
    affine = RandAffineGrid(
        rotate_range=(np.deg2rad(cfg.rotate_deg),) * 3,
        scale_range=(cfg.scale,) * 3,
        translate_range=(cfg.translate_mm / cfg.spacing,) * 3,
    )
    deform.set_random_state(seed)
    affine.set_random_state(seed + 1)
    control = affine(grid=deform(spatial_size=shape))
    grid = torch.nn.functional.interpolate(
        control[None].float(),
        scale_factor=(float(step),) * 3,
        mode="trilinear",
        align_corners=False,
    )
    grid = CenterSpatialCrop(roi_size=shape)(grid[0])
    rng = np.random.default_rng(seed + 2)
    if cfg.coarse_elastic_spacing_mm > 0 and max(cfg.coarse_elastic_magnitude_mm) > 0:
        grid = grid.clone()
        grid[:3] += _elastic_offsets(
            shape, cfg.coarse_elastic_spacing_mm, cfg.coarse_elastic_magnitude_mm, cfg, seed + 3
        )
    lo, hi = cfg.ventricle_scale
    if ventricle_centre is not None and (lo, hi) != (1.0, 1.0):
        scale = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        c = torch.as_tensor(ventricle_centre, dtype=grid.dtype).view(3, 1, 1, 1)
        d = grid[:3] - c
        sigma = cfg.ventricle_radius_mm / cfg.spacing
        w = torch.exp(-(d**2).sum(0, keepdim=True) / (2 * sigma**2))
        grid = grid.clone()
        grid[:3] = c + d * (1 - (1 - 1 / scale) * w)
    return grid


def _ventricle_centre(src: Source) -> np.ndarray | None:
    """Centroid of the source's lateral ventricles in the sampling grid's centred voxel units."""
    vent = np.isin(src.label, L.REGIONS["lateral_ventricles"])
    if not vent.any():
        return None
    return np.argwhere(vent).mean(0) - (np.array(src.label.shape) - 1) / 2.0


def _subject(
    src: Source, cfg: CohortConfig, index: int, noise_seed: int | None = None
) -> tuple[np.ndarray, np.ndarray, dict]:
    """One synthetic subject from a source: deformation, bias, contrast, gain, Rician noise.

    ``noise_seed`` replaces the subject's own seed of the Rician noise only: the same anatomy,
    bias, contrast, gain and noise level under an independent noise draw (another scan of the
    same subject; ``benchmarks/oracle_refiner.py`` uses it as the perfect refiner's output).
    """
    import torch
    from monai.transforms import RandAdjustContrast, RandBiasField, RandRicianNoise, Resample

    torch.set_num_threads(1)
    rng = np.random.default_rng([cfg.seed, index])
    seeds = rng.integers(0, 2**31 - 1, size=4)
    grid = _deformation_grid(src.image.shape, cfg, int(seeds[0]), _ventricle_centre(src))
    resample = Resample(padding_mode="zeros")
    img = resample(torch.from_numpy(src.image[None]), grid, mode="bilinear")
    lab_t = resample(torch.from_numpy(src.label[None].astype(np.float32)), grid, mode="nearest")
    data = {"image": img, "label": lab_t}
    img = data["image"]
    lab = torch.as_tensor(data["label"])[0].numpy().round().astype(np.int16)
    # The brain's outline follows the interpolated image, not the blocky nearest-neighbour labels.
    brain = torch.as_tensor(img)[0].numpy() > 0.05 * WM_LEVEL
    bias = RandBiasField(degree=3, coeff_range=(-cfg.bias_coeff, cfg.bias_coeff), prob=1.0)
    bias.set_random_state(int(seeds[1]))
    img = bias(img)
    contrast = RandAdjustContrast(gamma=cfg.gamma, prob=1.0)
    contrast.set_random_state(int(seeds[2]))
    img = torch.as_tensor(contrast(img)).float()
    x = img[0].numpy()
    wm = np.isin(lab, L.REGIONS["white_matter"])
    gain = rng.uniform(*cfg.gain) * WM_LEVEL / float(np.median(x[wm]))
    x = x * gain
    target = cfg.target_sigma() * rng.uniform(1 - cfg.noise_jitter, 1 + cfg.noise_jitter)
    add = float(np.sqrt(max(target**2 - src.sigma_rel**2, 0.0)))
    level = float(np.median(x[wm]))
    noise = RandRicianNoise(prob=1.0, std=add * level, relative=False, sample_std=False)
    noise.set_random_state(int(seeds[3]) if noise_seed is None else int(noise_seed))
    clean = np.where(brain, x, 0.0).astype(np.float32)
    x = torch.as_tensor(noise(torch.from_numpy(x[None]))).numpy()[0]
    x = np.where(brain, x, 0.0).astype(np.float32)
    before, after = wm_noise_sigma(clean, wm), wm_noise_sigma(x, wm)
    measured = float(np.sqrt(max(after**2 - before**2, 0.0))) / level
    info = {
        "source": src.name,
        "gain": float(gain),
        "noise_sigma_target": float(target),
        "noise_sigma_added": add,
        "noise_sigma_measured": measured,
    }
    return x, lab, info


COHORT_MARKER = ("cohort.json", "realdeal-cohort")
"""What marks a folder as a cohort :func:`build_cohort` may replace (file, its ``format``)."""
COHORT_FILES = ("sub-*_T1w.nii.gz", "sub-*_dseg.nii.gz", "cohort.json", "cohort.png")
"""What a cohort folder holds (``cohort.png``: ``realdeal cohort``'s figure)."""


@dataclasses.dataclass
class CohortResult:
    folder: Path
    subjects: list[dict]
    seconds: float


def build_cohort(
    out_dir: str | os.PathLike, cfg: CohortConfig = CohortConfig(), overwrite: bool = False
) -> CohortResult:
    """Write ``cfg.n_subjects`` synthetic subjects to ``out_dir`` (built in a temporary folder).

    Files: ``sub-XXX_T1w.nii.gz`` (raw intensities, float32), ``sub-XXX_dseg.nii.gz``
    (FreeSurfer-coded labels) and ``cohort.json`` (config, per-subject parameters, noise).
    Same config and seed → identical files. ``overwrite`` replaces only an earlier cohort
    (``cohort.json`` of format ``realdeal-cohort``) holding nothing but cohort files
    (:data:`COHORT_FILES`); any other folder, or a file, is refused and left as it is. The
    checks run before any work, so a refused call changes nothing.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(out_dir, "exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not (out_dir / "cohort.json").exists():
            raise InputError(
                out_dir, "exists, is not empty and is not a realdeal cohort; choose another folder"
            )
        if not overwrite:
            raise InputError(
                out_dir, "a cohort already exists here; pass --overwrite to replace it"
            )
    check_replaceable(out_dir, overwrite, COHORT_MARKER, COHORT_FILES)
    t0 = time.perf_counter()
    sources = load_sources(cfg)
    for s in sources:
        log.info(
            "source %s: noise σ/WM at %.1f mm = %.4f (target %.4f)",
            s.name,
            cfg.spacing,
            s.sigma_rel,
            cfg.target_sigma(),
        )
    first = cfg.first_subject
    jobs = [(sources[i % len(sources)], i) for i in range(first, first + cfg.n_subjects)]
    records: list[dict] = [{}] * cfg.n_subjects
    with atomic_dir(
        out_dir, overwrite=overwrite, marker=COHORT_MARKER, contents=COHORT_FILES
    ) as tmp:

        def write(i: int, x: np.ndarray, lab: np.ndarray, info: dict) -> None:
            sid = f"sub-{i:03d}"
            affine = sources[i % len(sources)].affine
            Volume(x, affine).save(tmp / f"{sid}_T1w.nii.gz")
            Volume(lab, affine).save(tmp / f"{sid}_dseg.nii.gz", dtype=np.int16)
            records[i - first] = {"id": sid, **info}

        bar = progress(total=len(jobs), desc="cohort", unit="subject")
        if cfg.workers > 1 and len(jobs) > 1:
            ctx = multiprocessing.get_context("fork")
            with cf.ProcessPoolExecutor(max_workers=cfg.workers, mp_context=ctx) as pool:
                futures = {pool.submit(_subject, src, cfg, i): i for src, i in jobs}
                for fut in cf.as_completed(futures):
                    write(futures[fut], *fut.result())
                    bar.update()
        else:
            for src, i in jobs:
                write(i, *_subject(src, cfg, i))
                bar.update()
        bar.close()
        seconds = time.perf_counter() - t0
        write_json_atomic(
            tmp / "cohort.json",
            {
                "format": "realdeal-cohort",
                "version": 1,
                "config": to_dict(cfg),
                "sources": {s.name: {"noise_sigma_rel": s.sigma_rel} for s in sources},
                "noise_sigma_target": cfg.target_sigma(),
                "subjects": records,
            },
        )
    return CohortResult(out_dir, records, seconds)
