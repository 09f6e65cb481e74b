"""Realism metrics of the paper (§3.2, supplement §2) and the suites that run them.

One concept per module: :mod:`.patches` (in-brain patch sampling), :mod:`.lpips`,
:mod:`.fid` (Fréchet distance, Inception features), :mod:`.prdc`, :mod:`.patchstats`
(weight-free features), :mod:`.noise`, :mod:`.sharpness`, :mod:`.texture` (HOG),
:mod:`.paired` (PSNR/SSIM), :mod:`.weights` (pretrained files), :mod:`.seam` (hook),
:mod:`.subjects` (sets of NIfTI files), :mod:`.suite` and :mod:`.tables`.
Volumes are ``(X, Y, Z)`` arrays in [-1, 1] with background −1.
"""

from realdeal.metrics.fid import frechet_distance, frechet_distance_features
from realdeal.metrics.noise import NoiseConfig, kl_divergence, noise_histogram, noise_residual
from realdeal.metrics.paired import psnr_in_mask, ssim_in_mask
from realdeal.metrics.prdc import prdc_multi
from realdeal.metrics.sharpness import SharpnessConfig, sharpness
from realdeal.metrics.suite import (
    EvaluationResult,
    NetworkOptions,
    PairedConfig,
    UnpairedConfig,
    evaluate_paired,
    evaluate_unpaired,
    paired_subject,
)
from realdeal.metrics.texture import HogConfig, hog_distance
from realdeal.metrics.weights import MissingWeightsError

__all__ = [
    "EvaluationResult",
    "HogConfig",
    "MissingWeightsError",
    "NetworkOptions",
    "NoiseConfig",
    "PairedConfig",
    "SharpnessConfig",
    "UnpairedConfig",
    "evaluate_paired",
    "evaluate_unpaired",
    "frechet_distance",
    "frechet_distance_features",
    "hog_distance",
    "kl_divergence",
    "noise_histogram",
    "noise_residual",
    "paired_subject",
    "prdc_multi",
    "psnr_in_mask",
    "sharpness",
    "ssim_in_mask",
]
