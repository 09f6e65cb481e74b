"""Headers survive a round trip: a volume derived from an input file is written with the
input's qform and sform (each with its code, a qform unlike the sform included) and in its
NIfTI version; on another grid both forms move with the grid."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from realdeal.data.io import Volume, load_volume

SFORM = np.array([[-1.5, 0.0, 0.0, 30.0], [0.0, 1.5, 0.0, -20.0], [0.0, 0.0, 1.5, -10.0],
                  [0.0, 0.0, 0.0, 1.0]])  # fmt: skip
QFORM = SFORM.copy()
QFORM[:3, 3] += [2.0, 3.0, 4.0]  # e.g. the scanner's frame, where the sform is a registration


def _write(path, klass=nib.Nifti1Image, qcode=1, scode=4):
    data = np.random.default_rng(0).random((6, 7, 8)).astype(np.float32) + 1.0
    img = klass(data, SFORM)
    img.set_sform(SFORM, code=scode)
    img.set_qform(QFORM, code=qcode)
    nib.save(img, str(path))
    return data


@pytest.mark.parametrize("klass", [nib.Nifti1Image, nib.Nifti2Image])
@pytest.mark.parametrize("qcode,scode", [(1, 4), (1, 0), (2, 1)])
def test_qform_sform_codes_and_version_are_kept(tmp_path, klass, qcode, scode):
    src, out = tmp_path / "in.nii.gz", tmp_path / "out.nii.gz"
    data = _write(src, klass, qcode, scode)
    vol = load_volume(src)
    vol.with_data(vol.data * 2).save(out)
    back = nib.load(str(out))
    assert type(back) is klass  # NIfTI-2 stays NIfTI-2
    assert int(back.header["qform_code"]) == qcode and int(back.header["sform_code"]) == scode
    np.testing.assert_allclose(back.header.get_qform(), QFORM, atol=1e-5)
    np.testing.assert_allclose(back.header.get_sform(), SFORM, atol=1e-5)
    np.testing.assert_allclose(back.get_fdata(), data * 2, rtol=1e-6)
    np.testing.assert_allclose(back.affine, nib.load(str(src)).affine, atol=1e-6)


def test_on_another_grid_both_forms_move_with_it(tmp_path):
    src, out = tmp_path / "in.nii", tmp_path / "out.nii"
    _write(src)
    vol = load_volume(src)  # the file is LAS: RAS index 0 is the file's last x
    shift = np.eye(4)
    shift[0, 3] = 1.0  # drop the first RAS column (the file's last)
    cropped = vol.with_data(vol.data[1:], affine=vol.affine @ shift)
    cropped.save(out)
    back = nib.load(str(out))
    assert back.shape == (5, 7, 8)
    assert int(back.header["qform_code"]) == 1 and int(back.header["sform_code"]) == 4
    np.testing.assert_allclose(back.header.get_sform(), SFORM, atol=1e-5)
    np.testing.assert_allclose(back.header.get_qform(), QFORM, atol=1e-5)
    # and the voxels are where they were in the world
    np.testing.assert_allclose(load_volume(out).data, vol.data[1:])
    np.testing.assert_allclose(load_volume(out).affine, vol.affine @ shift, atol=1e-6)


def test_volumes_made_in_memory_are_written_in_scanner_space(tmp_path):
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    Volume(np.ones((4, 4, 4), np.float32), aff).save(tmp_path / "v.nii.gz")
    back = nib.load(str(tmp_path / "v.nii.gz"))
    assert isinstance(back, nib.Nifti1Image) and not isinstance(back, nib.Nifti2Image)
    assert int(back.header["qform_code"]) == 1 and int(back.header["sform_code"]) == 1
    np.testing.assert_allclose(back.affine, aff)
