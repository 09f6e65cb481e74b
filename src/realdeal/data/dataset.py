"""Prepared datasets: ``realdeal prepare`` writes them, every later stage reads them.

Layout of a prepared dataset folder::

    dataset.json                 format marker, config, intensity scaler, grid, split, subjects
    subjects.csv                 the same subject table for people and spreadsheets
    images/<id>.nii.gz           preprocessed T1w, float32 in [-1, 1], background -1
    labels/<id>.nii.gz           label map on the same grid (if labels were given)
    masks/<id>.nii.gz            brain mask (uint8) on the same grid
    fractions/<id>_w<W>.npy      brain fraction of every W³ window position (float16)
    <kind>/<id>.nii.gz           derived volumes, e.g. reconstructions/ (written later)

Every volume is on the prepared grid ``shape`` (canonical RAS, ``(X, Y, Z)``) with its own
affine (world position kept). Each subject's :class:`~realdeal.data.transforms.SubjectTransform`
in ``dataset.json`` maps the prepared grid back to its source file.
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import io
import json
import logging
import math
import os
import re
from pathlib import Path
from typing import Any, Literal

import numpy as np
from scipy import ndimage

from realdeal.config import to_dict
from realdeal.data.fraction import brain_fraction_map
from realdeal.data.intensity import mapped_range, stored_mapping_fits
from realdeal.data.io import (
    Volume,
    check_same_grid,
    is_nifti_path,
    load_volume,
    nifti_stem,
    voxel_spacing,
)
from realdeal.data.transforms import (
    BACKGROUND,
    CropPad,
    IntensityScaler,
    Resample,
    SubjectTransform,
    foreground_sample,
)
from realdeal.errors import ConfigError, InputError, RealDealError
from realdeal.utils.fs import (
    atomic_dir,
    check_replaceable,
    is_hidden_or_temp,
    output_format,
    write_json_atomic,
    write_text_atomic,
)
from realdeal.utils.progress import progress

log = logging.getLogger(__name__)

FORMAT = "realdeal-prepared"
FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")


@dataclasses.dataclass(frozen=True)
class PrepareConfig:
    """How to turn raw T1w files into a prepared dataset (defaults follow the paper, docs/method.md#spec-2)."""

    shape: tuple[int, int, int] = (224, 288, 224)
    """Prepared grid (X, Y, Z). Paper: 224×288×224 at 0.7 mm."""
    spacing: tuple[float, float, float] | None = None
    """Resample to this voxel size (mm) first; ``None`` keeps each file's own spacing."""
    low_percentile: float = 0.5
    high_percentile: float = 99.5
    """Robust percentiles of pooled training-set foreground intensities → the global (low, high)."""
    voxels_per_subject: int = 200_000
    """Foreground voxels sampled per training subject for the percentiles (equal weight)."""
    foreground_threshold: float = 0.05
    """Without labels: foreground = voxels above this fraction of the 99th percentile, holes filled."""
    window: int = 64
    """Window size of the brain-fraction maps (the refiner's patch size)."""
    test_fraction: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        if len(self.shape) != 3 or any(s < 1 for s in self.shape):
            raise ConfigError(f"shape must be three positive sizes, got {self.shape}")
        if self.spacing is not None and (
            len(self.spacing) != 3
            or not all(isinstance(v, (int, float)) and 0 < v < math.inf for v in self.spacing)
        ):
            raise ConfigError(
                f"spacing must be three positive voxel sizes in mm, got {tuple(self.spacing)} "
                "(a negative or zero size would flip or collapse the images)"
            )
        if self.window < 1 or any(self.window > s for s in self.shape):
            raise ConfigError(f"window {self.window} must fit the prepared shape {self.shape}")
        if not 0 <= self.test_fraction < 1:
            raise ConfigError("test_fraction must be in [0, 1)")
        if not 0 <= self.low_percentile < self.high_percentile <= 100:
            raise ConfigError("need 0 <= low_percentile < high_percentile <= 100")


@dataclasses.dataclass
class SubjectRecord:
    """One subject of a prepared dataset."""

    id: str
    split: str
    source: str
    label_source: str | None
    transform: SubjectTransform
    source_spacing: tuple[float, float, float]
    source_shape: tuple[int, int, int]
    brain_fraction: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "split": self.split,
            "source": self.source,
            "label_source": self.label_source,
            "source_spacing": list(self.source_spacing),
            "source_shape": list(self.source_shape),
            "brain_fraction": self.brain_fraction,
            "transform": self.transform.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SubjectRecord:
        return cls(
            id=d["id"],
            split=d["split"],
            source=d["source"],
            label_source=d.get("label_source"),
            transform=SubjectTransform.from_dict(d["transform"]),
            source_spacing=tuple(d["source_spacing"]),  # type: ignore[arg-type]
            source_shape=tuple(d["source_shape"]),  # type: ignore[arg-type]
            brain_fraction=float(d["brain_fraction"]),
        )


class PreparedDataset:
    """Read access to a prepared dataset folder (and writing of derived volumes)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        meta_path = self.root / "dataset.json"
        if not self.root.is_dir():
            raise InputError(self.root, "prepared dataset folder not found")
        if not meta_path.exists():
            raise InputError(
                self.root, "not a prepared dataset (no dataset.json); run `realdeal prepare` first"
            )
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as e:  # ValueError: bad JSON, or bytes that are not UTF-8
            raise InputError(meta_path, f"unreadable dataset manifest ({e})") from e
        if not isinstance(meta, dict):
            raise InputError(meta_path, "not a realdeal prepared dataset manifest (not a mapping)")
        if meta.get("format") != FORMAT:
            raise InputError(
                meta_path,
                f"not a realdeal prepared dataset manifest (format={meta.get('format')!r})",
            )
        version = meta.get("version", 0)
        if isinstance(version, (int, float)) and version > FORMAT_VERSION:
            raise InputError(meta_path, f"written by a newer realdeal (format version {version})")
        self.meta = meta
        try:
            self._read_manifest(meta)
        except InputError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, RealDealError) as e:
            what = f"missing entry {e}" if isinstance(e, KeyError) else str(e).splitlines()[0]
            raise InputError(meta_path, f"malformed dataset manifest ({what})") from e

    def _read_manifest(self, meta: dict[str, Any]) -> None:
        self.config = PrepareConfig(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in meta["config"].items()}
        )
        self.scaler = IntensityScaler.from_dict(meta["scaler"])
        self.shape: tuple[int, int, int] = tuple(int(s) for s in meta["shape"])  # type: ignore[assignment]
        if len(self.shape) != 3:
            raise ValueError(f"shape {list(self.shape)} is not three sizes")
        self.window: int = int(meta["window"])
        self.subjects = [SubjectRecord.from_dict(s) for s in meta["subjects"]]
        self._by_id = {s.id: s for s in self.subjects}
        if len(self._by_id) != len(self.subjects):
            raise ValueError("a subject id appears twice")
        bad = sorted({s.split for s in self.subjects} - set(SPLITS))
        if bad:
            raise ValueError(f"unknown split value(s) {bad}")
        self.spacing: tuple[float, float, float] = tuple(float(v) for v in meta["spacing"])  # type: ignore[assignment]

    def __len__(self) -> int:
        return len(self.subjects)

    def __repr__(self) -> str:
        counts = {s: len(self.ids(s)) for s in SPLITS if self.ids(s)}
        return f"PreparedDataset({str(self.root)!r}, shape={self.shape}, spacing={self.spacing}, {counts})"

    def ids(self, split: str | None = None) -> list[str]:
        """Subject ids, optionally of one split (``train``, ``val`` or ``test``)."""
        return [s.id for s in self.subjects if split is None or s.split == split]

    def record(self, sid: str) -> SubjectRecord:
        try:
            return self._by_id[sid]
        except KeyError:
            raise InputError(self.root, f"no subject {sid!r} in this prepared dataset") from None

    def image_path(self, sid: str) -> Path:
        return self.root / "images" / f"{sid}.nii.gz"

    def label_path(self, sid: str) -> Path:
        return self.root / "labels" / f"{sid}.nii.gz"

    def mask_path(self, sid: str) -> Path:
        return self.root / "masks" / f"{sid}.nii.gz"

    def fraction_path(self, sid: str) -> Path:
        return self.root / "fractions" / f"{sid}_w{self.window}.npy"

    def load_image(self, sid: str) -> Volume:
        """Prepared image: float32 in [-1, 1], background -1, on the prepared grid."""
        self.record(sid)
        return load_volume(self.image_path(sid))

    def load_label(self, sid: str) -> Volume | None:
        """Label map (FreeSurfer codes) on the prepared grid, or ``None`` without labels."""
        if self.record(sid).label_source is None:
            return None
        return load_volume(self.label_path(sid), kind="label")

    def load_mask(self, sid: str) -> np.ndarray:
        """Boolean brain mask on the prepared grid."""
        self.record(sid)
        return load_volume(self.mask_path(sid), kind="label").data > 0

    def load_fraction(self, sid: str) -> np.ndarray:
        """Brain fraction of every window position, ``(X-w+1, Y-w+1, Z-w+1)`` float32."""
        self.record(sid)
        path = self.fraction_path(sid)
        try:
            return np.load(path, allow_pickle=False).astype(np.float32)
        except (OSError, ValueError) as e:
            raise InputError(path, f"cannot read brain-fraction map ({e})") from e

    def derived_path(self, kind: str, sid: str) -> Path:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", kind) or kind in (
            "images",
            "labels",
            "masks",
            "fractions",
        ):
            raise ConfigError(f"invalid derived-volume kind {kind!r}")
        return self.root / kind / f"{sid}.nii.gz"

    def has_derived(self, kind: str, sid: str) -> bool:
        return self.derived_path(kind, sid).exists()

    def load_derived(self, kind: str, sid: str) -> Volume:
        path = self.derived_path(kind, sid)
        if not path.exists():
            raise InputError(
                path,
                f"missing {kind} volume for subject {sid} (run the stage that writes {kind}/ first)",
            )
        vol = load_volume(path)
        if vol.shape != self.shape:
            raise InputError(
                path, f"shape {vol.shape} does not match the dataset grid {self.shape}"
            )
        return vol

    def save_derived(self, kind: str, sid: str, data: np.ndarray) -> Path:
        """Write a volume on the prepared grid (same affine as the subject's image), atomically."""
        data = np.asarray(data, dtype=np.float32)
        if data.shape != self.shape:
            raise ConfigError(
                f"{kind}/{sid}: shape {data.shape} does not match the dataset grid {self.shape}"
            )
        ref = self.load_image(sid)
        return Volume(data, ref.affine).save(self.derived_path(kind, sid))

    def to_source_space(self, sid: str, data: np.ndarray) -> Volume:
        """Undo crop/pad, scaling and resampling: a volume in the subject's source geometry."""
        rec = self.record(sid)
        src = load_volume(rec.source) if Path(rec.source).exists() else None
        raw = rec.transform.inverse_image(np.asarray(data, np.float32))
        if src is not None:
            return src.with_data(raw)
        # Source file gone: rebuild its canonical geometry from the transform alone.
        affine = rec.transform.croppad.inverse_affine(self.load_image(sid).affine)
        if rec.transform.resample is not None:
            affine = rec.transform.resample.inverse_affine(affine)
        return Volume(raw, affine)

    def save_source_space(self, sid: str, data: np.ndarray, path: str | os.PathLike) -> Path:
        """Write ``data`` (prepared grid) in the subject's source orientation, affine and header."""
        return self.to_source_space(sid, data).save(path)


# ---------------------------------------------------------------------------------------
# Preparing


def find_inputs(spec: str | os.PathLike | list) -> list[Path]:
    """NIfTI files from a folder, a glob pattern, a single file, or a list of those; sorted."""
    specs = spec if isinstance(spec, (list, tuple)) else [spec]
    files: list[Path] = []
    for s in specs:
        p = Path(s)
        if p.is_dir():
            files += sorted(
                f for f in p.iterdir() if is_nifti_path(f) and not is_hidden_or_temp(f.name)
            )
        elif any(c in str(s) for c in "*?["):
            matched = sorted(
                Path(f)
                for f in glob.glob(str(s), recursive=True)
                if is_nifti_path(f) and not is_hidden_or_temp(f)
            )
            if not matched:
                raise InputError(s, "no NIfTI files match this pattern")
            files += matched
        else:
            files.append(p)  # load_volume reports a missing or foreign file
    if not files:
        raise InputError(specs[0], "no NIfTI files (.nii/.nii.gz) found")
    return files


def subject_ids(files: list[Path]) -> list[str]:
    """Subject ids: file names without extension and a trailing ``_T1w``; if those collide
    (HCP: every subject's file is ``T1w_acpc_dc_restore_brain.nii.gz``), the first folder
    name that differs between files (HCP: the subject number)."""
    ids = [re.sub(r"_T1w$", "", nifti_stem(f)) for f in files]
    if len(set(ids)) == len(ids):
        return ids
    parts = [f.resolve().parts for f in files]
    n = min(len(p) for p in parts)
    for i in range(n - 1):
        column = [p[i] for p in parts]
        if len(set(column)) == len(column):
            return column
    return [
        "_".join(p[i] for i in range(n) if len({q[i] for q in parts}) > 1).replace(".nii.gz", "")
        for p in parts
    ]


def match_labels(files: list[Path], ids: list[str], pattern: str) -> list[Path]:
    """Label map paths from a pattern with ``{dir}``, ``{stem}`` and ``{id}`` placeholders,
    e.g. ``{dir}/{id}_dseg.nii.gz`` (built-in cohort) or ``{dir}/aparc+aseg.nii.gz`` (HCP)."""
    out = []
    for f, sid in zip(files, ids, strict=True):
        try:
            out.append(Path(pattern.format(dir=str(f.parent), stem=nifti_stem(f), id=sid)))
        except (KeyError, IndexError) as e:
            raise ConfigError(
                f"label pattern {pattern!r}: unknown placeholder {e}; use {{dir}}, {{stem}}, {{id}}"
            ) from e
    return out


def split_subjects(ids: list[str], test_fraction: float, seed: int) -> dict[str, str]:
    """Deterministic train/test split: ids sorted, permuted by ``seed``; round(n·f) test
    subjects (at least one when there are two or more subjects and f > 0)."""
    order = sorted(ids)
    perm = np.random.default_rng(seed).permutation(len(order))
    n_test = int(round(len(order) * test_fraction))
    if test_fraction > 0 and len(order) >= 2:
        n_test = max(1, min(n_test, len(order) - 1))
    test = {order[i] for i in perm[:n_test]}
    return {sid: ("test" if sid in test else "train") for sid in ids}


def read_split_csv(path: str | os.PathLike, ids: list[str]) -> dict[str, str]:
    """Split from a CSV with columns ``subject`` (or ``id``) and ``split`` (train/val/test)."""
    path = Path(path)
    if path.is_dir():
        raise InputError(path, "is a folder, expected a split CSV file")
    try:
        rows = list(csv.DictReader(io.StringIO(path.read_text())))
    except OSError as e:
        raise InputError(path, f"cannot read split CSV ({e.strerror})") from e
    except (UnicodeDecodeError, csv.Error) as e:
        raise InputError(path, f"not a readable CSV file ({str(e).splitlines()[0]})") from e
    if not rows:
        raise InputError(path, "split CSV is empty")
    key = "subject" if "subject" in rows[0] else "id" if "id" in rows[0] else None
    if key is None or "split" not in rows[0]:
        raise InputError(path, "split CSV needs columns 'subject' (or 'id') and 'split'")
    split: dict[str, str] = {}
    for line, r in enumerate(rows, start=2):
        sid, value = r.get(key), r.get("split")
        if not isinstance(sid, str) or not isinstance(value, str) or not sid.strip():
            raise InputError(path, f"line {line}: needs a subject id and a split value")
        sid, value = sid.strip(), value.strip().lower()
        if split.get(sid, value) != value:
            raise InputError(path, f"line {line}: subject {sid!r} is listed twice, in two splits")
        split[sid] = value
    bad = sorted({v for v in split.values() if v not in SPLITS})
    if bad:
        raise InputError(path, f"unknown split value(s) {bad}; use {', '.join(SPLITS)}")
    missing = [s for s in ids if s not in split]
    if missing:
        raise InputError(
            path, f"{len(missing)} subject(s) missing from the split CSV, e.g. {missing[:3]}"
        )
    return {s: split[s] for s in ids}


def foreground_mask(image: np.ndarray, label: np.ndarray | None, threshold: float) -> np.ndarray:
    """Brain/head foreground: ``label > 0`` when a label map is given, otherwise voxels above
    ``threshold`` × the 99th percentile, holes filled, largest connected component."""
    if label is not None:
        return label > 0
    ref = float(np.percentile(image, 99.0))
    mask = image > threshold * ref
    comp, n = ndimage.label(mask)
    if n > 1:
        sizes = ndimage.sum(mask, comp, index=np.arange(1, n + 1))
        mask = comp == (int(np.argmax(sizes)) + 1)
    return ndimage.binary_fill_holes(mask)


DATASET_MARKER = ("dataset.json", FORMAT)
"""What marks a folder as a prepared dataset ``prepare --overwrite`` may replace."""

DATASET_FILES = (
    "dataset.json", "subjects.csv", "images", "masks", "fractions", "labels", "reconstructions",
)  # fmt: skip
"""What a prepared dataset folder holds: ``prepare``'s outputs and the reconstructions
``realdeal reconstruct`` adds. ``prepare --overwrite`` refuses a folder holding anything else
(it would be deleted with the old dataset)."""


def _is_prepared(folder: Path) -> bool:
    return output_format(folder, DATASET_MARKER[0]) == FORMAT


@dataclasses.dataclass
class _Loaded:
    sid: str
    image: Volume
    label: Volume | None
    resample: Resample | None
    data: np.ndarray  # after resampling, raw intensities
    lab: np.ndarray | None
    mask: np.ndarray


def _load_subject(sid: str, img_path: Path, lab_path: Path | None, cfg: PrepareConfig) -> _Loaded:
    image = load_volume(img_path)
    label = None
    if lab_path is not None:
        label = load_volume(lab_path, kind="label")
        check_same_grid(image, label)
        if not (label.data > 0).any():
            raise InputError(lab_path, "label map has no non-zero labels")
    data, lab = image.data, None if label is None else label.data
    resample = None
    if cfg.spacing is not None:
        rs = Resample(image.shape, image.spacing, tuple(float(s) for s in cfg.spacing))  # type: ignore[arg-type]
        if not rs.is_identity():
            resample = rs
            data = rs.forward(data, order=1, fill=float(data.min()))
            lab = None if lab is None else rs.forward(lab, order=0, fill=0)
    mask = foreground_mask(data, lab, cfg.foreground_threshold)
    if not mask.any():
        raise InputError(img_path, "no foreground voxels found")
    return _Loaded(sid, image, label, resample, data, lab, mask)


def prepare_dataset(
    inputs: str | os.PathLike | list,
    out_dir: str | os.PathLike,
    cfg: PrepareConfig = PrepareConfig(),
    labels: str | None = None,
    split_csv: str | os.PathLike | None = None,
    overwrite: bool = False,
    intensity_from: str | os.PathLike | None = None,
) -> PreparedDataset:
    """Prepare T1w NIfTI files (and optional label maps) into a dataset folder.

    Two passes over the inputs: the first checks every file and pools training-set
    foreground intensities for the global (low, high) pair; the second writes the
    preprocessed volumes. Everything is built in a temporary folder that replaces
    ``out_dir`` only when complete. Same inputs and config → same output.

    ``intensity_from`` (a prepared dataset or checkpoint) reuses its saved (low, high) pair
    instead of fitting one, so new data lands in an existing model's intensity space; a
    subject whose brain that pair would put outside [−1, 1] (other units) is refused.
    """
    out_dir = Path(out_dir)
    _check_output(out_dir, overwrite)
    ids, files, lab_paths = _subjects_and_labels(inputs, labels)
    split = (
        read_split_csv(split_csv, ids)
        if split_csv
        else split_subjects(ids, cfg.test_fraction, cfg.seed)
    )
    if "train" not in split.values():
        raise ConfigError(
            "the split has no training subjects; intensity thresholds need at least one"
        )
    subjects = list(zip(ids, files, lab_paths, strict=True))
    scaler = _intensity_scaler(subjects, split, cfg, intensity_from)

    records: list[SubjectRecord] = []
    spacing: tuple[float, float, float] | None = None
    with atomic_dir(
        out_dir, overwrite=overwrite, marker=DATASET_MARKER, contents=DATASET_FILES
    ) as tmp:
        for d in ("images", "masks", "fractions") + (("labels",) if labels else ()):
            (tmp / d).mkdir()
        for sid, f, lp in progress(subjects, desc="prepare: write", unit="subject"):
            record, spacing = _write_subject(tmp, sid, f, lp, split[sid], cfg, scaler, spacing)
            records.append(record)
        meta = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "config": to_dict(cfg),
            "shape": list(cfg.shape),
            "spacing": list(spacing or (1.0, 1.0, 1.0)),
            "window": cfg.window,
            "scaler": scaler.to_dict(),
            "scaler_source": str(intensity_from)
            if intensity_from
            else "fitted on the training split",
            "split_source": str(split_csv)
            if split_csv
            else f"seed {cfg.seed}, test fraction {cfg.test_fraction}",
            "subjects": [r.to_dict() for r in records],
        }
        write_json_atomic(tmp / "dataset.json", meta)
        write_text_atomic(tmp / "subjects.csv", _subjects_csv(records))
    return PreparedDataset(out_dir)


def _check_output(out_dir: Path, overwrite: bool) -> None:
    """Refuse an output that is a file, a foreign non-empty folder, or (without ``overwrite``)
    an earlier prepared dataset."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise InputError(out_dir, "output exists and is not a folder")
    if any(out_dir.iterdir()):
        if not _is_prepared(out_dir):
            raise InputError(
                out_dir,
                "output folder exists, is not empty and is not a prepared dataset; choose another",
            )
        if not overwrite:
            raise InputError(
                out_dir,
                "a prepared dataset already exists here; pass --overwrite to replace it",
            )
        check_replaceable(out_dir, overwrite, DATASET_MARKER, DATASET_FILES)


def _subjects_and_labels(
    inputs: str | os.PathLike | list, labels: str | None
) -> tuple[list[str], list[Path], list[Path | None]]:
    """Subject ids, image files and label files (``None`` each without ``labels``) of the
    inputs; label maps found among the inputs are not subjects."""
    files = find_inputs(inputs)
    ids = subject_ids(files)
    if len(set(ids)) != len(ids):
        raise InputError(files[0].parent, "cannot derive unique subject ids from the file names")
    if labels:
        # A folder may hold the label maps beside the images: those are not subjects.
        label_files = {p.resolve() for p in match_labels(files, ids, labels)}
        keep = [i for i, f in enumerate(files) if f.resolve() not in label_files]
        files, ids = [files[i] for i in keep], [ids[i] for i in keep]
        if not files:
            raise InputError(Path(str(inputs)), "every input file is some subject's label map")
    lab_paths: list[Path | None] = (
        list(match_labels(files, ids, labels)) if labels else [None] * len(files)
    )
    return ids, files, lab_paths


def _intensity_scaler(
    subjects: list[tuple[str, Path, Path | None]],
    split: dict[str, str],
    cfg: PrepareConfig,
    intensity_from: str | os.PathLike | None,
) -> IntensityScaler:
    """Pass 1: check every input and fit the global (low, high) pair on the training subjects'
    foreground, or reuse the pair saved in ``intensity_from`` (checking that it fits each)."""
    reused = None
    if intensity_from is not None:
        from realdeal.data.intensity import load_intensity_mapping

        reused, _ = load_intensity_mapping(intensity_from)
    samples = []
    for i, (sid, f, lp) in enumerate(progress(subjects, desc="prepare: scan", unit="subject")):
        sub = _load_subject(sid, f, lp, cfg)
        if reused is not None:
            _check_reused_mapping(reused, sub, f, intensity_from)
        elif split[sid] == "train":
            rng = np.random.default_rng([cfg.seed, i])
            samples.append(foreground_sample(sub.data, sub.mask, cfg.voxels_per_subject, rng))
    if reused is not None:
        log.info(
            "intensity window reused from %s: low=%.4g high=%.4g",
            intensity_from,
            *reused.to_dict().values(),
        )
        return reused
    scaler = IntensityScaler.fit(samples, cfg.low_percentile, cfg.high_percentile)
    log.info(
        "global intensity window from %d training subjects: low=%.4g high=%.4g",
        len(samples),
        scaler.low,
        scaler.high,
    )
    return scaler


def _write_subject(
    tmp: Path,
    sid: str,
    img_path: Path,
    lab_path: Path | None,
    split: str,
    cfg: PrepareConfig,
    scaler: IntensityScaler,
    spacing: tuple[float, float, float] | None,
) -> tuple[SubjectRecord, tuple[float, float, float]]:
    """Pass 2 for one subject: crop/pad around its foreground, scale, write image, mask,
    labels and window fractions into ``tmp``; return its record and the prepared voxel size,
    which must equal ``spacing`` (the first subject's; ``None`` for the first)."""
    sub = _load_subject(sid, img_path, lab_path, cfg)
    nz = np.argwhere(sub.mask)
    croppad = CropPad.around_box(sub.data.shape, cfg.shape, nz.min(0), nz.max(0) + 1)
    tf = SubjectTransform(scaler=scaler, croppad=croppad, resample=sub.resample)
    affine = tf.forward_affine(sub.image.affine)
    sp = voxel_spacing(affine)
    if spacing is not None and not np.allclose(sp, spacing, atol=1e-3):
        raise InputError(
            img_path,
            f"voxel size {sp} differs from the first subject's {spacing}; pass --spacing to resample",
        )
    x = croppad.forward(scaler.forward(sub.data), fill=BACKGROUND)
    mask = croppad.forward(sub.mask.astype(np.uint8), fill=0)
    Volume(x, affine).save(tmp / "images" / f"{sid}.nii.gz")
    Volume(mask.astype(np.int16), affine).save(tmp / "masks" / f"{sid}.nii.gz", dtype=np.uint8)
    if sub.lab is not None:
        Volume(croppad.forward(sub.lab, fill=0).astype(np.int16), affine).save(
            tmp / "labels" / f"{sid}.nii.gz", dtype=np.int16
        )
    np.save(
        tmp / "fractions" / f"{sid}_w{cfg.window}.npy",
        brain_fraction_map(mask > 0, cfg.window).astype(np.float16),
    )
    record = SubjectRecord(
        id=sid,
        split=split,
        source=str(img_path.resolve()),
        label_source=None if lab_path is None else str(lab_path.resolve()),
        transform=tf,
        source_spacing=sub.image.spacing,
        source_shape=sub.image.shape,
        brain_fraction=float(mask.mean()),
    )
    return record, sp if spacing is None else spacing


def _subjects_csv(records: list[SubjectRecord]) -> str:
    """``subjects.csv``: the subject table of ``dataset.json`` for people and spreadsheets."""
    lines = ["subject,split,source,label_source,source_shape,source_spacing,brain_fraction"]
    for r in records:
        lines.append(
            ",".join(
                [
                    r.id,
                    r.split,
                    _csv(r.source),
                    _csv(r.label_source or ""),
                    "x".join(map(str, r.source_shape)),
                    "x".join(f"{v:g}" for v in r.source_spacing),
                    f"{r.brain_fraction:.4f}",
                ]
            )
        )
    return "\n".join(lines) + "\n"


def _check_reused_mapping(
    scaler: IntensityScaler, sub: _Loaded, path: Path, source: str | os.PathLike | None
) -> None:
    """Refuse a subject whose brain a reused (low, high) pair puts outside [−1, 1]."""

    if not stored_mapping_fits(scaler, sub.data, sub.mask):
        lo, hi = mapped_range(scaler, sub.data, sub.mask)
        raise InputError(
            path,
            f"intensities are in other units than {source}: its mapping (low {scaler.low:.4g}, "
            f"high {scaler.high:.4g}) puts the brain at {lo:.2f}…{hi:.2f}, outside [−1, 1]; "
            "prepare without --intensity-from (a mapping fitted on these scans)",
        )


def _csv(s: str) -> str:
    return f'"{s}"' if ("," in s or '"' in s) else s


def open_dataset(
    root: str | os.PathLike, need: Literal["labels", "none"] = "none"
) -> PreparedDataset:
    """Open a prepared dataset; with ``need="labels"`` require label maps for every subject."""
    ds = PreparedDataset(root)
    if need == "labels":
        missing = [s.id for s in ds.subjects if s.label_source is None]
        if missing:
            raise InputError(
                ds.root, f"{len(missing)} subject(s) have no label maps (prepare with --labels)"
            )
    return ds


__all__ = [
    "PrepareConfig",
    "PreparedDataset",
    "RealDealError",
    "SubjectRecord",
    "find_inputs",
    "open_dataset",
    "prepare_dataset",
    "split_subjects",
    "subject_ids",
]
