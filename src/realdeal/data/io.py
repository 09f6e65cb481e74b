"""NIfTI volumes in canonical RAS voxel order that remember how to write themselves back.

Axis convention, everywhere in realdeal: arrays are ``(X, Y, Z)`` = ``(D, H, W)`` with
axis 0 left→right, axis 1 posterior→anterior, axis 2 inferior→superior (RAS+), as the
paper's code assumes. :func:`load_volume` reorients any file to that order (by axis
permutation and flips only, never by interpolation) and :meth:`Volume.save` writes data in
the source file's own orientation, affine and header.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import nibabel as nib
import numpy as np
from nibabel.orientations import (
    apply_orientation,
    axcodes2ornt,
    inv_ornt_aff,
    io_orientation,
    ornt_transform,
)

from realdeal.errors import InputError
from realdeal.utils.fs import atomic_path

NIFTI_SUFFIXES = (".nii", ".nii.gz")
_RAS = axcodes2ornt(("R", "A", "S"))


def is_nifti_path(path: str | os.PathLike) -> bool:
    """True if the file name ends in ``.nii`` or ``.nii.gz``."""
    return str(path).endswith(NIFTI_SUFFIXES)


def nifti_stem(path: str | os.PathLike) -> str:
    """File name without ``.nii``/``.nii.gz``."""
    name = Path(path).name
    for s in (".nii.gz", ".nii"):
        if name.endswith(s):
            return name[: -len(s)]
    return Path(name).stem


@dataclasses.dataclass
class Volume:
    """A 3D scalar image in canonical RAS order plus the source geometry to write it back.

    ``data`` is ``(X, Y, Z)`` in RAS voxel order; ``affine`` maps its voxel indices to world
    millimetres. ``header`` and ``source_affine``/``source_shape`` describe the file it came
    from (``None`` for volumes made in memory, which are then written in RAS order).
    """

    data: np.ndarray
    affine: np.ndarray
    header: nib.Nifti1Header | None = None
    source_affine: np.ndarray | None = None
    path: str | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.data.shape)  # type: ignore[return-value]

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along each array axis."""
        return voxel_spacing(self.affine)

    def with_data(self, data: np.ndarray, affine: np.ndarray | None = None) -> Volume:
        """Same source geometry, new voxel data (and optionally a new canonical affine)."""
        return dataclasses.replace(
            self, data=data, affine=self.affine if affine is None else np.asarray(affine)
        )

    def to_source_orientation(self) -> tuple[np.ndarray, np.ndarray]:
        """Data and affine in the source file's axis order (RAS if there is no source)."""
        if self.source_affine is None:
            return self.data, self.affine
        src_ornt = io_orientation(self.source_affine)
        back = ornt_transform(_RAS, src_ornt)
        data = apply_orientation(self.data, back)
        affine = self.affine @ inv_ornt_aff(back, self.data.shape)
        return data, affine

    def save(self, path: str | os.PathLike, dtype: np.dtype | type | None = None) -> Path:
        """Write as NIfTI in the source orientation with the source header, atomically.

        ``dtype`` defaults to float32 for floating data and int16 for integer (label) data.
        When the data still has the source's shape and geometry, the written affine equals the
        source affine exactly.
        """
        path = Path(path)
        if not is_nifti_path(path):
            raise InputError(path, "output name must end in .nii or .nii.gz")
        data, affine = self.to_source_orientation()
        if dtype is None:
            dtype = np.int16 if np.issubdtype(self.data.dtype, np.integer) else np.float32
        data = np.asarray(data, dtype=dtype)
        if self.source_affine is not None and self.header is not None:
            src_shape = tuple(int(s) for s in self.header.get_data_shape()[:3])
            if data.shape == src_shape and np.allclose(affine, self.source_affine, atol=1e-4):
                affine = self.source_affine  # exact, no floating-point drift
        img = self._image(data, affine)
        img.set_data_dtype(dtype)
        img.header.set_slope_inter(None, None)
        with atomic_path(path) as tmp:
            nib.save(img, tmp)
        return path

    def _image(self, data: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
        """The NIfTI image of ``data`` (source orientation) at ``affine``, in the source's format
        (NIfTI-2 stays NIfTI-2) with its header.

        The source's qform and sform are kept each as it was, codes included (a qform that
        differs from the sform is not replaced by it); when the grid changed (resampled,
        cropped), both move with it: each becomes ``old @ T`` with ``T`` the map from new to old
        voxel indices. A volume made in memory gets ``affine`` as both, with code 1 (scanner)."""
        if self.header is None or self.source_affine is None:
            img = nib.Nifti1Image(
                data, affine, header=None if self.header is None else self.header.copy()
            )
            img.set_qform(affine, code=1)
            img.set_sform(affine, code=1)
            return img
        header = self.header.copy()
        klass = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
        qform, qcode = header.get_qform(), int(header["qform_code"])
        sform, scode = header.get_sform(), int(header["sform_code"])
        to_source = np.linalg.solve(self.source_affine, affine)  # new voxel → source voxel
        same_grid = np.allclose(to_source, np.eye(4), atol=1e-6)
        if not same_grid and not (qcode or scode):  # nothing said where the source was
            qcode = scode = 1
            qform = sform = self.source_affine
        if not same_grid:
            qform, sform = qform @ to_source, sform @ to_source
        img = klass(data, sform if scode else qform if qcode else affine, header=header)
        img.set_qform(qform, code=qcode)
        img.set_sform(sform, code=scode)
        return img


def voxel_spacing(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size (mm) along each array axis from a 4×4 affine."""
    return tuple(float(v) for v in np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0)))  # type: ignore[return-value]


def open_nifti(path: str | os.PathLike) -> nib.Nifti1Image | nib.Nifti2Image:
    """Open a 3D NIfTI file lazily (header only), raising :class:`InputError` if it is missing,
    unreadable or not a single 3D volume. Cheap: commands check every input with it before
    loading a model."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file not found")
    if path.is_dir():
        raise InputError(path, "is a folder, expected a NIfTI file")
    if not is_nifti_path(path):
        raise InputError(path, "not a NIfTI file (expected .nii or .nii.gz)")
    try:
        img = nib.load(str(path))
    except Exception as e:  # nibabel raises several types for corrupt or foreign files
        raise InputError(path, f"not a readable NIfTI file ({type(e).__name__}: {e})") from e
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise InputError(path, f"not a NIfTI image (nibabel read it as {type(img).__name__})")
    shape = img.shape
    if len(shape) == 4 and shape[3] == 1:
        img = img.slicer[..., 0]
        shape = img.shape
    if len(shape) != 3:
        what = f"{len(shape)}D image of shape {tuple(shape)}"
        raise InputError(path, f"{what}; expected a single 3D volume")
    if min(shape) < 2:
        raise InputError(
            path,
            f"image of shape {tuple(shape)} is not a 3D volume (an axis has size {min(shape)})",
        )
    affine = img.affine
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise InputError(path, "affine is not invertible or not finite")
    return img


def load_volume(
    path: str | os.PathLike,
    kind: Literal["image", "label"] = "image",
) -> Volume:
    """Load a 3D NIfTI file into canonical RAS order.

    ``kind="image"`` gives float32 and rejects non-finite and constant images;
    ``kind="label"`` gives int32 and rejects non-integer values. Every problem raises
    :class:`InputError` naming the file. A 4D file with a single volume is accepted.
    """
    img = open_nifti(path)
    path = Path(path)
    source_affine = img.affine.copy()
    try:
        raw = np.asanyarray(img.dataobj)
    except Exception as e:
        raise InputError(path, f"cannot read voxel data ({type(e).__name__}: {e})") from e
    ornt = io_orientation(source_affine)
    data = apply_orientation(raw, ornt)
    affine = source_affine @ inv_ornt_aff(ornt, raw.shape)
    if kind == "image":
        data = np.ascontiguousarray(data, dtype=np.float32)
        bad = ~np.isfinite(data)
        if bad.any():
            raise InputError(path, f"{int(bad.sum())} voxel(s) are NaN or Inf")
        if float(data.max()) == float(data.min()):
            raise InputError(path, f"constant image (every voxel is {float(data.min()):g})")
    else:
        if not np.all(np.isfinite(data)):
            raise InputError(path, "label map has NaN or Inf voxels")
        rounded = np.rint(data)
        if np.any(np.abs(rounded - data) > 1e-3):
            raise InputError(path, "label map has non-integer values")
        data = np.ascontiguousarray(rounded, dtype=np.int32)
    return Volume(
        data=data,
        affine=affine,
        header=img.header.copy(),
        source_affine=source_affine,
        path=str(path),
    )


def check_same_grid(image: Volume, other: Volume, what: str = "label map") -> None:
    """Raise if ``other`` (e.g. a label map) is not on exactly the grid of ``image``."""
    if image.shape != other.shape:
        raise InputError(
            other.path,
            f"{what} shape {other.shape} does not match image {image.path} shape {image.shape}",
        )
    if not np.allclose(image.affine, other.affine, atol=1e-3):
        raise InputError(
            other.path,
            f"{what} affine does not match image {image.path} (max difference {np.abs(image.affine - other.affine).max():.3g} mm)",
        )


def output_paths(files: Sequence[Path], out: str | os.PathLike) -> list[Path]:
    """Where each input's result goes: ``out/<stem>.nii.gz``, or ``out`` itself when there is
    one input and ``out`` ends in ``.nii[.gz]``. Refuses to overwrite an input."""
    out = Path(out)
    if len(files) == 1 and is_nifti_path(out):
        dsts = [out]
    elif out.exists() and not out.is_dir():
        raise InputError(out, "output exists and is not a folder")
    else:
        dsts = [out / f"{nifti_stem(f)}.nii.gz" for f in files]
    for f, d in zip(files, dsts, strict=True):
        if d.resolve() == Path(f).resolve():
            raise InputError(d, "output would overwrite its input")
    return dsts
