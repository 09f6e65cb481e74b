"""Putting a scan's intensities into the models' [−1, 1] space, or refusing with the reason.

Models are trained on volumes mapped with ONE global (low, high) pair (see
:class:`~realdeal.data.transforms.IntensityScaler`). A scan from elsewhere arrives in one of
three states, and :func:`resolve_intensity` picks the mapping (``mode``):

``scaled``
    Already in model space (everything realdeal writes on a prepared grid): values in
    [−1, 1] (± :data:`SCALED_TOLERANCE`). Data outside that range is refused.
``raw``
    Raw intensities in the training data's units: the stored training pair maps them. Refused
    when the brain would land outside [−1, 1] (other units), with the fix.
``percentile``
    Raw intensities in any units: the scan's OWN brain percentiles (the training set's
    percentiles, 0.5 and 99.5 by default) are mapped onto −1 and 1, exactly as the training
    set's pooled brain percentiles were. Needs the brain: a brain mask, or a skull-stripped
    scan whose foreground is the brain.
``auto`` (default)
    ``scaled`` when the data looks scaled; else ``raw`` when a stored pair exists and puts the
    brain inside [−1, 1] (see :func:`stored_mapping_fits`); else ``percentile``, with a warning
    that says why.

The result is a :class:`ModelSpace`: the forward map and its inverse (outputs go back to the
scan's units).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from realdeal.data.anatomy import foreground
from realdeal.data.brain import brain_for
from realdeal.data.transforms import IntensityScaler
from realdeal.errors import ConfigError, InputError
from realdeal.runtime.checkpoint import RefinerCheckpoint, load_checkpoint

if TYPE_CHECKING:
    from realdeal.runtime.checkpoint import AutoencoderCheckpoint, LDMCheckpoint, RefinerCheckpoint

log = logging.getLogger(__name__)

IntensityMode = Literal["auto", "scaled", "raw", "percentile"]
INTENSITY_MODES: tuple[str, ...] = ("auto", "scaled", "raw", "percentile")

SCALED_TOLERANCE = 0.05
"""How far outside [−1, 1] a volume in model space may stray (interpolation, decoder overshoot)."""

FIT_PERCENTILES = (10.0, 90.0)
"""A stored pair fits a scan when these brain percentiles map inside [−1, 1]: at most 10 % of
the brain clipped at either end. The training pair clips 0.5 % of the pooled training brains,
but single subjects vary: on the built-in cohort's 16 subjects up to 8 % of the foreground
falls outside [−1, 1] (dark partial-volume edge, gain 0.8–1.25), while a scan in other units
has most of its brain outside."""


def looks_scaled(x: np.ndarray) -> bool:
    """True if ``x`` lies in model space: within [−1, 1] (± :data:`SCALED_TOLERANCE`).

    The background is not required to sit at −1: an undertrained model's samples and
    reconstructions do not reach it (the ``--quick`` demo's span −0.45…−0.08) and are still
    in model space. A raw scan normalised to [0, 1] needs ``--intensity percentile``; ``auto``
    warns about it (see :func:`resolve_intensity`).
    """
    lo, hi = float(x.min()), float(x.max())
    return lo >= -1.0 - SCALED_TOLERANCE and hi <= 1.0 + SCALED_TOLERANCE


def mapped_range(scaler: IntensityScaler, x: np.ndarray, brain: np.ndarray) -> tuple[float, float]:
    """Where ``scaler`` puts the brain's :data:`FIT_PERCENTILES` (before clipping)."""
    lo, hi = np.percentile(x[brain], FIT_PERCENTILES)
    scale = 2.0 / (scaler.high - scaler.low)
    return float((lo - scaler.low) * scale - 1.0), float((hi - scaler.low) * scale - 1.0)


def stored_mapping_fits(scaler: IntensityScaler, x: np.ndarray, brain: np.ndarray) -> bool:
    """True if the stored training pair puts the brain of ``x`` inside [−1, 1] (see
    :data:`FIT_PERCENTILES`)."""
    lo, hi = mapped_range(scaler, x, brain)
    return lo >= -1.0 and hi <= 1.0


@dataclasses.dataclass(frozen=True)
class ModelSpace:
    """How one scan was put into model space: ``mode`` and the pair used (``None`` = as is)."""

    mode: str
    scaler: IntensityScaler | None
    reason: str = ""

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Scan units → [−1, 1] (float32)."""
        if self.scaler is None:
            return np.clip(x, -1.0, 1.0).astype(np.float32)
        return self.scaler.forward(x)

    def inverse(self, y: np.ndarray) -> np.ndarray:
        """[−1, 1] → scan units (float32)."""
        return y.astype(np.float32) if self.scaler is None else self.scaler.inverse(y)

    def to_dict(self) -> dict:
        return {
            "mode": self.mode,
            "scaler": None if self.scaler is None else self.scaler.to_dict(),
            "reason": self.reason,
        }


def _units_error(path, scaler: IntensityScaler, x: np.ndarray, brain: np.ndarray, fix: str):
    lo, hi = mapped_range(scaler, x, brain)
    return InputError(
        path,
        f"intensities are in other units than the training data: the stored training mapping "
        f"(low {scaler.low:.4g}, high {scaler.high:.4g}) puts the brain at {lo:.2f}…{hi:.2f}, "
        f"outside [−1, 1]; {fix}",
    )


def resolve_intensity(
    x: np.ndarray,
    brain: np.ndarray,
    mode: str = "auto",
    stored: IntensityScaler | None = None,
    percentiles: tuple[float, float] = (0.5, 99.5),
    path: str | os.PathLike | None = None,
) -> ModelSpace:
    """Choose how to map ``x`` ``(X, Y, Z)`` into [−1, 1] (see the module docstring).

    ``brain`` is a boolean mask of the brain on ``x``'s grid (a brain mask, or the foreground
    of a skull-stripped scan); ``stored`` the training set's (low, high) pair if known;
    ``percentiles`` the training set's. Raises :class:`InputError` naming ``path`` where no
    mapping fits.
    """
    if mode not in INTENSITY_MODES:
        raise ConfigError(
            f"unknown intensity mode {mode!r}; use one of {', '.join(INTENSITY_MODES)}"
        )
    if mode == "scaled" or (mode == "auto" and looks_scaled(x)):
        lo, hi = float(x.min()), float(x.max())
        if lo < -1.0 - SCALED_TOLERANCE or hi > 1.0 + SCALED_TOLERANCE:
            raise InputError(
                path,
                f"--intensity scaled needs values in [−1, 1], but they span {lo:.4g}…{hi:.4g}; "
                "use --intensity auto (or percentile) for raw scans",
            )
        if mode == "auto" and lo >= 0.0:
            log.warning(
                "%s: values %.3g…%.3g are taken as model space [−1, 1]; if this is a scan "
                "normalised to [0, 1], pass --intensity percentile",
                path, lo, hi,
            )  # fmt: skip
        return ModelSpace("scaled", None, "values already in [−1, 1]")
    if not brain.any():
        raise InputError(path, "no brain voxels found to measure intensities on")
    if mode == "raw":
        if stored is None:
            raise InputError(
                path,
                "--intensity raw needs the training set's intensity mapping, which the "
                "checkpoint does not hold; use --intensity percentile (or --intensity-from)",
            )
        if not stored_mapping_fits(stored, x, brain):
            raise _units_error(path, stored, x, brain, "use --intensity percentile (or auto)")
        return ModelSpace("raw", stored, "stored training mapping")
    if mode == "auto" and stored is not None and stored_mapping_fits(stored, x, brain):
        return ModelSpace("raw", stored, "stored training mapping fits")
    values = x[brain]
    low, high = np.percentile(values, percentiles)
    if not high > low:
        if stored is not None:
            raise _units_error(path, stored, x, brain, "and the brain's own intensities are "
                               "constant, so no mapping fits; check the brain mask")  # fmt: skip
        raise InputError(path, f"brain intensities are constant ({low:g}); no mapping fits")
    own = IntensityScaler(float(low), float(high))
    if mode == "auto":
        why = (
            "no stored training mapping"
            if stored is None
            else "the stored training mapping puts the brain at {:.2f}…{:.2f} (other units)".format(
                *mapped_range(stored, x, brain)
            )
        )
        log.warning(
            "%s: %s; mapping the scan's own brain percentiles %g/%g (%.4g, %.4g) to [−1, 1] "
            "(--intensity percentile)",
            path, why, percentiles[0], percentiles[1], own.low, own.high,
        )  # fmt: skip
        return ModelSpace("percentile", own, why)
    return ModelSpace("percentile", own, "asked for")


def load_intensity_mapping(
    source: str | os.PathLike,
) -> tuple[IntensityScaler, tuple[float, float]]:
    """(stored (low, high) pair, its percentiles) from a prepared dataset or a checkpoint.

    A prepared dataset holds its pair in ``dataset.json``; a refiner checkpoint in its
    ``extra.scaler``; other checkpoints point at the dataset they were trained on
    (``extra.dataset``), whose pair is used when that folder still exists.
    """
    source = Path(source)
    if source.is_dir():
        meta_path = source / "dataset.json"
        try:
            meta = json.loads(meta_path.read_text())
            scaler = IntensityScaler.from_dict(meta["scaler"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise InputError(
                source, f"not a prepared dataset with an intensity mapping ({type(e).__name__})"
            ) from e
        cfg = meta.get("config", {})
        return scaler, (
            float(cfg.get("low_percentile", 0.5)),
            float(cfg.get("high_percentile", 99.5)),
        )

    return mapping_from_checkpoint(load_checkpoint(source), source)  # type: ignore[arg-type]


def mapping_from_checkpoint(
    ckpt: AutoencoderCheckpoint | LDMCheckpoint | RefinerCheckpoint, source: str | os.PathLike
) -> tuple[IntensityScaler, tuple[float, float]]:
    """:func:`load_intensity_mapping` of a loaded checkpoint (``source`` names it in errors)."""

    if isinstance(ckpt, RefinerCheckpoint) and ckpt.scaler:  # a refiner stores its data's pair
        return IntensityScaler.from_dict(ckpt.scaler), (0.5, 99.5)
    dataset = ckpt.dataset
    if dataset and (Path(dataset) / "dataset.json").exists():
        return load_intensity_mapping(dataset)
    raise InputError(
        source,
        "holds no intensity mapping"
        + (f" and its training dataset {dataset} is gone" if dataset else "")
        + "; pass a prepared dataset folder instead",
    )


@dataclasses.dataclass
class ScanInModelSpace:
    """A scan mapped into model space, and how to write a result back in its units."""

    data: np.ndarray
    """``(X, Y, Z)`` float32 in [−1, 1]; outside an explicit brain mask −1."""
    space: ModelSpace
    brain: np.ndarray
    masked: bool
    """True when ``brain`` came from a brain mask or extraction: voxels outside it are set to
    background going in."""
    source: np.ndarray

    def restore(self, y: np.ndarray) -> np.ndarray:
        """A model-space result on the scan's grid → the scan's units (float32).

        Outside the brain a raw scan gets its own voxels back (its background stays its
        background, not the mapped −1); so does a masked one.
        """
        out = self.space.inverse(y)
        if self.masked or self.space.scaler is not None:
            out = np.where(self.brain, out, self.source).astype(np.float32)
        return out


@dataclasses.dataclass(frozen=True)
class ScanOptions:
    """How to read your own scan (the ``--intensity``/``--brain-mask``/... flags)."""

    intensity: str = "auto"
    brain_mask: str | None = None
    """A mask file, or a folder of ``<input stem>.nii.gz`` masks."""
    skull_strip: bool = False
    allow_head: bool = False


def scan_to_model_space(
    vol,
    options: ScanOptions = ScanOptions(),
    stored: IntensityScaler | None = None,
    percentiles: tuple[float, float] = (0.5, 99.5),
) -> ScanInModelSpace:
    """Find the brain of ``vol`` (:func:`realdeal.data.brain.brain_for`), choose the intensity
    mapping (:func:`resolve_intensity`) and apply both."""

    scaled = options.intensity == "scaled" or (
        options.intensity == "auto" and looks_scaled(vol.data)
    )
    if scaled and options.brain_mask is None and not options.skull_strip:
        # model space: realdeal's own reconstructions and samples, brains by construction
        brain, masked = foreground(vol.data), False
    else:
        brain, masked = brain_for(vol, options.brain_mask, options.skull_strip, options.allow_head)
    space = resolve_intensity(vol.data, brain, options.intensity, stored, percentiles, vol.path)
    y = space.forward(vol.data)
    if masked:
        y = np.where(brain, y, -1.0).astype(np.float32)
    return ScanInModelSpace(y, space, brain, masked, vol.data)
