"""A weight-free feature space for 2D patches ("patch-stats"), for offline FD and PRDC.

Not Inception: values computed here are reported as ``FD-patchstats``, ``coverage-patchstats``
and so on, never as FID. Each ``(H, W)`` patch in [-1, 1] becomes a 48-d vector of hand-made
statistics, all vectorised over the batch:

- intensity: mean, std, 10/25/50/75/90th percentiles (7);
- gradient magnitude (central differences): mean, std, 50/90th percentiles (4);
- Laplacian (5-point): mean |L|, std (2);
- gradient-orientation histogram, 8 bins over [0, π), magnitude-weighted, normalised (8);
- local high-frequency energy: std of patch − 3×3 box blur (1);
- layout: the patch average-pooled to 5×5 (25) — coarse anatomy.

Features are scaled by fixed constants only (no fitting), so two runs are comparable.
"""

from __future__ import annotations

import numpy as np

DIM = 47  # 7 + 4 + 2 + 8 + 1 + 25


def patch_stats_features(patches: np.ndarray) -> np.ndarray:
    """``(N, 47)`` float64 features of ``(N, H, W)`` patches (H, W ≥ 5)."""
    p = np.asarray(patches, dtype=np.float64)
    n, h, w = p.shape
    flat = p.reshape(n, -1)
    q = np.percentile(flat, [10, 25, 50, 75, 90], axis=1).T
    inten = np.column_stack([flat.mean(1), flat.std(1), q])

    gy, gx = np.gradient(p, axis=(1, 2))
    mag = np.hypot(gx, gy).reshape(n, -1)
    grad = np.column_stack([mag.mean(1), mag.std(1), np.percentile(mag, [50, 90], axis=1).T])

    lap = (
        -4 * p[:, 1:-1, 1:-1] + p[:, :-2, 1:-1] + p[:, 2:, 1:-1] + p[:, 1:-1, :-2] + p[:, 1:-1, 2:]
    ).reshape(n, -1)
    lapf = np.column_stack([np.abs(lap).mean(1), lap.std(1)])

    theta = np.mod(np.arctan2(gy, gx), np.pi).reshape(n, -1)
    b = np.minimum((theta / np.pi * 8).astype(np.int64), 7)
    hist = np.zeros((n, 8))
    np.add.at(hist, (np.repeat(np.arange(n), b.shape[1]), b.ravel()), mag.ravel())
    hist /= hist.sum(1, keepdims=True) + 1e-12

    pad = np.pad(p, ((0, 0), (1, 1), (1, 1)), mode="edge")
    blur = sum(pad[:, i : i + h, j : j + w] for i in range(3) for j in range(3)) / 9
    hf = (p - blur).reshape(n, -1).std(1)[:, None]

    hs, ws = h // 5, w // 5
    layout = p[:, : hs * 5, : ws * 5].reshape(n, 5, hs, 5, ws).mean(axis=(2, 4)).reshape(n, 25)

    # Fixed scaling so that gradient-like features weigh about as much as intensities.
    return np.column_stack([inten, 5 * grad, 2 * lapf, hist, 5 * hf, layout])
