"""Quality figures shared by the refinement benchmarks (``refine.py``, ``gpu_check.py``).

All figures are taken inside the brain of the coarse input (``x > −0.95``) on volumes
``(X, Y, Z)`` in [−1, 1]: sharpness = variance of the Laplacian after Gaussian smoothing with
σ = 0.5 voxel; noise std = standard deviation of ``y − median₃(y)``; seam score of
:mod:`realdeal.inference.seams` cut by the plan that produced ``y``; with an original and a
white-matter mask also the paper's noise KL (:mod:`realdeal.metrics.noise`: NLM residual
histogram in white matter, KL(original ‖ candidate)).
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class NoiseReference:
    """The original's white-matter noise histogram, computed once for every candidate."""

    mask: np.ndarray
    hist: np.ndarray

    @classmethod
    def of(cls, original: np.ndarray, mask: np.ndarray) -> NoiseReference:
        from realdeal.metrics.noise import noise_histogram, noise_residual

        return cls(mask, noise_histogram(noise_residual(original, mask), mask))

    def kl(self, y: np.ndarray) -> float:
        """KL(original ‖ y) of the NLM noise-residual histograms inside the mask (nats)."""
        from realdeal.metrics.noise import kl_divergence, noise_histogram, noise_residual

        return kl_divergence(self.hist, noise_histogram(noise_residual(y, self.mask), self.mask))


def quality(
    y: np.ndarray, x: np.ndarray, plan, noise_ref: NoiseReference | None = None
) -> dict[str, float]:
    """Sharpness, noise std and seam score of ``y`` (and noise KL to the original in WM)."""
    from scipy import ndimage

    from realdeal.inference.seams import seam_score

    brain = x > -0.95
    lap = ndimage.laplace(ndimage.gaussian_filter(y, 0.5))
    noise = y - ndimage.median_filter(y, 3)
    out = {
        "sharpness": float(lap[brain].var()),
        "noise_std": float(noise[brain].std()),
        "seam_score": float(seam_score(y, plan, brain)),
    }
    if noise_ref is not None:
        out["noise_kl_wm"] = noise_ref.kl(y)
    return out


def save(out, result: dict, md: str) -> int:
    """Write a benchmark's JSON (``out``) and Markdown table (beside it) atomically, print the
    table; the exit status for ``main``."""
    from pathlib import Path

    from realdeal.utils.fs import write_json_atomic, write_text_atomic

    write_json_atomic(out, result)
    write_text_atomic(Path(out).with_suffix(".md"), md)
    print(md)
    return 0
