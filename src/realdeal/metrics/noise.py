"""Noise-distribution metric: KL divergence of residual-noise histograms (paper §3.2, suppl. §2).

noise = image − NLM-denoised(image). Denoising backends:

- ``"dipy"`` (default, fast): :func:`dipy.denoise.nlmeans.nlmeans` with σ from
  :func:`dipy.denoise.noise_estimate.estimate_sigma` of the image itself, Gaussian noise model,
  ``patch_radius`` 1 and ``block_radius`` 2 (a small search window keeps it to seconds).
- ``"ants"`` (as in the paper; optional ``antspyx``): ANTs' adaptive non-local means
  (Manjón et al. 2010), ``ants.denoise_image`` with a Rician model.

Both denoise ``image + 1`` (so the background is 0 and intensities are non-negative) and only
within the bounding box of the region masks grown by a margin, since only those voxels are
histogrammed. Histogram binning (fixed for every image, so histograms are comparable): noise
values in intensity units of the [-1, 1] scale, ``bins`` = 101 equal bins on
``[-range, range]`` with ``range`` = 0.25, values outside clipped into the edge bins; counts
are normalised to probabilities after adding ``eps`` = 1e-6 to every bin (so that KL is finite
when the candidate has an empty bin). KL(original ‖ candidate) = Σ p log(p / q), natural log.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Literal

import numpy as np
from scipy import ndimage

from realdeal.data.labels import region_mask
from realdeal.errors import ConfigError

log = logging.getLogger(__name__)

Backend = Literal["dipy", "ants"]


@dataclasses.dataclass(frozen=True)
class NoiseConfig:
    """Denoiser and histogram settings of the noise-KL metric (see module docstring)."""

    backend: Backend = "dipy"
    patch_radius: int = 1
    block_radius: int = 2
    bins: int = 101
    range: float = 0.25
    eps: float = 1e-6
    margin: int = 4

    def __post_init__(self):
        if self.backend not in ("dipy", "ants"):
            raise ConfigError(f"noise backend must be 'dipy' or 'ants', not {self.backend!r}")
        if self.bins < 2 or self.range <= 0 or self.eps <= 0:
            raise ConfigError("noise histogram needs bins ≥ 2, range > 0 and eps > 0")

    @property
    def edges(self) -> np.ndarray:
        """The ``bins + 1`` fixed bin edges in intensity units."""
        return np.linspace(-self.range, self.range, self.bins + 1)


def ants_available() -> bool:
    """True if the optional ``antspyx`` package (module ``ants``) can be imported."""
    try:
        import ants  # noqa: F401
    except ImportError:
        return False
    return True


def _bbox(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    """Bounding box of ``mask`` grown by ``margin``, its start rounded down to an even index.

    dipy's blockwise non-local means processes the volume in 2-voxel blocks, so its output
    depends on the parity of the crop origin; even origins make the result a function of the
    volume alone, whatever mask chose the box.
    """
    idx = np.nonzero(mask)
    return tuple(
        slice(max(int(i.min()) - margin, 0) // 2 * 2, min(int(i.max()) + margin + 1, n))
        for i, n in zip(idx, mask.shape, strict=True)
    )


def denoise(
    volume: np.ndarray, mask: np.ndarray, config: NoiseConfig = NoiseConfig(), threads: int = 1
) -> np.ndarray:
    """NLM-denoised copy of ``volume`` (intensity scale [-1, 1]), exact only near ``mask``.

    Outside the bounding box of ``mask`` grown by ``config.margin`` voxels the input is returned
    unchanged; inside it the chosen backend denoises ``volume + 1``.
    """
    out = np.array(volume, dtype=np.float32, copy=True)
    if not mask.any():
        return out
    box = _bbox(mask, config.margin + config.patch_radius + config.block_radius)
    crop = out[box] + 1.0
    if config.backend == "dipy":
        from dipy.denoise.nlmeans import nlmeans
        from dipy.denoise.noise_estimate import estimate_sigma

        sigma = float(np.atleast_1d(estimate_sigma(volume + 1.0))[0])
        work = ndimage.binary_dilation(mask[box], iterations=config.margin)
        den = nlmeans(
            crop,
            sigma=max(sigma, 1e-6),
            mask=work,
            patch_radius=config.patch_radius,
            block_radius=config.block_radius,
            rician=False,
            num_threads=threads,
        )
        den = np.where(work, den, crop)
    else:
        if not ants_available():
            raise ConfigError(
                "noise backend 'ants' needs the optional package antspyx (pip install antspyx)"
            )
        import ants

        den = ants.denoise_image(
            ants.from_numpy(crop.astype(np.float32)), noise_model="Rician"
        ).numpy()
    out[box] = np.asarray(den, dtype=np.float32) - 1.0
    return out


def noise_residual(
    volume: np.ndarray, mask: np.ndarray, config: NoiseConfig = NoiseConfig(), threads: int = 1
) -> np.ndarray:
    """``volume − denoise(volume)`` (float32, same shape; meaningful near ``mask``)."""
    return np.asarray(volume, dtype=np.float32) - denoise(volume, mask, config, threads)


def noise_histogram(
    noise: np.ndarray, mask: np.ndarray, config: NoiseConfig = NoiseConfig()
) -> np.ndarray:
    """Probability histogram (``bins``,) of ``noise`` inside ``mask``, with the fixed binning."""
    values = np.clip(np.asarray(noise)[np.asarray(mask, dtype=bool)], -config.range, config.range)
    counts, _ = np.histogram(values, bins=config.edges)
    p = counts.astype(np.float64) + config.eps
    return p / p.sum()


def kl_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """KL(p ‖ q) = Σ p log(p/q) in nats for strictly positive probability vectors."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    p = p / p.sum()
    q = q / q.sum()
    return float(np.sum(p * np.log(p / q)))


def noise_region(labels: np.ndarray | None) -> np.ndarray | None:
    """The noise-KL metric's region (white matter ∪ lateral ventricles), ``None`` if empty."""
    if labels is None:
        return None
    mask = region_mask(labels, "white_matter") | region_mask(labels, "lateral_ventricles")
    return mask if mask.any() else None


def noise_maps(
    volumes: Mapping[str, np.ndarray],
    brain: np.ndarray,
    labels: np.ndarray | None = None,
    config: NoiseConfig | None = None,
    threads: int = 1,
) -> dict[str, np.ndarray]:
    """Noise maps (image − NLM-denoised image) of ``(X, Y, Z)`` volumes on the [-1, 1] scale.

    With FreeSurfer ``labels`` the denoiser runs exactly as the noise-KL metric runs it
    (:func:`noise_residual` on white matter ∪ lateral ventricles), so the
    maps equal the residuals the metric histograms; without, around ``brain``. (The NLM
    output depends on the denoised box, so the metric's own mask is needed for equality.)
    Returns float32 volumes, zero outside ``brain`` and where nothing was denoised.
    """
    config = config or NoiseConfig()
    mask = noise_region(labels)
    mask = brain if mask is None else mask
    return {
        name: np.where(brain, noise_residual(v, mask, config, threads), 0.0).astype(np.float32)
        for name, v in volumes.items()
    }
