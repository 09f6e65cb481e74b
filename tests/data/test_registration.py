"""MNI registration (one convention: scan world → MNI world) and atlas sampling.

The scans are nilearn's MNI152 template moved by a known affine onto a coarse grid, so the
registration must return that affine.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from realdeal.data.registration import (
    RegistrationConfig,
    _working_grid,
    mni_template,
    register_to_mni,
    sample_atlas,
)


def _rotation(deg: float, axis: int) -> np.ndarray:
    c, s = np.cos(np.deg2rad(deg)), np.sin(np.deg2rad(deg))
    i, j = [a for a in range(3) if a != axis]
    m = np.eye(4)
    m[i, i] = m[j, j] = c
    m[i, j], m[j, i] = -s, s
    return m


TRUE = _rotation(6, 2) @ _rotation(-4, 0)
TRUE[:3, :3] *= 1.04
TRUE[:3, 3] = (5.0, -7.0, 4.0)  # scan world → MNI world (mm)


def _moved_template(spacing: float, shape: tuple[int, int, int]):
    """(scan, brain mask, scan affine): MNI152 seen through TRUE on a grid of ``spacing`` mm
    whose origin is not at zero (a voxel → world answer would be far off)."""
    tmpl, tbrain, t_aff = mni_template()
    aff = np.diag([spacing, spacing, spacing, 1.0])
    aff[:3, 3] = (-96.0, -130.0, -70.0)
    vox = np.linalg.inv(t_aff) @ TRUE @ aff  # scan voxel → template voxel

    def warp(a: np.ndarray, order: int) -> np.ndarray:
        a = np.asarray(a, np.float32)
        return ndimage.affine_transform(
            a, vox[:3, :3], offset=vox[:3, 3], output_shape=shape, order=order
        )

    return warp(tmpl, 1), warp(tbrain, 0) > 0.5, aff


def _errors_mm(est: np.ndarray, brain: np.ndarray, aff: np.ndarray) -> np.ndarray:
    """How far ``est`` puts the scan's brain voxels from where TRUE puts them (mm)."""
    pts = np.c_[np.argwhere(brain)[::20], np.ones(len(np.argwhere(brain)[::20]))] @ aff.T
    return np.linalg.norm((pts @ est.T - pts @ TRUE.T)[:, :3], axis=1)


@pytest.mark.slow
def test_a_known_affine_is_recovered_for_a_skull_stripped_brain():
    scan, brain, aff = _moved_template(6.0, (32, 37, 31))
    scan = np.where(brain, scan, 0.0).astype(np.float32)
    assert _errors_mm(np.eye(4), brain, aff).mean() > 8.0  # the start is far off
    est = register_to_mni(scan, aff, brain, RegistrationConfig(spacing=6.0, resample="coarsen"))
    err = _errors_mm(est, brain, aff)
    assert err.mean() < 2.0 and err.max() < 4.0, (err.mean(), err.max())
    # the answer maps world to world: composed with the affine it maps voxels to MNI mm
    centre = np.array([16.0, 18.0, 15.0, 1.0])
    np.testing.assert_allclose((est @ aff) @ centre, TRUE @ aff @ centre, atol=4.0)


@pytest.mark.slow  # about 7 s on a loaded machine
def test_a_known_affine_is_recovered_for_a_head():
    scan, brain, aff = _moved_template(4.0, (48, 56, 46))
    est = register_to_mni(scan, aff)  # no mask: the whole template, metric on MNI's brain
    err = _errors_mm(est, brain, aff)
    assert err.mean() < 2.0 and err.max() < 4.0, (err.mean(), err.max())


def test_working_grid_isotropic_or_only_coarsened():
    x = np.arange(20 * 10 * 8, dtype=np.float32).reshape(20, 10, 8) + 5.0
    aff = np.diag([2.0, 6.0, 4.0, 1.0])
    iso, iso_aff = _working_grid(x, aff, RegistrationConfig(spacing=4.0))
    assert iso.shape == (10, 15, 8)  # every axis to 4 mm, the 6 mm one refined
    np.testing.assert_allclose(np.sqrt((iso_aff[:3, :3] ** 2).sum(0)), 4.0)
    coarse, coarse_aff = _working_grid(x, aff, RegistrationConfig(spacing=4.0, resample="coarsen"))
    assert coarse.shape == (10, 10, 8)  # only the 2 mm axis coarsened
    np.testing.assert_allclose(np.sqrt((coarse_aff[:3, :3] ** 2).sum(0)), (4.0, 6.0, 4.0))
    coarse_scan = np.diag([4.0, 6.0, 5.0, 1.0])
    assert _working_grid(x, coarse_scan, RegistrationConfig())[0].shape == (20, 15, 10)
    kept, kept_aff = _working_grid(x, coarse_scan, RegistrationConfig(resample="coarsen"))
    assert kept is x and kept_aff is coarse_scan  # a coarse scan keeps its own grid


def test_mni_template_is_shared_and_read_only():
    tmpl, brain, aff = mni_template()
    assert mni_template()[0] is tmpl
    assert tmpl.dtype == np.float32 and brain.dtype == bool and tmpl.shape == brain.shape
    assert (tmpl[~brain] != 0).any()  # the template goes beyond its brain mask
    with pytest.raises(ValueError):
        tmpl[0, 0, 0] = 1.0
    assert aff.shape == (4, 4) and np.allclose(np.abs(np.diag(aff)[:3]), 2.0)


def test_sample_atlas_follows_the_world_coordinates():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 120, size=(12, 14, 10)).astype(np.int16)
    atlas_aff = np.diag([2.0, 2.0, 2.0, 1.0])
    atlas_aff[:3, 3] = (-10.0, -12.0, -8.0)
    atlas = nib.Nifti1Image(labels, atlas_aff)
    # a grid shifted by (2, 3, 1) atlas voxels with the same spacing: an exact crop
    grid = atlas_aff.copy()
    grid[:3, 3] += (4.0, 6.0, 2.0)
    out = sample_atlas(atlas, grid, (6, 5, 4))
    assert out.dtype == np.int16
    np.testing.assert_array_equal(out, labels[2:8, 3:8, 1:5])
    # through a registration: world → MNI map composed with the grid's affine
    to_mni = np.eye(4)
    to_mni[:3, 3] = (4.0, 6.0, 2.0)
    np.testing.assert_array_equal(sample_atlas(atlas, to_mni @ atlas_aff, (6, 5, 4)), out)
    assert not sample_atlas(atlas, grid, (12, 14, 10))[-2:].any()  # outside the atlas: 0
