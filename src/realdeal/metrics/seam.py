"""The seam score as the metrics see it (docs/method.md#spec-7).

The refiner's inference provides :func:`realdeal.inference.seams.seam_score` (intensity steps
across window boundaries against steps inside windows); the paired suite reports it as
``seam`` for every candidate and the original. :func:`seam_function` gives the suite a
``(image, brain_mask) -> float`` on the grid the refiner used.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from realdeal.inference.plan import PlanConfig, make_plan
from realdeal.inference.seams import seam_score

SeamScoreFn = Callable[[np.ndarray, np.ndarray], float]
"""``(image (X, Y, Z) in [-1, 1], brain mask (X, Y, Z) bool) -> score``."""


def seam_function(window: int | None = None) -> SeamScoreFn:
    """The seam score the paired suite uses, cutting along windows of side ``window``.

    ``window=None`` scores on the score's size-based default grid. With a window, the score
    is bound to a wavefront plan of that window built from the brain mask (the refiner's
    default overlap), so a 32³ refiner run on a large volume is scored on its own grid.
    """
    if window is None:
        return lambda image, brain_mask: float(seam_score(image, brain_mask))

    # The suite scores the original and every candidate of a subject against the same mask
    # object: build its plan once (about a second at HCP size).
    last: list = [None, None]  # [mask, plan]

    def bound(image: np.ndarray, brain_mask: np.ndarray) -> float:
        if last[0] is not brain_mask:
            plan = make_plan(image.shape, PlanConfig(window=window), brain_mask=brain_mask)
            last[:] = [brain_mask, plan]
        return float(seam_score(image, last[1], brain_mask))

    return bound
