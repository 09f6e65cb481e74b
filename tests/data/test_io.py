"""NIfTI I/O: canonical RAS loading, write-back in the source orientation, bad input."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from realdeal.data.io import Volume, check_same_grid, load_volume
from realdeal.errors import InputError

from synthetic import save_nifti


def _non_ras_affine():
    # Axis 0 runs anterior→posterior, axis 1 superior→inferior, axis 2 left→right (PIR-like),
    # with different voxel sizes and an offset: nothing lines up with RAS.
    aff = np.zeros((4, 4))
    aff[1, 0] = -1.2  # axis 0 → -y (posterior)
    aff[2, 1] = -0.8  # axis 1 → -z (inferior)
    aff[0, 2] = 1.5  # axis 2 → +x (right)
    aff[:3, 3] = [-30.0, 40.0, 25.0]
    aff[3, 3] = 1.0
    return aff


def test_load_reorients_to_ras_and_keeps_world_positions(tmp_path):
    rng = np.random.default_rng(0)
    raw = rng.normal(size=(7, 9, 11)).astype(np.float32)
    aff = _non_ras_affine()
    path = save_nifti(tmp_path / "x.nii.gz", raw, aff)
    vol = load_volume(path)
    assert nib.aff2axcodes(vol.affine) == ("R", "A", "S")
    assert vol.spacing == pytest.approx((1.5, 1.2, 0.8))
    # Every source voxel lands at the same world position in the canonical volume.
    for ijk in [(0, 0, 0), (6, 8, 10), (3, 2, 7)]:
        world = aff @ np.array([*ijk, 1.0])
        can = np.rint(np.linalg.inv(vol.affine) @ world).astype(int)[:3]
        assert vol.data[tuple(can)] == raw[ijk]


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_round_trip_keeps_source_orientation_affine_and_voxels(tmp_path, suffix):
    rng = np.random.default_rng(1)
    raw = rng.normal(size=(7, 9, 11)).astype(np.float32)
    aff = _non_ras_affine()
    src = save_nifti(tmp_path / f"src{suffix}", raw, aff)
    vol = load_volume(src)
    out = vol.save(tmp_path / f"out{suffix}")
    back = nib.load(str(out))
    assert back.shape == raw.shape
    np.testing.assert_array_equal(back.affine, nib.load(str(src)).affine)
    np.testing.assert_array_equal(np.asarray(back.dataobj), raw)
    assert nib.aff2axcodes(back.affine) == nib.aff2axcodes(aff)


def test_label_round_trip_and_dtype(tmp_path):
    lab = np.zeros((6, 6, 6), np.int16)
    lab[1:3, 2:5, 0:4] = 41
    src = save_nifti(tmp_path / "lab.nii.gz", lab, _non_ras_affine())
    vol = load_volume(src, kind="label")
    assert vol.data.dtype == np.int32
    out = vol.save(tmp_path / "lab_out.nii.gz")
    np.testing.assert_array_equal(np.asarray(nib.load(str(out)).dataobj), lab)


def test_single_volume_4d_is_accepted(tmp_path):
    raw = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6, 1)
    vol = load_volume(save_nifti(tmp_path / "x.nii.gz", raw, np.eye(4)))
    assert vol.shape == (4, 5, 6)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: None, "file not found"),
        (lambda p: p.write_text("hello"), "not a readable NIfTI"),
        (lambda p: save_nifti(p, np.ones((4, 5, 6, 3), np.float32)), "4D image"),
        (lambda p: save_nifti(p, np.ones((4, 5), np.float32)), "2D image"),
        (
            lambda p: save_nifti(
                p, np.where(np.eye(4)[:, :, None] > 0, np.nan, 1.0).repeat(3, 2).astype(np.float32)
            ),
            "NaN or Inf",
        ),
        (lambda p: save_nifti(p, np.full((4, 5, 6), 3.0, np.float32)), "constant image"),
    ],
    ids=["missing", "not-nifti", "4d", "2d", "nan", "constant"],
)
def test_bad_input_names_file_and_problem(tmp_path, make, message):
    path = tmp_path / "bad.nii.gz"
    make(path)
    with pytest.raises(InputError) as e:
        load_volume(path)
    assert str(path) in str(e.value) and message in str(e.value)
    assert "\n" not in str(e.value)


def test_wrong_extension_is_rejected(tmp_path):
    p = tmp_path / "image.mgz"
    p.write_bytes(b"\0" * 10)
    with pytest.raises(InputError, match="not a NIfTI file"):
        load_volume(p)


def test_label_grid_mismatch(tmp_path):
    img = load_volume(
        save_nifti(
            tmp_path / "i.nii.gz", np.random.default_rng(0).random((6, 6, 6)).astype(np.float32)
        )
    )
    wrong_shape = load_volume(
        save_nifti(tmp_path / "l1.nii.gz", np.ones((6, 6, 5), np.int16)), kind="label"
    )
    shifted = np.diag([1.5, 1.5, 1.5, 1.0])
    shifted[0, 3] = 3.0
    wrong_affine = load_volume(
        save_nifti(tmp_path / "l2.nii.gz", np.ones((6, 6, 6), np.int16), shifted), kind="label"
    )
    with pytest.raises(InputError, match="shape"):
        check_same_grid(img, wrong_shape)
    with pytest.raises(InputError, match="affine"):
        check_same_grid(img, wrong_affine)


def test_save_is_atomic_on_failure(tmp_path, monkeypatch):
    vol = Volume(np.random.default_rng(0).random((4, 4, 4)).astype(np.float32), np.eye(4))
    target = tmp_path / "out.nii.gz"

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(nib, "save", boom)
    with pytest.raises(RuntimeError):
        vol.save(target)
    assert list(tmp_path.iterdir()) == []
