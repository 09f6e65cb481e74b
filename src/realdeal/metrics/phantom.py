"""A synthetic brain-like phantom with FreeSurfer labels, for metric tests and benchmarks.

Not anatomy: nested ellipsoids labelled as cortex (3/42), white matter (2/41), lateral
ventricles (4/43) and cerebellum (8/47), with smooth texture and Gaussian "scanner" noise, on
the [-1, 1] scale with background −1. Shapes are ``(X, Y, Z)``; any size ≥ 32 per axis works.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def make_phantom(
    shape: tuple[int, int, int] = (64, 64, 64), noise: float = 0.03, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(image, clean_image, labels)``: float32 image with noise, without, and int32 labels."""
    rng = np.random.default_rng(seed)
    sx, sy, sz = shape
    g = np.meshgrid(*(np.linspace(-1, 1, n, dtype=np.float32) for n in shape), indexing="ij")
    x, y, z = g

    def ell(cx, cy, cz, rx, ry, rz):
        return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 + ((z - cz) / rz) ** 2 < 1

    labels = np.zeros(shape, np.int32)
    cerebrum = ell(0, 0.05, 0.1, 0.85, 0.85, 0.75)
    wm = ell(0, 0.05, 0.12, 0.6, 0.62, 0.5)
    left = x < 0
    labels[cerebrum] = np.where(left, 3, 42)[cerebrum]
    labels[wm] = np.where(left, 2, 41)[wm]
    for cx, code in ((-0.18, 4), (0.18, 43)):
        v = ell(cx, 0.05, 0.15, 0.1, 0.3, 0.12)
        labels[v] = code
    cb = ell(0, -0.6, -0.65, 0.55, 0.3, 0.25) & ~cerebrum
    labels[cb] = np.where(left, 8, 47)[cb]

    base = {3: 0.1, 42: 0.1, 2: 0.6, 41: 0.6, 4: -0.6, 43: -0.6, 8: 0.2, 47: 0.2}
    clean = np.full(shape, -1.0, np.float32)
    for code, val in base.items():
        clean[labels == code] = val
    texture = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 1.5)
    texture /= texture.std() + 1e-8
    folia = 0.25 * np.sin(40 * z + 25 * y)  # fine stripes in the cerebellum
    brain = labels > 0
    clean = np.where(
        brain, clean + 0.12 * texture + np.where(np.isin(labels, (8, 47)), folia, 0), clean
    )
    clean = ndimage.gaussian_filter(clean, 0.6).astype(np.float32)
    clean = np.where(brain | (ndimage.binary_dilation(brain, iterations=1)), clean, -1.0)
    image = clean + np.where(brain, rng.normal(0, noise, shape), 0).astype(np.float32)
    return (
        np.clip(image, -1, 1).astype(np.float32),
        np.clip(clean, -1, 1).astype(np.float32),
        labels,
    )
