"""The seam score as the metrics see it (docs/method.md#spec-7): a hook onto the refiner's function.

The refiner provides ``realdeal.diffusion.seams.seam_score`` (intensity steps across window
boundaries against steps inside windows); the paired suite reports it as ``seam`` for every
candidate and the original. :func:`register_seam_score` installs another
``(image, brain_mask) -> float`` in its place (or, with ``None``, the default again);
:func:`seam_function` binds the built-in score to the refiner's window size.
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


def seam_function(window: int | None = None) -> SeamScoreFn | None:
    """The seam score the paired suite uses, cutting along windows of side ``window``.

    ``window=None`` is :func:`get_seam_score`. With a window, the built-in score is bound to a
    wavefront plan of that window built from the brain mask (the refiner's default overlap), so
    a 32³ refiner run on a large volume is scored on its own grid rather than the score's
    size-based default; a function installed with :func:`register_seam_score` is used as it is.
    """
    if window is None or _SEAM_SCORE is not None:
        return get_seam_score()
    from realdeal.diffusion.plan import PlanConfig, make_plan
    from realdeal.diffusion.seams import seam_score

    # The suite scores the original and every candidate of a subject against the same mask
    # object: build its plan once (about a second at HCP size).
    last: list = [None, None]  # [mask, plan]

    def bound(image: np.ndarray, brain_mask: np.ndarray) -> float:
        if last[0] is not brain_mask:
            plan = make_plan(image.shape, PlanConfig(window=window), brain_mask=brain_mask)
            last[:] = [brain_mask, plan]
        return float(seam_score(image, last[1], brain_mask))

    return bound
