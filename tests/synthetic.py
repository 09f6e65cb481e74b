"""Tiny synthetic NIfTI 'brains' for tests (no data files in the repo)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np


def phantom(shape=(28, 32, 26), seed=0, centre_shift=(0, 0, 0)):
    """Ellipsoidal 'brain' with a bright core ('white matter', label 2/41) and a dark centre
    ('ventricles', label 4/43), in raw units (~0..1200), background 0. Returns (image, labels)."""
    rng = np.random.default_rng(seed)
    idx = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1).astype(float)
    c = np.array(shape) / 2.0 + np.array(centre_shift)
    r = np.array(shape) * 0.35
    d = np.sqrt((((idx - c) / r) ** 2).sum(-1))
    img = np.zeros(shape, np.float32)
    lab = np.zeros(shape, np.int16)
    brain, wm, vent = d < 1.0, d < 0.6, d < 0.2
    left = idx[..., 0] < c[0]
    img[brain] = 700.0
    img[wm] = 1000.0
    img[vent] = 300.0
    lab[brain] = np.where(left, 3, 42)[brain]
    lab[wm] = np.where(left, 2, 41)[wm]
    lab[vent] = np.where(left, 4, 43)[vent]
    img[brain] += rng.normal(0, 20, int(brain.sum())).astype(np.float32)
    return img, lab


def save_nifti(path, data, affine=None, dtype=None):
    affine = np.diag([1.5, 1.5, 1.5, 1.0]) if affine is None else affine
    img = nib.Nifti1Image(np.asarray(data, dtype=dtype or data.dtype), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, str(path))
    return Path(path)


def prepared_phantoms(folder: Path, n: int, test_fraction: float) -> Path:
    """A prepared dataset (24 × 32 × 24, 16³ windows) of ``n`` phantom subjects made in
    ``folder``, ``test_fraction`` of them held out: ``folder/prepared``."""
    from realdeal.data.dataset import PrepareConfig, prepare_dataset

    raw = Path(folder) / "raw"
    raw.mkdir(parents=True)
    for i in range(n):
        img, _ = phantom(seed=i, centre_shift=(i % 3 - 1, 0, 0))
        save_nifti(raw / f"s{i:02d}_T1w.nii.gz", img)
    root = Path(folder) / "prepared"
    cfg = PrepareConfig(shape=(24, 32, 24), window=16, test_fraction=test_fraction)
    prepare_dataset(str(raw / "*_T1w.nii.gz"), root, cfg)
    return root
