"""Shared fixtures; helpers live in ``synthetic.py`` (a unique module name, unlike conftest)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from synthetic import phantom, save_nifti

os.environ.setdefault("REALDEAL_NO_PROGRESS", "1")


@pytest.fixture
def raw_folder(tmp_path):
    """Six phantom subjects (T1w + labels) with different positions and noise."""
    folder = tmp_path / "raw"
    folder.mkdir()
    for i in range(6):
        img, lab = phantom(seed=i, centre_shift=(i % 3 - 1, (i % 2) * 2 - 1, 0))
        aff = np.diag([1.5, 1.5, 1.5, 1.0])
        aff[:3, 3] = [-20.0 + i, -24.0, -18.0]
        save_nifti(folder / f"s{i:02d}_T1w.nii.gz", img * (1 + 0.05 * i), aff)
        save_nifti(folder / f"s{i:02d}_dseg.nii.gz", lab, aff)
    return folder
