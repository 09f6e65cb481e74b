"""Sets of subjects for evaluation: NIfTI files matched by file name, loaded and checked.

A set is given as folders and/or NIfTI files; the subject id is the file name without
``.nii``/``.nii.gz``. In a folder, hidden files are skipped (every temporary file realdeal's
writers make is hidden, and a killed process can leave one behind). Paired evaluation needs every candidate set, and the label maps, to hold
exactly the originals' subjects; every image must sit on its original's grid (shape and
affine), and label maps must contain the regions the metrics use. Each problem raises one
:class:`~realdeal.errors.InputError` (or subclass) naming the file or folder.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from realdeal.data.io import Volume, check_same_grid, is_nifti_path, load_volume, nifti_stem
from realdeal.data.labels import REGIONS, region_mask
from realdeal.errors import InputError
from realdeal.utils.fs import is_hidden_or_temp


class EmptySetError(InputError):
    """A set of subjects has no NIfTI files."""


class SetMismatchError(InputError):
    """Paired sets do not hold the same subjects."""


class MissingRegionError(InputError):
    """A label map has no voxel of a region a metric needs."""


@dataclasses.dataclass(frozen=True)
class SubjectSet:
    """A named set of images, ``paths[subject_id] = file`` (ids sorted)."""

    name: str
    paths: dict[str, Path]
    source: str = ""

    @property
    def ids(self) -> list[str]:
        return list(self.paths)

    def __len__(self) -> int:
        return len(self.paths)


def find_set(name: str, sources: str | os.PathLike | Sequence[str | os.PathLike]) -> SubjectSet:
    """Collect the NIfTI files of folders/files in ``sources`` into a :class:`SubjectSet`."""
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    paths: dict[str, Path] = {}
    where = ", ".join(str(s) for s in sources) or "(nothing given)"
    for src in sources:
        src = Path(src)
        if src.is_dir():
            files: Iterable[Path] = sorted(
                p
                for p in src.iterdir()
                if p.is_file() and is_nifti_path(p) and not is_hidden_or_temp(p.name)
            )
        elif src.is_file():
            if not is_nifti_path(src):
                raise InputError(src, f"{name} set: not a NIfTI file (expected .nii or .nii.gz)")
            files = [src]
        else:
            raise InputError(src, f"{name} set: no such file or folder")
        for f in files:
            sid = nifti_stem(f)
            if sid in paths:
                raise InputError(
                    f, f"{name} set: subject id {sid!r} appears twice (also {paths[sid]})"
                )
            paths[sid] = f
    if not paths:
        raise EmptySetError(where, f"{name} set is empty: no .nii or .nii.gz files")
    return SubjectSet(name, dict(sorted(paths.items())), where)


def check_paired(reference: SubjectSet, other: SubjectSet) -> None:
    """Raise :class:`SetMismatchError` unless ``other`` has exactly ``reference``'s subjects."""
    missing = sorted(set(reference.paths) - set(other.paths))
    extra = sorted(set(other.paths) - set(reference.paths))
    if missing or extra:
        parts = [
            f"{other.name} set has {len(other)} subjects, {reference.name} has {len(reference)}"
        ]
        if missing:
            parts.append(f"missing {', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}")
        if extra:
            parts.append(
                f"not in {reference.name}: {', '.join(extra[:5])}{' …' if len(extra) > 5 else ''}"
            )
        raise SetMismatchError(other.source, "; ".join(parts))


def load_image_on_grid(path: Path, reference: Volume | None, what: str) -> Volume:
    """Load an image and check it lies on ``reference``'s grid (if given)."""
    vol = load_volume(path, kind="image")
    if reference is not None:
        check_same_grid(reference, vol, what=what)
    return vol


def load_labels(path: Path, image: Volume, regions: Sequence[str]) -> np.ndarray:
    """Label map on ``image``'s grid that contains every region in ``regions`` (int32 array)."""
    lab = load_volume(path, kind="label")
    check_same_grid(image, lab, what="label map")
    for region in regions:
        if not region_mask(lab.data, region).any():
            codes = (
                "label > 0"
                if region == "brain"
                else "FreeSurfer codes " + ", ".join(map(str, REGIONS[region]))
            )
            raise MissingRegionError(path, f"label map has no {region} voxels ({codes})")
    return lab.data
