"""Brain fraction of every window position, from a summed-area table.

It chooses the refiner's training windows (docs/method.md#spec-2, #spec-5).

``fraction[i, j, k]`` is the fraction of brain voxels in the window
``mask[i:i+w, j:j+w, k:k+w]``; the map has shape ``(X-w+1, Y-w+1, Z-w+1)``. Patch samplers
use it to choose training windows (uniformly, or stratified over brain-fraction bins).
"""

from __future__ import annotations

import numpy as np

from realdeal.errors import ConfigError


def summed_area_table(x: np.ndarray) -> np.ndarray:
    """Inclusive 3D cumulative sum with a leading zero plane on every axis (int64 or float64)."""
    dtype = np.int64 if np.issubdtype(x.dtype, np.integer) or x.dtype == bool else np.float64
    sat = np.zeros(tuple(s + 1 for s in x.shape), dtype=dtype)
    sat[1:, 1:, 1:] = x.astype(dtype).cumsum(0).cumsum(1).cumsum(2)
    return sat


def window_sums(x: np.ndarray, window: int | tuple[int, int, int]) -> np.ndarray:
    """Sum of ``x`` over every ``window`` box at stride 1, shape ``x.shape - window + 1``."""
    w = (window,) * 3 if isinstance(window, int) else tuple(window)
    if any(s < k for s, k in zip(x.shape, w, strict=True)):
        raise ConfigError(f"window {w} is larger than the volume {x.shape}")
    s = summed_area_table(x)
    a, b, c = w
    return (
        s[a:, b:, c:]
        - s[:-a, b:, c:]
        - s[a:, :-b, c:]
        - s[a:, b:, :-c]
        + s[:-a, :-b, c:]
        + s[:-a, b:, :-c]
        + s[a:, :-b, :-c]
        - s[:-a, :-b, :-c]
    )


def brain_fraction_map(mask: np.ndarray, window: int = 64) -> np.ndarray:
    """Fraction of brain voxels in every ``window``³ box of a boolean mask (float32)."""
    return (window_sums(mask.astype(bool), window) / float(window**3)).astype(np.float32)
