"""Invertible, serialisable preprocessing: resampling, crop/pad and global intensity scaling.

Each transform is a frozen dataclass holding every parameter it needs, with ``to_dict`` /
``from_dict`` for manifests and checkpoints, a forward map and its inverse. All of them act
on canonical RAS arrays ``(X, Y, Z)`` (see :mod:`realdeal.data.io`) and also map the
voxel-to-world affine, so the prepared volume keeps its true position in scanner space.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np
from scipy import ndimage

from realdeal.errors import ConfigError

log = logging.getLogger(__name__)

Shape3 = tuple[int, int, int]


def _as_shape(v: Any) -> Shape3:
    return tuple(int(x) for x in v)  # type: ignore[return-value]


@dataclasses.dataclass(frozen=True)
class IntensityScaler:
    """Global linear map of raw intensities ``[low, high]`` onto ``[-1, 1]``, with clipping.

    One (low, high) pair serves a whole dataset (docs/method.md#spec-2): estimate it once with
    :meth:`fit` on the training set's foreground and store it with the data.
    """

    low: float
    high: float

    def __post_init__(self) -> None:
        if not (np.isfinite(self.low) and np.isfinite(self.high) and self.high > self.low):
            raise ConfigError(
                f"IntensityScaler needs finite low < high, got {self.low}, {self.high}"
            )

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Clip to [low, high] and map linearly to [-1, 1] (float32)."""
        x = np.clip(np.asarray(x, dtype=np.float32), self.low, self.high)
        return ((x - self.low) * (2.0 / (self.high - self.low)) - 1.0).astype(np.float32)

    def inverse(self, y: np.ndarray) -> np.ndarray:
        """Map [-1, 1] back to raw intensities (clipped values stay at low/high)."""
        y = np.asarray(y, dtype=np.float32)
        return ((y + 1.0) * ((self.high - self.low) / 2.0) + self.low).astype(np.float32)

    @classmethod
    def fit(
        cls,
        samples: list[np.ndarray],
        low_percentile: float = 0.5,
        high_percentile: float = 99.5,
    ) -> IntensityScaler:
        """Pooled robust percentiles of foreground intensities from several subjects.

        ``samples`` holds one 1D array of foreground intensities per subject (already
        subsampled to a fixed number of voxels so that every subject weighs the same).
        """
        if not samples:
            raise ConfigError("cannot estimate intensity thresholds from an empty training set")
        pooled = np.concatenate([np.asarray(s, dtype=np.float64).ravel() for s in samples])
        low, high = np.percentile(pooled, [low_percentile, high_percentile])
        if not high > low:
            raise ConfigError(f"foreground intensities are constant ({low:g}); cannot scale")
        return cls(float(low), float(high))

    def to_dict(self) -> dict[str, Any]:
        return {"low": self.low, "high": self.high}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> IntensityScaler:
        return cls(float(d["low"]), float(d["high"]))


def foreground_sample(
    data: np.ndarray, mask: np.ndarray, n: int, rng: np.random.Generator
) -> np.ndarray:
    """Up to ``n`` foreground intensities drawn without replacement (all if fewer)."""
    values = data[mask]
    if values.size > n:
        values = values[rng.choice(values.size, size=n, replace=False)]
    return values


@dataclasses.dataclass(frozen=True)
class CropPad:
    """Crop and/or pad to ``out_shape``: ``out[i] = in[i + start]`` where that index exists.

    ``start`` may be negative (padding before) and ``start + out_shape`` may exceed
    ``in_shape`` (padding after). The inverse puts the window back into an ``in_shape``
    array; voxels that were cropped away come back as ``fill``.
    """

    in_shape: Shape3
    out_shape: Shape3
    start: tuple[int, int, int]

    @classmethod
    def around_box(
        cls, in_shape: Shape3, out_shape: Shape3, lo: np.ndarray, hi: np.ndarray
    ) -> CropPad:
        """Window of ``out_shape`` centred on the box ``[lo, hi)`` (e.g. the brain's bounding box).

        Where the input is larger than the output the window stays inside the input; where it
        is smaller the whole input stays inside the window. A box larger than the window is
        cropped symmetrically and logged.
        """
        in_shape, out_shape = _as_shape(in_shape), _as_shape(out_shape)
        start = []
        for ax in range(3):
            n_in, n_out = in_shape[ax], out_shape[ax]
            centre = (int(lo[ax]) + int(hi[ax])) / 2.0
            s = int(np.floor(centre - n_out / 2.0 + 0.5))
            s = (
                int(np.clip(s, 0, n_in - n_out))
                if n_in >= n_out
                else int(np.clip(s, n_in - n_out, 0))
            )
            if hi[ax] - lo[ax] > n_out:
                log.warning(
                    "brain extent %d voxels along axis %d exceeds target %d; cropping it",
                    hi[ax] - lo[ax],
                    ax,
                    n_out,
                )
            start.append(s)
        return cls(in_shape, out_shape, tuple(start))  # type: ignore[arg-type]

    def _slices(self) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
        src, dst = [], []
        for ax in range(3):
            s, n_in, n_out = self.start[ax], self.in_shape[ax], self.out_shape[ax]
            a, b = max(s, 0), min(s + n_out, n_in)
            if b <= a:
                raise ConfigError(f"crop window {self} does not overlap the image")
            src.append(slice(a, b))
            dst.append(slice(a - s, b - s))
        return tuple(src), tuple(dst)

    def forward(self, x: np.ndarray, fill: float) -> np.ndarray:
        """``in_shape`` array → ``out_shape`` array, padding with ``fill``."""
        if tuple(x.shape) != self.in_shape:
            raise ConfigError(f"CropPad expects shape {self.in_shape}, got {tuple(x.shape)}")
        out = np.full(self.out_shape, fill, dtype=x.dtype)
        src, dst = self._slices()
        out[dst] = x[src]
        return out

    def inverse(self, y: np.ndarray, fill: float) -> np.ndarray:
        """``out_shape`` array → ``in_shape`` array, filling cropped-away voxels with ``fill``."""
        if tuple(y.shape) != self.out_shape:
            raise ConfigError(
                f"CropPad inverse expects shape {self.out_shape}, got {tuple(y.shape)}"
            )
        out = np.full(self.in_shape, fill, dtype=y.dtype)
        src, dst = self._slices()
        out[src] = y[dst]
        return out

    def forward_affine(self, affine: np.ndarray) -> np.ndarray:
        shift = np.eye(4)
        shift[:3, 3] = self.start
        return np.asarray(affine) @ shift

    def inverse_affine(self, affine: np.ndarray) -> np.ndarray:
        shift = np.eye(4)
        shift[:3, 3] = self.start
        return np.asarray(affine) @ np.linalg.inv(shift)

    def to_dict(self) -> dict[str, Any]:
        return {
            "in_shape": list(self.in_shape),
            "out_shape": list(self.out_shape),
            "start": list(self.start),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CropPad:
        return cls(_as_shape(d["in_shape"]), _as_shape(d["out_shape"]), _as_shape(d["start"]))


@dataclasses.dataclass(frozen=True)
class Resample:
    """Resample a grid of ``in_shape``/``in_spacing`` to ``out_spacing``, same field of view centre.

    Output voxel ``j`` samples input position ``i = j * step + offset`` with
    ``step = out_spacing / in_spacing`` and the offset that aligns the grids' centres.
    Images use trilinear interpolation with a Gaussian anti-aliasing prefilter when
    downsampling (σ = (step − 1)/2 voxels, as scikit-image's ``resize``); label maps use
    nearest neighbour. The inverse resamples back onto the input grid, which is exact in
    geometry (affine) and, for intensities, as exact as interpolation allows.
    """

    in_shape: Shape3
    in_spacing: tuple[float, float, float]
    out_spacing: tuple[float, float, float]

    @property
    def step(self) -> np.ndarray:
        return np.asarray(self.out_spacing, float) / np.asarray(self.in_spacing, float)

    @property
    def out_shape(self) -> Shape3:
        n = np.asarray(self.in_shape) / self.step
        return tuple(max(1, int(round(v))) for v in n)  # type: ignore[return-value]

    @property
    def offset(self) -> np.ndarray:
        return (np.asarray(self.in_shape) - 1) / 2.0 - self.step * (
            np.asarray(self.out_shape) - 1
        ) / 2.0

    def is_identity(self) -> bool:
        return bool(np.allclose(self.step, 1.0, atol=1e-4))

    @staticmethod
    def _sample(
        x: np.ndarray, step: np.ndarray, offset: np.ndarray, shape: Shape3, order: int, fill: float
    ) -> np.ndarray:
        if order > 0:
            sigma = np.maximum(0.0, (step - 1.0) / 2.0)
            if np.any(sigma > 0):
                x = ndimage.gaussian_filter(x.astype(np.float32), sigma=sigma, mode="nearest")
        return ndimage.affine_transform(
            x,
            step,
            offset=offset,
            output_shape=shape,
            order=order,
            mode="constant",
            cval=fill,
            prefilter=False,
        )

    def forward(self, x: np.ndarray, order: int = 1, fill: float = 0.0) -> np.ndarray:
        if tuple(x.shape) != self.in_shape:
            raise ConfigError(f"Resample expects shape {self.in_shape}, got {tuple(x.shape)}")
        return self._sample(x, self.step, self.offset, self.out_shape, order, fill)

    def inverse(self, y: np.ndarray, order: int = 1, fill: float = 0.0) -> np.ndarray:
        if tuple(y.shape) != self.out_shape:
            raise ConfigError(
                f"Resample inverse expects shape {self.out_shape}, got {tuple(y.shape)}"
            )
        inv_step = 1.0 / self.step
        return self._sample(y, inv_step, -self.offset * inv_step, self.in_shape, order, fill)

    def forward_affine(self, affine: np.ndarray) -> np.ndarray:
        m = np.eye(4)
        m[:3, :3] = np.diag(self.step)
        m[:3, 3] = self.offset
        return np.asarray(affine) @ m

    def inverse_affine(self, affine: np.ndarray) -> np.ndarray:
        m = np.eye(4)
        m[:3, :3] = np.diag(self.step)
        m[:3, 3] = self.offset
        return np.asarray(affine) @ np.linalg.inv(m)

    def to_dict(self) -> dict[str, Any]:
        return {
            "in_shape": list(self.in_shape),
            "in_spacing": list(self.in_spacing),
            "out_spacing": list(self.out_spacing),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Resample:
        return cls(
            _as_shape(d["in_shape"]),
            tuple(float(v) for v in d["in_spacing"]),  # type: ignore[arg-type]
            tuple(float(v) for v in d["out_spacing"]),  # type: ignore[arg-type]
        )


BACKGROUND = -1.0
"""Value of background voxels after intensity scaling."""


@dataclasses.dataclass(frozen=True)
class SubjectTransform:
    """Everything that maps one subject's canonical source volume to the prepared grid.

    forward: (optional) resample → intensity scale → crop/pad with background −1.
    Label maps: resample with nearest neighbour → crop/pad with 0.
    inverse: the same steps undone, ending on the source's canonical grid, ready for
    :meth:`realdeal.data.io.Volume.save` to write in the source's own orientation.
    """

    scaler: IntensityScaler
    croppad: CropPad
    resample: Resample | None = None

    def forward_image(self, x: np.ndarray) -> np.ndarray:
        if self.resample is not None:
            x = self.resample.forward(x, order=1, fill=float(x.min()))
        return self.croppad.forward(self.scaler.forward(x), fill=BACKGROUND)

    def forward_label(self, lab: np.ndarray) -> np.ndarray:
        if self.resample is not None:
            lab = self.resample.forward(lab, order=0, fill=0)
        return self.croppad.forward(lab, fill=0)

    def forward_affine(self, affine: np.ndarray) -> np.ndarray:
        if self.resample is not None:
            affine = self.resample.forward_affine(affine)
        return self.croppad.forward_affine(affine)

    def inverse_image(self, y: np.ndarray) -> np.ndarray:
        """Prepared-grid array in [-1, 1] → raw intensities on the source canonical grid."""
        x = self.scaler.inverse(self.croppad.inverse(np.asarray(y, np.float32), fill=BACKGROUND))
        if self.resample is not None:
            x = self.resample.inverse(x, order=1, fill=self.scaler.low)
        return x

    def inverse_label(self, lab: np.ndarray) -> np.ndarray:
        lab = self.croppad.inverse(lab, fill=0)
        if self.resample is not None:
            lab = self.resample.inverse(lab, order=0, fill=0)
        return lab

    def to_dict(self) -> dict[str, Any]:
        return {
            "scaler": self.scaler.to_dict(),
            "croppad": self.croppad.to_dict(),
            "resample": None if self.resample is None else self.resample.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SubjectTransform:
        return cls(
            scaler=IntensityScaler.from_dict(d["scaler"]),
            croppad=CropPad.from_dict(d["croppad"]),
            resample=None if d.get("resample") is None else Resample.from_dict(d["resample"]),
        )
