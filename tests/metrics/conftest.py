"""Shared fixtures for the metric tests: tiny phantoms, NIfTI subject sets, random weights."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from realdeal.metrics.phantom import make_phantom

SHAPE = (48, 56, 48)


@pytest.fixture(scope="session")
def phantom():
    """(image, clean, labels) of a 48×56×48 phantom."""
    return make_phantom(SHAPE, noise=0.03, seed=0)


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    affine = np.diag([1.0, 1.0, 1.0, 1.0]) if affine is None else affine
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


@pytest.fixture(scope="session")
def nifti_writer():
    """``write_nifti(path, data, affine=None)`` for tests that build bad inputs."""
    return write_nifti


@pytest.fixture(scope="session")
def cohort(tmp_path_factory):
    """Three subjects: originals, labels, and blurred / noise-stripped / renoised candidates."""
    root = tmp_path_factory.mktemp("cohort")
    dirs = {n: root / n for n in ("originals", "labels", "blurred", "stripped", "renoised")}
    for d in dirs.values():
        d.mkdir()
    for i in range(3):
        img, clean, lab = make_phantom(SHAPE, noise=0.03, seed=i)
        sid = f"sub-{i:02d}"
        rng = np.random.default_rng(100 + i)
        write_nifti(dirs["originals"] / f"{sid}.nii.gz", img)
        write_nifti(dirs["labels"] / f"{sid}.nii.gz", lab.astype(np.int16))
        write_nifti(dirs["blurred"] / f"{sid}.nii.gz", ndimage.gaussian_filter(img, 1.0))
        write_nifti(dirs["stripped"] / f"{sid}.nii.gz", clean)
        brain = lab > 0
        renoised = np.where(brain, clean + rng.normal(0, 0.03, SHAPE), clean).astype(np.float32)
        write_nifti(dirs["renoised"] / f"{sid}.nii.gz", renoised)
    return dirs


@pytest.fixture(scope="session")
def weights_dir(tmp_path_factory):
    """A checkpoint folder with random-weight AlexNet and FID-Inception files (real key sets)."""
    import torch
    import torchvision

    from realdeal.metrics.fid import build_fid_inception
    from realdeal.metrics.weights import ALEXNET, FID_INCEPTION

    d = tmp_path_factory.mktemp("hub") / "checkpoints"
    d.mkdir()
    torch.manual_seed(0)
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), d / ALEXNET.name)
    torch.save(build_fid_inception().state_dict(), d / FID_INCEPTION.name)
    return d
