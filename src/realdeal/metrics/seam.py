"""Hook for the refiner's seam score (SPEC §7); the function itself comes with the refiner.

The refiner issue provides ``seam_score(image, brain_mask) -> float`` (intensity-gradient
statistics across window boundaries vs inside windows). It plugs in here with
:func:`register_seam_score`; once registered, the paired suite reports it as ``seam`` for
every candidate and the original. Until then the suite leaves the metric out.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

SeamScoreFn = Callable[[np.ndarray, np.ndarray], float]
"""``(image (X, Y, Z) in [-1, 1], brain mask (X, Y, Z) bool) -> score``."""

_SEAM_SCORE: SeamScoreFn | None = None


def register_seam_score(fn: SeamScoreFn | None) -> None:
    """Install (or with ``None`` remove) the seam-score function the paired suite uses."""
    global _SEAM_SCORE
    _SEAM_SCORE = fn


def get_seam_score() -> SeamScoreFn | None:
    """The registered seam-score function, or ``None`` while the refiner does not provide one."""
    if _SEAM_SCORE is not None:
        return _SEAM_SCORE
    try:  # the refiner's module, once it exists, provides the function under this name
        from realdeal.diffusion.seams import seam_score  # type: ignore[import-not-found]
    except ImportError:
        return None
    return seam_score
